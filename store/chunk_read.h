// Reading a model's chunks: read, decode, check against the key, and on
// failure name the model, tensor and chunk. The pager (its loads and Copy),
// export and verify all go through here, so a damaged chunk is reported the
// same way whoever finds it: "model M tensor T chunk J (key K): what is wrong;
// what to do".
//
// Thread-safety: free functions; a decoder and a batch are one thread's at a
// time, the source may be shared (store/chunk_source.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/hash.h"
#include "common/status.h"
#include "store/chunk_source.h"

namespace pstore {

// Where a chunk is used, for messages.
struct ChunkUse {
  std::string_view model;   // "name:tag", or the model's digest
  std::string_view tensor;  // the tensor's name
  uint64_t chunk = 0;       // the chunk's index within the tensor
};

// "model M tensor T chunk J (key K)".
std::string DescribeChunkUse(const ChunkUse& use, const ChunkKey& key);

// Decodes entry i of batch, read from source for key, into out (exactly the
// chunk's raw length) and checks it against the key. The error says what is
// wrong with the chunk, not where it is used (verify reports each use of a
// chunk itself): a missing chunk is Corruption naming the source.
Status DecodeFrame(const FrameBatch& batch, size_t i, const ChunkKey& key,
                   const ChunkSource& source, ChunkDecoder* decoder, std::span<uint8_t> out);

// Reads keys from source (ReadFrames) in runs of kDecodeRunBytes
// (store/chunk_source.h), each run decoded before the next is read: a frame
// found is decoded into outs[i] and checked against its key, and result says
// how (DecodeFrame's status, the frame's size). An entry the source lacks is
// appended to *missing, its result left as it was; with missing null it is
// DecodeFrame's error (Corruption naming the source). An error return is
// ReadFrames': the source could not answer (result is then the caller's to
// set). REQUIRES: result has an entry per key (DecodedChunks::Reset).
Status ReadDecodedInRuns(ChunkSource& source, std::span<const ChunkKey> keys,
                         std::span<const std::span<uint8_t>> outs, ChunkDecoder* decoder,
                         FrameBatch* batch, DecodedChunks* result, std::vector<size_t>* missing);

// DecodeFrame with the error prefixed by DescribeChunkUse, and for damage
// (Corruption) what to do about it.
Status DecodeChunk(const FrameBatch& batch, size_t i, const ChunkKey& key,
                   const ChunkSource& source, const ChunkUse& use, ChunkDecoder* decoder,
                   std::span<uint8_t> out);

// Reads one chunk from source (ChunkSource::ReadDecoded) and decodes it as
// DecodeChunk does; *frame_bytes, if given, is the size of its frame. batch
// is scratch, reused from call to call.
Status ReadChunk(ChunkSource& source, const ChunkKey& key, const ChunkUse& use,
                 ChunkDecoder* decoder, FrameBatch* batch, std::span<uint8_t> out,
                 uint64_t* frame_bytes = nullptr);

// The error of a chunk that could not be read or decoded, for use: prefixed
// by DescribeChunkUse, and for damage of the store's copy, what to do (an
// error marked as a remote's, Status::IsRemote, keeps its own advice).
Status ChunkUseError(const Status& st, const ChunkUse& use, const ChunkKey& key);

// The error for a frame that remote served for key and that does not decode
// to it (why): Corruption naming the remote, the chunk (chunk, e.g. "model M,
// tensor T, chunk J") and the remote's object, then outcome (what became of
// the frame), then that the remote's copy is damaged, not this host's, and
// what to do: remove the object and push the model again from a host that
// has it. Marked as a remote's error (Status::IsRemote).
Status RemoteFrameMismatch(const ChunkSource& remote, std::string_view chunk, const ChunkKey& key,
                           const Status& why, std::string_view outcome);
// The error for a chunk (named as for RemoteFrameMismatch) whose object
// remote lacks: Corruption naming the remote, the chunk and the object, and
// what to do: push the model again from a host that has it. Marked as a
// remote's error.
Status RemoteFrameMissing(const ChunkSource& remote, std::string_view chunk, const ChunkKey& key);

}  // namespace pstore
