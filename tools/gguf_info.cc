#include "tools/gguf_info.h"

#include <cstdio>
#include <map>

#include "store/formats/gguf.h"
#include "tools/cli_util.h"

namespace pstore::cli {
namespace {

nlohmann::ordered_json Metadata(const ModelInfo& info) {
  auto j = nlohmann::ordered_json::parse(info.metadata_json, nullptr, false);
  return j.is_object() ? j : nlohmann::ordered_json::object();
}

}  // namespace

std::string TensorTypeName(const ModelInfo& info, const TensorInfo& t) {
  if (IsGguf(info.format)) return gguf::GgmlTypeName(t.ggml_type);
  return std::string(DTypeName(t.dtype));
}

nlohmann::json GgufSummaryJson(const ModelInfo& info) {
  auto meta = Metadata(info);
  nlohmann::json j = nlohmann::json::object();
  std::string arch;
  if (meta.contains("general.architecture") && meta["general.architecture"].is_string())
    arch = meta["general.architecture"].get<std::string>();
  j["architecture"] = arch.empty() ? nlohmann::json() : nlohmann::json(arch);
  std::string ctx = arch + ".context_length";
  j["context_length"] = meta.contains(ctx) && meta[ctx].is_number_integer()
                            ? nlohmann::json(meta[ctx].get<uint64_t>())
                            : nlohmann::json();
  if (meta.contains("general.file_type") && meta["general.file_type"].is_number_integer()) {
    uint64_t ft = meta["general.file_type"].get<uint64_t>();
    j["file_type"] = ft;
    std::string name = gguf::FileTypeName(ft);
    j["quantization"] = name.empty() ? nlohmann::json() : nlohmann::json(name);
  } else {
    j["file_type"] = nullptr;
    j["quantization"] = nullptr;
  }
  j["alignment"] = info.alignment;
  struct Sum {
    uint64_t tensors = 0, raw = 0, stored = 0;
  };
  std::map<uint32_t, Sum> by_type;
  for (const auto& t : info.tensors) {
    Sum& s = by_type[t.ggml_type];
    s.tensors++;
    s.raw += t.raw_bytes;
    s.stored += t.stored_bytes;
  }
  nlohmann::json types = nlohmann::json::array();
  for (const auto& [type, s] : by_type)
    types.push_back({{"ggml_type", type},
                     {"name", gguf::GgmlTypeName(type)},
                     {"tensors", s.tensors},
                     {"raw_bytes", s.raw},
                     {"stored_bytes", s.stored}});
  j["types"] = types;
  return j;
}

void PrintGgufSummary(const ModelInfo& info) {
  nlohmann::json s = GgufSummaryJson(info);
  auto str = [](const nlohmann::json& v) { return v.is_null() ? std::string("?") : v.dump(); };
  std::printf("gguf     architecture %s, context length %s, quantization %s, alignment %u\n",
              s["architecture"].is_string() ? s["architecture"].get<std::string>().c_str() : "?",
              str(s["context_length"]).c_str(),
              s["quantization"].is_string() ? s["quantization"].get<std::string>().c_str()
                                            : str(s["file_type"]).c_str(),
              info.alignment);
  std::printf("types   ");
  for (const auto& t : s["types"])
    std::printf(" %s: %llu tensors, %s raw, stored/raw %.3f;", t["name"].get<std::string>().c_str(),
                (unsigned long long)t["tensors"].get<uint64_t>(),
                HumanBytes(double(t["raw_bytes"].get<uint64_t>())).c_str(),
                t["raw_bytes"].get<uint64_t>() ? double(t["stored_bytes"].get<uint64_t>()) /
                                                     double(t["raw_bytes"].get<uint64_t>())
                                               : 0.0);
  std::printf("\n");
  const nlohmann::ordered_json meta = Metadata(info);
  for (const auto& [key, v] : meta.items()) {
    std::string shown;
    if (v.is_array()) {
      shown = std::to_string(v.size());
      shown.insert(0, 1, '[');
      shown.append(" values]");
    } else {
      shown = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (shown.size() > 100) {
        shown.resize(100);
        shown.append("...");
      }
    }
    std::printf("  %-40s %s\n", key.c_str(), shown.c_str());
  }
}

}  // namespace pstore::cli
