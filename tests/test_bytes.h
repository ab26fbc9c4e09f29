// Test inputs shared by the codec's tests.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"

namespace pstore {

// n bytes of a seeded Mersenne Twister: incompressible.
inline std::vector<uint8_t> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// raw's frame with profile p, as a piece of a tensor of type.
inline std::string EncodeWith(const std::vector<uint8_t>& raw, const ChunkType& type, Profile p) {
  EncodeOptions opt;
  opt.profile = p;
  ChunkEncoder enc(opt);
  std::string frame;
  enc.Encode(raw, type, &frame);
  return frame;
}

}  // namespace pstore
