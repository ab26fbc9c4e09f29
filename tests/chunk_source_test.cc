// The ChunkSource conformance suite: one set of tests, run over every
// implementation (store/chunk_source.h says what each must guarantee).
//
// The RADOS run needs a cluster: PSTORE_CEPH_CONF names its conf (ctest
// starts one with tests/ceph/cluster.sh as the fixture of the test
// chunk_source_rados); without it the RADOS tests are skipped. Each test
// uses a namespace of its own, so runs never see each other's chunks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "codec/chunk_codec.h"
#include "store/chunk_read.h"
#include "store/chunk_source.h"
#include "store/memory_chunk_source.h"
#include "store/rocks.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"
#include "tests/test_safetensors.h"
#ifdef PSTORE_HAVE_RADOS
#include "store/remote/rados_chunk_source.h"
#include "store/remote/remote_tier.h"
#endif

namespace pstore {
namespace {

// n bytes that compress (runs of a seeded random byte), so that coders
// make frames that differ from the raw bytes.
std::string Bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 16) {
    char c = char(rng());
    for (size_t j = i; j < std::min(n, i + 16); ++j) s[j] = c;
  }
  return s;
}

// A chunk as the store keeps it: its key, its frame, its raw length.
struct Chunk {
  ChunkKey key;
  std::string frame;
  uint64_t raw_len = 0;
  ChunkFrameRef ref() const { return {key, frame, raw_len}; }
};
Chunk MakeChunk(size_t n, uint32_t seed, Profile profile = Profile::kZstd) {
  std::string raw = Bytes(n, seed);
  Chunk c;
  c.key = HashBytes(raw.data(), raw.size());
  c.raw_len = n;
  EncodeOptions eo;
  eo.profile = profile;
  ChunkEncoder enc(eo);
  enc.Encode(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), DType::kU8,
             &c.frame);
  return c;
}

// Writes chunks to src in one batch; their keys, in order, to *keys.
Status WriteAll(ChunkSource* src, const std::vector<Chunk>& chunks, std::vector<ChunkKey>* keys) {
  std::vector<ChunkFrameRef> refs;
  for (const Chunk& c : chunks) {
    refs.push_back(c.ref());
    keys->push_back(c.key);
  }
  return src->Write(refs);
}

struct MemoryFactory {
  static std::unique_ptr<ChunkSource> Make() { return std::make_unique<MemoryChunkSource>(); }
};

// A new store in a folder of its own, its writer, and the writer's source.
class TempStoreSource final : public ChunkSource {
 public:
  static std::unique_ptr<TempStoreSource> Make() {
    char dir[] = "/tmp/pstore-chunk-source-XXXXXX";
    if (!mkdtemp(dir)) return nullptr;
    auto w = StoreWriter::Open(std::string(dir) + "/store", false);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    if (!w.ok()) return nullptr;
    return std::unique_ptr<TempStoreSource>(new TempStoreSource(dir, std::move(w).value()));
  }
  ~TempStoreSource() override {
    src_.reset();
    writer_.reset();
    std::filesystem::remove_all(dir_);
  }
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> k) override {
    return src_->Read(k);
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> k) override {
    return src_->Contains(k);
  }
  Status Write(std::span<const ChunkFrameRef> f) override { return src_->Write(f); }
  Status ReadFrames(std::span<const ChunkKey> k, FrameBatch* b) override {
    return src_->ReadFrames(k, b);
  }
  Result<std::optional<ReadPlan>> PlanSequentialRead(std::span<const ChunkKey> k) override {
    return src_->PlanSequentialRead(k);
  }
  std::string Describe() const override { return src_->Describe(); }
  StoreWriter& writer() { return *writer_; }

 private:
  TempStoreSource(std::string dir, std::unique_ptr<StoreWriter> w)
      : dir_(std::move(dir)), writer_(std::move(w)) {
    src_ = std::make_unique<RocksChunkSource>(writer_->view().db(), true, "store " + dir_);
  }
  std::string dir_;
  std::unique_ptr<StoreWriter> writer_;
  std::unique_ptr<RocksChunkSource> src_;
};
struct RocksFactory {
  static std::unique_ptr<ChunkSource> Make() { return TempStoreSource::Make(); }
};

#ifdef PSTORE_HAVE_RADOS
std::string TestNamespace() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name() + "." + std::to_string(getpid());
}

const char* CephConf() {
  return std::getenv("PSTORE_CEPH_CONF");
}
RadosOptions TestRadosOptions() {
  RadosOptions o;
  o.conf_path = CephConf();
  const char* pool = std::getenv("PSTORE_CEPH_POOL");
  o.pool = pool ? pool : "pstore";
  o.ns = TestNamespace();
  o.timeout_seconds = 20;
  o.max_in_flight = 16;
  return o;
}
struct RadosFactory {
  static std::unique_ptr<ChunkSource> Make() {
    if (!CephConf()) return nullptr;
    auto src = RadosChunkSource::Open(TestRadosOptions());
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    if (!src.ok()) return nullptr;
    return std::move(src).value();
  }
};
#endif

template <typename Factory>
class ChunkSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = Factory::Make();
    // A source that failed to open is a failure (gtest would run the body
    // of a test both failed and skipped); no cluster configured, a skip.
    if (!src_ && HasFailure()) FAIL() << "the source did not open";
    if (!src_) GTEST_SKIP() << "no cluster: set PSTORE_CEPH_CONF (ctest -L remote starts one)";
  }
  std::unique_ptr<ChunkSource> src_;
};

using Implementations = ::testing::Types<MemoryFactory, RocksFactory
#ifdef PSTORE_HAVE_RADOS
                                         ,
                                         RadosFactory
#endif
                                         >;
class Names {
 public:
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, MemoryFactory>) return "Memory";
    if (std::is_same_v<T, RocksFactory>) return "Rocks";
    return "Rados";
  }
};
TYPED_TEST_SUITE(ChunkSourceTest, Implementations, Names);

TYPED_TEST(ChunkSourceTest, MissingKeyIsAResultNotAnError) {
  Chunk c = MakeChunk(100, 1);
  auto got = this->src_->Read(std::span(&c.key, 1));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_FALSE((*got)[0].has_value());
  auto has = this->src_->Contains(std::span(&c.key, 1));
  ASSERT_TRUE(has.ok()) << has.status().ToString();
  EXPECT_FALSE((*has)[0]);
}

TYPED_TEST(ChunkSourceTest, WriteThenReadReturnsSameBytes) {
  // Empty, one byte, a typical chunk, the largest chunk a store may hold.
  std::vector<Chunk> chunks = {MakeChunk(0, 2), MakeChunk(1, 3), MakeChunk(256 << 10, 4),
                               MakeChunk((4 << 20) + 64, 5)};
  std::vector<ChunkKey> keys;
  ASSERT_TRUE(WriteAll(this->src_.get(), chunks, &keys).ok());
  auto got = this->src_->Read(keys);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    ASSERT_TRUE((*got)[i].has_value()) << "chunk " << i;
    EXPECT_EQ(*(*got)[i], chunks[i].frame) << "chunk " << i;
  }
}

TYPED_TEST(ChunkSourceTest, BatchKeepsOrderWithRepeatsAndMissingKeys) {
  Chunk a = MakeChunk(1000, 6), b = MakeChunk(2000, 7), missing = MakeChunk(10, 8);
  std::vector<ChunkFrameRef> refs = {a.ref(), b.ref()};
  ASSERT_TRUE(this->src_->Write(refs).ok());
  std::vector<ChunkKey> keys = {b.key, missing.key, a.key, b.key};
  auto got = this->src_->Read(keys);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 4u);
  EXPECT_EQ((*got)[0], b.frame);
  EXPECT_FALSE((*got)[1].has_value());
  EXPECT_EQ((*got)[2], a.frame);
  EXPECT_EQ((*got)[3], b.frame);
  auto has = this->src_->Contains(keys);
  ASSERT_TRUE(has.ok()) << has.status().ToString();
  EXPECT_EQ(*has, (std::vector<bool>{true, false, true, true}));
}

TYPED_TEST(ChunkSourceTest, RewritingAKeyKeepsTheFirstFrame) {
  // The same chunk coded two ways: same key, different frames.
  Chunk a = MakeChunk(5000, 9), other = MakeChunk(5000, 9, Profile::kRaw);
  ASSERT_EQ(a.key, other.key);
  ASSERT_NE(a.frame, other.frame);
  std::vector<ChunkFrameRef> first = {a.ref()}, second = {other.ref()};
  ASSERT_TRUE(this->src_->Write(first).ok());
  Status st = this->src_->Write(second);
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto got = this->src_->Read(std::span(&a.key, 1));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0], a.frame);
}

TYPED_TEST(ChunkSourceTest, EmptyBatchesAreNoOps) {
  auto got = this->src_->Read({});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->empty());
  auto has = this->src_->Contains({});
  ASSERT_TRUE(has.ok());
  EXPECT_TRUE(has->empty());
  EXPECT_TRUE(this->src_->Write({}).ok());
}

// More keys than operations in flight, so batches are sent in windows.
TYPED_TEST(ChunkSourceTest, LargeBatchRoundTrips) {
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 300; ++i) chunks.push_back(MakeChunk(4096 + i, 100 + i));
  std::vector<ChunkFrameRef> refs;
  std::vector<ChunkKey> keys;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i % 2 == 0) refs.push_back(chunks[i].ref());
    keys.push_back(chunks[i].key);
  }
  ASSERT_TRUE(this->src_->Write(refs).ok());
  auto got = this->src_->Read(keys);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  auto has = this->src_->Contains(keys);
  ASSERT_TRUE(has.ok()) << has.status().ToString();
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_EQ((*got)[i], chunks[i].frame) << i;
      EXPECT_TRUE((*has)[i]) << i;
    } else {
      EXPECT_FALSE((*got)[i].has_value()) << i;
      EXPECT_FALSE((*has)[i]) << i;
    }
  }
}

TYPED_TEST(ChunkSourceTest, ConcurrentWritersAndReadersAgree) {
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 64; ++i) chunks.push_back(MakeChunk(8192, 1000 + i));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Every thread writes all chunks (the same keys) in its own order.
      for (size_t j = 0; j < chunks.size(); ++j) {
        const Chunk& c = chunks[(j + size_t(t) * 16) % chunks.size()];
        ChunkFrameRef r = c.ref();
        if (!this->src_->Write(std::span(&r, 1)).ok()) failures++;
        auto got = this->src_->Read(std::span(&c.key, 1));
        if (!got.ok() || (*got)[0] != c.frame) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TYPED_TEST(ChunkSourceTest, ReadFramesAgreesWithReadAndReusesItsBatch) {
  Chunk a = MakeChunk(1000, 30), b = MakeChunk(300 << 10, 31), missing = MakeChunk(10, 32);
  Chunk empty = MakeChunk(0, 33);
  std::vector<ChunkFrameRef> refs = {a.ref(), b.ref(), empty.ref()};
  ASSERT_TRUE(this->src_->Write(refs).ok());
  std::vector<ChunkKey> keys = {b.key, missing.key, a.key, b.key, empty.key};
  FrameBatch batch;
  ASSERT_TRUE(this->src_->ReadFrames(keys, &batch).ok());
  ASSERT_EQ(batch.size(), keys.size());
  auto got = this->src_->Read(keys);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_TRUE(batch.status(i).ok()) << i << ": " << batch.status(i).ToString();
    ASSERT_EQ(batch.found(i), (*got)[i].has_value()) << i;
    if (batch.found(i)) {
      EXPECT_EQ(batch.frame(i), *(*got)[i]) << i;
    }
  }
  EXPECT_FALSE(batch.found(1));
  // The same batch again, smaller: only the new entries, right.
  std::vector<ChunkKey> again = {a.key};
  ASSERT_TRUE(this->src_->ReadFrames(again, &batch).ok());
  ASSERT_EQ(batch.size(), 1u);
  ASSERT_TRUE(batch.found(0));
  EXPECT_EQ(batch.frame(0), a.frame);
  ASSERT_TRUE(this->src_->ReadFrames({}, &batch).ok());
  EXPECT_EQ(batch.size(), 0u);
}

TYPED_TEST(ChunkSourceTest, ASequentialReadPlanIsAPermutationOfTheKeysOrNone) {
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 20; ++i) chunks.push_back(MakeChunk(8192 + i, 40 + i));
  std::vector<ChunkKey> keys;
  ASSERT_TRUE(WriteAll(this->src_.get(), chunks, &keys).ok());
  auto plan = this->src_->PlanSequentialRead(keys);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  if (!*plan) return;  // no file order: allowed
  ASSERT_EQ((*plan)->places.size(), keys.size());
  std::vector<uint32_t> order = (*plan)->order;
  std::sort(order.begin(), order.end());
  for (uint32_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], i);
  ASSERT_EQ(order.size(), keys.size());
  for (const ReadPlan::Place& p : (*plan)->places)
    EXPECT_TRUE(p.file == ReadPlan::Place::kNoFile || p.file < (*plan)->files.size());
}

// The read, decode and check helper names the model, tensor and chunk of a
// chunk that is missing or damaged, and says what to do.
TEST(ChunkRead, AMissingOrDamagedChunkIsNamedWithItsUse) {
  MemoryChunkSource src;
  Chunk good = MakeChunk(5000, 50), other = MakeChunk(5000, 51), missing = MakeChunk(10, 52);
  ChunkFrameRef swapped{good.key, other.frame, 5000};  // a damaged copy of good
  ASSERT_TRUE(src.Write(std::span(&swapped, 1)).ok());
  ChunkDecoder decoder;
  FrameBatch batch;
  std::vector<uint8_t> out(5000);
  const ChunkUse use{"m:1", "layers.0.w", 3};
  Status st = ReadChunk(src, good.key, use, &decoder, &batch, out);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_EQ(
      st.message().rfind("model m:1 tensor layers.0.w chunk 3 (key " + good.key.Hex() + "): ", 0),
      0u)
      << st.ToString();
  EXPECT_NE(st.message().find("pstore verify"), std::string::npos) << st.ToString();
  out.resize(10);
  st = ReadChunk(src, missing.key, use, &decoder, &batch, out);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("chunk 3 (key " + missing.key.Hex() + "): chunk " +
                              missing.key.Hex() + " is missing from memory"),
            std::string::npos)
      << st.ToString();
  // A chunk that is right decodes, whatever came before in the batch.
  ChunkFrameRef right = other.ref();
  ASSERT_TRUE(src.Write(std::span(&right, 1)).ok());
  out.resize(5000);
  ASSERT_TRUE(ReadChunk(src, other.key, use, &decoder, &batch, out).ok());
  std::string raw = Bytes(5000, 51);
  EXPECT_EQ(std::string(out.begin(), out.end()), raw);
}

// n U8 tensors t0, t1, ... of size(i) random bytes each, drawn from
// `values` byte values (256: incompressible, so frames go to blob files;
// fewer: coded frames).
std::vector<testing_util::TestTensor> RandomTensors(int n, const std::function<size_t(int)>& size,
                                                    uint32_t seed, unsigned values) {
  std::vector<testing_util::TestTensor> tensors;
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    std::string d(size(i), '\0');
    for (char& c : d) c = char(rng() % values);
    std::string name = "t";  // (not "t" + to_string: GCC 12 warns falsely of overlap)
    name += std::to_string(i);
    tensors.push_back({name, "U8", {d.size()}, d});
  }
  return tensors;
}

// Writes tensors as dir/m.safetensors and imports that into the store at
// dir/s as m:1.
void ImportIntoStore(const std::string& dir, const std::vector<testing_util::TestTensor>& tensors) {
  const std::string src = dir + "/m.safetensors";
  testing_util::WriteSafetensors(src, tensors);
  auto w = StoreWriter::Open(dir + "/s", false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Import(src, {"m", "1"}, ImportOptions{}).ok());
}

// The local store plans a bulk read in blob-file order: each planned place
// holds exactly the frame ReadFrames returns; too few keys get no plan.
TEST(RocksChunkSourceTest, PlanPlacesEveryBlobFrameWhereItIs) {
  char dir[] = "/tmp/pstore-chunk-plan-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ImportIntoStore(dir, RandomTensors(
                           24, [](int i) { return 100000 + size_t(i) * 1000; }, 7, 256));
  if (HasFatalFailure()) return;
  auto r = StoreReader::Open(std::string(dir) + "/s");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto d = (*r)->view().Resolve("m:1");
  auto m = (*r)->view().LoadManifest(*d);
  ASSERT_TRUE(m.ok());
  std::shared_ptr<ChunkSource> source = GenerationChunkSource(std::move(r).value());
  const std::vector<ChunkKey>& keys = (*m)->chunks;
  auto plan = source->PlanSequentialRead(keys);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->has_value());
  const ReadPlan& p = **plan;
  ASSERT_EQ(p.places.size(), keys.size());
  ASSERT_FALSE(p.files.empty());
  {
    // The batch's pins refer to the database: it goes before the source.
    FrameBatch frames;
    ASSERT_TRUE(source->ReadFrames(keys, &frames).ok());
    const ReadPlan::Place* prev = nullptr;
    for (uint32_t i : p.order) {
      const ReadPlan::Place& pl = p.places[i];
      ASSERT_NE(pl.file, ReadPlan::Place::kNoFile) << "chunk " << i << " is in a blob file";
      if (prev && prev->file == pl.file) {
        EXPECT_GT(pl.offset, prev->offset) << "file order";
      }
      prev = &pl;
      ASSERT_TRUE(frames.found(i));
      ASSERT_EQ(pl.size, frames.frame(i).size());
      std::string bytes(pl.size, '\0');
      int fd = ::open(p.files[pl.file].c_str(), O_RDONLY);
      ASSERT_GE(fd, 0) << p.files[pl.file];
      ASSERT_EQ(::pread(fd, bytes.data(), bytes.size(), off_t(pl.offset)), ssize_t(bytes.size()));
      ::close(fd);
      EXPECT_EQ(bytes, frames.frame(i)) << "chunk " << i;
    }
  }
  // One key of the store's many: the scan is not worth it.
  auto none = source->PlanSequentialRead(std::span(keys.data(), 1));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  source.reset();
  std::filesystem::remove_all(dir);
}

// The RocksDB source refuses a frame that does not decode to its key, and
// writes nothing of that batch.
TEST(RocksChunkSourceTest, RefusesFrameThatDoesNotDecodeToItsKey) {
  auto src = TempStoreSource::Make();
  ASSERT_NE(src, nullptr);
  Chunk good = MakeChunk(3000, 20), bad = MakeChunk(3000, 21);
  bad.frame[bad.frame.size() / 2] ^= 0x40;  // a flipped bit in the payload
  std::vector<ChunkFrameRef> refs = {good.ref(), bad.ref()};
  Status st = src->Write(refs);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find(bad.key.Hex()), std::string::npos) << st.ToString();
  std::vector<ChunkKey> keys = {good.key, bad.key};
  auto has = src->Contains(keys);
  ASSERT_TRUE(has.ok());
  EXPECT_EQ(*has, (std::vector<bool>{false, false}));
  // A frame under another chunk's key is refused too.
  Chunk other = MakeChunk(3000, 22);  // kept alive: the ref points into its frame
  ChunkFrameRef swapped{good.key, other.frame, 3000};
  EXPECT_TRUE(src->Write(std::span(&swapped, 1)).IsCorruption());
}

// What the RocksDB source writes, the store's own read path reads and checks.
TEST(RocksChunkSourceTest, WrittenChunksDecodeThroughTheStore) {
  auto src = TempStoreSource::Make();
  ASSERT_NE(src, nullptr);
  Chunk c = MakeChunk(256 << 10, 23);
  ChunkFrameRef r = c.ref();
  ASSERT_TRUE(src->Write(std::span(&r, 1)).ok());
  auto rec = src->writer().view().GetChunkRecord(c.key);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->raw_len, c.raw_len);
  EXPECT_EQ((*rec)->stored_len, c.frame.size());
  ChunkDecoder dec;
  std::vector<uint8_t> out(c.raw_len);
  Status st = src->writer().view().ReadChunk(c.key, &dec, out);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(std::string(out.begin(), out.end()), Bytes(256 << 10, 23));
}

// ReadDecoded reads a local store in runs of kDecodeRunBytes (so RocksDB's
// read buffers stay small), or with LargeFrames::kFromFiles its chunks of
// kDirectReadBytes or more from their blob files; every entry still gets its
// own bytes and outcome, across runs, with a missing key, chunks larger than
// a run and a key asked for twice among them, whether the chunks are still in
// the memtable or in blob files.
TEST(RocksChunkSourceTest, ReadDecodedKeepsEveryEntrysOutcome) {
  auto src = TempStoreSource::Make();
  ASSERT_NE(src, nullptr);
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 40; i++)
    chunks.push_back(MakeChunk(i == 17 || i == 30 ? 300 << 10 : (i % 5 == 0 ? 40 << 10 : 16 << 10),
                               i, Profile::kRaw));
  std::vector<ChunkKey> stored;
  ASSERT_TRUE(WriteAll(src.get(), chunks, &stored).ok());
  // Entry by entry: the chunk's index, or -1 for a key not stored.
  std::vector<int> which;
  for (int i = 0; i < 40; i++) which.push_back(i);
  which.insert(which.begin() + 25, -1);
  which.insert(which.begin() + 33, 17);  // chunk 17 again
  std::vector<ChunkKey> keys;
  std::vector<uint64_t> lens;
  const ChunkKey missing = HashBytes("not stored", 10);
  for (int w : which) {
    keys.push_back(w < 0 ? missing : stored[size_t(w)]);
    lens.push_back(w < 0 ? 16 << 10 : chunks[size_t(w)].raw_len);
  }
  uint64_t total = 0;
  for (uint64_t n : lens) total += n;
  ASSERT_GT(total, 4 * kDecodeRunBytes);
  RocksDb* db = src->writer().view().db();
  for (bool flushed : {false, true}) {
    if (flushed) {
      ASSERT_TRUE(db->db()->Flush(rocksdb::FlushOptions(), db->chunks()).ok());
    }
    for (auto large : {RocksChunkSource::LargeFrames::kThroughRocksDb,
                       RocksChunkSource::LargeFrames::kFromFiles}) {
      SCOPED_TRACE(
          std::string(flushed ? "in blob files, " : "in the memtable, ") +
          (large == RocksChunkSource::LargeFrames::kFromFiles ? "from files" : "through RocksDB"));
      RocksChunkSource reader(db, false, "reader", large);
      std::vector<std::vector<uint8_t>> bufs;
      std::vector<std::span<uint8_t>> outs;
      for (uint64_t n : lens) bufs.emplace_back(n);
      for (auto& b : bufs) outs.emplace_back(b);
      ChunkDecoder decoder;
      FrameBatch batch;
      DecodedChunks got;
      ASSERT_TRUE(reader.ReadDecoded(keys, outs, &decoder, &batch, &got).ok());
      ASSERT_EQ(got.status.size(), keys.size());
      for (size_t i = 0; i < keys.size(); i++) {
        if (which[i] < 0) {
          EXPECT_FALSE(got.status[i].ok()) << "entry " << i;
          EXPECT_EQ(got.frame_bytes[i], 0u);
          continue;
        }
        const Chunk& want = chunks[size_t(which[i])];
        ASSERT_TRUE(got.status[i].ok()) << "entry " << i << ": " << got.status[i].ToString();
        EXPECT_EQ(got.frame_bytes[i], want.frame.size()) << "entry " << i;
        EXPECT_EQ(std::string(bufs[i].begin(), bufs[i].end()),
                  Bytes(want.raw_len, uint32_t(which[i])))
            << "entry " << i;
      }
      // The decoder's input buffer holds the frames read from the files,
      // and goes with its other scratch.
      if (flushed && large == RocksChunkSource::LargeFrames::kFromFiles) {
        EXPECT_GE(decoder.input_buffer().capacity(), size_t(300 << 10));
      }
      decoder.ReleaseMemory();
      EXPECT_EQ(decoder.input_buffer().capacity(), 0u);
    }
  }
}

// What RocksDB reads from blob files, one entry per call of the file
// system's Read or MultiRead: the bytes asked for and how many requests.
class BlobReadLog : public rocksdb::FileSystemWrapper {
 public:
  struct Call {
    uint64_t bytes = 0;
    size_t requests = 0;
  };
  BlobReadLog() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "BlobReadLog"; }
  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewRandomAccessFile(f, o, r, dbg);
    if (s.ok() && f.size() > 5 && f.compare(f.size() - 5, 5, ".blob") == 0)
      *r = std::make_unique<File>(std::move(*r), this);
    return s;
  }
  std::vector<Call> Take() {
    std::lock_guard<std::mutex> l(mu_);
    return std::move(calls_);
  }

 private:
  class File : public rocksdb::FSRandomAccessFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSRandomAccessFile> f, BlobReadLog* log)
        : rocksdb::FSRandomAccessFileOwnerWrapper(std::move(f)), log_(log) {}
    rocksdb::IOStatus Read(uint64_t offset, size_t n, const rocksdb::IOOptions& o,
                           rocksdb::Slice* result, char* scratch,
                           rocksdb::IODebugContext* dbg) const override {
      log_->Add({n, 1});
      return target()->Read(offset, n, o, result, scratch, dbg);
    }
    rocksdb::IOStatus MultiRead(rocksdb::FSReadRequest* reqs, size_t num,
                                const rocksdb::IOOptions& o,
                                rocksdb::IODebugContext* dbg) override {
      Call c{0, num};
      for (size_t i = 0; i < num; i++) c.bytes += reqs[i].len;
      log_->Add(c);
      return target()->MultiRead(reqs, num, o, dbg);
    }

   private:
    BlobReadLog* log_;
  };
  void Add(Call c) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back(c);
  }
  std::mutex mu_;
  std::vector<Call> calls_;
};

// A decoding reader asks RocksDB for at most kDecodeRunBytes of frames at a
// time, or for one frame alone (a chunk larger than a run), and with
// LargeFrames::kFromFiles reads chunks of kDirectReadBytes or more straight
// from their blob files instead: with chunks of 16 KiB, 64 KiB, 256 KiB and
// 1 MiB mixed, every call that reads blob files asks for one blob or for
// frames of 128 KiB of raw bytes at most, every frame RocksDB reads is read
// once, whole (all of them, or the 16 KiB ones only), and every chunk
// decodes right.
TEST(RocksChunkSourceTest, ReadDecodedAsksRocksDbForOneRunAtATimeOrReadsTheFiles) {
  std::vector<Chunk> chunks;
  const size_t sizes[] = {16 << 10, 16 << 10, 64 << 10, 256 << 10, 16 << 10, 1 << 20,
                          16 << 10, 16 << 10, 16 << 10, 16 << 10,  64 << 10, 1 << 20};
  // Raw frames: a frame is its chunk and a few header bytes.
  for (uint32_t round = 0; round < 3; round++)
    for (size_t n : sizes) chunks.push_back(MakeChunk(n, uint32_t(chunks.size()), Profile::kRaw));
  for (auto large : {RocksChunkSource::LargeFrames::kThroughRocksDb,
                     RocksChunkSource::LargeFrames::kFromFiles}) {
    const bool from_files = large == RocksChunkSource::LargeFrames::kFromFiles;
    SCOPED_TRACE(from_files ? "from files" : "through RocksDB");
    uint64_t want_bytes = 0;
    size_t want_requests = 0;
    for (const Chunk& c : chunks) {
      if (from_files && c.raw_len >= RocksChunkSource::kDirectReadBytes) continue;
      want_bytes += c.frame.size();
      want_requests++;
    }
    ASSERT_GT(want_requests, 0u);
    if (from_files) {
      ASSERT_LT(want_requests, chunks.size());
    }
    char dir[] = "/tmp/pstore-chunk-runs-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    auto fs = std::make_shared<BlobReadLog>();
    std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
    {
      auto db = RocksDb::OpenPrimary(std::string(dir) + "/db", env.get());
      ASSERT_TRUE(db.ok()) << db.status().ToString();
      RocksChunkSource src((*db).get(), true, "store", large);
      std::vector<ChunkKey> keys;
      ASSERT_TRUE(WriteAll(&src, chunks, &keys).ok());
      // In blob files, where a read asks the file system for frames.
      ASSERT_TRUE((*db)->db()->Flush(rocksdb::FlushOptions(), (*db)->chunks()).ok());
      fs->Take();
      std::vector<std::vector<uint8_t>> bufs;
      std::vector<std::span<uint8_t>> outs;
      for (const Chunk& c : chunks) bufs.emplace_back(c.raw_len);
      for (auto& b : bufs) outs.emplace_back(b);
      ChunkDecoder decoder;
      FrameBatch batch;
      DecodedChunks got;
      ASSERT_TRUE(src.ReadDecoded(keys, outs, &decoder, &batch, &got).ok());
      for (size_t i = 0; i < chunks.size(); i++) {
        ASSERT_TRUE(got.status[i].ok()) << "entry " << i << ": " << got.status[i].ToString();
        EXPECT_EQ(got.frame_bytes[i], chunks[i].frame.size()) << "entry " << i;
        EXPECT_EQ(std::string(bufs[i].begin(), bufs[i].end()),
                  Bytes(chunks[i].raw_len, uint32_t(i)))
            << "entry " << i;
      }
    }
    std::filesystem::remove_all(dir);
    const std::vector<BlobReadLog::Call> calls = fs->Take();
    ASSERT_FALSE(calls.empty()) << "no frame was read from a blob file";
    uint64_t read = 0, requests = 0;
    for (const BlobReadLog::Call& c : calls) {
      if (c.requests == 1 && c.bytes < 4096) continue;  // a blob file's header or footer
      read += c.bytes;
      requests += c.requests;
      if (c.requests == 1) continue;  // one frame, whatever its size
      EXPECT_LE(c.bytes, kDecodeRunBytes + c.requests * 64)
          << "one read asked for " << c.requests << " frames, " << c.bytes << " bytes";
    }
    EXPECT_EQ(requests, want_requests);
    EXPECT_EQ(read, want_bytes);
  }
}

// A chunk read straight from its blob file that does not match its key
// there (a flipped byte on disk) is read again through RocksDB, whose
// answer counts: that entry is Corruption, the others decode, and wrong
// bytes are never reported as the chunk's. A blob file gone from the
// database's folder fails the chunks in it as RocksDB says (a file of the
// store is missing). A blob file cut short serves, read directly, the frames
// it still holds whole.
TEST(RocksChunkSourceTest, DamagedOrMissingBlobFilesFailOnlyTheirChunks) {
  char dir[] = "/tmp/pstore-chunk-direct-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::vector<testing_util::TestTensor> tensors = RandomTensors(
      6, [](int) { return size_t(200000); }, 11, 7);
  ImportIntoStore(dir, tensors);
  if (HasFatalFailure()) return;
  auto r = StoreReader::Open(std::string(dir) + "/s");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto d = (*r)->view().Resolve("m:1");
  ASSERT_TRUE(d.ok());
  auto m = (*r)->view().LoadManifest(*d);
  ASSERT_TRUE(m.ok());
  const std::vector<ChunkKey> keys = (*m)->chunks;
  // Each chunk's raw bytes, from the tensor it is part of.
  std::vector<std::string> want(keys.size());
  std::vector<uint64_t> lens(keys.size());
  for (const ManifestTensor& t : (*m)->tensors) {
    const std::string* data = nullptr;
    for (const auto& tt : tensors)
      if (tt.name == t.name) data = &tt.data;
    ASSERT_NE(data, nullptr) << t.name;
    for (uint64_t j = 0; j < (*m)->ChunkCount(t); j++) {
      ASSERT_LT(t.first_chunk + j, keys.size());
      want[t.first_chunk + j] = data->substr((*m)->ChunkStart(t, j), (*m)->ChunkBytes(t, j));
      lens[t.first_chunk + j] = (*m)->ChunkBytes(t, j);
    }
  }
  std::shared_ptr<ChunkSource> source = GenerationChunkSource(std::move(r).value());
  auto plan = source->PlanSequentialRead(keys);
  ASSERT_TRUE(plan.ok() && plan->has_value());
  const ReadPlan& p = **plan;
  ASSERT_EQ(p.files.size(), 1u);
  auto read_all = [&](std::vector<std::vector<uint8_t>>* bufs, DecodedChunks* got) {
    bufs->clear();
    for (uint64_t n : lens) bufs->emplace_back(n);
    std::vector<std::span<uint8_t>> outs(bufs->begin(), bufs->end());
    ChunkDecoder decoder;
    FrameBatch batch;
    return source->ReadDecoded(keys, outs, &decoder, &batch, got);
  };
  std::vector<std::vector<uint8_t>> bufs;
  DecodedChunks got;
  ASSERT_TRUE(read_all(&bufs, &got).ok());
  for (size_t i = 0; i < keys.size(); i++) {
    ASSERT_TRUE(got.status[i].ok()) << got.status[i].ToString();
    ASSERT_TRUE(std::string(bufs[i].begin(), bufs[i].end()) == want[i]) << "entry " << i;
  }
  // A byte flipped in the frame first in the file.
  const size_t bad = p.order.front(), last = p.order.back();
  ASSERT_NE(bad, last);
  ASSERT_GE(lens[bad], RocksChunkSource::kDirectReadBytes);
  const ReadPlan::Place& pl = p.places[bad];
  ASSERT_NE(pl.file, ReadPlan::Place::kNoFile);
  ASSERT_EQ(p.places[last].file, pl.file);
  {
    int fd = ::open(p.files[pl.file].c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    const off_t at = off_t(pl.offset + pl.size / 2);
    ASSERT_EQ(::pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
    ::close(fd);
  }
  ASSERT_TRUE(read_all(&bufs, &got).ok());
  for (size_t i = 0; i < keys.size(); i++) {
    if (i == bad) {
      EXPECT_TRUE(got.status[i].IsCorruption()) << got.status[i].ToString();
      EXPECT_EQ(got.frame_bytes[i], 0u);
    } else {
      EXPECT_TRUE(got.status[i].ok()) << "entry " << i << ": " << got.status[i].ToString();
      EXPECT_TRUE(std::string(bufs[i].begin(), bufs[i].end()) == want[i]) << "entry " << i;
    }
  }
  // The file cut short in the middle of its last frame, for a reader that
  // opens the generation after. RocksDB refuses the whole file then (its
  // footer is gone), so the chunks that still decode were read from the file
  // directly; the cut one fails, and so does the flipped one.
  const std::string blob = p.files[pl.file];
  source.reset();
  std::filesystem::resize_file(blob, p.places[last].offset + p.places[last].size / 2);
  auto cut = StoreReader::Open(std::string(dir) + "/s");
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  source = GenerationChunkSource(std::move(cut).value());
  ASSERT_TRUE(read_all(&bufs, &got).ok());
  for (size_t i = 0; i < keys.size(); i++) {
    if (i == bad || i == last) {
      EXPECT_FALSE(got.status[i].ok()) << "entry " << i;
      EXPECT_EQ(got.frame_bytes[i], 0u);
    } else {
      EXPECT_TRUE(got.status[i].ok()) << "entry " << i << ": " << got.status[i].ToString();
      EXPECT_TRUE(std::string(bufs[i].begin(), bufs[i].end()) == want[i]) << "entry " << i;
    }
  }
  {
    // Through RocksDB alone, none of them reads.
    auto r2 = StoreReader::Open(std::string(dir) + "/s");
    ASSERT_TRUE(r2.ok()) << r2.status().ToString();
    RocksChunkSource through((*r2)->view().db(), false, "reader");
    std::vector<std::span<uint8_t>> outs(bufs.begin(), bufs.end());
    ChunkDecoder decoder;
    FrameBatch batch;
    Status st = through.ReadDecoded(keys, outs, &decoder, &batch, &got);
    for (size_t i = 0; i < keys.size(); i++)
      EXPECT_FALSE(st.ok() && got.status[i].ok()) << "entry " << i << " read through RocksDB";
  }
  // The blob file gone, for a reader that opens the generation after: its
  // chunks fail, each named, as RocksDB reports a missing file.
  const std::string removed = blob;
  source.reset();
  ASSERT_TRUE(std::filesystem::remove(removed));
  auto again = StoreReader::Open(std::string(dir) + "/s");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  source = GenerationChunkSource(std::move(again).value());
  Status st = read_all(&bufs, &got);
  for (size_t i = 0; i < keys.size(); i++) {
    if (p.places[i].file == ReadPlan::Place::kNoFile) continue;  // not in the removed file
    const Status& e = st.ok() ? got.status[i] : st;
    EXPECT_TRUE(e.IsCorruption()) << "entry " << i << ": " << e.ToString();
    EXPECT_NE(e.message().find("missing"), std::string::npos) << e.ToString();
  }
  source.reset();
  std::filesystem::remove_all(dir);
}

// Whatever ReadDecoded returns, its result has one entry per key and
// nothing of an earlier read: a reader's generation whose database cannot
// be opened fails every entry with the error it returns.
TEST(RocksChunkSourceTest, ReadDecodedThatCannotAnswerFailsEveryEntry) {
  char dir[] = "/tmp/pstore-chunk-fail-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string src = std::string(dir) + "/m.safetensors";
  testing_util::WriteSafetensors(src, {{"t", "U8", {4096}, Bytes(4096, 1)}});
  {
    auto w = StoreWriter::Open(std::string(dir) + "/s", false);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->Import(src, {"m", "1"}, ImportOptions{}).ok());
  }
  auto r = StoreReader::Open(std::string(dir) + "/s", /*lazy_db=*/true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // The generation's database loses its CURRENT before the first read opens it.
  int removed = 0;
  for (const auto& gen : std::filesystem::directory_iterator(std::string(dir) + "/s/gen"))
    removed += std::filesystem::remove(gen.path() / "CURRENT") ? 1 : 0;
  ASSERT_GT(removed, 0);
  std::shared_ptr<ChunkSource> source = GenerationChunkSource(std::move(r).value());
  const std::vector<ChunkKey> keys = {HashBytes("a", 1), HashBytes("b", 1), HashBytes("c", 1)};
  std::vector<std::vector<uint8_t>> bufs(keys.size(), std::vector<uint8_t>(16));
  std::vector<std::span<uint8_t>> outs(bufs.begin(), bufs.end());
  ChunkDecoder decoder;
  FrameBatch batch;
  DecodedChunks got;  // as an earlier read of five chunks left it
  got.status.assign(5, Status::OK());
  got.frame_bytes.assign(5, 100);
  const Status st = source->ReadDecoded(keys, outs, &decoder, &batch, &got);
  EXPECT_FALSE(st.ok());
  ASSERT_EQ(got.status.size(), keys.size());
  ASSERT_EQ(got.frame_bytes.size(), keys.size());
  for (size_t i = 0; i < keys.size(); i++) {
    EXPECT_EQ(got.status[i].code(), st.code()) << "entry " << i;
    EXPECT_EQ(got.status[i].message(), st.message()) << "entry " << i;
    EXPECT_EQ(got.frame_bytes[i], 0u) << "entry " << i;
  }
  std::filesystem::remove_all(dir);
}

// A reader's generation is read-only: writes are refused with a message.
TEST(RocksChunkSourceTest, ReadOnlyInstanceRefusesWrites) {
  auto src = TempStoreSource::Make();
  ASSERT_NE(src, nullptr);
  RocksChunkSource ro(src->writer().view().db(), false, "reader");
  Chunk c = MakeChunk(100, 24);
  ChunkFrameRef r = c.ref();
  Status st = ro.Write(std::span(&r, 1));
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
  auto has = src->Contains(std::span(&c.key, 1));
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE((*has)[0]);
}

// Checked writes (a pull's, whose frames were checked once already) go
// without the WAL and start a flush of their own every kFlushBytes or
// kFlushInterval, so that a pull that is killed keeps what it fetched: blob
// files appear without anyone flushing, and every chunk reads back with its
// record.
TEST(RocksChunkSourceTest, CheckedWritesAreFlushedInTheBackground) {
  auto store = TempStoreSource::Make();
  ASSERT_NE(store, nullptr);
  RocksDb* db = store->writer().view().db();
  RocksChunkSource src(db, true, "pull");
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 5; ++i) chunks.push_back(MakeChunk(1 << 20, 300 + i, Profile::kRaw));
  for (const Chunk& c : chunks) {
    if (&c == &chunks.back()) {
      std::this_thread::sleep_for(RocksChunkSource::kFlushInterval + std::chrono::milliseconds(50));
    }
    ChunkFrameRef r = c.ref();
    ASSERT_TRUE(src.WriteChecked(std::span(&r, 1)).ok());
  }
  uint64_t files = 0;
  for (int i = 0; i < 300 && files == 0; ++i) {
    ASSERT_TRUE(db->db()->GetIntProperty(db->chunks(), "rocksdb.num-blob-files", &files));
    if (files == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GT(files, 0u) << "no flush within 30 s of checked writes spread over "
                       << RocksChunkSource::kFlushInterval.count() << " ms";
  ChunkDecoder dec;
  for (const Chunk& c : chunks) {
    auto rec = store->writer().view().GetChunkRecord(c.key);
    ASSERT_TRUE(rec.ok() && rec->has_value());
    EXPECT_EQ((*rec)->stored_len, c.frame.size());
    std::vector<uint8_t> out(c.raw_len);
    Status st = store->writer().view().ReadChunk(c.key, &dec, out);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
}

#ifdef PSTORE_HAVE_RADOS
// Behaviour of the RADOS source that the interface leaves to implementations.
class RadosChunkSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CephConf()) GTEST_SKIP() << "no cluster: set PSTORE_CEPH_CONF";
  }
};

TEST_F(RadosChunkSourceTest, MissingPoolIsNotFoundNamingThePool) {
  RadosOptions o = TestRadosOptions();
  o.pool = "no-such-pool";
  auto src = RadosChunkSource::Open(o);
  ASSERT_FALSE(src.ok());
  EXPECT_TRUE(src.status().IsNotFound()) << src.status().ToString();
  EXPECT_NE(src.status().message().find("no-such-pool"), std::string::npos);
  EXPECT_NE(src.status().message().find("ceph osd pool create"), std::string::npos);
}

TEST_F(RadosChunkSourceTest, ChunkIsOneObjectNamedByItsKey) {
  RadosOptions o = TestRadosOptions();
  auto src = RadosChunkSource::Open(o);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->Describe(), "rados:" + o.pool + "/" + o.ns);
  ChunkKey k = *ChunkKey::FromHex("000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(RadosChunkSource::ObjectName(k), "c.000102030405060708090a0b0c0d0e0f");
}

// True once every thread of process `pid` is in the stopped state ('T' in
// /proc/PID/task/TID/stat), polling until `limit` has passed.
bool AllThreadsStopped(int pid, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  while (std::chrono::steady_clock::now() < until) {
    bool all = true;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
      FILE* f = fopen((t.path() / "stat").c_str(), "r");
      if (f == nullptr) continue;  // the thread ended
      char line[512] = {0};
      size_t n = fread(line, 1, sizeof(line) - 1, f);
      fclose(f);
      // The state follows the command name, which is in parentheses.
      const char* close = strrchr(line, ')');
      if (n == 0 || close == nullptr || close[1] == 0 || close[2] != 'T') all = false;
    }
    if (ec) return false;
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Threads of this process (each librados connection starts its own
// messenger, timer and finisher threads).
size_t ThreadCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// A RemoteTier (push, pull, lazy opening) uses one connection for chunks,
// names and manifests: opening it starts no more threads than opening a
// chunk source alone, and it reads a name and a chunk through that one.
TEST_F(RadosChunkSourceTest, RemoteTierConnectsOnce) {
  Chunk c = MakeChunk(4 << 10, 78);
  ChunkFrameRef r = c.ref();
  const size_t before = ThreadCount();
  auto src = RadosChunkSource::Open(TestRadosOptions());
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ASSERT_TRUE((*src)->Write(std::span(&r, 1)).ok());
  ASSERT_TRUE((*src)->Read(std::span(&c.key, 1)).ok());
  const size_t one = ThreadCount() - before;
  ASSERT_GT(one, 0u);

  auto tier = RemoteTier::Open(TestRadosOptions());
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  auto got = (*tier)->chunks().Read(std::span(&c.key, 1));
  ASSERT_TRUE(got.ok() && (*got)[0] == c.frame);
  auto name = (*tier)->GetName("no-such-model:1");
  ASSERT_TRUE(name.ok()) << name.status().ToString();
  EXPECT_FALSE(name->has_value());
  const size_t two = ThreadCount() - before - one;
  // One connection's threads (give or take one that comes and goes), not two.
  EXPECT_LE(two, one + one / 2) << "one connection starts " << one << " threads, the tier " << two;
}

// The OSD stopped (SIGSTOP: it neither answers nor closes its connections)
// while a client reads: the read fails within the timeout, and works again
// once the OSD is back.
TEST_F(RadosChunkSourceTest, StalledOsdIsAnErrorWithinTheTimeoutThenWorksAgain) {
  std::string conf = CephConf();
  std::string pid_file = conf.substr(0, conf.rfind('/')) + "/run/osd.0.pid";
  FILE* f = fopen(pid_file.c_str(), "r");
  ASSERT_NE(f, nullptr) << "no " << pid_file << " (a cluster from tests/ceph/cluster.sh?)";
  int pid = 0;
  ASSERT_EQ(fscanf(f, "%d", &pid), 1);
  fclose(f);
  RadosOptions o = TestRadosOptions();
  o.timeout_seconds = 3;
  auto src = RadosChunkSource::Open(o);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  Chunk c = MakeChunk(64 << 10, 77);
  ChunkFrameRef r = c.ref();
  ASSERT_TRUE((*src)->Write(std::span(&r, 1)).ok());

  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  struct Resume {  // the OSD continues whatever happens below
    int pid;
    ~Resume() { kill(pid, SIGCONT); }
  } resume{pid};
  // kill() returns before every thread has stopped: a thread running on
  // another core (or a preempted virtual one) stops only when it next enters
  // the kernel, and could still answer the read below. Wait for all of them.
  ASSERT_TRUE(AllThreadsStopped(pid, std::chrono::seconds(10)))
      << "the OSD's threads did not all stop within 10 s";
  auto t0 = std::chrono::steady_clock::now();
  auto got = (*src)->Read(std::span(&c.key, 1));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(got.ok()) << "a read from a stopped OSD succeeded";
  // The timeout, plus slack for a loaded machine (the op timer starts once
  // the request is sent).
  EXPECT_LT(secs, 3 + 30.0) << "took " << secs << " s";
  EXPECT_NE(got.status().message().find(c.key.Hex()), std::string::npos) << got.status().ToString();
  EXPECT_NE(got.status().message().find("raise the timeout"), std::string::npos)
      << got.status().ToString();
  kill(pid, SIGCONT);

  // Back: the same source reads the chunk. The OSD may take a while: if the
  // mon marked it down meanwhile, it must be marked up again first, which on
  // a loaded machine can take tens of seconds.
  bool ok = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  while (!ok && std::chrono::steady_clock::now() < until) {
    auto again = (*src)->Read(std::span(&c.key, 1));
    ok = again.ok() && (*again)[0] == c.frame;
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(ok) << "no read succeeded within 180 s after the OSD continued";
}

// A cluster that does not answer: a conf whose mon address nobody listens
// on. Opening must fail within the timeout (plus slack), not hang.
TEST(RadosUnreachable, ConnectFailsWithinTheTimeout) {
  char dir[] = "/tmp/pstore-rados-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string conf = std::string(dir) + "/ceph.conf";
  std::string keyring = std::string(dir) + "/keyring";
  FILE* f = fopen(conf.c_str(), "w");
  ASSERT_NE(f, nullptr);
  // Port 9 (discard) on loopback: nothing listens, connections are refused.
  fprintf(f, "[global]\nmon_host = v2:127.0.0.1:9\nkeyring = %s\n", keyring.c_str());
  fclose(f);
  f = fopen(keyring.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fprintf(f, "[client.admin]\n\tkey = AQBQ5jBmAAAAABAAv9yJqy6H1x4LE6t5AbP9hA==\n");
  fclose(f);
  RadosOptions o;
  o.conf_path = conf;
  o.pool = "pstore";
  o.timeout_seconds = 3;
  auto t0 = std::chrono::steady_clock::now();
  auto src = RadosChunkSource::Open(o);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(src.ok());
  // The timeout, plus slack for a loaded machine (the op timer starts once
  // the request is sent).
  EXPECT_LT(secs, 3 + 30.0) << "took " << secs << " s";
  EXPECT_NE(src.status().message().find("connecting"), std::string::npos)
      << src.status().ToString();
  std::remove(conf.c_str());
  std::remove(keyring.c_str());
  rmdir(dir);
}
#endif

}  // namespace
}  // namespace pstore
