// Test inputs shared by the codec's tests.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace pstore {

// n bytes of a seeded Mersenne Twister: incompressible.
inline std::vector<uint8_t> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

}  // namespace pstore
