#include "pager/name_index.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace pstore {

uint64_t NameIndex::Hash(std::string_view s) {
  return XXH3_64bits(s.data(), s.size());
}

void NameIndex::Build(const std::vector<ManifestTensor>& tensors) {
  tensors_ = &tensors;
  uint64_t cap = 16;
  while (cap < 2 * uint64_t(tensors.size())) cap *= 2;  // load factor <= 1/2
  table_.assign(cap, 0);
  mask_ = cap - 1;
  for (uint32_t i = 0; i < tensors.size(); i++) {
    const std::string& name = tensors[i].name;
    uint64_t h = Hash(name);
    uint64_t tag = h >> 32 << 32;
    for (uint64_t at = h & mask_;; at = (at + 1) & mask_) {
      uint64_t e = table_[at];
      if (e == 0) {
        table_[at] = tag | (uint64_t(i) + 1);
        break;
      }
      if ((e >> 32 << 32) == tag && tensors[uint32_t(e) - 1].name == name) break;  // a duplicate
    }
  }
}

int64_t NameIndex::Find(std::string_view name) const {
  if (table_.empty()) return -1;
  uint64_t h = Hash(name);
  uint64_t tag = h >> 32 << 32;
  for (uint64_t at = h & mask_;; at = (at + 1) & mask_) {
    uint64_t e = table_[at];
    if (e == 0) return -1;
    if ((e >> 32 << 32) == tag && (*tensors_)[uint32_t(e) - 1].name == name)
      return int64_t(uint32_t(e) - 1);
  }
}

}  // namespace pstore
