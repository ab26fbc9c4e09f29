// Unit tests of the chunk store (store/store.h): manifests, model names,
// import/export, dedup, tag/rm/compact, the writer lock, and readers holding
// a generation while the writer removes and compacts.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "store/export_chunks.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"
#include "store/store_access.h"
#include "tests/test_files.h"
#include "tests/test_safetensors.h"

namespace pstore {
namespace {

namespace fs = std::filesystem;

// --- the NAMES file (store/names_file.h) ----------------------------------------

NameMap TwoNames() {
  NameMap m;
  m["a:v1"] = HashBytes("a", 1);
  m["b/c:latest"] = HashBytes("b", 1);
  return m;
}

TEST(NamesFile, RoundTrips) {
  auto parsed = ParseNamesFile("NAMES", EncodeNamesFile(TwoNames()));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_TRUE(parsed->has_value());
  EXPECT_EQ(**parsed, TwoNames());
  auto empty = ParseNamesFile("NAMES", EncodeNamesFile({}));
  ASSERT_TRUE(empty.ok() && empty->has_value() && (*empty)->empty());
}

TEST(NamesFile, EveryFlippedBitIsCorruptionNamingTheFile) {
  const std::string good = EncodeNamesFile(TwoNames());
  for (size_t i = 0; i < good.size(); i++)
    for (int b = 0; b < 8; b++) {
      std::string bad = good;
      bad[i] = char(bad[i] ^ (1 << b));
      auto r = ParseNamesFile("/s/gen/0000000001/NAMES", bad);
      // A flip may make the first line look like the old form (a tab in
      // it): then the file is not used at all, which is as safe.
      if (r.ok()) {
        EXPECT_FALSE(r->has_value()) << "byte " << i << " bit " << b << " went unnoticed";
        continue;
      }
      EXPECT_TRUE(r.status().IsCorruption());
      EXPECT_NE(r.status().message().find("/s/gen/0000000001/NAMES"), std::string::npos);
    }
}

TEST(NamesFile, OldFormWithoutChecksumIsNotUsed) {
  auto r = ParseNamesFile("NAMES", "a:v1\t" + HashBytes("a", 1).Hex() + "\n");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

TEST(NamesFile, TruncatedOrDuplicatedIsCorruption) {
  std::string good = EncodeNamesFile(TwoNames());
  EXPECT_TRUE(ParseNamesFile("NAMES", good.substr(0, good.size() - 1)).status().IsCorruption());
  EXPECT_TRUE(ParseNamesFile("NAMES", good.substr(0, 20)).status().IsCorruption());
  std::string line = "a:v1\t" + HashBytes("a", 1).Hex() + "\n";
  std::string body = line + line;
  std::string dup = "PSTNAMES 1 " + HashBytes(body.data(), body.size()).Hex() + "\n" + body;
  EXPECT_TRUE(ParseNamesFile("NAMES", dup).status().IsCorruption());
}
using testing_util::ReadAll;
using testing_util::TempDir;
using testing_util::TestTensor;
using testing_util::WriteAll;
using testing_util::WriteSafetensors;

// --- helpers ------------------------------------------------------------------

size_t ElemSize(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 1;
}

// Weight-like values: normal floats in the tensor's dtype, seeded.
TestTensor MakeTensor(const std::string& name, const std::string& dtype,
                      std::vector<uint64_t> shape, uint64_t seed) {
  TestTensor t{name, dtype, std::move(shape), {}};
  uint64_t n = 1;
  for (uint64_t d : t.shape) n *= d;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.05f);
  t.data.resize(n * ElemSize(dtype));
  for (uint64_t i = 0; i < n; i++) {
    float f = nd(rng);
    char* p = &t.data[i * ElemSize(dtype)];
    if (dtype == "F32") {
      std::memcpy(p, &f, 4);
    } else if (dtype == "F16") {
      _Float16 h = _Float16(f);
      std::memcpy(p, &h, 2);
    } else if (dtype == "BF16") {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      uint16_t h = uint16_t(b >> 16);
      std::memcpy(p, &h, 2);
    } else if (dtype == "I32") {
      int32_t v = int32_t(rng() % 1000);
      std::memcpy(p, &v, 4);
    } else {
      *p = char(128 + int(f * 400));
    }
  }
  return t;
}

// A model with tensors of several dtypes, most larger than the 64 KiB chunk
// size used below, one empty and one tiny.
std::vector<TestTensor> SampleModel(uint64_t seed) {
  return {MakeTensor("embed", "F16", {700, 128}, seed * 10 + 1),      // 175 KiB: 3 chunks
          MakeTensor("layer.0.w", "F32", {256, 200}, seed * 10 + 2),  // 200 KiB: 4 chunks
          MakeTensor("layer.0.b", "BF16", {200}, seed * 10 + 3),
          MakeTensor("empty", "I32", {0, 4}, seed * 10 + 4),
          MakeTensor("quant", "U8", {70000}, seed * 10 + 5),
          MakeTensor("head", "F32", {64, 256}, seed * 10 + 6)};  // exactly one chunk
}

// --- manifests ------------------------------------------------------------------

Manifest SampleManifest() {
  Manifest m;
  m.format = SourceFormat::kSafetensorsSharded;
  m.chunk_size = 1 << 16;
  m.index_name = "model.safetensors.index.json";
  m.index_bytes = "{\"weight_map\":{\"a\":\"s1\",\"b\":\"s2\",\"c\":\"s2\"}}";
  m.metadata_json = "{\"k\":\"v\"}";
  uint64_t sizes[3] = {100000, 65536, 0};
  const char* names[3] = {"a", "b", "c"};
  for (uint32_t f = 0; f < 2; f++) {
    ManifestFile mf;
    mf.name = "s" + std::to_string(f + 1);
    mf.header_bytes = std::string("\x10\0\0\0\0\0\0\0{\"x\":1}        ", 24);
    mf.data_size = f == 0 ? sizes[0] : sizes[1] + sizes[2];
    m.files.push_back(mf);
  }
  for (uint32_t i = 0; i < 3; i++) {
    ManifestTensor t;
    t.name = names[i];
    t.dtype = i == 0 ? DType::kF16 : DType::kF32;
    t.shape = {sizes[i] / (i == 0 ? 2 : 4)};
    t.file = i == 0 ? 0 : 1;
    t.offset = i == 2 ? sizes[1] : 0;
    t.size = sizes[i];
    t.first_chunk = m.chunks.size();
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
      std::string raw = t.name + std::to_string(j);
      m.chunks.push_back(HashBytes(raw.data(), raw.size()));
    }
    m.files[t.file].tensors.push_back(i);
    m.tensors.push_back(t);
  }
  return m;
}

TEST(Manifest, SerializeParseRoundTrip) {
  Manifest m = SampleManifest();
  std::string bytes = m.Serialize();
  auto p = Manifest::Parse(bytes);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Serialize(), bytes);
  EXPECT_EQ(Manifest::DigestOf(p->Serialize()), Manifest::DigestOf(bytes));
  EXPECT_EQ(p->format, SourceFormat::kSafetensorsSharded);
  EXPECT_EQ(p->chunk_size, 1u << 16);
  EXPECT_EQ(p->index_bytes, m.index_bytes);
  EXPECT_EQ(p->metadata_json, m.metadata_json);
  ASSERT_EQ(p->files.size(), 2u);
  EXPECT_EQ(p->files[0].header_bytes, m.files[0].header_bytes);
  EXPECT_EQ(p->files[1].tensors, (std::vector<uint32_t>{1, 2}));
  ASSERT_EQ(p->tensors.size(), 3u);
  EXPECT_EQ(p->tensors[0].name, "a");
  EXPECT_EQ(p->tensors[0].shape, (std::vector<uint64_t>{50000}));
  EXPECT_EQ(p->tensors[2].size, 0u);
  EXPECT_EQ(p->chunks, m.chunks);
  EXPECT_EQ(p->chunks.size(), 3u);  // 2 for a, 1 for b, none for the empty c
  EXPECT_EQ(p->TotalBytes(), 165536u);
}

TEST(Manifest, EveryTruncationIsRejected) {
  std::string bytes = SampleManifest().Serialize();
  for (size_t len = 0; len < bytes.size(); len++) {
    auto p = Manifest::Parse(std::string_view(bytes).substr(0, len));
    EXPECT_FALSE(p.ok()) << "a manifest cut to " << len << " of " << bytes.size()
                         << " bytes was accepted";
    if (!p.ok()) {
      EXPECT_TRUE(p.status().IsCorruption()) << p.status().ToString();
    }
  }
}

// A manifest cut right after its magic once reported "unknown version" with an
// uninitialised byte; it must say it is truncated.
TEST(Manifest, CutBeforeTheVersionSaysTruncated) {
  std::string bytes = SampleManifest().Serialize();
  auto p = Manifest::Parse(std::string_view(bytes).substr(0, 4));
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsCorruption()) << p.status().ToString();
  EXPECT_NE(p.status().message().find("truncated"), std::string::npos) << p.status().ToString();
  EXPECT_EQ(p.status().message().find("unknown version"), std::string::npos)
      << p.status().ToString();
}

TEST(Manifest, DamageIsRejected) {
  std::string bytes = SampleManifest().Serialize();
  EXPECT_FALSE(Manifest::Parse(bytes + "x").ok()) << "trailing bytes accepted";
  std::string bad = bytes;
  bad[0] ^= 1;
  EXPECT_FALSE(Manifest::Parse(bad).ok()) << "bad magic accepted";
  bad = bytes;
  bad[4] = char(Manifest::kVersion + 1);
  EXPECT_FALSE(Manifest::Parse(bad).ok()) << "unknown version accepted";
  bad = bytes;
  bad[5] = 9;
  EXPECT_FALSE(Manifest::Parse(bad).ok()) << "unknown source format accepted";
}

// --- model names ------------------------------------------------------------------

TEST(ModelName, Good) {
  struct Case {
    const char* ref;
    const char* name;
    const char* tag;
  } cases[] = {
      {"llama-7b:v1", "llama-7b", "v1"},
      {"llama", "llama", "latest"},
      {"org/model.v2:2024-01_a", "org/model.v2", "2024-01_a"},
      {"a:b", "a", "b"},
      {"A_1.b-c", "A_1.b-c", "latest"},
  };
  for (const auto& c : cases) {
    auto n = ParseModelName(c.ref);
    ASSERT_TRUE(n.ok()) << c.ref << ": " << n.status().ToString();
    EXPECT_EQ(n->name, c.name) << c.ref;
    EXPECT_EQ(n->tag, c.tag) << c.ref;
    EXPECT_EQ(n->Ref(), std::string(c.name) + ":" + c.tag);
  }
  EXPECT_TRUE(ParseModelName(std::string(128, 'n') + ":" + std::string(64, 't')).ok());
}

TEST(ModelName, Bad) {
  std::vector<std::string> bad = {"",
                                  ":v1",
                                  "name:",
                                  ".x",
                                  "/x",
                                  "-x",
                                  "a..b",
                                  "a//b",
                                  "a b",
                                  "a:b/c",
                                  "a:.x",
                                  "a:-x",
                                  "a:b c",
                                  "a:b:c",
                                  "ä:v1",
                                  "a\n:v1",
                                  std::string(129, 'n'),
                                  "n:" + std::string(65, 't')};
  for (const auto& ref : bad) {
    auto n = ParseModelName(ref);
    EXPECT_FALSE(n.ok()) << "'" << ref << "' was accepted";
    if (n.ok()) continue;
    EXPECT_TRUE(n.status().IsInvalidArgument()) << ref;
    EXPECT_NE(n.status().message().find("bad model name"), std::string::npos)
        << n.status().message();
  }
}

TEST(ModelName, LooksLikeDigest) {
  EXPECT_TRUE(LooksLikeDigest("0123abcd"));
  EXPECT_TRUE(LooksLikeDigest(std::string(32, 'f')));
  EXPECT_FALSE(LooksLikeDigest("0123abc"));
  EXPECT_FALSE(LooksLikeDigest(std::string(33, 'f')));
  EXPECT_FALSE(LooksLikeDigest("0123ABCD"));
  EXPECT_FALSE(LooksLikeDigest("llama-7b"));
}

TEST(ChunkRecord, EncodeDecode) {
  ChunkRecord r;
  r.raw_len = 1 << 20;
  r.stored_len = 123456;
  r.frame_version = 2;
  r.transform = 3;
  auto d = ChunkRecord::Decode(r.Encode());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->raw_len, r.raw_len);
  EXPECT_EQ(d->stored_len, r.stored_len);
  EXPECT_EQ(d->frame_version, 2);
  EXPECT_EQ(d->transform, 3);
  std::string e = r.Encode();
  EXPECT_FALSE(ChunkRecord::Decode(e + "x").has_value());
  EXPECT_FALSE(ChunkRecord::Decode(e.substr(0, e.size() - 1)).has_value());
}

// --- the store --------------------------------------------------------------------

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    root_ = dir_.path() + "/store";
  }

  std::unique_ptr<StoreWriter> Writer() {
    StoreConfig c;
    c.chunk_size = 64 << 10;
    auto w = StoreWriter::Open(root_, false, c);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return w.ok() ? std::move(w).value() : nullptr;
  }
  std::unique_ptr<StoreReader> Reader() {
    auto r = StoreReader::Open(root_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  std::string File(const std::string& name) { return dir_.path() + "/" + name; }
  std::string Model(const std::string& name, const std::vector<TestTensor>& ts) {
    WriteSafetensors(File(name), ts);
    return File(name);
  }
  ImportResult Import(StoreWriter* w, const std::string& src, const std::string& ref) {
    auto r = w->Import(src, ParseModelName(ref).value(), ImportOptions{});
    EXPECT_TRUE(r.ok()) << ref << ": " << r.status().ToString();
    return r.ok() ? r.value() : ImportResult{};
  }
  // Exports ref from view to a fresh path; returns the path ("" on failure).
  std::string Export(const StoreView& view, const std::string& ref) {
    auto d = view.Resolve(ref);
    EXPECT_TRUE(d.ok()) << ref << ": " << d.status().ToString();
    if (!d.ok()) return "";
    std::string out = File("export-" + std::to_string(exports_++));
    Status s = ExportModel(view, *d, out, ExportOptions{});
    EXPECT_TRUE(s.ok()) << ref << ": " << s.ToString();
    return s.ok() ? out : "";
  }
  StoreStats Stats(const StoreView& view) {
    auto s = GetStoreStats(view, root_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? s.value() : StoreStats{};
  }
  void ExpectVerifies(const StoreView& view) {
    auto rep = VerifyStore(view, 2, nullptr);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    EXPECT_TRUE(rep->ok()) << rep->problems.size() << " problems, first: "
                           << (rep->problems.empty() ? "" : rep->problems[0].error);
  }

  TempDir dir_;
  std::string root_;
  int exports_ = 0;
};

TEST_F(StoreTest, ImportExportRoundTrip) {
  std::string src = Model("m.safetensors", SampleModel(1));
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult r = Import(w.get(), src, "m:v1");
  EXPECT_EQ(r.tensors, 6u);
  uint64_t raw = 0;
  for (const auto& t : SampleModel(1)) raw += t.data.size();
  EXPECT_EQ(r.raw_bytes, raw);
  EXPECT_EQ(r.chunks, 3u + 4 + 1 + 0 + 2 + 1);
  EXPECT_EQ(r.new_chunks, r.chunks);
  EXPECT_GT(r.new_stored_bytes, 0u);
  EXPECT_LT(r.new_stored_bytes, raw) << "weight-like data should compress";
  EXPECT_FALSE(r.unchanged);

  // A reader sees the committed model; export rebuilds the file byte for byte.
  auto rd = Reader();
  ASSERT_TRUE(rd);
  auto names = rd->view().ListNames();
  ASSERT_TRUE(names.ok());
  ASSERT_EQ(names->size(), 1u);
  EXPECT_EQ((*names)[0].ref, "m:v1");
  EXPECT_EQ((*names)[0].digest, r.digest);
  std::string out = Export(rd->view(), "m:v1");
  EXPECT_EQ(ReadAll(out), ReadAll(src));
  // By digest and by a digest prefix too.
  EXPECT_EQ(rd->view().Resolve(r.digest.Hex()).value(), r.digest);
  EXPECT_EQ(rd->view().Resolve(r.digest.Hex().substr(0, 10)).value(), r.digest);
  EXPECT_TRUE(rd->view().Resolve("other:v1").status().IsNotFound());
  auto info = GetModelInfo(rd->view(), r.digest);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->metadata_json, "{\"note\":\"store_test\"}");
  EXPECT_EQ(info->raw_bytes, raw);
  EXPECT_EQ(info->unique_chunks, r.chunks);
  ExpectVerifies(rd->view());
}

// Export's read-ahead (store/export_chunks.h): windows of chunks decoded by
// reader threads in the order the writers ask for them; a writer that asks
// out of that order, from the start or midway, still gets every byte right,
// one chunk at a time; a writer that stops early (a full disk) gets its own
// error back and ends the readers.
TEST_F(StoreTest, ExportReadsAheadInWriteOrderAndServesAnyOrder) {
  // 24 tensors of 600 KiB (10 chunks each, the last one short): 14 MiB, so
  // windows end inside tensors.
  std::vector<TestTensor> ts;
  for (int i = 0; i < 24; i++) {
    std::string name = "t";
    name += std::to_string(i);
    ts.push_back(MakeTensor(name, "F32", {150, 1024}, 700 + uint64_t(i)));
  }
  std::string src = Model("ahead.safetensors", ts);
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult r = Import(w.get(), src, "ahead:v1");
  auto rd = Reader();
  ASSERT_TRUE(rd);
  auto mp = rd->view().LoadManifest(r.digest);
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  const Manifest& m = **mp;
  ASSERT_EQ(m.files.size(), 1u);
  uint64_t chunks = 0;
  for (const auto& t : m.tensors) chunks += m.ChunkCount(t);
  ASSERT_GT(m.TotalBytes(), 3 * ExportChunks::kWindowBytes);
  ASSERT_NE(ExportChunks::kWindowBytes % ts[0].data.size(), 0u);

  auto collect = [&](ExportChunks* e, const ManifestTensor& t, std::string* out) {
    out->clear();
    return e->Write(t, [&](const uint8_t* p, size_t n) {
      out->append(reinterpret_cast<const char*>(p), n);
      return Status::OK();
    });
  };
  auto data_of = [&](const ManifestTensor& t) {
    for (const auto& x : ts)
      if (x.name == t.name) return x.data;
    return std::string();
  };
  // Writes the tensors of `order` and checks their bytes.
  auto check_order = [&](ExportChunks* e, const std::vector<size_t>& order, const char* what) {
    std::string got;
    for (size_t ti : order) {
      Status st = collect(e, m.tensors[ti], &got);
      ASSERT_TRUE(st.ok()) << what << ": " << st.ToString();
      EXPECT_EQ(got, data_of(m.tensors[ti])) << what << ": " << m.tensors[ti].name;
    }
  };
  const std::vector<size_t> in_order(m.files[0].tensors.begin(), m.files[0].tensors.end());

  for (int threads : {1, 2, 3}) {
    ExportOptions o;
    o.threads = threads;
    ExportChunks e(rd->view(), m, "ahead:v1", o);
    check_order(&e, in_order, "in order");
    EXPECT_EQ(e.chunks_read_ahead(), chunks) << threads << " readers";
    EXPECT_EQ(e.chunks_read_alone(), 0u) << threads << " readers";
  }

  ExportOptions two;
  two.threads = 2;
  {  // Out of order from the start: the last tensor first, then the rest.
    ExportChunks e(rd->view(), m, "ahead:v1", two);
    check_order(&e, std::vector<size_t>(in_order.rbegin(), in_order.rend()), "reversed");
    EXPECT_EQ(e.chunks_read_alone(), chunks);
  }
  {  // Midway: seven tensors in order, then one skipped.
    ExportChunks e(rd->view(), m, "ahead:v1", two);
    std::vector<size_t> order(in_order.begin(), in_order.begin() + 7);
    order.insert(order.end(), in_order.begin() + 8, in_order.end());
    order.push_back(in_order[7]);
    check_order(&e, order, "one skipped");
    EXPECT_EQ(e.chunks_read_ahead(), 70u);
    EXPECT_EQ(e.chunks_read_alone(), chunks - 70);
  }

  // The writer fails at its third write while the one reader is ahead of it
  // and waiting for a free buffer: its own error comes back, and the reader
  // ends with the object.
  for (int threads : {1, 2}) {
    ExportOptions o;
    o.threads = threads;
    ExportChunks e(rd->view(), m, "ahead:v1", o);
    int calls = 0;
    Status st;
    for (size_t ti : in_order) {
      st = e.Write(m.tensors[ti], [&](const uint8_t*, size_t) {
        return ++calls == 3 ? Status::IOError("no space left on device") : Status::OK();
      });
      if (!st.ok()) break;
    }
    EXPECT_EQ(st.code(), Status::Code::kIOError) << st.ToString();
    EXPECT_EQ(calls, 3);
  }
}

// GetChunkRecords gives what GetChunkRecord gives, key by key, for keys in
// any order, repeated, missing, and more than one MultiGet's worth; a
// malformed record fails its own entries only.
TEST_F(StoreTest, ChunkRecordsReadTogetherMatchOneByOne) {
  std::string src = Model("r.safetensors", SampleModel(4));
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult r = Import(w.get(), src, "r:v1");
  auto mp = w->view().LoadManifest(r.digest);
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  const std::vector<ChunkKey>& chunks = (*mp)->chunks;
  ASSERT_GE(chunks.size(), 3u);
  // One record made malformed, in the writer's database.
  const ChunkKey bad = chunks[1];
  ASSERT_TRUE(w->view()
                  .db()
                  ->db()
                  ->Put(rocksdb::WriteOptions(), w->view().db()->meta(), keys::ChunkRecord(bad),
                        "not a record")
                  .ok());
  std::vector<ChunkKey> keys;
  const ChunkKey absent = HashBytes("not stored", 10);
  while (keys.size() < 9000) {
    keys.insert(keys.end(), chunks.rbegin(), chunks.rend());
    keys.push_back(absent);
  }
  const StoreView& view = w->view();
  auto got = view.GetChunkRecords(keys);
  ASSERT_EQ(got.size(), keys.size());
  size_t malformed = 0;
  for (size_t i = 0; i < keys.size(); i++) {
    auto one = view.GetChunkRecord(keys[i]);
    ASSERT_EQ(one.ok(), got[i].ok()) << i;
    if (!one.ok()) {
      EXPECT_EQ(keys[i], bad);
      EXPECT_TRUE(got[i].status().IsCorruption()) << got[i].status().ToString();
      EXPECT_NE(got[i].status().message().find(bad.Hex()), std::string::npos);
      malformed++;
      continue;
    }
    ASSERT_EQ(one->has_value(), got[i]->has_value()) << i;
    if (!one->has_value()) {
      EXPECT_EQ(keys[i], absent);
      continue;
    }
    EXPECT_EQ((*one)->raw_len, (*got[i])->raw_len) << i;
    EXPECT_EQ((*one)->stored_len, (*got[i])->stored_len) << i;
  }
  EXPECT_GT(malformed, 1u);
  EXPECT_FALSE(got[keys.size() - 1].ok() && got[keys.size() - 1]->has_value());
  EXPECT_TRUE(view.GetChunkRecords({}).empty());
}

TEST_F(StoreTest, ShardedRoundTrip) {
  std::string folder = File("sharded");
  fs::create_directories(folder);
  auto ts = SampleModel(2);
  std::vector<TestTensor> s1(ts.begin(), ts.begin() + 3), s2(ts.begin() + 3, ts.end());
  WriteSafetensors(folder + "/model-00001-of-00002.safetensors", s1);
  WriteSafetensors(folder + "/model-00002-of-00002.safetensors", s2);
  std::string index = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
  for (size_t i = 0; i < ts.size(); i++)
    index += std::string(i ? "," : "") + "\"" + ts[i].name + "\":\"model-0000" +
             (i < 3 ? "1" : "2") + "-of-00002.safetensors\"";
  index += "}}\n";
  std::ofstream(folder + "/model.safetensors.index.json") << index;

  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult r = Import(w.get(), folder, "sharded:v1");
  EXPECT_EQ(r.tensors, ts.size());
  auto rd = Reader();
  ASSERT_TRUE(rd);
  std::string out = Export(rd->view(), "sharded:v1");
  ASSERT_FALSE(out.empty());
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(out)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"model.safetensors.index.json",
                                          "model-00001-of-00002.safetensors",
                                          "model-00002-of-00002.safetensors"}));
  for (const auto& f : files) EXPECT_EQ(ReadAll(out + "/" + f), ReadAll(folder + "/" + f)) << f;
}

TEST_F(StoreTest, SecondImportDeduplicates) {
  std::string src = Model("a.safetensors", SampleModel(3));
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult r1 = Import(w.get(), src, "a:v1");
  StoreStats s1 = Stats(w->view());

  ImportResult r2 = Import(w.get(), src, "a:v2");
  EXPECT_EQ(r2.digest, r1.digest);
  EXPECT_EQ(r2.new_chunks, 0u);
  EXPECT_EQ(r2.new_stored_bytes, 0u);
  StoreStats s2 = Stats(w->view());
  EXPECT_EQ(s2.chunks, s1.chunks);
  EXPECT_EQ(s2.stored_bytes, s1.stored_bytes);
  EXPECT_EQ(s2.unique_bytes, s1.unique_bytes);
  EXPECT_EQ(s2.logical_bytes, 2 * s1.logical_bytes);
  EXPECT_EQ(s2.names, 2u);
  EXPECT_EQ(s2.models, 1u);

  // The same name and bytes again: nothing to do.
  ImportResult r3 = Import(w.get(), src, "a:v1");
  EXPECT_TRUE(r3.unchanged);

  // Another model under a taken name: refused without force, nothing added.
  auto ts = SampleModel(3);
  ts[1] = MakeTensor("layer.0.w", "F32", {256, 200}, 999);
  std::string other = Model("b.safetensors", ts);
  auto refused = w->Import(other, ParseModelName("a:v1").value(), ImportOptions{});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kExists) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("--force"), std::string::npos);
  StoreStats s3 = Stats(w->view());
  EXPECT_EQ(s3.chunks, s1.chunks) << "a refused import left chunks behind";
  EXPECT_EQ(w->view().GetName(ParseModelName("a:v1").value())->digest, r1.digest);

  // With force: replaced, and only the changed tensor's chunks are new.
  ImportOptions force;
  force.force = true;
  auto r4 = w->Import(other, ParseModelName("a:v1").value(), force);
  ASSERT_TRUE(r4.ok()) << r4.status().ToString();
  EXPECT_TRUE(r4->replaced);
  EXPECT_EQ(r4->new_chunks, 4u);
}

TEST_F(StoreTest, TagRmCompactRemoveChunksOnlyWhenUnreferenced) {
  auto a_ts = SampleModel(4);
  auto b_ts = a_ts;
  b_ts[0] = MakeTensor("embed", "F16", {700, 128}, 4242);  // B shares all but embed's 3 chunks
  std::string a = Model("a.safetensors", a_ts), b = Model("b.safetensors", b_ts);
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult ra = Import(w.get(), a, "a:v1");
  ImportResult rb = Import(w.get(), b, "b:v1");
  EXPECT_EQ(rb.new_chunks, 3u);
  uint64_t all = Stats(w->view()).chunks;
  EXPECT_EQ(all, ra.chunks + 3);

  ASSERT_TRUE(w->Tag("a:v1", ParseModelName("alias:x").value(), false).ok());
  EXPECT_EQ(w->Tag("b:v1", ParseModelName("alias:x").value(), false).code(), Status::Code::kExists);
  ASSERT_TRUE(w->Remove(ParseModelName("a:v1").value()).ok());
  EXPECT_TRUE(w->Remove(ParseModelName("a:v1").value()).IsNotFound());

  // alias:x still names A: nothing may go.
  auto c1 = w->Compact();
  ASSERT_TRUE(c1.ok()) << c1.status().ToString();
  EXPECT_EQ(c1->chunks_removed, 0u);
  EXPECT_EQ(c1->manifests_removed, 0u);
  EXPECT_EQ(Stats(w->view()).chunks, all);

  // Without alias:x, A's own 3 chunks go; those B shares stay.
  ASSERT_TRUE(w->Remove(ParseModelName("alias:x").value()).ok());
  auto c2 = w->Compact();
  ASSERT_TRUE(c2.ok()) << c2.status().ToString();
  EXPECT_EQ(c2->chunks_removed, 3u);
  EXPECT_EQ(c2->manifests_removed, 1u);
  EXPECT_GT(c2->stored_bytes_removed, 0u);
  EXPECT_EQ(Stats(w->view()).chunks, rb.chunks);
  auto rd = Reader();
  ASSERT_TRUE(rd);
  EXPECT_EQ(ReadAll(Export(rd->view(), "b:v1")), ReadAll(b));
  ExpectVerifies(rd->view());
  rd.reset();

  // Nothing named: everything goes.
  ASSERT_TRUE(w->Remove(ParseModelName("b:v1").value()).ok());
  auto c3 = w->Compact();
  ASSERT_TRUE(c3.ok()) << c3.status().ToString();
  EXPECT_EQ(c3->chunks_removed, rb.chunks);
  StoreStats s = Stats(w->view());
  EXPECT_EQ(s.chunks, 0u);
  EXPECT_EQ(s.stored_bytes, 0u);
  EXPECT_EQ(s.names, 0u);
}

TEST_F(StoreTest, SecondWriterIsBusy) {
  auto w1 = Writer();
  ASSERT_TRUE(w1);
  auto w2 = StoreWriter::Open(root_, false);
  ASSERT_FALSE(w2.ok());
  EXPECT_TRUE(w2.status().IsBusy()) << w2.status().ToString();
  const std::string& msg = w2.status().message();
  EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
  EXPECT_NE(msg.find(root_), std::string::npos) << msg;
  EXPECT_NE(msg.find("--wait"), std::string::npos) << msg;

  // With wait, the second writer gets the lock once the first lets go.
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto w = StoreWriter::Open(root_, true);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(got.load()) << "a waiting writer got the lock while another held it";
  w1.reset();
  t.join();
  EXPECT_TRUE(got.load());
  EXPECT_TRUE(StoreWriter::Open(root_, false).ok());
}

TEST_F(StoreTest, ReaderKeepsItsGenerationThroughRemoveAndCompact) {
  std::string a = Model("a.safetensors", SampleModel(5));
  std::string b = Model("b.safetensors", SampleModel(6));
  auto w = Writer();
  ASSERT_TRUE(w);
  ImportResult ra = Import(w.get(), a, "a:v1");
  Import(w.get(), b, "b:v1");

  auto old = Reader();
  ASSERT_TRUE(old);
  uint64_t gen = old->generation();
  ASSERT_TRUE(w->Remove(ParseModelName("a:v1").value()).ok());
  auto c = w->Compact();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->chunks_removed, ra.chunks);
  EXPECT_GE(c->generations_in_use, 1) << "compact dropped the generation a reader holds";
  EXPECT_TRUE(fs::exists(StorePaths{root_}.gen(gen)));

  // The old reader still has a:v1, every byte of it.
  EXPECT_TRUE(old->view().Resolve("a:v1").ok());
  EXPECT_EQ(ReadAll(Export(old->view(), "a:v1")), ReadAll(a));
  ExpectVerifies(old->view());

  // A new reader sees the store as it is now.
  auto now = Reader();
  ASSERT_TRUE(now);
  EXPECT_GT(now->generation(), gen);
  EXPECT_TRUE(now->view().Resolve("a:v1").status().IsNotFound());
  EXPECT_EQ(ReadAll(Export(now->view(), "b:v1")), ReadAll(b));

  // Once the old reader closes, the next compact drops its generation.
  old.reset();
  auto c2 = w->Compact();
  ASSERT_TRUE(c2.ok());
  EXPECT_FALSE(fs::exists(StorePaths{root_}.gen(gen)));
}

// Readers open generations read-only; a WAL in one would be replayed into
// memtables of every reader's own, which it keeps while it has it open.
TEST_F(StoreTest, AGenerationHoldsNoWalToReplay) {
  auto check = [this](const char* after) {
    StorePaths p{root_};
    for (const auto& e : fs::directory_iterator(p.gen(ReadCurrentGeneration(p).value()))) {
      if (e.path().extension() == ".log") {
        EXPECT_EQ(fs::file_size(e.path()), 0u) << e.path() << " after " << after;
      }
    }
  };
  auto w = Writer();
  ASSERT_TRUE(w);
  Import(w.get(), Model("a.safetensors", SampleModel(8)), "a:v1");
  check("an import");
  ASSERT_TRUE(w->Tag("a:v1", ParseModelName("a:v2").value(), false).ok());
  check("a tag");
  ASSERT_TRUE(w->Remove(ParseModelName("a:v1").value()).ok());
  check("a remove");
}

// RocksDB's files on a disk that is full: the file system reports 1 MiB free
// and refuses the next `n` new table files with `error`.
class FullDiskFs : public rocksdb::FileSystemWrapper {
 public:
  FullDiskFs() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FullDiskFs"; }
  void FailTables(int n, bool no_space) {
    no_space_ = no_space;
    fails_left_ = n;
  }
  int failed() const { return failed_; }
  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".sst") == 0 && fails_left_.fetch_sub(1) > 0) {
      failed_++;
      return no_space_ ? rocksdb::IOStatus::NoSpace("injected: no space left for " + f)
                       : rocksdb::IOStatus::IOError("injected: write error on " + f);
    }
    return target()->NewWritableFile(f, o, r, dbg);
  }
  rocksdb::IOStatus GetFreeSpace(const std::string&, const rocksdb::IOOptions&, uint64_t* free,
                                 rocksdb::IODebugContext*) override {
    *free = 1 << 20;
    return rocksdb::IOStatus::OK();
  }

 private:
  std::atomic<bool> no_space_{false};
  std::atomic<int> fails_left_{0};
  std::atomic<int> failed_{0};
};

// The writer's database on a FullDiskFs, in a store with one model imported,
// written and published directly (as the writer's commands do).
class FullDiskPublishTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    p_.root = root_;
    {
      auto w = Writer();
      ASSERT_TRUE(w);
      Import(w.get(), Model("a.safetensors", SampleModel(8)), "a:v1");
    }
    names_ = ReadAll(p_.gen(ReadCurrentGeneration(p_).value()) + "/NAMES");
    env_ = rocksdb::NewCompositeEnv(fs_);
    auto db = RocksDb::OpenPrimary(p_.db(), env_.get());
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value();
  }
  void TearDown() override { db_.reset(); }
  rocksdb::Status Put(const std::string& key) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return db_->db()->Put(wo, db_->meta(), key, "value of " + key);
  }
  Result<uint64_t> Publish() { return PublishGeneration(p_, db_.get(), names_, StoreAccess{}); }
  // Generation n, opened as readers open it, holds `key`, and no WAL to replay.
  void ExpectInGeneration(uint64_t n, const std::string& key) {
    auto gen = RocksDb::OpenReadOnly(p_.gen(n));
    ASSERT_TRUE(gen.ok()) << gen.status().ToString();
    std::string v;
    rocksdb::Status s = (*gen)->db()->Get(rocksdb::ReadOptions(), (*gen)->meta(), key, &v);
    EXPECT_TRUE(s.ok()) << key << " in generation " << n << ": " << s.ToString();
    EXPECT_EQ(v, "value of " + key);
    for (const auto& e : fs::directory_iterator(p_.gen(n))) {
      if (e.path().extension() == ".log") {
        EXPECT_EQ(fs::file_size(e.path()), 0u) << e.path();
      }
    }
  }

  StorePaths p_;
  std::string names_;
  std::shared_ptr<FullDiskFs> fs_ = std::make_shared<FullDiskFs>();
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<RocksDb> db_;
};

// The flush before a publish finds the disk full: the writer resumes the
// database itself (RocksDB's own recovery would wait for 128 MiB of free
// space and refuse the writer's Resume() meanwhile), the generation holds the
// change, and the writer goes on writing and publishing.
TEST_F(FullDiskPublishTest, AFlushThatFoundTheDiskFullIsResumedAndPublished) {
  ASSERT_TRUE(Put("k1").ok());
  fs_->FailTables(1, true);
  auto n = Publish();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(fs_->failed(), 1);
  // The failed flush gave its memtable back: nothing stranded to keep the
  // database from being resumed.
  EXPECT_FALSE(db_->stranded());
  ExpectInGeneration(*n, "k1");

  rocksdb::Status s = Put("k2");
  ASSERT_TRUE(s.ok()) << "the database was left stopped: " << s.ToString();
  auto n2 = Publish();
  ASSERT_TRUE(n2.ok()) << n2.status().ToString();
  EXPECT_GT(*n2, *n);
  ExpectInGeneration(*n2, "k1");
  ExpectInGeneration(*n2, "k2");
  db_.reset();
  auto db = RocksDb::OpenPrimary(p_.db());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  std::string v;
  EXPECT_TRUE((*db)->db()->Get(rocksdb::ReadOptions(), (*db)->meta(), "k2", &v).ok());
}

// Only a full disk lets a publish fall back to a generation with the WAL: a
// flush that fails otherwise (an I/O error) fails the publish, naming what
// failed, and readers keep the generation they had.
TEST_F(FullDiskPublishTest, AFlushThatFailsForAnotherReasonFailsThePublish) {
  const uint64_t before = ReadCurrentGeneration(p_).value();
  ASSERT_TRUE(Put("k1").ok());
  fs_->FailTables(1000, false);
  auto n = Publish();
  ASSERT_FALSE(n.ok()) << "published generation " << *n << " after a failed flush";
  EXPECT_EQ(n.status().code(), Status::Code::kIOError) << n.status().ToString();
  EXPECT_NE(n.status().message().find("flush the store's database " + p_.db()), std::string::npos)
      << n.status().ToString();
  EXPECT_NE(n.status().message().find("injected: write error"), std::string::npos)
      << n.status().ToString();
  EXPECT_EQ(ReadCurrentGeneration(p_).value(), before);
  EXPECT_EQ(ListGenerations(p_), std::vector<uint64_t>{before});

  // RocksDB takes such an error as fatal, to be cleared by a new open: the
  // error gone, the next writer command holds the change.
  fs_->FailTables(0, false);
  db_.reset();
  auto db = RocksDb::OpenPrimary(p_.db(), env_.get());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  db_ = std::move(db).value();
  auto n2 = Publish();
  ASSERT_TRUE(n2.ok()) << n2.status().ToString();
  ExpectInGeneration(*n2, "k1");
}

// The levels of a metadata table's zstd (as its properties record them).
std::vector<std::string> MetaTableLevels(RocksDb* db) {
  rocksdb::TablePropertiesCollection tables;
  EXPECT_TRUE(db->db()->GetPropertiesOfAllTables(db->meta(), &tables).ok());
  std::vector<std::string> levels;
  for (const auto& [file, props] : tables) {
    const std::string& o = props->compression_options;
    size_t at = o.find("level=");
    levels.push_back(props->compression_name + " " +
                     (at == o.npos ? "?" : o.substr(at + 6, o.find(';', at) - at - 6)));
  }
  std::sort(levels.begin(), levels.end());
  return levels;
}

// A flush, which a commit waits for, writes the metadata at a fast zstd
// level; compactions into the last level, where it stays, at level 9.
TEST_F(StoreTest, MetadataIsFlushedFastAndCompactedAtLevel9) {
  StorePaths p{root_};
  fs::create_directories(p.db());
  auto db = RocksDb::OpenPrimary(p.db());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  std::string value;
  for (int i = 0; i < 2000; ++i) value += "tensor." + std::to_string(i) + " ";
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 50; ++i)
      ASSERT_TRUE((*db)
                      ->db()
                      ->Put(rocksdb::WriteOptions(), (*db)->meta(),
                            "m." + std::to_string(1000 + i) + "." + std::to_string(t), value)
                      .ok());
    ASSERT_TRUE((*db)->Flush("flush").ok());
  }
  EXPECT_EQ(MetaTableLevels(db->get()), (std::vector<std::string>{"ZSTD 1", "ZSTD 1"}));
  // What an automatic compaction does: L0 into the last level, with the
  // writer's options (the two tables' keys interleave, so it rewrites them).
  ASSERT_TRUE((*db)
                  ->db()
                  ->CompactRange(rocksdb::CompactRangeOptions(), (*db)->meta(), nullptr, nullptr)
                  .ok());
  EXPECT_EQ(MetaTableLevels(db->get()), std::vector<std::string>{"ZSTD 9"});
}

// compact writes the metadata with zstd level 19; the writer's options keep
// level 9 for every other compaction into the last level (the automatic ones).
TEST_F(StoreTest, CompactAloneWritesTheMetadataAtTheStrongestLevel) {
  auto w = Writer();
  ASSERT_TRUE(w);
  Import(w.get(), Model("a.safetensors", SampleModel(8)), "a:v1");
  ASSERT_TRUE(w->Compact().ok());
  StorePaths p{root_};
  {
    auto gen = RocksDb::OpenReadOnly(p.gen(ReadCurrentGeneration(p).value()));
    ASSERT_TRUE(gen.ok()) << gen.status().ToString();
    rocksdb::TablePropertiesCollection tables;
    ASSERT_TRUE((*gen)->db()->GetPropertiesOfAllTables((*gen)->meta(), &tables).ok());
    ASSERT_FALSE(tables.empty());
    for (const auto& [file, props] : tables)
      EXPECT_NE(props->compression_options.find("level=19;"), std::string::npos)
          << file << ": " << props->compression_options;
  }
  std::string options;
  for (const auto& e : fs::directory_iterator(p.db()))
    if (e.path().filename().string().rfind("OPTIONS-", 0) == 0) options = ReadAll(e.path());
  size_t meta = options.find("[CFOptions \"default\"]");
  ASSERT_NE(meta, std::string::npos) << options;
  size_t end = options.find("[CFOptions", meta + 1);
  std::string section = options.substr(meta, end - meta);
  EXPECT_NE(section.find("bottommost_compression=kZSTD"), std::string::npos) << section;
  size_t opts = section.find("bottommost_compression_opts=");
  ASSERT_NE(opts, std::string::npos) << section;
  std::string bottom = section.substr(opts, section.find('}', opts) - opts);
  EXPECT_NE(bottom.find("level=9;"), std::string::npos) << bottom;
}

// Every open of the writer and every change of options writes an OPTIONS
// file; the writer keeps only the newest one.
TEST_F(StoreTest, OnlyTheNewestOptionsFileIsKept) {
  for (int i = 0; i < 3; ++i) {
    auto w = Writer();
    ASSERT_TRUE(w);
    Import(w.get(), Model("a.safetensors", SampleModel(5 + i)), "a:v" + std::to_string(i));
    ASSERT_TRUE(w->Compact().ok());  // sets options twice: more OPTIONS files
  }
  auto w = Writer();
  ASSERT_TRUE(w);
  int options = 0;
  for (const auto& e : fs::directory_iterator(StorePaths{root_}.db())) {
    std::string n = e.path().filename().string();
    if (n.rfind("OPTIONS-", 0) == 0 && n.find('.') == std::string::npos) ++options;
  }
  EXPECT_EQ(options, 1);
}

TEST_F(StoreTest, GenerationLockKeepsFilesFromDeletion) {
  std::string a = Model("a.safetensors", SampleModel(7));
  auto w = Writer();
  ASSERT_TRUE(w);
  Import(w.get(), a, "a:v1");
  StorePaths p{root_};
  auto lock = GenerationLock::AcquireCurrent(p);
  ASSERT_TRUE(lock.ok()) << lock.status().ToString();
  uint64_t n = lock->number();
  EXPECT_EQ(n, ReadCurrentGeneration(p).value());
  std::map<std::string, uintmax_t> files;
  for (const auto& e : fs::directory_iterator(p.gen(n)))
    files[e.path().filename().string()] = fs::file_size(e.path());
  ASSERT_FALSE(files.empty());

  // New generations come and compaction rewrites the database; the locked
  // generation keeps every file as it was.
  ASSERT_TRUE(w->Remove(ParseModelName("a:v1").value()).ok());
  ASSERT_TRUE(w->Compact().ok());
  EXPECT_GT(ReadCurrentGeneration(p).value(), n);
  auto removed = RemoveUnusedGenerations(p);
  ASSERT_TRUE(removed.ok());
  for (const auto& [f, size] : files) {
    EXPECT_TRUE(fs::exists(p.gen(n) + "/" + f)) << f << " of the locked generation was deleted";
    if (fs::exists(p.gen(n) + "/" + f)) {
      EXPECT_EQ(fs::file_size(p.gen(n) + "/" + f), size) << f;
    }
  }
  std::vector<uint64_t> gens = ListGenerations(p);
  EXPECT_NE(std::find(gens.begin(), gens.end(), n), gens.end());

  // Released, the generation goes at the next clean-up; the current one stays.
  { GenerationLock released = std::move(lock).value(); }
  removed = RemoveUnusedGenerations(p);
  ASSERT_TRUE(removed.ok());
  EXPECT_GE(removed.value(), 1);
  EXPECT_FALSE(fs::exists(p.gen(n)));
  gens = ListGenerations(p);
  ASSERT_EQ(gens.size(), 1u);
  EXPECT_EQ(gens[0], ReadCurrentGeneration(p).value());
}

// Regression: a writer killed after committing an import but before
// publishing its generation left the import invisible to readers until some
// later command happened to publish. The state is rebuilt here by putting
// the generation from before the import back as the current one.
TEST_F(StoreTest, CommitLeftUnpublishedIsPublishedByTheNextWriter) {
  std::string a = Model("a.safetensors", SampleModel(8));
  std::string b = Model("b.safetensors", SampleModel(9));
  StorePaths p{root_};
  std::string saved = File("saved-generation");
  uint64_t before = 0;
  {
    auto w = Writer();
    ASSERT_TRUE(w);
    Import(w.get(), a, "a:v1");
    before = ReadCurrentGeneration(p).value();
    fs::copy(p.gen(before), saved, fs::copy_options::recursive);
    Import(w.get(), b, "b:v1");
  }
  uint64_t after = ReadCurrentGeneration(p).value();
  ASSERT_GT(after, before);
  fs::remove_all(p.gen(after));
  fs::copy(saved, p.gen(before), fs::copy_options::recursive);
  std::ofstream(p.current_file(), std::ios::trunc) << before << "\n";
  {
    auto rd = Reader();
    ASSERT_TRUE(rd);
    EXPECT_TRUE(rd->view().Resolve("b:v1").status().IsNotFound())
        << "the test did not rebuild the unpublished state";
  }

  // Any writer, even one whose command then fails, publishes it first.
  {
    auto w = Writer();
    ASSERT_TRUE(w);
    EXPECT_TRUE(w->Remove(ParseModelName("none:x").value()).IsNotFound());
  }
  EXPECT_GT(ReadCurrentGeneration(p).value(), before);
  auto rd = Reader();
  ASSERT_TRUE(rd);
  EXPECT_EQ(ReadAll(Export(rd->view(), "b:v1")), ReadAll(b));
  EXPECT_EQ(ReadAll(Export(rd->view(), "a:v1")), ReadAll(a));

  // A writer with nothing new to publish publishes nothing.
  uint64_t now = ReadCurrentGeneration(p).value();
  rd.reset();
  { ASSERT_TRUE(Writer()); }
  EXPECT_EQ(ReadCurrentGeneration(p).value(), now);
}

// Checks that every chunk record of view has its frame's frame_version,
// transform and length (docs/format.md), whatever the frame version packs
// into its first bytes; returns how many it checked, and the transforms seen.
int CheckRecordsDescribeFrames(const StoreView& view, std::set<int>* transforms) {
  int checked = 0;
  Status s = view.ForEachChunkRecord([&](const ChunkKey& key, const ChunkRecord& rec) {
    rocksdb::PinnableSlice frame;
    PSTORE_RETURN_IF_ERROR(view.ReadFrame(key, &frame));
    auto info = InspectFrame(std::string_view(frame.data(), frame.size()), rec.raw_len);
    if (!info.ok()) return info.status();
    EXPECT_EQ(int(rec.frame_version), int(info->version)) << key.Hex();
    EXPECT_EQ(int(rec.transform), int(info->transform)) << key.Hex();
    EXPECT_EQ(rec.stored_len, frame.size()) << key.Hex();
    transforms->insert(int(info->transform));
    checked++;
    return Status::OK();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return checked;
}

TEST_F(StoreTest, ChunkRecordsDescribeTheirFrames) {
  std::string src = Model("m.safetensors", SampleModel(3));
  auto w = Writer();
  ASSERT_TRUE(w);
  Import(w.get(), src, "m:v1");
  auto rd = Reader();
  ASSERT_TRUE(rd);
  std::set<int> transforms;
  EXPECT_GE(CheckRecordsDescribeFrames(rd->view(), &transforms), 10);
  // F16, F32, BF16 and U8 tensors: several transforms, not one by chance.
  EXPECT_GE(transforms.size(), 3u);
}

// Chunks that come whole from elsewhere (a pull through WriteChecked, a lazy
// ingest through Write) get the same records as an import writes.
TEST_F(StoreTest, ChunkSourceWritesRecordFramesAsImportDoes) {
  std::string src = Model("m.safetensors", SampleModel(3));
  struct Chunk {
    ChunkKey key;
    std::string frame;
    uint64_t raw_len;
  };
  std::vector<Chunk> chunks;
  {
    auto w = Writer();
    ASSERT_TRUE(w);
    Import(w.get(), src, "m:v1");
    auto rd = Reader();
    ASSERT_TRUE(rd);
    Status s = rd->view().ForEachChunkRecord([&](const ChunkKey& key, const ChunkRecord& rec) {
      rocksdb::PinnableSlice frame;
      PSTORE_RETURN_IF_ERROR(rd->view().ReadFrame(key, &frame));
      chunks.push_back({key, frame.ToString(), rec.raw_len});
      return Status::OK();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  ASSERT_GE(chunks.size(), 10u);
  root_ = dir_.path() + "/copy";
  auto w = Writer();
  ASSERT_TRUE(w);
  RocksChunkSource dst(w->view().db(), true, "copy");
  std::vector<ChunkFrameRef> checked, unchecked;
  for (size_t i = 0; i < chunks.size(); ++i) {
    ChunkFrameRef ref{chunks[i].key, chunks[i].frame, chunks[i].raw_len};
    (i % 2 ? checked : unchecked).push_back(ref);
  }
  ASSERT_TRUE(dst.Write(unchecked).ok());
  // WriteChecked's callers looked the chunks up: it reads nothing itself.
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  ASSERT_TRUE(dst.WriteChecked(checked).ok());
  EXPECT_EQ(rocksdb::get_perf_context()->get_from_memtable_count, 0u);
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  std::set<int> transforms;
  EXPECT_EQ(CheckRecordsDescribeFrames(w->view(), &transforms), int(chunks.size()));
  EXPECT_GE(transforms.size(), 3u);
}

TEST_F(StoreTest, ReaderOfMissingStoreIsNotFound) {
  auto r = StoreReader::Open(root_);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(root_), std::string::npos);
}

}  // namespace
}  // namespace pstore
