#include "store/formats/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/coding.h"
#include "common/env.h"
#include "common/file_util.h"

namespace pstore::safetensors {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kLengthBytes = 8;  // the little-endian header length prefix
constexpr std::string_view kMetadataKey = "__metadata__";
// ReadSharded refuses index files larger than this.
constexpr uint64_t kMaxIndexBytes = kMaxHeaderBytes;

// Length of the well-formed UTF-8 sequence at the start of s (1 to 4), or 0.
size_t Utf8Length(std::string_view s) {
  auto at = [&](size_t i) { return i < s.size() ? uint8_t(s[i]) : uint8_t(0); };
  auto cont = [&](size_t i, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
    return at(i) >= lo && at(i) <= hi;
  };
  uint8_t b = at(0);
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return cont(1) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    uint8_t lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;  // no overlongs, surrogates
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    uint8_t lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// Control bytes, DEL and bytes that are not well-formed UTF-8 as \xNN, so a
// message stays one printable line of valid UTF-8 whatever the file held.
std::string EscapeControl(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    auto b = uint8_t(s[i]);
    size_t len = Utf8Length(s.substr(i));
    if (len == 0 || b < 0x20 || b == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", b);
      out += buf;
      i++;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

// A name as an error message shows it: quoted, escaped, long ones cut short.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  bool cut = s.size() > kMaxShown;
  if (cut) {
    size_t n = kMaxShown;
    while (n > 0 && (uint8_t(s[n]) & 0xC0) == 0x80) n--;  // keep UTF-8 sequences whole
    s = s.substr(0, n);
  }
  return "'" + EscapeControl(s) + (cut ? "'..." : "'");
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string OffsetsString(const TensorEntry& t) {
  return "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
}

Status Invalid(std::string_view what, std::string_view msg) {
  std::string m(what);
  m += ": ";
  m += msg;
  return Status::InvalidArgument(m);
}

// The rules every name (tensor name, weight_map key) must follow; "" if it does.
std::string CheckName(std::string_view name) {
  if (name.empty()) return "empty tensor name";
  if (name.size() > kMaxNameBytes)
    return "tensor name " + Quote(name) + " is " + std::to_string(name.size()) +
           " bytes, longer than the limit of " + std::to_string(kMaxNameBytes);
  if (name.find('\0') != std::string_view::npos)
    return "tensor name " + Quote(name) + " contains a NUL character";
  return "";
}

// Checks the 8-byte length prefix at the start of `prefix` against the limits
// and the file's size; returns the header length N.
Result<uint64_t> CheckHeaderLength(std::string_view prefix, uint64_t file_size,
                                   std::string_view what) {
  if (file_size < kLengthBytes)
    return Invalid(what, "file is " + std::to_string(file_size) +
                             " bytes, shorter than the 8-byte header length");
  if (prefix.size() < kLengthBytes)
    return Invalid(what, "caller passed " + std::to_string(prefix.size()) +
                             " bytes, fewer than the 8-byte header length");
  uint64_t n = LoadLE64(reinterpret_cast<const uint8_t*>(prefix.data()));
  if (n == 0) return Invalid(what, "header length is 0 (the header must be a JSON object)");
  if (n > kMaxHeaderBytes)
    return Invalid(what, "header length " + std::to_string(n) + " exceeds the limit of " +
                             std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > file_size - kLengthBytes)
    return Invalid(what, "header length " + std::to_string(n) + " runs past the end of the file (" +
                             std::to_string(file_size) + " bytes)");
  return n;
}

// SAX handler (the nlohmann::json_sax interface) that checks a safetensors
// header while it is parsed and collects its tensors, without building a DOM.
// It stops the parse at the first rule broken (each event returns false after
// recording error()), so it sees duplicate keys, which a DOM would merge.
class HeaderSax {
 public:
  HeaderSax(std::string_view what, uint64_t data_size) : what_(what), data_size_(data_size) {}

  const std::string& error() const { return error_; }
  std::vector<TensorEntry>& tensors() { return tensors_; }
  std::string& metadata_json() { return metadata_json_; }

  bool null() { return Unexpected("null"); }
  bool boolean(bool) { return Unexpected("a boolean"); }
  bool number_integer(Json::number_integer_t v) {
    // nlohmann reports every non-negative integer as unsigned: this one is negative.
    if (!InArray()) return Unexpected("a number");
    return Fail(ElementName() + " must not be negative, found " +
                (v == 0 ? std::string("-0") : std::to_string(v)));
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    if (!InArray()) return Unexpected("a number");
    return PushElement(v);
  }
  bool number_float(Json::number_float_t, const std::string& token) {
    if (!InArray()) return Unexpected("a number");
    bool integral = token.find_first_of(".eE") == std::string::npos;
    if (integral && !token.empty() && token[0] == '-')
      return Fail(ElementName() + " must not be negative, found " + token);
    if (integral) return Fail(ElementName() + " " + token + " does not fit in 64 bits");
    return Fail(ElementName() + " must be an integer, found " + token);
  }
  bool string(std::string& s) {
    if (stack_.empty()) return Unexpected("a string");
    if (stack_.back() == Frame::kMetadata) {
      if (!first_metadata_key_) metadata_json_ += ',';
      first_metadata_key_ = false;
      metadata_json_ += Json(metadata_key_).dump();
      metadata_json_ += ':';
      metadata_json_ += Json(s).dump();
      return true;
    }
    if (stack_.back() == Frame::kTensor && field_ == Field::kDtype) {
      std::optional<DType> dt = DTypeFromName(s);
      if (!dt) return Fail(TensorName() + ": unknown dtype " + Quote(s));
      cur_.dtype = *dt;
      return true;
    }
    return Unexpected("a string");
  }
  bool binary(Json::binary_t&) { return Unexpected("binary data"); }

  bool start_object(size_t) {
    if (stack_.empty()) {
      stack_.push_back(Frame::kRoot);
      return true;
    }
    if (stack_.back() != Frame::kRoot) return Unexpected("an object");
    if (root_key_ == kMetadataKey) {
      metadata_json_ = "{";
      first_metadata_key_ = true;
      metadata_keys_.clear();
      stack_.push_back(Frame::kMetadata);
      return true;
    }
    cur_ = TensorEntry{};
    cur_.name = root_key_;
    has_dtype_ = has_shape_ = has_offsets_ = false;
    offsets_.clear();
    field_ = Field::kNone;
    stack_.push_back(Frame::kTensor);
    return true;
  }

  bool key(std::string& k) {
    switch (stack_.back()) {
      case Frame::kRoot: {
        if (k != kMetadataKey) {
          std::string bad = CheckName(k);
          if (!bad.empty()) return Fail(bad);
          if (tensors_.size() >= kMaxTensors)
            return Fail("more than " + std::to_string(kMaxTensors) + " tensors");
        }
        if (!root_keys_.insert(k).second)
          return Fail(k == kMetadataKey ? std::string("duplicate __metadata__ entry")
                                        : "duplicate tensor name " + Quote(k));
        root_key_ = std::move(k);
        return true;
      }
      case Frame::kMetadata:
        if (!metadata_keys_.insert(k).second)
          return Fail("__metadata__ has the key " + Quote(k) + " twice");
        metadata_key_ = std::move(k);
        return true;
      case Frame::kTensor: {
        bool* seen = nullptr;
        if (k == "dtype") {
          field_ = Field::kDtype;
          seen = &has_dtype_;
        } else if (k == "shape") {
          field_ = Field::kShape;
          seen = &has_shape_;
        } else if (k == "data_offsets") {
          field_ = Field::kOffsets;
          seen = &has_offsets_;
        } else {
          return Fail(TensorName() + ": unknown field " + Quote(k) +
                      " (allowed: dtype, shape, data_offsets)");
        }
        if (*seen) return Fail(TensorName() + ": field " + Quote(k) + " appears twice");
        *seen = true;
        return true;
      }
      default:
        return Fail("internal: key inside an array");
    }
  }

  bool end_object() {
    Frame f = stack_.back();
    stack_.pop_back();
    if (f == Frame::kMetadata) metadata_json_ += '}';
    if (f == Frame::kTensor) return FinishTensor();
    return true;
  }

  bool start_array(size_t) {
    if (!stack_.empty() && stack_.back() == Frame::kTensor) {
      if (field_ == Field::kShape) {
        stack_.push_back(Frame::kShape);
        return true;
      }
      if (field_ == Field::kOffsets) {
        stack_.push_back(Frame::kOffsets);
        return true;
      }
    }
    return Unexpected("an array");
  }

  bool end_array() {
    Frame f = stack_.back();
    stack_.pop_back();
    if (f == Frame::kOffsets && offsets_.size() != 2)
      return Fail(TensorName() + ": data_offsets must hold exactly 2 integers, found " +
                  std::to_string(offsets_.size()));
    return true;
  }

  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& ex) {
    return Fail("header is not valid JSON: " + EscapeControl(ex.what()));
  }

 private:
  enum class Frame : uint8_t { kRoot, kMetadata, kTensor, kShape, kOffsets };
  enum class Field : uint8_t { kNone, kDtype, kShape, kOffsets };

  bool Fail(std::string msg) {
    if (error_.empty()) error_ = std::string(what_) + ": " + msg;
    return false;
  }
  bool InArray() const {
    return !stack_.empty() && (stack_.back() == Frame::kShape || stack_.back() == Frame::kOffsets);
  }
  std::string TensorName() const { return "tensor " + Quote(cur_.name); }
  // "tensor 'x': shape[2]", for the array element about to be read.
  std::string ElementName() const {
    if (stack_.back() == Frame::kShape)
      return TensorName() + ": shape[" + std::to_string(cur_.shape.size()) + "]";
    return TensorName() + ": data_offsets[" + std::to_string(offsets_.size()) + "]";
  }

  // A value of the wrong kind where the current position expects another.
  bool Unexpected(const std::string& kind) {
    if (stack_.empty()) return Fail("header must be a JSON object, found " + kind);
    switch (stack_.back()) {
      case Frame::kRoot:
        if (root_key_ == kMetadataKey)
          return Fail("__metadata__ must be an object of strings, found " + kind);
        return Fail("tensor " + Quote(root_key_) +
                    " must be an object with dtype, shape and data_offsets, found " + kind);
      case Frame::kMetadata:
        return Fail("__metadata__ value of key " + Quote(metadata_key_) +
                    " must be a string, found " + kind);
      case Frame::kTensor:
        switch (field_) {
          case Field::kDtype:
            return Fail(TensorName() + ": dtype must be a string, found " + kind);
          case Field::kShape:
            return Fail(TensorName() + ": shape must be an array, found " + kind);
          default:
            return Fail(TensorName() + ": data_offsets must be an array, found " + kind);
        }
      case Frame::kShape:
      case Frame::kOffsets:
        return Fail(ElementName() + " must be a non-negative integer, found " + kind);
    }
    return Fail("internal: unexpected " + kind);
  }

  bool PushElement(uint64_t v) {
    if (stack_.back() == Frame::kShape) {
      if (cur_.shape.size() >= kMaxRank)
        return Fail(TensorName() + ": shape has more than " + std::to_string(kMaxRank) +
                    " dimensions");
      cur_.shape.push_back(v);
      return true;
    }
    if (offsets_.size() >= 2)
      return Fail(TensorName() + ": data_offsets must hold exactly 2 integers, found more");
    offsets_.push_back(v);
    return true;
  }

  // Checks one complete tensor entry on its own and against the data section.
  bool FinishTensor() {
    if (!has_dtype_) return Fail(TensorName() + ": missing field 'dtype'");
    if (!has_shape_) return Fail(TensorName() + ": missing field 'shape'");
    if (!has_offsets_) return Fail(TensorName() + ": missing field 'data_offsets'");
    cur_.begin = offsets_[0];
    cur_.end = offsets_[1];
    if (cur_.begin > cur_.end)
      return Fail(TensorName() + ": data_offsets " + OffsetsString(cur_) + " begin after they end");
    // Multiplied left to right and refused on the first overflow, as the
    // reference implementation does, even if a later dimension is 0.
    uint64_t bytes = 1;
    for (uint64_t d : cur_.shape) {
      if (__builtin_mul_overflow(bytes, d, &bytes))
        return Fail(TensorName() + ": element count of shape " + ShapeString(cur_.shape) +
                    " overflows 64 bits");
    }
    uint64_t width = DTypeSize(cur_.dtype);
    if (__builtin_mul_overflow(bytes, width, &bytes))
      return Fail(TensorName() + ": byte size of shape " + ShapeString(cur_.shape) + " x " +
                  std::string(DTypeName(cur_.dtype)) + " overflows 64 bits");
    if (bytes != cur_.size())
      return Fail(TensorName() + ": shape " + ShapeString(cur_.shape) + " of " +
                  std::string(DTypeName(cur_.dtype)) + " takes " + std::to_string(bytes) +
                  " bytes but data_offsets " + OffsetsString(cur_) + " span " +
                  std::to_string(cur_.size()));
    if (cur_.end > data_size_)
      return Fail(TensorName() + ": data_offsets " + OffsetsString(cur_) +
                  " run past the end of the data section (" + std::to_string(data_size_) +
                  " bytes)");
    tensors_.push_back(std::move(cur_));
    return true;
  }

  std::string_view what_;
  uint64_t data_size_;
  std::string error_;
  std::vector<Frame> stack_;  // open containers, outermost first (never deeper than 3)

  std::string root_key_;  // key of the root entry being read: a tensor name or __metadata__
  std::unordered_set<std::string> root_keys_;
  std::vector<TensorEntry> tensors_;  // in header order

  // The tensor being read.
  TensorEntry cur_;
  Field field_ = Field::kNone;
  bool has_dtype_ = false, has_shape_ = false, has_offsets_ = false;
  std::vector<uint64_t> offsets_;

  std::string metadata_key_;
  std::unordered_set<std::string> metadata_keys_;
  std::string metadata_json_;
  bool first_metadata_key_ = true;
};

// SAX handler for model.safetensors.index.json: collects weight_map in file
// order, refusing duplicate keys there and at the top level. The values of
// other top-level keys ("metadata" and any other) are skipped unread.
class IndexSax {
 public:
  explicit IndexSax(std::string_view what) : what_(what) {}

  const std::string& error() const { return error_; }
  bool has_weight_map() const { return has_weight_map_; }
  std::vector<std::pair<std::string, std::string>>& weight_map() { return weight_map_; }

  bool null() { return Scalar("null"); }
  bool boolean(bool) { return Scalar("a boolean"); }
  bool number_integer(Json::number_integer_t) { return Scalar("a number"); }
  bool number_unsigned(Json::number_unsigned_t) { return Scalar("a number"); }
  bool number_float(Json::number_float_t, const std::string&) { return Scalar("a number"); }
  bool binary(Json::binary_t&) { return Scalar("binary data"); }
  bool string(std::string& s) {
    if (skip_depth_ == 0 && !stack_.empty() && stack_.back() == Frame::kWeightMap) {
      weight_map_.emplace_back(std::move(tensor_), std::move(s));
      return true;
    }
    return Scalar("a string");
  }

  bool start_object(size_t) {
    if (StartSkipped()) return true;
    if (stack_.empty()) {
      stack_.push_back(Frame::kRoot);
      return true;
    }
    if (stack_.back() == Frame::kRoot) {  // the value of weight_map
      has_weight_map_ = true;
      stack_.push_back(Frame::kWeightMap);
      return true;
    }
    return Unexpected("an object");
  }
  bool start_array(size_t) {
    if (StartSkipped()) return true;
    return Unexpected("an array");
  }
  bool end_object() { return End(); }
  bool end_array() { return End(); }

  bool key(std::string& k) {
    if (skip_depth_ > 0) return true;
    if (stack_.back() == Frame::kRoot) {
      if (!root_keys_.insert(k).second) return Fail("key " + Quote(k) + " appears twice");
      skip_next_ = k != "weight_map";
      return true;
    }
    std::string bad = CheckName(k);
    if (!bad.empty()) return Fail("weight_map: " + bad);
    if (!tensors_.insert(k).second) return Fail("weight_map lists tensor " + Quote(k) + " twice");
    tensor_ = std::move(k);
    return true;
  }

  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& ex) {
    return Fail("index is not valid JSON: " + EscapeControl(ex.what()));
  }

 private:
  enum class Frame : uint8_t { kRoot, kWeightMap };

  bool Fail(std::string msg) {
    if (error_.empty()) error_ = std::string(what_) + ": " + msg;
    return false;
  }
  // Enters a container that is skipped (or one nested in a skipped one).
  bool StartSkipped() {
    if (skip_depth_ > 0 || (skip_next_ && stack_.size() == 1)) {
      skip_next_ = false;
      skip_depth_++;
      return true;
    }
    return false;
  }
  bool End() {
    if (skip_depth_ > 0) {
      skip_depth_--;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool Scalar(const std::string& kind) {
    if (skip_depth_ > 0) return true;
    if (skip_next_ && stack_.size() == 1) {
      skip_next_ = false;
      return true;
    }
    return Unexpected(kind);
  }
  bool Unexpected(const std::string& kind) {
    if (stack_.empty()) return Fail("index must be a JSON object, found " + kind);
    if (stack_.back() == Frame::kRoot)
      return Fail("weight_map must be an object of tensor name to shard file name, found " + kind);
    return Fail("weight_map value of tensor " + Quote(tensor_) +
                " must be a shard file name string, found " + kind);
  }

  std::string_view what_;
  std::string error_;
  std::vector<Frame> stack_;
  size_t skip_depth_ = 0;   // > 0 inside a skipped value
  bool skip_next_ = false;  // the next top-level value is skipped
  bool has_weight_map_ = false;
  std::unordered_set<std::string> root_keys_;
  std::unordered_set<std::string> tensors_;
  std::string tensor_;  // the weight_map key whose value comes next
  std::vector<std::pair<std::string, std::string>> weight_map_;
};

// Runs a SAX handler over text; exceptions (allocation failure) become a Status.
// `base` is the offset of text in its file, for messages.
template <typename Sax>
Status RunSax(std::string_view text, uint64_t base, Sax* sax, std::string_view what) {
  // nlohmann's lexer takes a NUL byte for the end of the input and ignores
  // what follows; JSON text can hold none.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos)
    return Invalid(what, "JSON holds a NUL byte at offset " + std::to_string(base + nul) +
                             " (padding must be spaces)");
  bool ok;
  try {
    ok = Json::sax_parse(text.data(), text.data() + text.size(), sax);
  } catch (const std::exception& e) {
    return Invalid(what, std::string("cannot parse JSON: ") + e.what());
  }
  if (ok) return Status::OK();
  if (sax->error().empty()) return Invalid(what, "invalid JSON");
  return Status::InvalidArgument(sax->error());
}

// "" if name is a plain file name in the index's directory; else the rule broken.
std::string CheckShardName(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name == "." || name == "..") return "is not a file name";
  if (name.find('/') != std::string_view::npos)
    return "contains '/' (shards must be plain file "
           "names in the index's directory)";
  if (name.find('\0') != std::string_view::npos) return "contains a NUL character";
  return "";
}

// Reads a small file whole, refusing more than max_bytes.
Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes, Env* env) {
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, env->OpenForRead(path));
  if (!file->regular()) return Invalid(path, "not a regular file");
  if (file->size() > max_bytes)
    return Invalid(path, std::to_string(file->size()) + " bytes, more than the limit of " +
                             std::to_string(max_bytes));
  std::string out(size_t(file->size()), '\0');
  PSTORE_RETURN_IF_ERROR(file->Read(0, out.size(), out.data()));
  return out;
}

// Checks that a FileHeader describes a file WriteFile can lay out: the header
// bytes are data_offset long and the tensors tile the data section in order.
// Always true of what ParseHeader returns.
Status CheckLayout(const FileHeader& h, std::string_view what) {
  if (h.header_bytes.size() <= kLengthBytes || h.header_bytes.size() != h.data_offset)
    return Invalid(what, "header_bytes (" + std::to_string(h.header_bytes.size()) +
                             " bytes) do not match data_offset " + std::to_string(h.data_offset));
  uint64_t at = 0;
  for (const TensorEntry& t : h.tensors) {
    if (t.begin != at || t.end < t.begin)
      return Invalid(what, "tensor " + Quote(t.name) + " at " + OffsetsString(t) +
                               " does not follow the previous tensor, which ends at " +
                               std::to_string(at));
    at = t.end;
  }
  if (at != h.data_size)
    return Invalid(what, "tensors cover " + std::to_string(at) + " bytes but data_size is " +
                             std::to_string(h.data_size));
  return Status::OK();
}

}  // namespace

Result<FileHeader> ParseHeader(std::string_view prefix, uint64_t file_size, std::string_view what) {
  PSTORE_ASSIGN_OR_RETURN(uint64_t header_len, CheckHeaderLength(prefix, file_size, what));
  if (prefix.size() < kLengthBytes + header_len)
    return Invalid(what, "caller passed " + std::to_string(prefix.size()) +
                             " bytes, fewer than the header's " +
                             std::to_string(kLengthBytes + header_len));
  std::string_view json = prefix.substr(kLengthBytes, header_len);
  // JSON allows leading whitespace, safetensors does not; trailing whitespace
  // (the padding writers use to align the data section) the parser skips.
  if (json[0] == ' ' || json[0] == '\t' || json[0] == '\n' || json[0] == '\r')
    return Invalid(what, "header starts with whitespace (only trailing padding is allowed)");

  FileHeader h;
  h.data_offset = kLengthBytes + header_len;
  h.data_size = file_size - h.data_offset;
  HeaderSax sax(what, h.data_size);
  PSTORE_RETURN_IF_ERROR(RunSax(json, kLengthBytes, &sax, what));

  // Data order: by begin, then end (an empty tensor before a non-empty one at
  // the same offset), then header order.
  std::vector<TensorEntry>& tensors = sax.tensors();
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors must tile the data section: no overlap, no gap, nothing after.
  uint64_t at = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry& t : tensors) {
    if (t.begin < at)
      return Invalid(what, "tensor " + Quote(prev->name) + " at " + OffsetsString(*prev) +
                               " and tensor " + Quote(t.name) + " at " + OffsetsString(t) +
                               " overlap");
    if (t.begin > at) {
      if (prev == nullptr)
        return Invalid(what, "gap: the data section starts with " + std::to_string(t.begin) +
                                 " bytes no tensor covers (first tensor " + Quote(t.name) +
                                 " begins at " + std::to_string(t.begin) + ")");
      return Invalid(what, "gap: " + std::to_string(t.begin - at) + " bytes between tensor " +
                               Quote(prev->name) + " (ends at " + std::to_string(at) +
                               ") and tensor " + Quote(t.name) + " (begins at " +
                               std::to_string(t.begin) + ") belong to no tensor");
    }
    at = t.end;
    prev = &t;
  }
  if (at != h.data_size) {
    if (prev == nullptr)
      return Invalid(what,
                     "trailing bytes: the header lists no tensors but the data section holds " +
                         std::to_string(h.data_size) + " bytes");
    return Invalid(what, "trailing bytes: " + std::to_string(h.data_size - at) +
                             " bytes after the last tensor " + Quote(prev->name) + " (ends at " +
                             std::to_string(at) + ") belong to no tensor");
  }

  h.header_bytes.assign(prefix.data(), h.data_offset);
  h.tensors = std::move(tensors);
  h.metadata_json = std::move(sax.metadata_json());
  return h;
}

Result<FileHeader> ReadHeader(const std::string& path, Env* env) {
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, env->OpenForRead(path));
  if (!file->regular()) return Invalid(path, "not a regular file");
  auto file_size = file->size();

  std::string buf(size_t(std::min(file_size, kLengthBytes)), '\0');
  PSTORE_RETURN_IF_ERROR(file->Read(0, buf.size(), buf.data()));
  // The length is checked against the file before anything is allocated for it.
  PSTORE_ASSIGN_OR_RETURN(uint64_t header_len, CheckHeaderLength(buf, file_size, path));
  buf.resize(size_t(kLengthBytes + header_len));
  PSTORE_RETURN_IF_ERROR(file->Read(kLengthBytes, size_t(header_len), buf.data() + kLengthBytes));
  return ParseHeader(buf, file_size, path);
}

Result<ShardedModel> ReadSharded(const std::string& dir, const std::string& index_file_name,
                                 Env* env) {
  const std::filesystem::path base(dir.empty() ? "." : dir);
  const std::string index_path = (base / index_file_name).string();
  ShardedModel model;
  model.index_file_name = index_file_name;
  PSTORE_ASSIGN_OR_RETURN(model.index_bytes, ReadSmallFile(index_path, kMaxIndexBytes, env));

  IndexSax sax(index_path);
  PSTORE_RETURN_IF_ERROR(RunSax(model.index_bytes, 0, &sax, index_path));
  if (!sax.has_weight_map()) return Invalid(index_path, "no weight_map");

  // Shards in sorted order of file name, so the result does not depend on the
  // order of the index's keys.
  std::map<std::string, std::string> first_tensor;  // shard -> a tensor assigned to it
  std::unordered_map<std::string_view, std::string_view> assigned;  // tensor -> shard
  for (const auto& [tensor, shard] : sax.weight_map()) {
    std::string bad = CheckShardName(shard);
    if (!bad.empty())
      return Invalid(index_path, "weight_map names shard " + Quote(shard) + " for tensor " +
                                     Quote(tensor) + ", which " + bad);
    first_tensor.emplace(shard, tensor);
    if (first_tensor.size() > kMaxShards)
      return Invalid(index_path, "more than " + std::to_string(kMaxShards) + " shards");
    assigned.emplace(tensor, shard);
  }

  for (const auto& [shard, tensor] : first_tensor) {
    std::string path = (base / shard).string();
    Result<FileHeader> h = ReadHeader(path, env);
    if (!h.ok()) {
      if (h.status().IsNotFound())
        return Invalid(index_path, "shard " + Quote(shard) + " (of tensor " + Quote(tensor) +
                                       ") is missing: " + h.status().message());
      return h.status();
    }
    model.shard_names.push_back(shard);
    model.shards.push_back(std::move(h).value());
  }

  // Each tensor in exactly one shard, the one the index names.
  std::unordered_map<std::string_view, size_t> found;  // tensor -> index in shards
  for (size_t i = 0; i < model.shards.size(); i++) {
    for (const TensorEntry& t : model.shards[i].tensors) {
      auto [it, inserted] = found.emplace(t.name, i);
      if (!inserted)
        return Invalid(index_path, "tensor " + Quote(t.name) + " is in both shard " +
                                       Quote(model.shard_names[it->second]) + " and shard " +
                                       Quote(model.shard_names[i]));
      if (assigned.find(t.name) == assigned.end())
        return Invalid(index_path, "shard " + Quote(model.shard_names[i]) + " holds tensor " +
                                       Quote(t.name) + ", which weight_map does not list");
    }
  }
  for (const auto& [tensor, shard] : sax.weight_map()) {
    auto it = found.find(tensor);
    if (it == found.end())
      return Invalid(index_path, "weight_map puts tensor " + Quote(tensor) + " in shard " +
                                     Quote(shard) + ", but no shard holds it");
    const std::string& actual = model.shard_names[it->second];
    if (actual != shard)
      return Invalid(index_path, "weight_map puts tensor " + Quote(tensor) + " in shard " +
                                     Quote(shard) + ", but it is in shard " + Quote(actual));
  }
  return model;
}

Status WriteFile(const std::string& path, const FileHeader& header,
                 const std::function<Status(size_t index, const ByteSink& sink)>& emit_tensor,
                 Env* env) {
  PSTORE_RETURN_IF_ERROR(CheckLayout(header, path));
  if (!emit_tensor && !header.tensors.empty())
    return Status::InvalidArgument("WriteFile " + path + ": no emit_tensor function");

  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file,
                          AtomicFileWriter::Create(env, path, 0666));
  AtomicFileWriter& out = *file;
  PSTORE_RETURN_IF_ERROR(out.Append(header.header_bytes.data(), header.header_bytes.size()));
  for (size_t i = 0; i < header.tensors.size(); i++) {
    const TensorEntry& t = header.tensors[i];
    uint64_t got = 0;
    ByteSink sink = [&out, &got, &t](const uint8_t* data, size_t n) -> Status {
      got += n;
      if (got > t.size())
        return Status::Internal("tensor " + Quote(t.name) + " has " + std::to_string(t.size()) +
                                " bytes but more were emitted");
      return out.Append(data, n);
    };
    Status s = emit_tensor(i, sink);
    if (!s.ok()) return s.WithContext("writing tensor " + Quote(t.name) + " to " + path);
    if (got != t.size())
      return Status::Internal("writing " + path + ": tensor " + Quote(t.name) + " has " +
                              std::to_string(t.size()) + " bytes but " + std::to_string(got) +
                              " were emitted");
  }
  return out.Commit();  // a failed export leaves no file
}

}  // namespace pstore::safetensors
