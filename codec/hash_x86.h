// Internal to codec/: XXH3-128 built for wider vector units (codec/hash_x86.inc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore::hash_internal {

// REQUIRES: the CPU has AVX-512 F+BW (resp. AVX2).
void Hash128Avx512(const void* data, size_t n, uint8_t out[16]);
void Hash128Avx2(const void* data, size_t n, uint8_t out[16]);

}  // namespace pstore::hash_internal
