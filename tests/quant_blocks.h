// Quantization of floats into GGML's two simplest block layouts, for test
// equipment (the GGUF writer, codec tests and the codec fuzzer's seeds).
// Q8_0 block (34 bytes): F16 scale d = max|x| / 127, then 32 int8 x/d
// rounded. Q4_0 block (18 bytes): F16 scale d = (value of largest magnitude)
// / -8, then 16 bytes of 4-bit x/d + 8, element j in the low nibble of byte j
// and element j + 16 in its high nibble.
//
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pstore::quant {

// f as IEEE binary16, rounded to nearest even (as a compiler's _Float16
// conversion, which clang 14 lacks on x86).
inline uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, mag = x & 0x7fffffff;
  if (mag > 0x7f800000) return uint16_t(sign | 0x7e00);   // NaN
  if (mag >= 0x477ff000) return uint16_t(sign | 0x7c00);  // 65520 and up: infinity
  if (mag < 0x38800000) {                                 // below 2^-14: subnormal
    float a;
    std::memcpy(&a, &mag, 4);
    return uint16_t(sign | uint32_t(std::nearbyint(a * 16777216.f)));  // units of 2^-24
  }
  uint32_t h = (((mag >> 23) - 112) << 10) | ((mag >> 13) & 0x3ff);
  const uint32_t rest = mag & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return uint16_t(sign | h);
}

inline void PutHalf(std::vector<uint8_t>* out, float f) {
  uint16_t h = ToHalf(f);
  out->push_back(uint8_t(h));
  out->push_back(uint8_t(h >> 8));
}

// x.size() must be a multiple of 32.
inline std::vector<uint8_t> QuantQ8_0(const std::vector<float>& x) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[b + j]));
    float d = amax / 127.f, id = d ? 1.f / d : 0.f;
    PutHalf(&out, d);
    for (int j = 0; j < 32; j++) out.push_back(uint8_t(int8_t(std::lround(x[b + j] * id))));
  }
  return out;
}

// x.size() must be a multiple of 32.
inline std::vector<uint8_t> QuantQ4_0(const std::vector<float>& x) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
      if (std::fabs(x[b + j]) > amax) amax = std::fabs(x[b + j]), max = x[b + j];
    float d = max / -8.f, id = d ? 1.f / d : 0.f;
    PutHalf(&out, d);
    for (int j = 0; j < 16; j++) {
      int lo = std::min(15, int(x[b + j] * id + 8.5f));
      int hi = std::min(15, int(x[b + j + 16] * id + 8.5f));
      out.push_back(uint8_t(lo | (hi << 4)));
    }
  }
  return out;
}

}  // namespace pstore::quant
