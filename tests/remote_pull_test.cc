// PullChunks (store/remote/transfer.h), the part of a pull after the
// manifest, without a cluster: frames come from an in-memory source that
// records what each read asked for. Checks that a worker's batch is bounded
// by bytes whatever the chunk size, that the model arrives whole, that a
// frame under the wrong key is refused with nothing stored (chunks written
// by earlier batches taken out), and how a second frame asked for such a
// chunk (the damaged-frame retry) is checked and reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <random>

#include "store/memory_chunk_source.h"
#include "store/remote/transfer.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"
#include "tests/test_files.h"
#include "tests/test_safetensors.h"

namespace pstore {
namespace {

using testing_util::TempDir;
using testing_util::TestTensor;
using testing_util::WriteSafetensors;

// The frames of a store's model, in memory; Read records the most frame
// bytes one call returned.
class RecordingSource final : public ChunkSource {
 public:
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(auto out, mem_.Read(keys));
    uint64_t bytes = 0;
    for (const auto& f : out) bytes += f ? f->size() : 0;
    std::lock_guard<std::mutex> l(mu_);
    most_ = std::max(most_, bytes);
    return out;
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    return mem_.Contains(keys);
  }
  Status Write(std::span<const ChunkFrameRef> frames) override { return mem_.Write(frames); }
  std::string Describe() const override { return "recording"; }
  uint64_t most() {
    std::lock_guard<std::mutex> l(mu_);
    return most_;
  }

 private:
  MemoryChunkSource mem_;
  std::mutex mu_;
  uint64_t most_ = 0;  // GUARDED_BY(mu_)
};

class PullChunksTest : public ::testing::Test {
 protected:
  // A store of 4 MiB chunks holding `tensors` incompressible tensors of one
  // chunk each as m:v; its manifest, and its frames copied into src_.
  std::string Source(int tensors) {
    StoreConfig c;
    c.chunk_size = 4u << 20;
    auto w = StoreWriter::Open(dir_.path() + "/a", false, c);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    std::mt19937_64 rng(7);
    std::vector<TestTensor> ts;
    for (int i = 0; i < tensors; ++i) {
      std::string data(4u << 20, '\0');
      for (size_t j = 0; j + 8 <= data.size(); j += 8) {
        const uint64_t v = rng();
        std::memcpy(&data[j], &v, 8);
      }
      std::string name = "t";  // appended: GCC 12 warns falsely about "t" + std::string
      name += std::to_string(i);
      ts.push_back({name, "U8", {data.size()}, std::move(data)});
    }
    WriteSafetensors(dir_.path() + "/m.safetensors", ts);
    const ModelName name = ParseModelName("m:v").value();
    EXPECT_TRUE((*w)->Import(dir_.path() + "/m.safetensors", name, ImportOptions{}).ok());
    const ModelDigest d = (*w)->view().GetName(name).value().digest;
    std::string manifest = (*w)->view().LoadManifestBytes(d).value();
    const Manifest m = Manifest::Parse(manifest, false).value();
    RocksChunkSource local((*w)->view().db(), false, "a");
    auto frames = local.Read(m.chunks).value();
    for (size_t i = 0; i < m.chunks.size(); ++i) {
      const ChunkFrameRef f{m.chunks[i], *frames[i], 0};
      EXPECT_TRUE(src_.Write({&f, 1}).ok());
    }
    return manifest;
  }

  TempDir dir_;
  RecordingSource src_;
};

TEST_F(PullChunksTest, BatchesAreBoundedByBytesNotChunkCount) {
  ASSERT_FALSE(dir_.path().empty());
  const std::string manifest = Source(16);  // 64 MiB of 4 MiB chunks
  auto w = StoreWriter::Open(dir_.path() + "/b", false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  TransferOptions o;
  o.batch = 256;  // as a pull from packs: 256 chunks would be all 16 at once
  auto r = PullChunks(w->get(), ParseModelName("m:v").value(), manifest, &src_, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->moved_chunks, 16u);
  // At most o.batch_bytes of raw bytes a batch: 8 chunks' frames (each a
  // little over 4 MiB, being incompressible), not 16.
  EXPECT_GT(src_.most(), 0u);
  EXPECT_LE(src_.most(), o.batch_bytes + 8 * 4096);
  EXPECT_TRUE((*w)->view().GetName(ParseModelName("m:v").value()).ok());
}

// A source whose chunk 2 holds chunk 0's frame; PullChunks one chunk a
// batch, one batch at a time, so chunks 0 and 1 are written before chunk 2
// fails (and must be taken out again).
class DamagedPullTest : public PullChunksTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    manifest_ = Source(3);
    m_ = Manifest::Parse(manifest_, false).value();
    frames_ = src_.Read(m_.chunks).value();
    for (size_t i = 0; i < m_.chunks.size(); ++i) {
      const ChunkFrameRef f{m_.chunks[i], *frames_[i == 2 ? 0 : i], 0};
      ASSERT_TRUE(bad_.Write({&f, 1}).ok());
    }
  }
  Result<TransferResult> Pull(const std::string& store, FrameAgain again = nullptr) {
    auto w = StoreWriter::Open(dir_.path() + "/" + store, false);
    if (!w.ok()) return w.status();
    TransferOptions o;
    o.batch = 1;
    o.threads = 1;
    auto r =
        PullChunks(w->get(), ParseModelName("m:v").value(), manifest_, &bad_, o, std::move(again));
    stored_name_ = (*w)->view().GetName(ParseModelName("m:v").value()).ok();
    RocksChunkSource local((*w)->view().db(), false, store);
    auto have = local.Contains(m_.chunks).value();
    stored_chunks_ = std::count(have.begin(), have.end(), true);
    return r;
  }
  // The retry, recording the keys it was asked for.
  FrameAgain Again(std::function<Result<std::optional<std::string>>()> give) {
    return [this, give](const ChunkKey& key) -> Result<std::optional<std::string>> {
      std::lock_guard<std::mutex> l(mu_);
      asked_.push_back(key);
      return give();
    };
  }
  void ExpectRefused(const Result<TransferResult>& r) {
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    EXPECT_NE(r.status().message().find("model m:v, tensor t2, chunk 0"), std::string::npos)
        << r.status().ToString();
    EXPECT_FALSE(stored_name_);
    EXPECT_EQ(stored_chunks_, 0) << "chunks written before the failure must be taken out";
  }

  std::string manifest_;
  Manifest m_;
  std::vector<std::optional<std::string>> frames_;
  RecordingSource bad_;
  std::mutex mu_;
  std::vector<ChunkKey> asked_;
  bool stored_name_ = false;
  long stored_chunks_ = -1;
};

TEST_F(DamagedPullTest, AFrameUnderAnotherKeyIsRefusedAndNothingIsStored) {
  ExpectRefused(Pull("b"));
}

TEST_F(DamagedPullTest, ARetriedFrameOfAnotherChunkIsRefused) {
  auto r = Pull("b", Again([&] { return std::optional<std::string>(*frames_[1]); }));
  ExpectRefused(r);
  EXPECT_NE(r.status().message().find("the copy the chunk index names fails its key too"),
            std::string::npos)
      << r.status().ToString();
  ASSERT_EQ(asked_.size(), 1u);
  EXPECT_EQ(asked_[0], m_.chunks[2]);
}

TEST_F(DamagedPullTest, ARetriedRightFrameIsStored) {
  auto r = Pull("b", Again([&] { return std::optional<std::string>(*frames_[2]); }));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(stored_name_);
  EXPECT_EQ(stored_chunks_, 3);
  ASSERT_EQ(asked_.size(), 1u);
  EXPECT_EQ(asked_[0], m_.chunks[2]);
}

TEST_F(DamagedPullTest, NoOtherFrameGivesTheFirstError) {
  const Status first = Pull("b").status();
  auto r = Pull("c", Again([] { return std::optional<std::string>(); }));
  ExpectRefused(r);
  EXPECT_EQ(r.status().ToString(), first.ToString());
}

TEST_F(DamagedPullTest, AFailedRetryKeepsTheChunkAndTheFirstError) {
  const Status first = Pull("b").status();
  auto r = Pull("c", Again([]() -> Result<std::optional<std::string>> {
                  return Status::IOError("reading i.ab: timed out");
                }));
  // The retry's own error: a timeout says nothing of the index's copy, so
  // it is not reported as damage (exit 5 would advise removing the pack).
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIOError) << r.status().ToString();
  EXPECT_FALSE(r.status().IsRemote()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("model m:v, tensor t2, chunk 0"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find("run the pull again"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(stored_name_);
  EXPECT_EQ(stored_chunks_, 0) << "chunks written before the failure must be taken out";
  const std::string& msg = r.status().message();
  // The first frame's key check, then the retry's error.
  const std::string check = "does not match its key: ";
  const size_t at = first.message().find(check);
  ASSERT_NE(at, std::string::npos) << first.ToString();
  const std::string why = first.message().substr(at, first.message().find(';', at) - at);
  EXPECT_NE(msg.find(why + "; reading it again where the chunk index says failed"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("timed out"), std::string::npos) << msg;
}

// A chunk index that is itself damaged, found by the second read, is damage.
TEST_F(DamagedPullTest, ARetryThatFindsTheIndexDamagedIsDamage) {
  auto r = Pull("c", Again([]() -> Result<std::optional<std::string>> {
                  return Status::Corruption("i.ab: entry for the chunk does not parse");
                }));
  ExpectRefused(r);
  EXPECT_TRUE(r.status().IsRemote()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("entry for the chunk does not parse"), std::string::npos)
      << r.status().ToString();
}

}  // namespace
}  // namespace pstore
