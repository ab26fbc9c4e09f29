// Chunk keys: the XXH3-128 of a chunk's raw bytes, in XXH3's canonical
// (big-endian) byte order, so a key's hex form reads the same everywhere.
//
// XXH3 is fast, not collision-resistant against an adversary: the importer
// compares bytes on a key hit (StoreWriter::Import, store/import.cc) so that
// no imported file can stand in for another model's chunk.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pstore {

struct ChunkKey {
  std::array<uint8_t, 16> bytes{};

  auto operator<=>(const ChunkKey&) const = default;
  std::string_view view() const {
    return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  // 32 lowercase hex digits.
  std::string Hex() const;
  static std::optional<ChunkKey> FromHex(std::string_view hex);
  // From 16 raw bytes, e.g. a RocksDB key; nullopt if the size is wrong.
  static std::optional<ChunkKey> FromBytes(std::string_view raw);
};

// XXH3-128 of data[0, n).
ChunkKey HashBytes(const void* data, size_t n);

struct ChunkKeyHasher {
  size_t operator()(const ChunkKey& k) const {
    uint64_t v;
    __builtin_memcpy(&v, k.bytes.data(), 8);
    return size_t(v);
  }
};

// Lowercase hex of arbitrary bytes.
std::string ToHex(std::string_view bytes);

}  // namespace pstore
