// What `pstore info` shows of a GGUF model beyond what every model has: the
// metadata that matters to a user (architecture, context length,
// quantization, alignment), a short view of the key-values, and the stored /
// raw bytes per GGML type.
//
// Thread-safety: plain functions over values.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "store/store.h"

namespace pstore::cli {

// The tensor's type as a user names it: the GGML type ("Q8_0") for a GGUF
// model, the dtype otherwise.
std::string TensorTypeName(const ModelInfo& info, const TensorInfo& t);
// {"architecture", "context_length", "file_type", "quantization", "alignment",
//  "types": [{"ggml_type", "name", "tensors", "raw_bytes", "stored_bytes"}]}.
nlohmann::json GgufSummaryJson(const ModelInfo& info);
// The same, as lines for a terminal, with the key-values (arrays shortened).
void PrintGgufSummary(const ModelInfo& info);

}  // namespace pstore::cli
