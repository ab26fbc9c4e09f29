// Unit tests of the pager's parts that a process opening a resident model
// relies on: the tensor name index, the layout a segment carries for
// attaching processes (copied out only when it checks), and the manifest
// parsed without its file headers.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "pager/layout.h"
#include "pager/name_index.h"
#include "pager/segment.h"
#include "store/manifest.h"

namespace pstore {
namespace {

// A manifest of n tensors of assorted sizes (some empty, some under a page,
// some of several chunks) with made-up chunk keys.
Manifest MakeManifest(uint32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Manifest m;
  m.chunk_size = 64 << 10;
  m.files.push_back({"model.safetensors", std::string(200, 'h'), 0, {}});
  uint64_t offset = 0;
  for (uint32_t i = 0; i < n; i++) {
    ManifestTensor t;
    t.name = "layers." + std::to_string(i % 97) + ".w" + std::to_string(i);
    t.dtype = DType::kF16;
    uint32_t kind = rng() % 4;
    t.size = kind == 0 ? 0 : kind == 1 ? 2 * (1 + rng() % 900) : 2 * (1 + rng() % 100000);
    t.shape = {t.size / 2};
    t.offset = offset;
    offset += t.size;
    t.first_chunk = m.chunks.size();
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
      ChunkKey k;
      for (auto& b : k.bytes) b = uint8_t(rng());
      m.chunks.push_back(k);
    }
    m.files[0].tensors.push_back(i);
    m.tensors.push_back(std::move(t));
  }
  m.files[0].data_size = offset;
  return m;
}

TEST(NameIndex, FindsEveryNameAndNothingElse) {
  Manifest m = MakeManifest(5000, 1);
  NameIndex idx;
  idx.Build(m.tensors);
  for (uint32_t i = 0; i < m.tensors.size(); i++) ASSERT_EQ(idx.Find(m.tensors[i].name), int64_t(i));
  EXPECT_EQ(idx.Find("layers.1.w"), -1);
  EXPECT_EQ(idx.Find(""), -1);
  EXPECT_EQ(idx.Find(m.tensors[7].name + "x"), -1);
  NameIndex empty;
  EXPECT_EQ(empty.Find("a"), -1);
  empty.Build({});
  EXPECT_EQ(empty.Find("a"), -1);
}

TEST(NameIndex, FirstOfEqualNamesWins) {
  std::vector<ManifestTensor> ts(3);
  ts[0].name = "a";
  ts[1].name = "b";
  ts[2].name = "a";
  NameIndex idx;
  idx.Build(ts);
  EXPECT_EQ(idx.Find("a"), 0);
  EXPECT_EQ(idx.Find("b"), 1);
}

TEST(Manifest, ParseWithoutHeadersKeepsEverythingElse) {
  Manifest m = MakeManifest(300, 2);
  std::string bytes = m.Serialize();
  auto full = Manifest::Parse(bytes);
  auto lite = Manifest::Parse(bytes, /*with_headers=*/false);
  ASSERT_TRUE(full.ok() && lite.ok());
  EXPECT_EQ(full->files[0].header_bytes, m.files[0].header_bytes);
  EXPECT_TRUE(lite->files[0].header_bytes.empty());
  EXPECT_EQ(lite->files[0].tensors, m.files[0].tensors);
  ASSERT_EQ(lite->tensors.size(), m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); i++) {
    EXPECT_EQ(lite->tensors[i].name, m.tensors[i].name);
    EXPECT_EQ(lite->tensors[i].size, m.tensors[i].size);
    EXPECT_EQ(lite->tensors[i].shape, m.tensors[i].shape);
  }
  EXPECT_EQ(lite->chunks, m.chunks);
  // Without headers the bytes are still checked throughout.
  EXPECT_FALSE(Manifest::Parse(bytes.substr(0, bytes.size() - 1), false).ok());
}

class SegmentLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = MakeManifest(2000, 3);
    bytes_ = m_.Serialize();
    digest_ = Manifest::DigestOf(bytes_);
    layout_ = Layout::Build(m_, uint64_t(::sysconf(_SC_PAGESIZE)));
    store_id_ = "0123456789abcdef0123456789ab" + std::to_string(100000 + ::getpid() % 900000).substr(0, 4);
    name_ = Segment::NameFor(store_id_, digest_);
    (void)RemoveSegment(name_);
  }
  void TearDown() override { (void)RemoveSegment(name_); }

  Manifest m_;
  std::string bytes_;
  ModelDigest digest_;
  Layout layout_;
  std::string store_id_, name_;
};

TEST_F(SegmentLayout, AttachingProcessesGetTheCreatorsLayout) {
  EXPECT_EQ(Segment::AttachResident(name_, digest_).status().code(), Status::Code::kNotFound);
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, store_id_, Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  auto other = Segment::AttachResident(name_, digest_);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ((*other)->manifest_bytes(), bytes_);
  auto l = (*other)->ReadLayout(m_);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->Fingerprint(), layout_.Fingerprint());
  EXPECT_EQ(l->slots.size(), layout_.slots.size());
  EXPECT_EQ(l->data_bytes, layout_.data_bytes);
  // Another digest is not this segment's.
  ModelDigest other_digest = digest_;
  other_digest.bytes[0] ^= 1;
  EXPECT_EQ(Segment::AttachResident(name_, other_digest).status().code(), Status::Code::kNotFound);
  // A manifest of other tensors does not fit the layout.
  Manifest fewer = MakeManifest(1999, 3);
  EXPECT_EQ((*other)->ReadLayout(fewer).status().code(), Status::Code::kCorruption);
}

TEST_F(SegmentLayout, DamagedLayoutBytesAreCorruptionNotALayout) {
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, store_id_, Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  const SegmentHeader* h = (*creator)->header();
  int fd = ::shm_open(name_.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  std::mt19937 rng(4);
  for (int i = 0; i < 50; i++) {
    uint64_t at = h->layout_off + rng() % h->layout_len;
    uint8_t b, flipped;
    ASSERT_EQ(::pread(fd, &b, 1, off_t(at)), 1);
    flipped = uint8_t(b ^ (1u << (rng() % 8)));
    ASSERT_EQ(::pwrite(fd, &flipped, 1, off_t(at)), 1);
    auto l = (*creator)->ReadLayout(m_);
    EXPECT_EQ(l.status().code(), Status::Code::kCorruption) << "byte " << at - h->layout_off;
    ASSERT_EQ(::pwrite(fd, &b, 1, off_t(at)), 1);
  }
  EXPECT_TRUE((*creator)->ReadLayout(m_).ok());
  ::close(fd);
}

}  // namespace
}  // namespace pstore
