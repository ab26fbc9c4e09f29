// Internal to codec/: the coder singletons CoderFor (codec/coders/coder.h)
// hands out by id, one per file of codec/coders/ and codec/legacy/.
//
// Thread-safety: the coders are immutable.
#pragma once

#include <cstddef>

#include "codec/coders/coder.h"

namespace pstore {

const StreamCoder* RawStreamCoder();
const StreamCoder* ConstStreamCoder();
const StreamCoder* Lz4StreamCoder();
const StreamCoder* ZstdStreamCoder();
const StreamCoder* RansStreamCoder();     // codec/legacy/rans_coder.cc
const StreamCoder* RansCtxStreamCoder();  // codec/legacy/rans_ctx_coder.cc
const StreamCoder* Rans2StreamCoder();
const StreamCoder* Rans2CtxStreamCoder();
const StreamCoder* BitsStreamCoder();
const StreamCoder* Rans2CarryStreamCoder();
const StreamCoder* BitsTailStreamCoder();

// What a rans2-carry stream of 2^lanes_log2 lanes saves stream 1 (m values of
// k bits): the bytes of the values its states carry.
size_t CarryCredit(size_t m, int lanes_log2, int k);

}  // namespace pstore
