#include "codec/hash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace pstore {

ChunkKey HashBytes(const void* data, size_t n) {
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

std::string ChunkKey::Hex() const { return ToHex(view()); }

std::optional<ChunkKey> ChunkKey::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  ChunkKey k;
  for (size_t i = 0; i < 16; i++) {
    int v = 0;
    for (int j = 0; j < 2; j++) {
      char c = hex[2 * i + j];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return std::nullopt;
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
