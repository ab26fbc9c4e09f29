// Writing safetensors files for tests: tensors as given, header padded to 8
// bytes, as the format asks.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace pstore {
namespace testing_util {

struct TestTensor {
  std::string name;
  std::string dtype;  // safetensors spelling
  std::vector<uint64_t> shape;
  std::string data;
};

inline void WriteSafetensors(const std::string& path, const std::vector<TestTensor>& ts,
                             const std::string& metadata = "{\"note\":\"store_test\"}") {
  std::string h = "{\"__metadata__\":" + metadata;
  uint64_t off = 0;
  for (const auto& t : ts) {
    h += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); i++) {
      if (i) h += ",";
      h += std::to_string(t.shape[i]);
    }
    h += "],\"data_offsets\":[";
    h += std::to_string(off);
    h += ",";
    h += std::to_string(off + t.data.size());
    h += "]}";
    off += t.data.size();
  }
  h += "}";
  while (h.size() % 8) h += ' ';
  std::ofstream f(path, std::ios::binary);
  uint64_t n = h.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << h;
  for (const auto& t : ts) f << t.data;
}

}  // namespace testing_util
}  // namespace pstore
