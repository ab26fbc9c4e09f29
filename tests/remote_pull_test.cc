// PullChunks (store/remote/transfer.h), the part of a pull after the
// manifest, without a cluster: frames come from an in-memory source that
// records what each read asked for. Checks that a worker's batch is bounded
// by bytes whatever the chunk size, that the model arrives whole, and that a
// frame under the wrong key is refused with nothing stored.
#include <gtest/gtest.h>

#include <algorithm>
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

TEST_F(PullChunksTest, AFrameUnderAnotherKeyIsRefusedAndNothingIsStored) {
  ASSERT_FALSE(dir_.path().empty());
  const std::string manifest = Source(3);
  const Manifest m = Manifest::Parse(manifest, false).value();
  // Chunk 2's key now holds chunk 0's frame.
  RecordingSource bad;
  auto frames = src_.Read(m.chunks).value();
  for (size_t i = 0; i < m.chunks.size(); ++i) {
    const ChunkFrameRef f{m.chunks[i], *frames[i == 2 ? 0 : i], 0};
    ASSERT_TRUE(bad.Write({&f, 1}).ok());
  }
  auto w = StoreWriter::Open(dir_.path() + "/b", false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto r = PullChunks(w->get(), ParseModelName("m:v").value(), manifest, &bad, TransferOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("tensor t2, chunk 0"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE((*w)->view().GetName(ParseModelName("m:v").value()).ok());
  RocksChunkSource local((*w)->view().db(), false, "b");
  auto have = local.Contains(m.chunks).value();
  EXPECT_EQ(std::count(have.begin(), have.end(), true), 0);
}

}  // namespace
}  // namespace pstore
