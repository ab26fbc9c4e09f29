// Keys of the metadata column family (see docs/format.md):
//   "m" + digest(16)  -> manifest bytes (store/manifest.h)
//   "n" + "name:tag"  -> name record: digest(16), varint unix time of tagging
//   "c" + key(16)     -> chunk record: varint raw length, varint stored length,
//                        u8 frame version, u8 transform
// One byte of prefix keeps each kind in its own key range for iteration.
#pragma once

#include <string>
#include <string_view>

#include "codec/hash.h"

namespace pstore::keys {

constexpr char kManifest = 'm';
constexpr char kName = 'n';
constexpr char kChunkRecord = 'c';

inline std::string Prefixed(char prefix, std::string_view rest) {
  std::string k;
  k.reserve(1 + rest.size());
  k.push_back(prefix);
  k.append(rest);
  return k;
}
inline std::string Manifest(const ChunkKey& digest) {
  return Prefixed(kManifest, digest.view());
}
inline std::string Name(std::string_view ref) {
  return Prefixed(kName, ref);
}
inline std::string ChunkRecord(const ChunkKey& key) {
  return Prefixed(kChunkRecord, key.view());
}
// The first key after every key with prefix p.
inline std::string PrefixEnd(char p) {
  return std::string(1, char(p + 1));
}

}  // namespace pstore::keys
