// TieredChunkSource and LazyCache (store/tiered_chunk_source.h,
// store/lazy_cache.h): local first, then the spool, then the remote; what the
// remote serves is checked before it is returned or kept, and what was
// fetched is found in the spool afterwards, by this process or another.
//
// The remote here is a MemoryChunkSource; the same paths against a real
// cluster are in tests/acceptance/remote_lazy_test.py.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "codec/chunk_codec.h"
#include "common/file_util.h"
#include "store/chunk_read.h"
#include "store/lazy_cache.h"
#include "store/memory_chunk_source.h"
#include "store/rocks.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"
#include "store/tiered_chunk_source.h"

namespace pstore {
namespace {

// A model of `tensors` tensors of `chunks` chunks each (4 KiB chunks), its
// frames in `remote`.
struct TestModel {
  std::shared_ptr<Manifest> manifest = std::make_shared<Manifest>();
  std::vector<std::string> raws;    // per chunk, in manifest order
  std::vector<std::string> frames;  // per chunk
};

TestModel MakeModel(int tensors, int chunks, ChunkSource* remote) {
  constexpr uint32_t kChunk = 4096;
  TestModel m;
  m.manifest->chunk_size = kChunk;
  std::mt19937 rng(7);
  ChunkEncoder enc{EncodeOptions{}};
  for (int t = 0; t < tensors; ++t) {
    ManifestTensor mt;
    mt.name = "layer." + std::to_string(t);
    mt.size = uint64_t(chunks) * kChunk - 100;  // the last chunk is short
    mt.shape = {mt.size};
    mt.first_chunk = m.manifest->chunks.size();
    for (int j = 0; j < chunks; ++j) {
      std::string raw(j + 1 == chunks ? kChunk - 100 : kChunk, '\0');
      for (size_t i = 0; i < raw.size(); i += 8) raw[i] = char(rng());
      std::string frame;
      enc.Encode(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), DType::kU8,
                 &frame);
      ChunkKey k = HashBytes(raw.data(), raw.size());
      m.manifest->chunks.push_back(k);
      EXPECT_TRUE(remote->Write(std::vector<ChunkFrameRef>{{k, frame, raw.size()}}).ok());
      m.raws.push_back(std::move(raw));
      m.frames.push_back(std::move(frame));
    }
    m.manifest->tensors.push_back(mt);
  }
  return m;
}

class TempDir {
 public:
  TempDir() {
    char d[] = "/tmp/pstore-tiered-XXXXXX";
    path_ = ::mkdtemp(d);
  }
  ~TempDir() { (void)RemoveTree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Counts what is read from the source it wraps.
class CountingSource final : public ChunkSource {
 public:
  explicit CountingSource(ChunkSource* inner) : inner_(inner) {}
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    reads += keys.size();
    return inner_->Read(keys);
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    return inner_->Contains(keys);
  }
  Status Write(std::span<const ChunkFrameRef> frames) override { return inner_->Write(frames); }
  std::string Describe() const override { return "counted " + inner_->Describe(); }
  std::string Locate(const ChunkKey& key) const override { return "obj." + key.Hex(); }
  std::atomic<size_t> reads{0};

 private:
  ChunkSource* inner_;
};

std::vector<ChunkKey> TensorKeys(const TestModel& m, int t) {
  const ManifestTensor& mt = m.manifest->tensors[t];
  auto first = m.manifest->chunks.begin() + long(mt.first_chunk);
  return std::vector<ChunkKey>(first, first + long(m.manifest->ChunkCount(mt)));
}

// A model on a counted in-memory remote, and a spool in a folder of its own.
struct Remote {
  Remote(int tensors, int chunks) : m(MakeModel(tensors, chunks, &mem)) {}
  std::unique_ptr<TieredChunkSource> Tier() {
    return std::make_unique<TieredChunkSource>(nullptr, &cache, &remote, m.manifest, "m:1");
  }
  TempDir dir;
  MemoryChunkSource mem;
  TestModel m;
  CountingSource remote{&mem};
  LazyCache cache{dir.path(), StoreAccess{}};
};

TEST(TieredChunkSource, FetchesOnlyWhatIsAskedAndKeepsIt) {
  Remote r(4, 3);
  {
    auto tier = r.Tier();
    auto got = tier->Read(TensorKeys(r.m, 2));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    for (int j = 0; j < 3; ++j) EXPECT_EQ(*(*got)[j], r.m.frames[6 + j]);
    EXPECT_EQ(r.remote.reads, 3u);
    EXPECT_EQ(tier->stats().remote_chunks, 3u);
    EXPECT_EQ(r.cache.ListSpool().size(), 3u);
  }
  // A new tier (a restart) finds them in the spool.
  auto again = r.Tier();
  auto got = again->Read(TensorKeys(r.m, 2));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(r.remote.reads, 3u);
  EXPECT_EQ(again->stats().spool_chunks, 3u);
  EXPECT_EQ(again->stats().remote_chunks, 0u);
}

TEST(TieredChunkSource, ReadsTheRestOfATensorAhead) {
  Remote r(3, 5);
  auto tier = r.Tier();
  std::vector<ChunkKey> keys = TensorKeys(r.m, 1);
  ASSERT_TRUE(tier->Read(std::span(keys).first(1)).ok());
  EXPECT_EQ(r.remote.reads, 5u);  // the whole tensor, no other
  EXPECT_EQ(r.cache.ListSpool().size(), 5u);
  auto got = tier->Read(std::span(keys).subspan(1));
  ASSERT_TRUE(got.ok());
  for (size_t j = 0; j < 4; ++j) EXPECT_EQ(*(*got)[j], r.m.frames[5 + 1 + j]);
  EXPECT_EQ(r.remote.reads, 5u);
  EXPECT_EQ(tier->stats().spool_chunks, 4u);
}

TEST(TieredChunkSource, ThreadsFetchEachChunkOnce) {
  Remote r(2, 40);
  auto tier = r.Tier();
  std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread asks for the tensor in slices of its own size.
      for (size_t at = 0; at < keys.size(); at += size_t(t) + 1) {
        size_t n = std::min(size_t(t) + 1, keys.size() - at);
        auto got = tier->Read(std::span(keys).subspan(at, n));
        if (!got.ok()) failures++;
        for (size_t j = 0; got.ok() && j < n; ++j)
          if (!(*got)[j] || *(*got)[j] != r.m.frames[at + j]) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(r.remote.reads, 40u);
}

// A remote that does not answer: each read fails after a while.
class DeadSource final : public ChunkSource {
 public:
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey>) override {
    reads++;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return Status::IOError("no answer within 0.3 s");
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey>) override {
    return Status::IOError("no answer");
  }
  Status Write(std::span<const ChunkFrameRef>) override { return Status::IOError("no answer"); }
  std::string Describe() const override { return "dead"; }
  std::atomic<int> reads{0};
};

TEST(TieredChunkSource, ThreadsWaitingOnAFailedFetchFailWithoutTryingAgain) {
  TempDir dir;
  MemoryChunkSource mem;
  TestModel m = MakeModel(1, 8, &mem);
  DeadSource dead;
  LazyCache cache(dir.path(), StoreAccess{});
  TieredChunkSource tier(nullptr, &cache, &dead, m.manifest, "m:1");
  std::vector<ChunkKey> keys = TensorKeys(m, 0);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto got = tier.Read(std::span(keys).subspan(size_t(t) * 2, 2));
      if (!got.ok() && got.status().message().find("no answer") != std::string::npos) failed++;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 4);
  // One fetch (of the whole tensor) timed out; the threads waiting on it
  // report its error instead of each waiting out a timeout of their own.
  EXPECT_LT(dead.reads.load(), 4);
  EXPECT_TRUE(cache.ListSpool().empty());
}

TEST(TieredChunkSource, ProcessesShareTheSpool) {
  TempDir dir;
  MemoryChunkSource remote;
  TestModel m = MakeModel(2, 2, &remote);
  LazyCache cache(dir.path(), StoreAccess{});
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    TieredChunkSource tier(nullptr, &cache, &remote, m.manifest, "m:1");
    ::_exit(tier.Read(TensorKeys(m, 1)).ok() && tier.stats().remote_chunks == 2 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // This process's remote has every chunk too, but the spool answers.
  TieredChunkSource tier(nullptr, &cache, &remote, m.manifest, "m:1");
  ASSERT_TRUE(tier.Read(TensorKeys(m, 1)).ok());
  EXPECT_EQ(tier.stats().remote_chunks, 0u);
  EXPECT_EQ(tier.stats().spool_chunks, 2u);
}

TEST(TieredChunkSource, LocalStoreAnswersFirst) {
  TempDir dir;
  MemoryChunkSource remote_mem, local;
  TestModel m = MakeModel(1, 2, &remote_mem);
  ASSERT_TRUE(
      local.Write(std::vector<ChunkFrameRef>{{m.manifest->chunks[0], m.frames[0], 4096}}).ok());
  CountingSource remote(&remote_mem);
  LazyCache cache(dir.path(), StoreAccess{});
  TieredChunkSource tier(&local, &cache, &remote, m.manifest, "m:1");
  ASSERT_TRUE(tier.Read(TensorKeys(m, 0)).ok());
  EXPECT_EQ(remote.reads, 1u);
  EXPECT_EQ(tier.stats().local_chunks, 1u);
}

// A damaged local store: a chunk record whose frame is gone. The store's
// lookup says it has the chunk, its read misses it; the lazy read fetches it
// from the remote instead of waiting on a chunk nobody fetches. The read runs
// in a child process, killed if it has not ended in a minute.
TEST(TieredChunkSource, RecordWithoutFrameIsFetchedFromTheRemote) {
  TempDir dir;
  MemoryChunkSource remote_mem;
  TestModel m = MakeModel(1, 3, &remote_mem);
  CountingSource remote(&remote_mem);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto w = StoreWriter::Open(dir.path() + "/store", false);
    if (!w.ok()) ::_exit(2);
    RocksDb* db = (*w)->view().db();
    RocksChunkSource local(db, true, "store");
    std::vector<ChunkFrameRef> refs;
    for (int c = 0; c < 3; ++c)
      refs.push_back({m.manifest->chunks[c], m.frames[c], m.raws[c].size()});
    if (!local.Write(refs).ok()) ::_exit(3);
    const ChunkKey& gone = m.manifest->chunks[1];
    if (!db->db()
             ->Delete(rocksdb::WriteOptions(), db->chunks(), rocksdb::Slice(gone.view().data(), 16))
             .ok())
      ::_exit(4);
    auto has = local.Contains(std::vector<ChunkKey>{gone});
    if (!has.ok() || !(*has)[0]) ::_exit(5);  // the record is still there
    LazyCache cache(dir.path(), StoreAccess{});
    TieredChunkSource tier(&local, &cache, &remote, m.manifest, "m:1");
    auto got = tier.Read(TensorKeys(m, 0));
    if (!got.ok()) ::_exit(6);
    for (int c = 0; c < 3; ++c)
      if (!(*got)[c] || *(*got)[c] != m.frames[c]) ::_exit(7);
    ::_exit(tier.stats().local_chunks == 2 && tier.stats().remote_chunks == 1 ? 0 : 8);
  }
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 600 && done == 0; ++i) {
    done = ::waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "the lazy read of a chunk whose local frame is gone did not end";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Writes m's frames to remote, except that chunk `wrong` gets chunk
// `other`'s frame.
void ServeWrongFrame(const TestModel& m, size_t wrong, size_t other, ChunkSource* remote) {
  for (size_t c = 0; c < m.frames.size(); ++c) {
    const std::string& f = c == wrong ? m.frames[other] : m.frames[c];
    ASSERT_TRUE(
        remote->Write(std::vector<ChunkFrameRef>{{m.manifest->chunks[c], f, m.raws[c].size()}})
            .ok());
  }
}

TEST(TieredChunkSource, WrongRemoteFrameIsNamedNeverReturnedNorKept) {
  TempDir dir;
  MemoryChunkSource good, bad;
  TestModel m = MakeModel(2, 2, &good);
  // The remote serves, for tensor 1's chunk 1, another chunk's frame.
  ServeWrongFrame(m, 3, 0, &bad);
  LazyCache cache(dir.path(), StoreAccess{});
  CountingSource remote(&bad);  // names each chunk's object "obj.<key>"
  TieredChunkSource tier(nullptr, &cache, &remote, m.manifest, "m:1");
  const ChunkKey& key = m.manifest->chunks[3];
  auto got = tier.Read(TensorKeys(m, 1));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.status().IsCorruption());
  EXPECT_NE(got.status().message().find("model m:1, tensor layer.1, chunk 1"), std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find(key.Hex()), std::string::npos);
  auto spooled = cache.GetFrame(key);
  ASSERT_TRUE(spooled.ok());
  EXPECT_FALSE(spooled->has_value());
  // What a reader of the model is told (the pager names the use of the
  // chunk): the remote's object is damaged and what to do about it, not the
  // advice for a damaged local store.
  const std::string msg = ChunkUseError(got.status(), ChunkUse{"m:1", "layer.1", 1}, key).message();
  for (const std::string& word :
       {std::string("counted memory"), "object obj." + key.Hex(),
        std::string("the remote's copy of this chunk is damaged (this host's store is not)"),
        std::string("remove the object obj.") + key.Hex(), std::string("`pstore push`")})
    EXPECT_NE(msg.find(word), std::string::npos) << "no \"" << word << "\" in: " << msg;
  for (const char* word : {"pstore verify", "importing this model's source again", "compact"})
    EXPECT_EQ(msg.find(word), std::string::npos) << "\"" << word << "\" in: " << msg;
  // A damaged frame of the local store still gets the local advice.
  const std::string local =
      ChunkUseError(Status::Corruption("checksum mismatch"), ChunkUse{"m:1", "layer.1", 1}, key)
          .message();
  EXPECT_NE(local.find("pstore verify"), std::string::npos) << local;
}

// Decodes keys through ReadDecoded, `group` chunks a call (as the pager's
// loads do), into one buffer per chunk; the first error, if any.
Status DecodeAll(TieredChunkSource* tier, const TestModel& m, const std::vector<ChunkKey>& keys,
                 size_t group, std::vector<std::string>* raws) {
  raws->assign(keys.size(), std::string());
  ChunkDecoder decoder;
  FrameBatch batch;
  DecodedChunks got;
  for (size_t i = 0; i < keys.size(); i += group) {
    const size_t n = std::min(group, keys.size() - i);
    std::vector<std::span<uint8_t>> outs;
    for (size_t j = i; j < i + n; ++j) {
      size_t c = 0;
      while (m.manifest->chunks[c] != keys[j]) ++c;
      (*raws)[j].resize(m.raws[c].size());
      outs.emplace_back(reinterpret_cast<uint8_t*>((*raws)[j].data()), (*raws)[j].size());
    }
    PSTORE_RETURN_IF_ERROR(
        tier->ReadDecoded(std::span(keys).subspan(i, n), outs, &decoder, &batch, &got));
    for (const Status& st : got.status) PSTORE_RETURN_IF_ERROR(st);
  }
  return Status::OK();
}

TEST(TieredChunkSource, DecodedReadsDecodeEachFetchedFrameOnce) {
  Remote r(2, 12);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 1);
  {
    auto tier = r.Tier();
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(tier.get(), r.m, keys, 2, &raws).ok());
    for (size_t j = 0; j < keys.size(); ++j) EXPECT_EQ(raws[j], r.m.raws[12 + j]);
    EXPECT_EQ(r.remote.reads, 12u);  // the first call read the rest ahead
    // Each frame was decoded once into the reader's buffer, and kept only
    // after a decode had checked it: that one, or for a frame read ahead,
    // one into scratch by the background thread (which the reader then
    // read back from the spool, decoding it into its buffer).
    const TieredStats st = tier->stats();
    EXPECT_LE(st.check_decodes, 11u);
    EXPECT_GE(st.check_decodes, st.ahead_spooled);
    EXPECT_LE(st.spool_chunks, st.ahead_spooled);
    EXPECT_EQ(st.remote_chunks, 12u);
    EXPECT_EQ(r.cache.ListSpool().size(), 12u);
  }
  // Read back from the spool, again with one decode a frame.
  auto again = r.Tier();
  std::vector<std::string> raws;
  ASSERT_TRUE(DecodeAll(again.get(), r.m, keys, 5, &raws).ok());
  for (size_t j = 0; j < keys.size(); ++j) EXPECT_EQ(raws[j], r.m.raws[12 + j]);
  EXPECT_EQ(r.remote.reads, 12u);
  EXPECT_EQ(again->stats().spool_chunks, 12u);
  EXPECT_EQ(again->stats().check_decodes, 0u);
}

// Polls until done() holds; false after 20 s.
// Chunks from..keys.size() of the first tensor are in the spool, each the
// frame the remote holds.
void ExpectSpooled(const LazyCache& cache, const std::vector<ChunkKey>& keys,
                   const std::vector<std::string>& frames, size_t from) {
  for (size_t j = from; j < keys.size(); ++j) {
    auto spooled = cache.GetFrame(keys[j]);
    ASSERT_TRUE(spooled.ok() && spooled->has_value()) << "chunk " << j << " was not spooled";
    EXPECT_EQ((*spooled)->frame, frames[j]);
  }
}

bool Eventually(const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Polls cache's spool until it holds n frames; false after 20 s.
bool SpoolReaches(const LazyCache& cache, size_t n) {
  return Eventually([&] { return cache.ListSpool().size() >= n; });
}

TEST(TieredChunkSource, FramesReadAheadAndNeverAskedForAreCheckedAndKept) {
  Remote r(1, 6);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  {
    auto tier = r.Tier();
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok());
    EXPECT_EQ(raws[0], r.m.raws[0]);
    EXPECT_EQ(r.remote.reads, 6u);
    // The rest is spooled in the background, with no read asking for it.
    EXPECT_TRUE(SpoolReaches(r.cache, 6)) << r.cache.ListSpool().size() << " spooled";
  }
  EXPECT_EQ(r.cache.ListSpool().size(), 6u);
  auto got = r.Tier()->Read(keys);
  ASSERT_TRUE(got.ok());
  for (size_t j = 0; j < keys.size(); ++j) EXPECT_EQ(*(*got)[j], r.m.frames[j]);
  EXPECT_EQ(r.remote.reads, 6u);
}

// Closing the tier right after a read waits until every frame read ahead is
// checked and spooled (63 of them: the background thread is still at it).
TEST(TieredChunkSource, ClosingWaitsUntilTheFramesReadAheadAreSpooled) {
  Remote r(1, 64);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  uint64_t spooled_before_close = 0;
  {
    auto tier = r.Tier();
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok());
    EXPECT_EQ(r.remote.reads, keys.size());
    spooled_before_close = tier->stats().ahead_spooled;
  }
  EXPECT_EQ(r.cache.ListSpool().size(), keys.size())
      << spooled_before_close << " were spooled before the close";
  ExpectSpooled(r.cache, keys, r.m.frames, 0);
}

// The tiers' background threads in this process, by name (a sanitizer's
// runtime may start threads of its own at any time, so all threads are not
// counted).
size_t SpoolerThreads() {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == TieredChunkSource::kSpoolerThreadName) n++;
  }
  return n;
}

// The background thread ends once it has had nothing to do for a while and
// starts again for the next frames read ahead: an open model keeps no idle
// thread.
TEST(TieredChunkSource, BackgroundThreadEndsWhenIdleAndStartsAgain) {
  Remote r(2, 4);
  auto tier = r.Tier();
  EXPECT_EQ(SpoolerThreads(), 0u);
  for (int t = 0; t < 2; ++t) {
    const std::vector<ChunkKey> keys = TensorKeys(r.m, t);
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok());
    // It stays at least kSpoolerIdle after its last frame.
    EXPECT_TRUE(Eventually([&] { return SpoolerThreads() == 1; })) << "no background thread ran";
    EXPECT_TRUE(SpoolReaches(r.cache, keys.size() * size_t(t + 1)));
    Eventually([&] { return SpoolerThreads() == 0; });
    EXPECT_EQ(SpoolerThreads(), 0u) << "the idle background thread still runs";
  }
  EXPECT_EQ(tier->stats().ahead_spooled, 6u);
}

// A frame read ahead that the background thread could not spool (its
// temporary folder was a file then) is spooled when the tier closes.
TEST(TieredChunkSource, FramesReadAheadTheBackgroundCouldNotSpoolAreSpooledAtClose) {
  Remote r(1, 4);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  const std::string tmp = r.cache.dir() + "/tmp";
  std::filesystem::create_directories(r.cache.dir());
  ASSERT_TRUE(WriteFileAtomic(tmp, "not a folder").ok());
  {
    auto tier = r.Tier();
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok());
    // Chunk 0 (by the reader) and the three read ahead (in the background)
    // could not be spooled.
    Eventually([&] { return tier->stats().spool_failures >= keys.size(); });
    ASSERT_EQ(tier->stats().spool_failures, keys.size());
    EXPECT_EQ(r.cache.ListSpool().size(), 0u);
    std::filesystem::remove(tmp);
  }
  ExpectSpooled(r.cache, keys, r.m.frames, 1);
}

TEST(TieredChunkSource, FramesReadAheadReachAnotherProcessWithoutASecondFetch) {
  Remote r(2, 8);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 1);
  // The other process waits for the spool to hold the whole tensor, then
  // reads it through a tier of its own: from the spool, not its remote.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    CountingSource remote(&r.mem);
    bool ok = SpoolReaches(r.cache, keys.size());
    TieredChunkSource tier(nullptr, &r.cache, &remote, r.m.manifest, "m:1");
    std::vector<std::string> raws;
    ok = ok && DecodeAll(&tier, r.m, keys, 3, &raws).ok();
    for (size_t j = 0; ok && j < keys.size(); ++j) ok = raws[j] == r.m.raws[8 + j];
    ::_exit(ok && remote.reads == 0 && tier.stats().spool_chunks == keys.size() ? 0 : 1);
  }
  // This process acquires the tensor's first chunk (the rest is read ahead)
  // and keeps its tier open, never asking for the rest.
  auto tier = r.Tier();
  std::vector<std::string> raws;
  Status st = DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(r.remote.reads, keys.size());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "the other process did not find the frames read ahead in the spool within 20 s, or "
         "fetched them again";
  // Counted after the rename that let the other process see the frame.
  Eventually([&] { return tier->stats().ahead_spooled >= keys.size() - 1; });
  EXPECT_EQ(tier->stats().ahead_spooled, keys.size() - 1);
}

// In a process that may start no thread (its user's pids limit reached),
// frames read ahead are checked and spooled by the fetching thread, and no
// read fails or waits for good on chunks whose fetch could not hand them on.
TEST(TieredChunkSource, ReadAheadWithoutABackgroundThreadIsSpooledByTheFetchingThread) {
  Remote r(1, 4);
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(60);             // a read waiting for good ends the child (a signal, not exit 0)
    if (::geteuid() == 0) {  // root is not held to RLIMIT_NPROC: become nobody
      std::error_code ec;
      for (const auto& e : std::filesystem::recursive_directory_iterator(r.dir.path()))
        std::filesystem::permissions(e.path(), std::filesystem::perms::all, ec);
      std::filesystem::permissions(r.dir.path(), std::filesystem::perms::all, ec);
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(77);
    }
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_NPROC, &none) != 0) ::_exit(77);
    try {
      std::thread([] {}).join();
      ::_exit(77);  // threads still start here: nothing to test
    } catch (const std::system_error&) {
    }
    int code = 0;
    try {
      auto tier = r.Tier();
      std::vector<std::string> raws;
      if (!DecodeAll(tier.get(), r.m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok()) code = 1;
      // The rest was read ahead, checked and spooled before the read returned.
      if (code == 0 && r.cache.ListSpool().size() != keys.size()) code = 2;
      if (code == 0 && !DecodeAll(tier.get(), r.m, keys, 2, &raws).ok()) code = 3;
      for (size_t j = 0; code == 0 && j < keys.size(); ++j)
        if (raws[j] != r.m.raws[j]) code = 4;
      if (code == 0 && (r.remote.reads != keys.size() || tier->stats().ahead_spooled != 0))
        code = 5;
    } catch (...) {
      code = 6;  // an exception (the thread's start) left the read
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child hung or crashed (signal " << WTERMSIG(status) << ")";
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot keep a process from starting threads here";
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1/3: a read failed, 2: the read-ahead was not spooled, 4: wrong bytes, 5: fetched "
         "again or spooled in the background, 6: an exception left the read";
}

TEST(TieredChunkSource, WrongFrameReadAheadIsNamedNeverDecodedIntoABufferNorKept) {
  TempDir dir;
  MemoryChunkSource good, bad;
  TestModel m = MakeModel(1, 4, &good);
  // The remote serves, for chunk 2 (fetched ahead of a read of chunk 0),
  // chunk 1's frame.
  ServeWrongFrame(m, 2, 1, &bad);
  LazyCache cache(dir.path(), StoreAccess{});
  const std::vector<ChunkKey> keys = TensorKeys(m, 0);
  {
    TieredChunkSource tier(nullptr, &cache, &bad, m.manifest, "m:1");
    std::vector<std::string> raws;
    ASSERT_TRUE(DecodeAll(&tier, m, std::vector<ChunkKey>{keys[0]}, 1, &raws).ok());
    Status st = DecodeAll(&tier, m, std::vector<ChunkKey>{keys[2]}, 1, &raws);
    ASSERT_TRUE(st.IsCorruption()) << st.ToString();
    EXPECT_NE(st.message().find("model m:1, tensor layer.0, chunk 2"), std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("was neither used nor kept"), std::string::npos);
  }
  // Nor kept when the tier goes with frames still read ahead.
  auto spooled = cache.GetFrame(keys[2]);
  ASSERT_TRUE(spooled.ok());
  EXPECT_FALSE(spooled->has_value());
  EXPECT_EQ(cache.ListSpool().size(), 3u);
}

TEST(TieredChunkSource, MissingRemoteChunkIsAnError) {
  TempDir dir;
  MemoryChunkSource full, none;
  TestModel m = MakeModel(1, 1, &full);
  LazyCache cache(dir.path(), StoreAccess{});
  CountingSource empty(&none);  // names each chunk's object "obj.<key>"
  TieredChunkSource tier(nullptr, &cache, &empty, m.manifest, "m:1");
  auto got = tier.Read(TensorKeys(m, 0));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("lacks model m:1, tensor layer.0, chunk 0"),
            std::string::npos)
      << got.status().message();
  // A reader is told which object the remote lacks and to push the model
  // again, not the advice for a damaged local store.
  const ChunkKey& key = m.manifest->chunks[0];
  std::vector<std::string> raws;
  Status st = DecodeAll(&tier, m, std::vector<ChunkKey>{key}, 1, &raws);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  const std::string msg = ChunkUseError(st, ChunkUse{"m:1", "layer.0", 0}, key).message();
  for (const std::string& word : {"object obj." + key.Hex(), std::string("push the model again"),
                                  std::string("this host's store is not damaged")})
    EXPECT_NE(msg.find(word), std::string::npos) << "no \"" << word << "\" in: " << msg;
  for (const char* word : {"pstore verify", "importing this model's source again"})
    EXPECT_EQ(msg.find(word), std::string::npos) << "\"" << word << "\" in: " << msg;
  // The mark survives the context a caller adds.
  EXPECT_TRUE(st.WithContext("loading").IsRemote());
  EXPECT_FALSE(Status::Corruption("checksum mismatch").WithContext("loading").IsRemote());
}

TEST(TieredChunkSource, DamagedSpoolFileIsFetchedAgain) {
  Remote r(1, 1);
  // A spooled frame whose bytes are damaged.
  ASSERT_TRUE(r.cache.PutFrame(r.m.manifest->chunks[0], 3996, r.m.frames[0] + "x").ok());
  auto got = r.Tier()->Read(TensorKeys(r.m, 0));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*(*got)[0], r.m.frames[0]);
  EXPECT_EQ(r.remote.reads, 1u);
  auto spooled = r.cache.GetFrame(r.m.manifest->chunks[0]);
  ASSERT_TRUE(spooled.ok() && spooled->has_value());
  EXPECT_EQ((*spooled)->frame, r.m.frames[0]);
}

TEST(TieredChunkSource, KeyOfAnotherModelIsRefused) {
  TempDir dir;
  MemoryChunkSource remote;
  TestModel m = MakeModel(1, 1, &remote);
  LazyCache cache(dir.path(), StoreAccess{});
  TieredChunkSource tier(nullptr, &cache, &remote, m.manifest, "m:1");
  ChunkKey other = HashBytes("x", 1);
  auto got = tier.Read(std::vector<ChunkKey>{other});
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.status().IsInvalidArgument());
}

// A decoded read that fails leaves its error in every entry of the result,
// nothing of the read before it.
TEST(TieredChunkSource, DecodedReadThatFailsLeavesItsErrorInEveryEntry) {
  Remote r(1, 3);
  auto tier = r.Tier();
  const std::vector<ChunkKey> keys = TensorKeys(r.m, 0);
  ChunkDecoder decoder;
  FrameBatch batch;
  DecodedChunks got;
  std::vector<std::string> raws(keys.size());
  std::vector<std::span<uint8_t>> outs;
  for (size_t j = 0; j < keys.size(); ++j) {
    raws[j].resize(r.m.raws[j].size());
    outs.emplace_back(reinterpret_cast<uint8_t*>(raws[j].data()), raws[j].size());
  }
  ASSERT_TRUE(tier->ReadDecoded(keys, outs, &decoder, &batch, &got).ok());
  // A key of another model.
  const std::vector<ChunkKey> bad = {keys[0], HashBytes("x", 1)};
  const Status st = tier->ReadDecoded(bad, std::span(outs).first(2), &decoder, &batch, &got);
  ASSERT_TRUE(st.IsInvalidArgument()) << st.ToString();
  ASSERT_EQ(got.status.size(), bad.size());
  ASSERT_EQ(got.frame_bytes.size(), bad.size());
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(got.status[i].code(), st.code()) << "entry " << i;
    EXPECT_EQ(got.status[i].message(), st.message()) << "entry " << i;
    EXPECT_EQ(got.frame_bytes[i], 0u) << "entry " << i;
  }
}

// Records what each ReadFrames asks the source it wraps for: the raw bytes
// of the chunks (by the manifest) and how many.
class RunRecorder final : public ChunkSource {
 public:
  struct Call {
    uint64_t raw_bytes = 0;
    size_t keys = 0;
  };
  RunRecorder(ChunkSource* inner, std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> raw_len)
      : inner_(inner), raw_len_(std::move(raw_len)) {}
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    return inner_->Read(keys);
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    return inner_->Contains(keys);
  }
  Status Write(std::span<const ChunkFrameRef> frames) override { return inner_->Write(frames); }
  Status ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) override {
    Call c{0, keys.size()};
    for (const ChunkKey& k : keys) c.raw_bytes += raw_len_.at(k);
    calls.push_back(c);
    return inner_->ReadFrames(keys, batch);
  }
  std::string Describe() const override { return inner_->Describe(); }
  std::vector<Call> calls;

 private:
  ChunkSource* inner_;
  std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> raw_len_;
};

// The tiered source reads the local part of a decoded read in the local
// store's runs: each ReadFrames asks for one chunk, or for chunks of at most
// kDecodeRunBytes, with chunks of 16 KiB to 1 MiB mixed; chunks the local
// store lacks still come from the remote, and every chunk decodes right.
TEST(TieredChunkSource, DecodedReadsReadTheLocalStoreInRuns) {
  TempDir dir;
  MemoryChunkSource remote_mem, local_mem;
  auto manifest = std::make_shared<Manifest>();
  manifest->chunk_size = 1 << 20;
  std::vector<std::string> raws;
  std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> raw_len;
  ChunkEncoder enc{EncodeOptions{}};
  std::mt19937 rng(11);
  const uint64_t sizes[] = {16 << 10, 16 << 10,  64 << 10, 256 << 10, 16 << 10,
                            3 << 20,  256 << 10, 16 << 10, 16 << 10,  40 << 10};
  for (size_t t = 0; t < std::size(sizes); ++t) {
    ManifestTensor mt;
    mt.name = "t" + std::to_string(t);
    mt.size = sizes[t];
    mt.shape = {mt.size};
    mt.first_chunk = manifest->chunks.size();
    for (uint64_t j = 0; j < manifest->ChunkCount(mt); ++j) {
      std::string raw(manifest->ChunkBytes(mt, j), '\0');
      for (size_t i = 0; i < raw.size(); i += 8) raw[i] = char(rng());
      std::string frame;
      enc.Encode(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), DType::kU8,
                 &frame);
      const ChunkKey k = HashBytes(raw.data(), raw.size());
      const ChunkFrameRef ref{k, frame, raw.size()};
      // Every fourth chunk is only on the remote.
      ASSERT_TRUE(remote_mem.Write(std::span(&ref, 1)).ok());
      if (manifest->chunks.size() % 4 != 3) {
        ASSERT_TRUE(local_mem.Write(std::span(&ref, 1)).ok());
      }
      manifest->chunks.push_back(k);
      raw_len[k] = raw.size();
      raws.push_back(std::move(raw));
    }
    manifest->tensors.push_back(mt);
  }
  RunRecorder local(&local_mem, raw_len);
  LazyCache cache(dir.path(), StoreAccess{});
  TieredChunkSource tier(&local, &cache, &remote_mem, manifest, "m:1");
  const std::vector<ChunkKey>& keys = manifest->chunks;
  std::vector<std::string> got_raws(keys.size());
  std::vector<std::span<uint8_t>> outs;
  for (size_t i = 0; i < keys.size(); ++i) {
    got_raws[i].resize(raws[i].size());
    outs.emplace_back(reinterpret_cast<uint8_t*>(got_raws[i].data()), got_raws[i].size());
  }
  ChunkDecoder decoder;
  FrameBatch batch;
  DecodedChunks got;
  ASSERT_TRUE(tier.ReadDecoded(keys, outs, &decoder, &batch, &got).ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(got.status[i].ok()) << "chunk " << i << ": " << got.status[i].ToString();
    EXPECT_TRUE(got_raws[i] == raws[i]) << "chunk " << i;
  }
  ASSERT_FALSE(local.calls.empty());
  size_t asked = 0;
  for (const RunRecorder::Call& c : local.calls) {
    asked += c.keys;
    if (c.keys > 1) {
      EXPECT_LE(c.raw_bytes, kDecodeRunBytes)
          << "one read asked for " << c.keys << " chunks, " << c.raw_bytes << " raw bytes";
    }
  }
  EXPECT_EQ(asked, keys.size());
  EXPECT_GT(local.calls.size(), 6u);
  EXPECT_EQ(tier.stats().local_chunks, keys.size() - keys.size() / 4);
}

// In group mode, what a reader running under umask 077 writes to the lazy
// cache keeps the store's file mode, so other members can read it.
TEST(LazyCache, FilesKeepTheStoreModeWhateverTheWritersUmask) {
  TempDir dir;
  StoreAccess access;
  access.dir_mode = 02750;
  access.file_mode = 0640;
  access.gid = ::getegid();
  const std::string bytes = "manifest bytes";
  const ModelDigest d = Manifest::DigestOf(bytes);
  MemoryChunkSource remote;
  TestModel m = MakeModel(1, 1, &remote);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::umask(077);
    LazyCache cache(dir.path(), access);
    bool ok = cache.PutManifest(d, bytes).ok() && cache.PutName("r", "m:1", d).ok() &&
              cache.PutFrame(m.manifest->chunks[0], m.raws[0].size(), m.frames[0]).ok();
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  LazyCache cache(dir.path(), access);
  int files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(cache.dir())) {
    struct stat st;
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0) << e.path();
    if (S_ISDIR(st.st_mode)) continue;
    EXPECT_EQ(st.st_mode & 07777, 0640u) << e.path();
    files++;
  }
  EXPECT_EQ(files, 3);
}

TEST(LazyCache, ManifestNotMatchingItsDigestIsDropped) {
  TempDir dir;
  LazyCache cache(dir.path(), StoreAccess{});
  const std::string bytes = "manifest bytes";
  ModelDigest d = Manifest::DigestOf(bytes);
  ASSERT_TRUE(cache.PutManifest(d, bytes).ok());
  auto got = cache.GetManifest(d);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, bytes);
  ASSERT_TRUE(WriteFileAtomic(cache.dir() + "/manifests/" + d.Hex(), "other bytes").ok());
  got = cache.GetManifest(d);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
}

TEST(LazyCache, NamesRoundTripPerRemote) {
  TempDir dir;
  LazyCache cache(dir.path(), StoreAccess{});
  ModelDigest a = HashBytes("a", 1), b = HashBytes("b", 1);
  ASSERT_TRUE(cache.PutName("fleet", "llama:8b", a).ok());
  ASSERT_TRUE(cache.PutName("other", "llama:8b", b).ok());
  auto got = cache.GetName("fleet", "llama:8b");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, a);
  got = cache.GetName("fleet", "llama:70b");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(cache.ListNames().size(), 2u);
  ASSERT_TRUE(cache.RemoveName("fleet", "llama:8b").ok());
  EXPECT_EQ(cache.ListNames().size(), 1u);
}

TEST(LazyCache, LocationsArePerRemoteWithAMarkerForNone) {
  TempDir dir;
  LazyCache cache(dir.path(), StoreAccess{});
  using C = LazyCache::CachedLocations;
  const std::string bytes = "manifest bytes";
  ModelDigest d = Manifest::DigestOf(bytes);
  auto got = cache.GetLocations("fleet", d);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, C::kUnknown);
  ASSERT_TRUE(cache.PutLocations("fleet", d, std::string_view("fleet's locations")).ok());
  ASSERT_TRUE(cache.PutLocations("old", d, std::nullopt).ok());
  got = cache.GetLocations("fleet", d);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, C::kBytes);
  EXPECT_EQ(got->bytes, "fleet's locations");
  got = cache.GetLocations("old", d);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, C::kNone);
  got = cache.GetLocations("third", d);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, C::kUnknown);
  // A file an older pstore kept per digest only is not read as anyone's.
  ASSERT_TRUE(WriteFileAtomic(cache.dir() + "/locations/" + d.Hex(), "old file").ok());
  got = cache.GetLocations("third", d);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, C::kUnknown);
  ASSERT_TRUE(cache.RemoveLocations("fleet", d).ok());
  EXPECT_EQ(cache.GetLocations("fleet", d)->kind, C::kUnknown);
}

TEST(LazyCache, RemovingAManifestRemovesItsLocationsOfEveryRemote) {
  TempDir dir;
  LazyCache cache(dir.path(), StoreAccess{});
  const std::string bytes = "manifest bytes";
  ModelDigest d = Manifest::DigestOf(bytes), other = HashBytes("x", 1);
  ASSERT_TRUE(cache.PutManifest(d, bytes).ok());
  ASSERT_TRUE(cache.PutLocations("fleet", d, std::string_view("a")).ok());
  ASSERT_TRUE(cache.PutLocations("old", d, std::nullopt).ok());
  ASSERT_TRUE(cache.PutLocations("fleet", other, std::string_view("b")).ok());
  ASSERT_TRUE(WriteFileAtomic(cache.dir() + "/locations/" + d.Hex(), "old file").ok());
  ASSERT_TRUE(cache.RemoveManifest(d).ok());
  EXPECT_FALSE(cache.GetManifest(d)->has_value());
  EXPECT_EQ(cache.GetLocations("fleet", d)->kind, LazyCache::CachedLocations::kUnknown);
  EXPECT_EQ(cache.GetLocations("old", d)->kind, LazyCache::CachedLocations::kUnknown);
  EXPECT_FALSE(std::filesystem::exists(cache.dir() + "/locations/" + d.Hex()));
  EXPECT_EQ(cache.GetLocations("fleet", other)->kind, LazyCache::CachedLocations::kBytes);
}

TEST(LazyCache, KilledWriterLeavesOnlyATemporaryFile) {
  TempDir dir;
  LazyCache cache(dir.path(), StoreAccess{});
  ChunkKey k = HashBytes("k", 1);
  ASSERT_TRUE(cache.PutFrame(k, 1, "f").ok());  // makes the folders
  // What a writer killed between create and rename leaves.
  ASSERT_TRUE(WriteFileAtomic(cache.dir() + "/tmp/12345.0", "partial").ok());
  EXPECT_EQ(cache.ListSpool().size(), 1u);
  EXPECT_EQ(cache.RemoveStaleTemporaries(std::chrono::seconds(600)), 0);
  EXPECT_EQ(cache.RemoveStaleTemporaries(std::chrono::seconds(0)), 1);
  EXPECT_FALSE(std::filesystem::exists(cache.dir() + "/tmp/12345.0"));
}

}  // namespace
}  // namespace pstore
