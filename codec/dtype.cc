#include "codec/dtype.h"

namespace pstore {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};

constexpr DTypeInfo kTypes[] = {
    {DType::kBool, "BOOL", 1},       {DType::kU8, "U8", 1},           {DType::kI8, "I8", 1},
    {DType::kF8_E5M2, "F8_E5M2", 1}, {DType::kF8_E4M3, "F8_E4M3", 1}, {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},         {DType::kF16, "F16", 2},         {DType::kBF16, "BF16", 2},
    {DType::kI32, "I32", 4},         {DType::kU32, "U32", 4},         {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},         {DType::kI64, "I64", 8},         {DType::kU64, "U64", 8},
};

const DTypeInfo* Find(DType t) {
  for (const auto& info : kTypes)
    if (info.type == t) return &info;
  return nullptr;
}

}  // namespace

std::optional<DType> DTypeFromName(std::string_view name) {
  for (const auto& info : kTypes)
    if (info.name == name) return info.type;
  return std::nullopt;
}

std::string_view DTypeName(DType t) {
  const DTypeInfo* info = Find(t);
  return info ? info->name : std::string_view("?");
}

size_t DTypeSize(DType t) {
  const DTypeInfo* info = Find(t);
  return info ? info->size : 1;
}

bool DTypeIdValid(uint8_t id) {
  return Find(DType(id)) != nullptr;
}

}  // namespace pstore
