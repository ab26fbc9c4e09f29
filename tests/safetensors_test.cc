#include "store/formats/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/coding.h"
#include "common/file_util.h"

namespace pstore::safetensors {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

// A fresh directory under TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "safetensors_test.XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() { (void)RemoveTree(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Le64(uint64_t v) {
  std::string s;
  PutFixed64(&s, v);
  return s;
}

// A safetensors file: length prefix, header JSON, `pad` spaces, then data.
std::string File(const std::string& json, const std::string& data = "", size_t pad = 0) {
  std::string header = json + std::string(pad, ' ');
  return Le64(header.size()) + header + data;
}

// One header entry: "name":{"dtype":...,"shape":[...],"data_offsets":[b,e]}.
std::string T(const std::string& name, const std::string& dtype, const std::string& shape,
              uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

std::string Bytes(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = char(uint8_t(seed + i * 7));
  return s;
}

// Copies the data section of `src` through WriteFile, in pieces of `piece` bytes.
Status Export(const std::string& src, const FileHeader& h, const std::string& dst,
              size_t piece = 3) {
  std::string file = ReadBytes(src);
  return WriteFile(dst, h, [&](size_t i, const ByteSink& sink) -> Status {
    const TensorEntry& t = h.tensors[i];
    const char* p = file.data() + h.data_offset + t.begin;
    for (uint64_t off = 0; off < t.size(); off += piece) {
      size_t n = size_t(std::min<uint64_t>(piece, t.size() - off));
      PSTORE_RETURN_IF_ERROR(sink(reinterpret_cast<const uint8_t*>(p + off), n));
    }
    return Status::OK();
  });
}

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------- valid files

TEST(Safetensors, PaddedHeaderWithMetadataRoundTripsByteForByte) {
  TempDir dir;
  // Header order differs from data order; the header is padded with spaces.
  std::string json = "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"a \\\"q\\\"\"}, " +
                     T("b", "F32", "[2, 3]", 4, 28) + ", " + T("a", "BF16", "[2]", 0, 4) + "," +
                     T("c", "U8", "[5]", 28, 33) + "," + T("s", "F64", "[]", 33, 41) + "}";
  std::string content = File(json, Bytes(41, 9), /*pad=*/13);
  std::string src = dir / "model.safetensors";
  WriteBytes(src, content);

  Result<FileHeader> h = ReadHeader(src);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->data_offset, 8 + json.size() + 13);
  EXPECT_EQ(h->data_size, 41u);
  EXPECT_EQ(h->header_bytes, content.substr(0, h->data_offset));
  EXPECT_EQ(h->metadata_json, "{\"format\":\"pt\",\"note\":\"a \\\"q\\\"\"}");
  ASSERT_EQ(h->tensors.size(), 4u);
  EXPECT_EQ(h->tensors[0].name, "a");
  EXPECT_EQ(h->tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(h->tensors[1].begin, 4u);
  EXPECT_EQ(h->tensors[1].end, 28u);
  EXPECT_EQ(h->tensors[2].name, "c");
  EXPECT_EQ(h->tensors[3].name, "s");
  EXPECT_TRUE(h->tensors[3].shape.empty());  // a scalar: one element

  std::string dst = dir / "out.safetensors";
  ASSERT_TRUE(Export(src, *h, dst).ok());
  EXPECT_EQ(ReadBytes(dst), content);
  EXPECT_EQ(DirEntries(dir.path()),
            (std::vector<std::string>{"model.safetensors", "out.safetensors"}));
}

TEST(Safetensors, ParseHeaderMatchesReadHeaderAndIgnoresExtraPrefixBytes) {
  std::string content = File("{" + T("x", "I32", "[2]", 0, 8) + "}", Bytes(8, 1));
  Result<FileHeader> h = ParseHeader(content, content.size(), "mem");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors.size(), 1u);
  EXPECT_EQ(h->metadata_json, "");
  // Too few bytes passed for the header announced: refused, not read past.
  Result<FileHeader> short_prefix = ParseHeader(content.substr(0, 12), content.size(), "mem");
  EXPECT_TRUE(short_prefix.status().IsInvalidArgument());
}

TEST(Safetensors, EmptyTensorsAreLegalAndMayShareOffsets) {
  TempDir dir;
  // "e1" is listed after "b" but starts where b starts: it must come first.
  std::string json = "{" + T("a", "F16", "[2]", 0, 4) + "," + T("b", "F16", "[3]", 4, 10) + "," +
                     T("e1", "F32", "[0, 7]", 4, 4) + "," + T("e0", "F32", "[0]", 0, 0) + "," +
                     T("e2", "I64", "[3, 0]", 10, 10) + "," + T("e3", "U8", "[0]", 4, 4) + "}";
  std::string content = File(json, Bytes(10, 3));
  std::string src = dir / "m.safetensors";
  WriteBytes(src, content);
  Result<FileHeader> h = ReadHeader(src);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  std::vector<std::string> order;
  for (const auto& t : h->tensors) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"e0", "a", "e1", "e3", "b", "e2"}));
  std::string dst = dir / "out.safetensors";
  ASSERT_TRUE(Export(src, *h, dst, 1).ok());
  EXPECT_EQ(ReadBytes(dst), content);
}

TEST(Safetensors, ZeroTensorsAndOnlyEmptyTensors) {
  TempDir dir;
  for (const std::string& json :
       {std::string("{}"), std::string("{\"__metadata__\":{}}"),
        "{\"__metadata__\":{\"k\":\"v\"}," + T("e", "F32", "[0]", 0, 0) + "}"}) {
    std::string content = File(json, "", 6);
    std::string src = dir / "z.safetensors";
    WriteBytes(src, content);
    Result<FileHeader> h = ReadHeader(src);
    ASSERT_TRUE(h.ok()) << json << ": " << h.status().ToString();
    EXPECT_EQ(h->data_size, 0u);
    std::string dst = dir / "z.out";
    ASSERT_TRUE(Export(src, *h, dst).ok());
    EXPECT_EQ(ReadBytes(dst), content);
  }
}

TEST(Safetensors, LargeTensorsCrossTheWriteBuffer) {
  TempDir dir;
  const uint64_t big = (3u << 20) + 5;  // more than the 1 MiB write buffer
  std::string json = "{" + T("small", "U8", "[3]", 0, 3) + "," +
                     T("big", "U8", "[" + std::to_string(big) + "]", 3, 3 + big) + "}";
  std::string content = File(json, Bytes(3 + big, 5), 3);
  std::string src = dir / "big.safetensors";
  WriteBytes(src, content);
  Result<FileHeader> h = ReadHeader(src);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  for (size_t piece : {size_t(4096), size_t(1) << 20, size_t(3) << 20}) {
    std::string dst = dir / "out";
    ASSERT_TRUE(Export(src, *h, dst, piece).ok());
    EXPECT_EQ(ReadBytes(dst), content);
  }
}

TEST(Safetensors, Utf8NamesAreKeptAndShownUnescaped) {
  const std::string name = "\xe6\xa8\xa1\xe5\x9e\x8b.w";  // "模型.w"
  std::string ok = File("{" + T(name, "U8", "[1]", 0, 1) + "}", "z");
  Result<FileHeader> h = ParseHeader(ok, ok.size(), "mem");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors[0].name, name);
  std::string dup =
      File("{" + T(name, "U8", "[1]", 0, 1) + "," + T(name, "U8", "[1]", 1, 2) + "}", "zz");
  Result<FileHeader> d = ParseHeader(dup, dup.size(), "mem");
  EXPECT_EQ(d.status().message(), "mem: duplicate tensor name '" + name + "'");
}

TEST(Safetensors, ReadHeaderOfMissingFileOrDirectory) {
  TempDir dir;
  EXPECT_TRUE(ReadHeader(dir / "nope").status().IsNotFound());
  Result<FileHeader> d = ReadHeader(dir.path());
  EXPECT_TRUE(d.status().IsInvalidArgument()) << d.status().ToString();
}

// ------------------------------------------------------------ malformed files

struct BadCase {
  const char* name;
  std::string content;
  const char* expect;  // a substring of the message
};

const std::string k2To64 = "18446744073709551616";  // one more than the largest uint64
const std::string kHuger = "99999999999999999999999";

std::vector<BadCase> BadCases() {
  const std::string a8 = T("a", "F32", "[2]", 0, 8);
  const std::string d8 = Bytes(8, 1);
  auto one = [&](const std::string& entry, const std::string& data = "") {
    return File("{" + entry + "}", data);
  };
  auto raw = [](const std::string& body) { return "\"a\":{\"dtype\":\"F32\"," + body + "}"; };
  std::string rank33 = "[1";
  for (int i = 1; i < 33; i++) rank33 += ",1";
  rank33 += "]";
  return {
      {"EmptyFile", "", "shorter than the 8-byte header length"},
      {"TruncatedLengthPrefix", "\x02\0\0\0\0"s, "shorter than the 8-byte header length"},
      {"HeaderLengthZero", Le64(0) + "{}", "header length is 0"},
      {"HeaderLengthAbsurd", Le64(1ull << 40) + "{}", "exceeds the limit"},
      {"HeaderLengthJustOverLimit", Le64(kMaxHeaderBytes + 1) + "{}", "exceeds the limit"},
      {"HeaderLengthPastEnd", Le64(100) + "{}", "runs past the end of the file"},
      {"HeaderLengthAllOnes", Le64(~0ull) + "{}", "exceeds the limit"},
      {"TruncatedHeaderJson", File("{\"a\":"), "not valid JSON"},
      {"BadJsonSyntax", File("{a:1}"), "not valid JSON"},
      {"NonObjectArray", File("[1,2]"), "must be a JSON object"},
      {"NonObjectString", File("\"hello\""), "must be a JSON object"},
      {"LeadingWhitespace", File(" {}"), "starts with whitespace"},
      {"TrailingGarbageInHeader", File("{} x"), "not valid JSON"},
      {"NulPadding", File("{}\0\0"s), "NUL byte at offset 10"},
      {"NulThenGarbage", File("{}\0{\"x\":1}"s), "NUL byte"},
      {"InvalidUtf8Name", File("{\"\xff\":{}}"), "not valid JSON"},
      {"EntryNotObject", File("{\"a\":5}"), "must be an object with dtype"},
      {"UnknownDtype", one(T("a", "F128", "[2]", 0, 8), d8), "unknown dtype 'F128'"},
      {"DtypeNotString", one("\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}", d8),
       "dtype must be a string"},
      {"MissingDtype", one("\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}", d8),
       "missing field 'dtype'"},
      {"MissingShape", one(raw("\"data_offsets\":[0,8]"), d8), "missing field 'shape'"},
      {"MissingDataOffsets", one(raw("\"shape\":[2]"), d8), "missing field 'data_offsets'"},
      {"ExtraField", one(raw("\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1"), d8),
       "unknown field 'extra'"},
      {"DuplicateField", one(raw("\"shape\":[2],\"shape\":[2],\"data_offsets\":[0,8]"), d8),
       "field 'shape' appears twice"},
      {"ShapeNotArray", one(raw("\"shape\":2,\"data_offsets\":[0,8]"), d8),
       "shape must be an array"},
      {"ShapeElementString", one(raw("\"shape\":[\"2\"],\"data_offsets\":[0,8]"), d8),
       "shape[0] must be a non-negative integer"},
      {"ShapeElementBool", one(raw("\"shape\":[true],\"data_offsets\":[0,8]"), d8),
       "shape[0] must be a non-negative integer"},
      {"NegativeShape", one(raw("\"shape\":[2,-1],\"data_offsets\":[0,8]"), d8),
       "shape[1] must not be negative, found -1"},
      {"FractionalShape", one(raw("\"shape\":[1.5],\"data_offsets\":[0,8]"), d8),
       "shape[0] must be an integer, found 1.5"},
      {"ExponentShape", one(raw("\"shape\":[2e0],\"data_offsets\":[0,8]"), d8),
       "must be an integer, found 2e0"},
      {"HugeShape", one(raw("\"shape\":[" + kHuger + "],\"data_offsets\":[0,8]"), d8),
       "does not fit in 64 bits"},
      {"NegativeOffset", one(raw("\"shape\":[2],\"data_offsets\":[-8,0]"), d8),
       "data_offsets[0] must not be negative"},
      {"HugeOffset", one(raw("\"shape\":[2],\"data_offsets\":[0," + k2To64 + "]"), d8),
       "data_offsets[1] 18446744073709551616 does not fit in 64 bits"},
      {"ThreeOffsets", one(raw("\"shape\":[2],\"data_offsets\":[0,8,8]"), d8),
       "exactly 2 integers"},
      {"OneOffset", one(raw("\"shape\":[2],\"data_offsets\":[8]"), d8), "exactly 2 integers"},
      {"ShapeSizeDisagree", one(T("a", "F32", "[3]", 0, 8), d8),
       "takes 12 bytes but data_offsets [0, 8] span 8"},
      {"DtypeSizeDisagree", one(T("a", "F64", "[2]", 0, 8), d8), "takes 16 bytes"},
      {"OffsetsPastData", one(T("a", "F32", "[2]", 0, 8), Bytes(4, 1)),
       "run past the end of the data section (4 bytes)"},
      {"BeginAfterEnd", one(T("a", "F32", "[0]", 8, 0), d8), "begin after they end"},
      {"Overlap", File("{" + a8 + "," + T("b", "F32", "[2]", 4, 12) + "}", Bytes(12, 1)),
       "overlap"},
      {"EmptyTensorInsideAnother", File("{" + a8 + "," + T("e", "F32", "[0]", 4, 4) + "}", d8),
       "overlap"},
      {"Gap", File("{" + a8 + "," + T("b", "F32", "[1]", 12, 16) + "}", Bytes(16, 1)),
       "gap: 4 bytes between tensor 'a'"},
      {"GapAtStart", one(T("a", "F32", "[1]", 4, 8), d8), "gap: the data section starts"},
      {"TrailingBytes", one(a8, Bytes(9, 1)), "trailing bytes: 1 bytes after the last tensor"},
      {"TrailingBytesNoTensors", File("{}", "xyz"), "header lists no tensors"},
      {"DuplicateName", File("{" + a8 + "," + T("a", "F32", "[2]", 8, 16) + "}", Bytes(16, 1)),
       "duplicate tensor name 'a'"},
      {"EmptyName", one(T("", "F32", "[2]", 0, 8), d8), "empty tensor name"},
      {"NameTooLong", one(T(std::string(kMaxNameBytes + 1, 'n'), "F32", "[2]", 0, 8), d8),
       "longer than the limit"},
      {"NulInName", one(T("a\\u0000b", "F32", "[2]", 0, 8), d8), "NUL"},
      {"ProductOverflow", one(T("a", "U8", "[4294967296,4294967296]", 0, 0)),
       "element count of shape [4294967296, 4294967296] overflows"},
      {"ProductOverflowBeforeZero", one(T("a", "U8", "[4294967296,4294967296,0]", 0, 0)),
       "overflows 64 bits"},
      {"ByteSizeOverflow", one(T("a", "F32", "[4611686018427387904]", 0, 0)), "byte size of shape"},
      {"RankTooLarge", one(T("a", "F32", rank33, 0, 4), Bytes(4, 1)), "more than 32 dimensions"},
      {"MetadataNonStringValue", File("{\"__metadata__\":{\"k\":1}}"),
       "__metadata__ value of key 'k' must be a string"},
      {"MetadataNestedObject", File("{\"__metadata__\":{\"k\":{}}}"), "must be a string"},
      {"MetadataNotObject", File("{\"__metadata__\":\"x\"}"), "__metadata__ must be an object"},
      {"MetadataDuplicateKey", File("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"),
       "key 'k' twice"},
      {"DuplicateMetadata", File("{\"__metadata__\":{},\"__metadata__\":{}}"),
       "duplicate __metadata__"},
  };
}

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class MalformedFile : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedFile, IsRejectedWithTheRuleAndTheFileNamed) {
  TempDir dir;
  std::string path = dir / "bad.safetensors";
  WriteBytes(path, GetParam().content);
  Result<FileHeader> h = ReadHeader(path);
  ASSERT_FALSE(h.ok());
  EXPECT_TRUE(h.status().IsInvalidArgument()) << h.status().ToString();
  EXPECT_NE(h.status().message().find(GetParam().expect), std::string::npos)
      << h.status().message();
  EXPECT_NE(h.status().message().find(path), std::string::npos) << h.status().message();
  for (char c : h.status().message())  // printable: bytes from the file come out escaped
    EXPECT_TRUE(uint8_t(c) >= 0x20 && uint8_t(c) < 0x7f) << h.status().message();
  // ParseHeader over the same bytes agrees (when the prefix is there to parse).
  Result<FileHeader> p = ParseHeader(GetParam().content, GetParam().content.size(), "mem");
  EXPECT_TRUE(p.status().IsInvalidArgument()) << p.status().ToString();
}

INSTANTIATE_TEST_SUITE_P(Safetensors, MalformedFile, ::testing::ValuesIn(BadCases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Safetensors, MoreThanMaxTensorsIsRefused) {
  // kMaxTensors + 1 empty tensors: a header of about 50 MB, under the 100 MiB limit.
  std::string json = "{";
  char buf[96];
  for (size_t i = 0; i <= kMaxTensors; i++) {
    int n = std::snprintf(buf, sizeof buf,
                          "%s\"%zx\":{\"dtype\":\"U8\",\"shape\":[0],"
                          "\"data_offsets\":[0,0]}",
                          i ? "," : "", i);
    json.append(buf, size_t(n));
  }
  json += "}";
  ASSERT_LE(json.size(), kMaxHeaderBytes);
  std::string content = File(json);
  Result<FileHeader> h = ParseHeader(content, content.size(), "many");
  EXPECT_TRUE(h.status().IsInvalidArgument());
  EXPECT_NE(h.status().message().find("more than 1048576 tensors"), std::string::npos)
      << h.status().message();
}

// ---------------------------------------------------------------- WriteFile

class WriteFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = dir_ / "src.safetensors";
    content_ = File("{" + T("a", "F32", "[2]", 0, 8) + "," + T("b", "U8", "[3]", 8, 11) + "}",
                    Bytes(11, 2), 5);
    WriteBytes(src_, content_);
    Result<FileHeader> h = ReadHeader(src_);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    header_ = *h;
  }
  // Emits tensor i's bytes with `delta` bytes more (or fewer) for tensor 1.
  Status ExportSkewed(const std::string& dst, int delta) {
    return WriteFile(dst, header_, [&](size_t i, const ByteSink& sink) -> Status {
      const TensorEntry& t = header_.tensors[i];
      std::string bytes = content_.substr(header_.data_offset + t.begin, t.size());
      if (i == 1) bytes.resize(size_t(int(bytes.size()) + delta), 'x');
      return sink(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    });
  }

  TempDir dir_;
  std::string src_, content_;
  FileHeader header_;
};

TEST_F(WriteFileTest, EmitErrorLeavesNoFileAndNoTemporary) {
  std::string dst = dir_ / "out.safetensors";
  Status s = WriteFile(dst, header_, [&](size_t i, const ByteSink& sink) -> Status {
    if (i == 1) return Status::IOError("source went away");
    std::string bytes(size_t(header_.tensors[i].size()), 'q');
    return sink(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  });
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_NE(s.message().find("source went away"), std::string::npos);
  EXPECT_EQ(DirEntries(dir_.path()), std::vector<std::string>{"src.safetensors"});
}

TEST_F(WriteFileTest, TooFewBytesIsInternalErrorAndLeavesNoFile) {
  Status s = ExportSkewed(dir_ / "out.safetensors", -1);
  EXPECT_EQ(s.code(), Status::Code::kInternal) << s.ToString();
  EXPECT_EQ(DirEntries(dir_.path()), std::vector<std::string>{"src.safetensors"});
}

TEST_F(WriteFileTest, TooManyBytesIsInternalErrorAndLeavesNoFile) {
  Status s = ExportSkewed(dir_ / "out.safetensors", +2);
  EXPECT_EQ(s.code(), Status::Code::kInternal) << s.ToString();
  EXPECT_EQ(DirEntries(dir_.path()), std::vector<std::string>{"src.safetensors"});
}

TEST_F(WriteFileTest, EmitThatIgnoresTheSinkErrorStillFails) {
  std::string dst = dir_ / "out.safetensors";
  Status s = WriteFile(dst, header_, [&](size_t i, const ByteSink& sink) -> Status {
    std::string bytes(size_t(header_.tensors[i].size()) + 1, 'q');
    (void)sink(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    return Status::OK();
  });
  EXPECT_EQ(s.code(), Status::Code::kInternal) << s.ToString();
  EXPECT_EQ(DirEntries(dir_.path()), std::vector<std::string>{"src.safetensors"});
}

TEST_F(WriteFileTest, ExactBytesSucceedAndFailureKeepsAnOlderFile) {
  std::string dst = dir_ / "out.safetensors";
  ASSERT_TRUE(ExportSkewed(dst, 0).ok());
  EXPECT_EQ(ReadBytes(dst), content_);
  EXPECT_FALSE(ExportSkewed(dst, -1).ok());
  EXPECT_EQ(ReadBytes(dst), content_);  // renamed into place only on success
  EXPECT_EQ(DirEntries(dir_.path()),
            (std::vector<std::string>{"out.safetensors", "src.safetensors"}));
}

TEST_F(WriteFileTest, MissingDirectoryFails) {
  Status s = ExportSkewed(dir_ / "no/such/dir.safetensors", 0);
  EXPECT_FALSE(s.ok());
}

TEST_F(WriteFileTest, InconsistentHeaderIsRefusedBeforeWriting) {
  FileHeader h = header_;
  h.tensors[1].begin = 9;  // leaves a gap
  std::string dst = dir_ / "out.safetensors";
  Status s = WriteFile(dst, h, [](size_t, const ByteSink&) { return Status::OK(); });
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_EQ(DirEntries(dir_.path()), std::vector<std::string>{"src.safetensors"});
}

// ------------------------------------------------------------------ sharded

// Builds a sharded model directory: shard name -> file bytes, plus an index.
class ShardedTest : public ::testing::Test {
 protected:
  void Shard(const std::string& name, const std::vector<std::string>& tensors) {
    std::string json = "{";
    uint64_t at = 0;
    for (const auto& t : tensors) {
      if (json.size() > 1) json += ",";
      json += T(t, "F16", "[2]", at, at + 4);
      at += 4;
    }
    WriteBytes(dir_ / name, File(json + "}", Bytes(size_t(at), 4), 2));
  }
  void Index(const std::string& json) {
    index_ = json;
    WriteBytes(dir_ / "model.safetensors.index.json", json);
  }
  void StandardShards() {
    Shard("model-00001-of-00002.safetensors", {"a", "b"});
    Shard("model-00002-of-00002.safetensors", {"c"});
  }
  // A weight_map body for the standard shards.
  static std::string StandardMap() {
    return "\"c\":\"model-00002-of-00002.safetensors\","
           "\"a\":\"model-00001-of-00002.safetensors\","
           "\"b\":\"model-00001-of-00002.safetensors\"";
  }
  Status ReadStatus() { return ReadSharded(dir_.path()).status(); }
  void ExpectInvalid(const std::string& substring) {
    Status s = ReadStatus();
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.message().find(substring), std::string::npos) << s.message();
  }

  TempDir dir_;
  std::string index_;
};

TEST_F(ShardedTest, ValidModelReadsShardsInSortedOrder) {
  StandardShards();
  Index(
      "{\"metadata\":{\"total_size\":12,\"nested\":[{\"x\":[1,2,{}]},null,true]},"
      "\"weight_map\":{" +
      StandardMap() + "},\"extra\":\"ignored\"}");
  Result<ShardedModel> m = ReadSharded(dir_.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->index_bytes, index_);
  EXPECT_EQ(m->index_file_name, "model.safetensors.index.json");
  EXPECT_EQ(m->shard_names, (std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"}));
  ASSERT_EQ(m->shards.size(), 2u);
  EXPECT_EQ(m->shards[0].tensors.size(), 2u);
  EXPECT_EQ(m->shards[1].tensors[0].name, "c");
}

TEST_F(ShardedTest, CustomIndexFileName) {
  StandardShards();
  WriteBytes(dir_ / "custom.json", "{\"weight_map\":{" + StandardMap() + "}}");
  Result<ShardedModel> m = ReadSharded(dir_.path(), "custom.json");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->index_file_name, "custom.json");
}

TEST_F(ShardedTest, MissingIndexIsNotFound) {
  EXPECT_TRUE(ReadStatus().IsNotFound()) << ReadStatus().ToString();
}

TEST_F(ShardedTest, MissingShardNamesTheFile) {
  Shard("model-00001-of-00002.safetensors", {"a", "b"});
  Index("{\"weight_map\":{" + StandardMap() + "}}");
  ExpectInvalid("shard 'model-00002-of-00002.safetensors' (of tensor 'c') is missing");
}

TEST_F(ShardedTest, ShardNameWithPathTraversalIsRefused) {
  StandardShards();
  Index("{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}");
  ExpectInvalid("contains '/'");
}

TEST_F(ShardedTest, ShardNameDotDotIsRefused) {
  Index("{\"weight_map\":{\"a\":\"..\"}}");
  ExpectInvalid("is not a file name");
}

TEST_F(ShardedTest, ShardNameAbsoluteIsRefused) {
  Index("{\"weight_map\":{\"a\":\"/etc/passwd\"}}");
  ExpectInvalid("contains '/'");
}

TEST_F(ShardedTest, EmptyShardNameIsRefused) {
  Index("{\"weight_map\":{\"a\":\"\"}}");
  ExpectInvalid("is empty");
}

TEST_F(ShardedTest, TensorMissingFromItsShard) {
  StandardShards();
  Index("{\"weight_map\":{" + StandardMap() + ",\"d\":\"model-00002-of-00002.safetensors\"}}");
  ExpectInvalid("puts tensor 'd' in shard 'model-00002-of-00002.safetensors', but no shard");
}

TEST_F(ShardedTest, UnlistedTensorInShard) {
  StandardShards();
  Index(
      "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
      "\"c\":\"model-00002-of-00002.safetensors\"}}");
  ExpectInvalid("holds tensor 'b', which weight_map does not list");
}

TEST_F(ShardedTest, TensorAssignedToTheWrongShardNamesBoth) {
  StandardShards();
  Index(
      "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
      "\"b\":\"model-00002-of-00002.safetensors\","
      "\"c\":\"model-00002-of-00002.safetensors\"}}");
  ExpectInvalid(
      "puts tensor 'b' in shard 'model-00002-of-00002.safetensors', but it is in "
      "shard 'model-00001-of-00002.safetensors'");
}

TEST_F(ShardedTest, TensorInTwoShards) {
  Shard("model-00001-of-00002.safetensors", {"a", "b"});
  Shard("model-00002-of-00002.safetensors", {"c", "b"});
  Index("{\"weight_map\":{" + StandardMap() + "}}");
  ExpectInvalid("tensor 'b' is in both shard");
}

TEST_F(ShardedTest, BadIndexJson) {
  StandardShards();
  Index("{\"weight_map\":{\"a\":");
  ExpectInvalid("not valid JSON");
}

TEST_F(ShardedTest, IndexWithNulByteIsRefused) {
  StandardShards();
  Index("{\"weight_map\":{" + StandardMap() + "}}\0garbage"s);
  ExpectInvalid("NUL byte");
}

TEST_F(ShardedTest, IndexNotAnObject) {
  Index("[\"weight_map\"]");
  ExpectInvalid("index must be a JSON object");
}

TEST_F(ShardedTest, IndexWithoutWeightMap) {
  Index("{\"metadata\":{}}");
  ExpectInvalid("no weight_map");
}

TEST_F(ShardedTest, WeightMapNotAnObject) {
  Index("{\"weight_map\":[\"a\"]}");
  ExpectInvalid("weight_map must be an object");
}

TEST_F(ShardedTest, WeightMapValueNotAString) {
  Index("{\"weight_map\":{\"a\":1}}");
  ExpectInvalid("weight_map value of tensor 'a' must be a shard file name string");
}

TEST_F(ShardedTest, WeightMapDuplicateTensor) {
  StandardShards();
  Index("{\"weight_map\":{" + StandardMap() + ",\"a\":\"model-00002-of-00002.safetensors\"}}");
  ExpectInvalid("lists tensor 'a' twice");
}

TEST_F(ShardedTest, DuplicateWeightMapKeyAtTopLevel) {
  StandardShards();
  Index("{\"weight_map\":{" + StandardMap() + "},\"weight_map\":{}}");
  ExpectInvalid("key 'weight_map' appears twice");
}

TEST_F(ShardedTest, MalformedShardIsReportedWithItsPath) {
  StandardShards();
  WriteBytes(dir_ / "model-00002-of-00002.safetensors", Le64(1000) + "{}");
  Index("{\"weight_map\":{" + StandardMap() + "}}");
  ExpectInvalid("model-00002-of-00002.safetensors: header length 1000 runs past the end");
}

}  // namespace
}  // namespace pstore::safetensors
