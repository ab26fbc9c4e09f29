// Internal to codec/: how a rANS decode ends, in both formats (codec/rans2.h
// and codec/legacy/rans.h): every lane's state back where encoding began (or,
// if final is not null, handed to the caller, who checks what it carries),
// every word used, and the reader moved past the stream.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/coding.h"
#include "common/status.h"

namespace pstore::rans_internal {

inline Status FinishDecode(const uint32_t* x, size_t lanes, uint32_t state_low, uint32_t* final,
                           size_t pos, size_t nwords, Reader* in) {
  if (final)
    std::memcpy(final, x, sizeof(uint32_t) * lanes);
  else
    for (size_t l = 0; l < lanes; l++)
      if (x[l] != state_low) return Status::Corruption("rANS stream: final state mismatch");
  if (pos != nwords) return Status::Corruption("rANS stream: trailing words");
  std::string_view rest;
  in->GetBytes(in->remaining(), &rest);
  return Status::OK();
}

}  // namespace pstore::rans_internal
