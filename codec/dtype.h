// Element types of tensors, as safetensors names them. The numeric ids are
// written to disk (manifests) and are never renumbered; new types get new ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace pstore {

enum class DType : uint8_t {
  kBool = 1,
  kU8 = 2,
  kI8 = 3,
  kF8_E5M2 = 4,
  kF8_E4M3 = 5,
  kI16 = 6,
  kU16 = 7,
  kF16 = 8,
  kBF16 = 9,
  kI32 = 10,
  kU32 = 11,
  kF32 = 12,
  kF64 = 13,
  kI64 = 14,
  kU64 = 15,
};

// "F16" -> kF16; nullopt for a name pstore does not know.
std::optional<DType> DTypeFromName(std::string_view name);
// kF16 -> "F16".
std::string_view DTypeName(DType t);
// Bytes per element (1, 2, 4 or 8).
size_t DTypeSize(DType t);
// True for ids that name a DType (for validating ids read from disk).
bool DTypeIdValid(uint8_t id);

}  // namespace pstore
