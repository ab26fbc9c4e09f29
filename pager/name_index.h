// Tensor name -> index, for a model's lifetime.
//
// Open addressing over 64-bit XXH3 hashes in one flat array, built in one
// pass: a model of thousands of tensors indexes its names in a fraction of
// what a node-per-name hash map costs, which matters to a process that opens
// a resident model.
//
// Thread-safety: immutable once built; Find may run on many threads.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "store/manifest.h"

namespace pstore {

class NameIndex {
 public:
  // Indexes the names of tensors, which must outlive the index. Of equal
  // names the first is found.
  void Build(const std::vector<ManifestTensor>& tensors);
  // The index of the tensor named name, or -1.
  int64_t Find(std::string_view name) const;

 private:
  static uint64_t Hash(std::string_view s);
  const std::vector<ManifestTensor>* tensors_ = nullptr;
  // Each entry: hash's high 32 bits << 32 | (tensor index + 1); 0 is empty.
  std::vector<uint64_t> table_;
  uint64_t mask_ = 0;
};

}  // namespace pstore
