// Bit packing: n values below 2^k stored in ceil(n*k/8) bytes, value i in
// bits [i*k, i*k + k) counted from the least significant bit of byte 0. The
// payload of coder kBits (docs/codec.md). Unpacks with AVX-512 VBMI or BMI2
// pdep where the CPU has them, packs with BMI2 pext, and has portable loops
// for the rest; every path gives the same bytes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore {

inline size_t PackedBytes(size_t n, int k) {
  return (n * size_t(k) + 7) / 8;
}
// Bits needed for the largest value in v[0, n) (0 for all zeros).
int BitsNeeded(const uint8_t* v, size_t n);
// portable: use the portable loops whatever the CPU has (the same bytes;
// tests compare the paths).
// REQUIRES: 1 <= k <= 8, every in[i] < 2^k; out holds PackedBytes(n, k).
void PackBits(const uint8_t* in, size_t n, int k, uint8_t* out, bool portable = false);
// REQUIRES: 1 <= k <= 8; in holds PackedBytes(n, k) bytes; out holds n.
void UnpackBits(const uint8_t* in, size_t n, int k, uint8_t* out, bool portable = false);

}  // namespace pstore
