#include "codec/hash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codec/hash_x86.h"

namespace pstore {

namespace {

using HashFn = void (*)(const void*, size_t, uint8_t*);

void Hash128Portable(const void* data, size_t n, uint8_t out[16]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(data, n));
  __builtin_memcpy(out, c.digest, 16);
}

HashFn PickHash() {
#if defined(PSTORE_HASH_X86)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    return hash_internal::Hash128Avx512;
  if (__builtin_cpu_supports("avx2")) return hash_internal::Hash128Avx2;
#endif
  return Hash128Portable;
}

}  // namespace

ChunkKey HashBytes(const void* data, size_t n) {
  // Short inputs are not worth the indirect call's difference.
  if (n >= 1024) {
    static const HashFn fn = PickHash();
    ChunkKey k;
    fn(data, n, k.bytes.data());
    return k;
  }
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(data, n));
  ChunkKey k;
  static_assert(sizeof(c.digest) == 16);
  __builtin_memcpy(k.bytes.data(), c.digest, 16);
  return k;
}

std::string ToHex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string ChunkKey::Hex() const {
  return ToHex(view());
}

std::optional<ChunkKey> ChunkKey::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  ChunkKey k;
  for (size_t i = 0; i < 16; i++) {
    int v = 0;
    for (int j = 0; j < 2; j++) {
      char c = hex[2 * i + j];
      int d;
      if (c >= '0' && c <= '9')
        d = c - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
      else
        return std::nullopt;
      v = v * 16 + d;
    }
    k.bytes[i] = uint8_t(v);
  }
  return k;
}

std::optional<ChunkKey> ChunkKey::FromBytes(std::string_view raw) {
  if (raw.size() != 16) return std::nullopt;
  ChunkKey k;
  __builtin_memcpy(k.bytes.data(), raw.data(), 16);
  return k;
}

}  // namespace pstore
