#include "store/formats/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/env.h"
#include "common/file_util.h"
#include "store/manifest.h"

namespace pstore::gguf {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};

struct TypeRow {
  uint32_t id;
  GgmlTypeInfo info;
};
// ggml's type table (ggml.h, ggml.c, ggml-common.h): name, elements and bytes
// per block, and where each block's F16 scales sit. Ids 4, 5, 31-33 and 36-38
// were removed from ggml; they are unknown here and so stored opaquely like
// any newer type.
constexpr TypeRow kTypes[] = {
    {0, {"F32", 1, 4}},
    {1, {"F16", 1, 2}},
    {2, {"Q4_0", 32, 18, 0, 1}},       // d, qs[16]
    {3, {"Q4_1", 32, 20, 0, 2}},       // d, m, qs[16]
    {6, {"Q5_0", 32, 22, 0, 1}},       // d, qh[4], qs[16]
    {7, {"Q5_1", 32, 24, 0, 2}},       // d, m, qh[4], qs[16]
    {8, {"Q8_0", 32, 34, 0, 1}},       // d, qs[32]
    {9, {"Q8_1", 32, 36, 0, 2}},       // d, s, qs[32]
    {10, {"Q2_K", 256, 84, 80, 2}},    // scales[16], qs[64], d, dmin
    {11, {"Q3_K", 256, 110, 108, 1}},  // hmask[32], qs[64], scales[12], d
    {12, {"Q4_K", 256, 144, 0, 2}},    // d, dmin, scales[12], qs[128]
    {13, {"Q5_K", 256, 176, 0, 2}},    // d, dmin, scales[12], qh[32], qs[128]
    {14, {"Q6_K", 256, 210, 208, 1}},  // ql[128], qh[64], scales[16], d
    {15, {"Q8_K", 256, 292}},          // an F32 scale
    {16, {"IQ2_XXS", 256, 66, 0, 1}},
    {17, {"IQ2_XS", 256, 74, 0, 1}},
    {18, {"IQ3_XXS", 256, 98, 0, 1}},
    {19, {"IQ1_S", 256, 50, 0, 1}},
    {20, {"IQ4_NL", 32, 18, 0, 1}},
    {21, {"IQ3_S", 256, 110, 0, 1}},
    {22, {"IQ2_S", 256, 82, 0, 1}},
    {23, {"IQ4_XS", 256, 136, 0, 1}},
    {24, {"I8", 1, 1}},
    {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},
    {27, {"I64", 1, 8}},
    {28, {"F64", 1, 8}},
    {29, {"IQ1_M", 256, 56}},  // its scale is spread over the block's scales
    {30, {"BF16", 1, 2}},
    {34, {"TQ1_0", 256, 54, 52, 1}},  // qs[48], qh[4], d
    {35, {"TQ2_0", 256, 66, 64, 1}},  // qs[64], d
    {39, {"MXFP4", 32, 17}},          // an E8M0 scale
};

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s.substr(0, 200)) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(char(c));
    }
  }
  if (s.size() > 200) out += "...";
  return out + "\"";
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Reads the header fields, refusing whatever does not fit in the file.
class Parser {
 public:
  Parser(std::string_view buf, uint64_t file_size, std::string_view what)
      : buf_(buf), file_size_(file_size), what_(what) {}

  // What stops parsing: a rule broken, or the buffer ending before the file.
  bool truncated = false;

  Status Bad(const std::string& why) const {
    return Status::InvalidArgument("GGUF file " + std::string(what_) + ": " + why + " (at byte " +
                                   std::to_string(pos_) + ")");
  }
  uint64_t pos() const { return pos_; }
  uint64_t left_in_file() const { return file_size_ - pos_; }

  // Makes sure n bytes are available at the current position.
  Status Need(uint64_t n, const char* what) {
    if (n > file_size_ - pos_)
      return Bad(std::string(what) + " runs past the end of the file (" + std::to_string(n) +
                 " bytes needed, " + std::to_string(file_size_ - pos_) + " left)");
    if (n > buf_.size() - pos_) {
      truncated = true;
      return Bad(std::string(what) + " is longer than the bytes read");
    }
    return Status::OK();
  }
  Status Raw(uint64_t n, const char* what, std::string_view* out) {
    PSTORE_RETURN_IF_ERROR(Need(n, what));
    *out = buf_.substr(size_t(pos_), size_t(n));
    pos_ += n;
    return Status::OK();
  }
  template <typename T>
  Status Fixed(const char* what, T* v) {
    std::string_view s;
    PSTORE_RETURN_IF_ERROR(Raw(sizeof(T), what, &s));
    std::memcpy(v, s.data(), sizeof(T));  // little-endian hosts only (target.h)
    return Status::OK();
  }
  Status String(const char* what, std::string_view* out) {
    uint64_t n;
    PSTORE_RETURN_IF_ERROR(Fixed(what, &n));
    if (n > file_size_ - pos_)
      return Bad(std::string(what) + " claims " + std::to_string(n) +
                 " bytes, more than the file holds after it");
    return Raw(n, what, out);
  }

 private:
  std::string_view buf_;
  uint64_t file_size_;
  std::string_view what_;
  uint64_t pos_ = 0;
};

// The smallest number of bytes one value of type t takes in the file.
uint64_t MinValueBytes(uint32_t t) {
  switch (ValueType(t)) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    case ValueType::kString:
      return 8;
    case ValueType::kArray:
      return 12;
  }
  return 0;
}

const char* ValueTypeName(uint32_t t) {
  static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return t < 13 ? names[t] : "unknown";
}

template <typename T>
Status Scalar(Parser& p, const char* what, ordered_json* out) {
  T v;
  PSTORE_RETURN_IF_ERROR(p.Fixed(what, &v));
  *out = v;
  return Status::OK();
}

Status ReadValue(Parser& p, uint32_t type, int depth, const std::string& key, ordered_json* out) {
  switch (ValueType(type)) {
    case ValueType::kU8:
      return Scalar<uint8_t>(p, "a u8 value", out);
    case ValueType::kI8:
      return Scalar<int8_t>(p, "an i8 value", out);
    case ValueType::kU16:
      return Scalar<uint16_t>(p, "a u16 value", out);
    case ValueType::kI16:
      return Scalar<int16_t>(p, "an i16 value", out);
    case ValueType::kU32:
      return Scalar<uint32_t>(p, "a u32 value", out);
    case ValueType::kI32:
      return Scalar<int32_t>(p, "an i32 value", out);
    case ValueType::kF32:
      return Scalar<float>(p, "an f32 value", out);
    case ValueType::kU64:
      return Scalar<uint64_t>(p, "a u64 value", out);
    case ValueType::kI64:
      return Scalar<int64_t>(p, "an i64 value", out);
    case ValueType::kF64:
      return Scalar<double>(p, "an f64 value", out);
    case ValueType::kBool: {
      uint8_t b;
      PSTORE_RETURN_IF_ERROR(p.Fixed("a bool value", &b));
      if (b > 1)
        return p.Bad("key " + Quote(key) + ": a bool value is " + std::to_string(b) +
                     ", not 0 or 1");
      *out = b == 1;
      return Status::OK();
    }
    case ValueType::kString: {
      std::string_view s;
      PSTORE_RETURN_IF_ERROR(p.String("a string value", &s));
      *out = std::string(s);
      return Status::OK();
    }
    case ValueType::kArray: {
      if (depth >= int(kMaxArrayDepth))
        return p.Bad("key " + Quote(key) + ": arrays nested more than " +
                     std::to_string(kMaxArrayDepth) + " deep");
      uint32_t et;
      uint64_t n;
      PSTORE_RETURN_IF_ERROR(p.Fixed("an array's element type", &et));
      if (MinValueBytes(et) == 0)
        return p.Bad("key " + Quote(key) + ": unknown array element type " + std::to_string(et));
      PSTORE_RETURN_IF_ERROR(p.Fixed("an array's length", &n));
      uint64_t min_bytes;
      if (MulOverflows(n, MinValueBytes(et), &min_bytes) || min_bytes > p.left_in_file())
        return p.Bad("key " + Quote(key) + ": an array of " + std::to_string(n) + " " +
                     ValueTypeName(et) + " values cannot fit in the file");
      *out = ordered_json::array();
      out->get_ref<ordered_json::array_t&>().reserve(size_t(std::min<uint64_t>(n, 1u << 20)));
      for (uint64_t i = 0; i < n; i++) {
        ordered_json v;
        PSTORE_RETURN_IF_ERROR(ReadValue(p, et, depth + 1, key, &v));
        out->push_back(std::move(v));
      }
      return Status::OK();
    }
  }
  return p.Bad("key " + Quote(key) + ": unknown value type " + std::to_string(type));
}

uint64_t RoundUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

struct RawTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
  size_t index;  // in the file's list
};

}  // namespace

std::optional<GgmlTypeInfo> GgmlType(uint32_t type) {
  for (const auto& r : kTypes)
    if (r.id == type) return r.info;
  return std::nullopt;
}

BlockLayout GgmlBlockLayout(uint32_t type) {
  auto t = GgmlType(type);
  if (!t || t->scales == 0) return BlockLayout{};
  return BlockLayout{t->block_bytes, t->scale_offset, t->scales};
}

uint32_t GgmlChunkLength(uint32_t type, uint32_t chunk_size) {
  auto t = GgmlType(type);
  if (!t || t->block_elems <= 1 || t->block_bytes == 0) return 0;
  const uint64_t lcm = std::lcm<uint64_t>(t->block_bytes, Manifest::kChunkLenUnit);
  uint64_t len = chunk_size / lcm * lcm;
  if (len == 0) len = lcm <= Manifest::kMaxBlockChunkLen ? lcm : 0;
  return len == chunk_size ? 0 : uint32_t(len);
}

std::string GgmlTypeName(uint32_t type) {
  auto t = GgmlType(type);
  return t ? std::string(t->name) : "type " + std::to_string(type);
}

DType GgmlDType(uint32_t type) {
  switch (type) {
    case 0:
      return DType::kF32;
    case 1:
      return DType::kF16;
    case 24:
      return DType::kI8;
    case 25:
      return DType::kI16;
    case 26:
      return DType::kI32;
    case 27:
      return DType::kI64;
    case 28:
      return DType::kF64;
    case 30:
      return DType::kBF16;
    default:
      return DType::kU8;
  }
}

std::string FileTypeName(uint64_t ft) {
  // llama.h's enum llama_ftype (general.file_type).
  static const std::pair<uint64_t, const char*> names[] = {
      {0, "ALL_F32"},           {1, "MOSTLY_F16"},     {2, "MOSTLY_Q4_0"},    {3, "MOSTLY_Q4_1"},
      {7, "MOSTLY_Q8_0"},       {8, "MOSTLY_Q5_0"},    {9, "MOSTLY_Q5_1"},    {10, "MOSTLY_Q2_K"},
      {11, "MOSTLY_Q3_K_S"},    {12, "MOSTLY_Q3_K_M"}, {13, "MOSTLY_Q3_K_L"}, {14, "MOSTLY_Q4_K_S"},
      {15, "MOSTLY_Q4_K_M"},    {16, "MOSTLY_Q5_K_S"}, {17, "MOSTLY_Q5_K_M"}, {18, "MOSTLY_Q6_K"},
      {19, "MOSTLY_IQ2_XXS"},   {20, "MOSTLY_IQ2_XS"}, {21, "MOSTLY_Q2_K_S"}, {22, "MOSTLY_IQ3_XS"},
      {23, "MOSTLY_IQ3_XXS"},   {24, "MOSTLY_IQ1_S"},  {25, "MOSTLY_IQ4_NL"}, {26, "MOSTLY_IQ3_S"},
      {27, "MOSTLY_IQ3_M"},     {28, "MOSTLY_IQ2_S"},  {29, "MOSTLY_IQ2_M"},  {30, "MOSTLY_IQ4_XS"},
      {31, "MOSTLY_IQ1_M"},     {32, "MOSTLY_BF16"},   {36, "MOSTLY_TQ1_0"},  {37, "MOSTLY_TQ2_0"},
      {38, "MOSTLY_MXFP4_MOE"},
  };
  for (const auto& [id, name] : names)
    if (id == ft) return name;
  return "";
}

Result<FileHeader> ParseHeader(std::string_view prefix, uint64_t file_size, std::string_view what,
                               bool* truncated) {
  if (truncated) *truncated = false;
  if (prefix.size() > file_size) prefix = prefix.substr(0, size_t(file_size));
  Parser p(prefix, file_size, what);
  auto fail = [&](Status s) {
    if (truncated) *truncated = p.truncated;
    return s;
  };
#define GGUF_TRY(expr)             \
  do {                             \
    Status _s = (expr);            \
    if (!_s.ok()) return fail(_s); \
  } while (0)

  FileHeader h;
  std::string_view magic;
  if (file_size < 4 || prefix.size() < 4 || std::memcmp(prefix.data(), kMagic, 4) != 0)
    return fail(Status::InvalidArgument("GGUF file " + std::string(what) +
                                        ": bad magic (the file does not start with \"GGUF\")"));
  GGUF_TRY(p.Raw(4, "the magic", &magic));
  GGUF_TRY(p.Fixed("the version", &h.version));
  if (h.version != 2 && h.version != 3) {
    if (h.version != 0 && (h.version & 0xffff) == 0)
      return fail(p.Bad("the version field reads " + std::to_string(__builtin_bswap32(h.version)) +
                        " big-endian: big-endian GGUF files are not supported (convert the "
                        "file to little-endian)"));
    return fail(p.Bad("unsupported GGUF version " + std::to_string(h.version) +
                      " (pstore reads versions 2 and 3)"));
  }
  uint64_t n_tensors, n_kv;
  GGUF_TRY(p.Fixed("the tensor count", &n_tensors));
  GGUF_TRY(p.Fixed("the metadata count", &n_kv));
  // A key-value pair takes at least 13 bytes, a tensor info at least 24.
  if (n_kv > p.left_in_file() / 13)
    return fail(
        p.Bad("the metadata count " + std::to_string(n_kv) + " is more than the file could hold"));
  if (n_tensors > p.left_in_file() / 24 || n_tensors > kMaxTensors)
    return fail(p.Bad("the tensor count " + std::to_string(n_tensors) +
                      " is more than the file could hold"));

  ordered_json meta = ordered_json::object();
  std::unordered_set<std::string> keys;
  bool have_alignment = false;
  for (uint64_t i = 0; i < n_kv; i++) {
    std::string_view key_sv;
    GGUF_TRY(p.String("a metadata key", &key_sv));
    std::string key(key_sv);
    if (key.empty()) return fail(p.Bad("metadata key " + std::to_string(i) + " is empty"));
    if (!keys.insert(key).second) return fail(p.Bad("duplicate metadata key " + Quote(key)));
    uint32_t type;
    GGUF_TRY(p.Fixed("a value type", &type));
    if (MinValueBytes(type) == 0)
      return fail(p.Bad("key " + Quote(key) + ": unknown value type " + std::to_string(type)));
    ordered_json v;
    GGUF_TRY(ReadValue(p, type, 0, key, &v));
    if (key == "general.alignment") {
      if (ValueType(type) != ValueType::kU32)
        return fail(
            p.Bad("general.alignment must be a u32, not " + std::string(ValueTypeName(type))));
      uint32_t a = v.get<uint32_t>();
      if (a == 0 || (a & (a - 1)) != 0)
        return fail(
            p.Bad("general.alignment is " + std::to_string(a) + ", which is not a power of two"));
      h.alignment = a;
      have_alignment = true;
    } else if (key == "split.no" || key == "split.count") {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        return fail(p.Bad(key + " must be an unsigned integer"));
      (key == "split.no" ? h.split_no : h.split_count) = v.get<uint64_t>();
    }
    meta[key] = std::move(v);
  }
  (void)have_alignment;
  if (p.pos() > kMaxHeaderBytes) return fail(p.Bad("the metadata is larger than 1 GiB"));

  std::vector<RawTensor> raw;
  raw.reserve(size_t(n_tensors));
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; i++) {
    RawTensor t;
    t.index = size_t(i);
    std::string_view name;
    GGUF_TRY(p.String("a tensor name", &name));
    t.name = std::string(name);
    if (t.name.empty()) return fail(p.Bad("tensor " + std::to_string(i) + " has an empty name"));
    // As for safetensors: a name is a C string in the C API, and the tables
    // that list names end each with a NUL.
    if (t.name.find('\0') != std::string::npos)
      return fail(p.Bad("tensor " + std::to_string(i) + "'s name " + Quote(t.name) +
                        " contains a NUL character"));
    if (!names.insert(t.name).second) return fail(p.Bad("duplicate tensor name " + Quote(t.name)));
    uint32_t nd;
    GGUF_TRY(p.Fixed("a tensor's dimension count", &nd));
    if (nd > kMaxDims)
      return fail(p.Bad("tensor " + Quote(t.name) + " has " + std::to_string(nd) +
                        " dimensions; GGUF allows at most " + std::to_string(kMaxDims)));
    t.dims.resize(nd);
    for (auto& d : t.dims) GGUF_TRY(p.Fixed("a tensor's dimension", &d));
    GGUF_TRY(p.Fixed("a tensor's type", &t.type));
    GGUF_TRY(p.Fixed("a tensor's offset", &t.offset));
    raw.push_back(std::move(t));
  }
  if (p.pos() > kMaxHeaderBytes) return fail(p.Bad("the header is larger than 1 GiB"));

  // The data section starts at the next multiple of the alignment. A file of
  // no tensors may end before that.
  h.data_offset = RoundUp(p.pos(), h.alignment);
  if (h.data_offset > file_size) {
    if (!raw.empty())
      return fail(p.Bad("the padding before the data section runs past the end of the file"));
    h.data_offset = file_size;
  }
  if (h.data_offset > prefix.size()) {
    if (truncated) *truncated = true;
    return Status::InvalidArgument("GGUF file " + std::string(what) +
                                   ": the header's padding is longer than the bytes read");
  }
  h.header_bytes = std::string(prefix.substr(0, size_t(h.data_offset)));
  h.data_size = file_size - h.data_offset;

  // Sizes, alignment, extents.
  std::vector<uint64_t> exact(raw.size());  // payload bytes for known types; UINT64_MAX unknown
  for (size_t i = 0; i < raw.size(); i++) {
    const RawTensor& t = raw[i];
    std::string tn = "tensor " + Quote(t.name);
    uint64_t elems = 1;
    for (uint64_t d : t.dims) {
      if (d > uint64_t(INT64_MAX)) return fail(p.Bad(tn + " has a dimension over 2^63"));
      if (MulOverflows(elems, d, &elems) || elems > uint64_t(INT64_MAX))
        return fail(p.Bad(tn + ": its element count overflows 64 bits"));
    }
    if (t.offset % h.alignment != 0)
      return fail(p.Bad(tn + " has offset " + std::to_string(t.offset) +
                        ", not a multiple of the alignment " + std::to_string(h.alignment)));
    if (t.offset > h.data_size)
      return fail(p.Bad(tn + " has offset " + std::to_string(t.offset) +
                        " past the end of the data section (" + std::to_string(h.data_size) +
                        " bytes)"));
    exact[i] = UINT64_MAX;
    if (auto ti = GgmlType(t.type)) {
      if (!t.dims.empty() && t.dims[0] % ti->block_elems != 0)
        return fail(p.Bad(tn + ": its first dimension " + std::to_string(t.dims[0]) +
                          " is not a multiple of the " + std::string(ti->name) + " block size " +
                          std::to_string(ti->block_elems)));
      if (t.dims.empty() && ti->block_elems != 1)
        return fail(p.Bad(tn + " is a scalar of the block type " + std::string(ti->name)));
      uint64_t bytes;
      if (MulOverflows(elems / ti->block_elems, ti->block_bytes, &bytes))
        return fail(p.Bad(tn + ": its byte size overflows 64 bits"));
      exact[i] = bytes;
    }
  }
  std::vector<size_t> order(raw.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (raw[a].offset != raw[b].offset) return raw[a].offset < raw[b].offset;
    // Empty tensors before the non-empty one at the same offset.
    return exact[a] == 0 && exact[b] != 0;
  });
  uint64_t pos = 0;  // end of the previous payload
  uint64_t filler = 0;
  for (size_t k = 0; k < order.size(); k++) {
    const RawTensor& t = raw[order[k]];
    std::string tn = "tensor " + Quote(t.name);
    if (t.offset < pos)
      return fail(p.Bad(tn + " at offset " + std::to_string(t.offset) +
                        " overlaps the tensor before it, which ends at " + std::to_string(pos)));
    uint64_t next = k + 1 < order.size() ? raw[order[k + 1]].offset : h.data_size;
    uint64_t extent = next - t.offset;
    TensorEntry e;
    e.name = t.name;
    e.ggml_type = t.type;
    e.dims = t.dims;
    e.offset = t.offset;
    if (exact[order[k]] == UINT64_MAX) {
      // An unknown type: its payload is everything up to the next tensor.
      if (k + 1 < order.size() && raw[order[k + 1]].offset == t.offset)
        return fail(p.Bad(tn + " of unknown " + GgmlTypeName(t.type) +
                          " shares its offset with tensor " + Quote(raw[order[k + 1]].name) +
                          ", so its extent cannot be known"));
      e.size = extent;
    } else {
      if (exact[order[k]] > extent)
        return fail(p.Bad(tn + " (" + GgmlTypeName(t.type) + ", " +
                          std::to_string(exact[order[k]]) + " bytes at offset " +
                          std::to_string(t.offset) + ") " +
                          (k + 1 < order.size() ? "overlaps tensor " + Quote(raw[order[k + 1]].name)
                                                : std::string("runs past the end of the file"))));
      e.size = exact[order[k]];
    }
    filler += t.offset - pos;
    pos = t.offset + e.size;
    h.tensors.push_back(std::move(e));
  }
  filler += h.data_size - pos;
  if (filler > kMaxFillerBytes)
    return fail(p.Bad("the data section holds " + std::to_string(filler) +
                      " bytes that belong to no tensor (more than " +
                      std::to_string(kMaxFillerBytes >> 20) + " MiB of padding)"));
  if (prefix.size() >= file_size) {
    uint64_t at = 0;
    auto take = [&](uint64_t from, uint64_t to) {
      h.filler.append(prefix.substr(size_t(h.data_offset + from), size_t(to - from)));
    };
    for (const auto& e : h.tensors) {
      take(at, e.offset);
      at = e.offset + e.size;
    }
    take(at, h.data_size);
  }
  try {
    h.metadata_json = meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const std::exception& ex) {
    return fail(p.Bad(std::string("the metadata cannot be shown as JSON: ") + ex.what()));
  }
#undef GGUF_TRY
  return h;
}

bool HasMagic(const std::string& path) {
  // Only a regular file is looked into: opening a FIFO would block.
  auto fd = OpenRegularFile(path);
  char buf[4];
  return fd.ok() && ::pread(fd->get(), buf, 4, 0) == 4 && std::memcmp(buf, kMagic, 4) == 0;
}

Result<FileHeader> ReadFile(const std::string& path) {
  auto opened = OpenRegularFile(path);
  if (!opened.ok()) {
    if (opened.status().IsNotFound())
      return Status::NotFound("cannot import " + path + ": no such file");
    return opened.status();
  }
  UniqueFd fd = std::move(opened).value();
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  uint64_t size = uint64_t(st.st_size);
  std::string buf;
  uint64_t want = std::min<uint64_t>(size, 1u << 20);
  for (;;) {
    buf.resize(size_t(want));
    PSTORE_RETURN_IF_ERROR(PreadFull(fd.get(), buf.data(), buf.size(), 0, path));
    bool truncated = false;
    auto h = ParseHeader(buf, size, path, &truncated);
    if (h.ok() || !truncated || want >= size) {
      if (!h.ok()) return h.status();
      if (h->filler.empty() && want < size) {
        // Read the padding between tensors from the file.
        uint64_t at = 0;
        auto take = [&](uint64_t from, uint64_t to) -> Status {
          if (to == from) return Status::OK();
          size_t old = h->filler.size();
          h->filler.resize(old + size_t(to - from));
          return PreadFull(fd.get(), h->filler.data() + old, size_t(to - from),
                           h->data_offset + from, path);
        };
        for (const auto& e : h->tensors) {
          PSTORE_RETURN_IF_ERROR(take(at, e.offset));
          at = e.offset + e.size;
        }
        PSTORE_RETURN_IF_ERROR(take(at, h->data_size));
      }
      return h;
    }
    want = std::min<uint64_t>(size, std::max<uint64_t>(want * 4, 1));
    if (want > kMaxHeaderBytes + (1u << 20))
      want = std::min<uint64_t>(size, kMaxHeaderBytes + (1u << 20));
  }
}

std::optional<std::vector<std::string>> SplitSiblings(const std::string& path) {
  // NAME-NNNNN-of-NNNNN.gguf, five digits each.
  static constexpr std::string_view kOf = "-of-", kExt = ".gguf";
  constexpr size_t kSuffix = 1 + 5 + kOf.size() + 5 + kExt.size();
  std::string file = fs::path(path).filename().string();
  if (file.size() < kSuffix) return std::nullopt;
  std::string_view tail = std::string_view(file).substr(file.size() - kSuffix);
  auto digits = [](std::string_view d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (tail[0] != '-' || !digits(tail.substr(1, 5)) || tail.substr(6, kOf.size()) != kOf ||
      !digits(tail.substr(6 + kOf.size(), 5)) || tail.substr(11 + kOf.size()) != kExt)
    return std::nullopt;
  std::string base = file.substr(0, file.size() - kSuffix);
  int count = std::stoi(std::string(tail.substr(6 + kOf.size(), 5)));
  if (count < 1) return std::nullopt;
  std::vector<std::string> out;
  fs::path dir = fs::path(path).parent_path();
  for (int i = 1; i <= count; i++) {
    char name[32];
    std::snprintf(name, sizeof(name), "-%05d-of-%05d.gguf", i, count);
    out.push_back((dir / (base + name)).string());
  }
  return out;
}

Status WriteFile(const std::string& path, const FileHeader& header,
                 const std::function<Status(size_t index, const ByteSink& sink)>& emit_tensor) {
  // Through the Env, which hands the data to the disk as it is written, so
  // that the sync before the rename waits for the tail only (common/env.h).
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file,
                          AtomicFileWriter::Create(Env::Default(), path, 0666));
  auto append = [&](const void* data, size_t n) { return file->Append(data, n); };

  PSTORE_RETURN_IF_ERROR(append(header.header_bytes.data(), header.header_bytes.size()));
  uint64_t at = 0, filler_at = 0;
  auto pad = [&](uint64_t to) -> Status {
    uint64_t n = to - at;
    if (to < at || filler_at + n > header.filler.size())
      return Status::Internal("writing " + path + ": the padding does not match the offsets");
    PSTORE_RETURN_IF_ERROR(append(header.filler.data() + filler_at, size_t(n)));
    filler_at += n;
    at = to;
    return Status::OK();
  };
  for (size_t i = 0; i < header.tensors.size(); i++) {
    const TensorEntry& t = header.tensors[i];
    PSTORE_RETURN_IF_ERROR(pad(t.offset));
    uint64_t got = 0;
    ByteSink sink = [&](const uint8_t* data, size_t n) -> Status {
      got += n;
      if (got > t.size)
        return Status::Internal("tensor " + Quote(t.name) + " has " + std::to_string(t.size) +
                                " bytes but more were emitted");
      return append(data, n);
    };
    Status s = emit_tensor(i, sink);
    if (!s.ok()) return s.WithContext("writing tensor " + Quote(t.name) + " to " + path);
    if (got != t.size)
      return Status::Internal("writing " + path + ": tensor " + Quote(t.name) + " has " +
                              std::to_string(t.size) + " bytes but " + std::to_string(got) +
                              " were emitted");
    at += t.size;
  }
  PSTORE_RETURN_IF_ERROR(pad(header.data_size));
  if (filler_at != header.filler.size())
    return Status::Internal("writing " + path + ": padding bytes left over");
  return file->Commit();  // a failed export leaves no file
}

}  // namespace pstore::gguf
