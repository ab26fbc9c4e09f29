// Unit tests of the pager's parts that a process opening a resident model
// relies on: the tensor name index, the layout a segment carries for
// attaching processes (copied out only when it checks), and the manifest
// parsed without its file headers; and of bulk loads in file order: where
// the store says chunks are, and a prefetch in that order.
#if defined(__SANITIZE_ADDRESS__)
#define PSTORE_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PSTORE_TEST_LSAN 1
#endif
#endif
#if PSTORE_TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/metadata.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "pager/layout.h"
#include "pager/pager.h"
#include "pager/segment.h"
#include "pager/shm_object.h"
#include "pager/slot_claims.h"
#include "pager/tensor_table.h"
#include "store/manifest.h"
#include "store/memory_chunk_source.h"
#include "store/rocks.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"
#include "tests/quant_blocks.h"
#include "tests/test_safetensors.h"

namespace pstore {
namespace {

// A manifest of n tensors of assorted sizes (some empty, some under a page,
// some of several chunks) with made-up chunk keys.
Manifest MakeManifest(uint32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Manifest m;
  m.chunk_size = 64 << 10;
  m.files.push_back({"model.safetensors", std::string(200, 'h'), 0, {}, {}});
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

TEST(TensorTable, HoldsWhatTheManifestSays) {
  Manifest m = MakeManifest(5000, 1);
  m.metadata_json = "{\"a\":\"b\"}";
  auto t = TensorTable::FromManifest(m);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->count(), m.tensors.size());
  EXPECT_EQ(t->chunk_count(), m.chunks.size());
  EXPECT_EQ(t->chunk_size(), m.chunk_size);
  EXPECT_EQ(t->total_bytes(), m.TotalBytes());
  EXPECT_EQ(t->metadata(), m.metadata_json);
  EXPECT_EQ(std::string(t->metadata_cstr()), m.metadata_json);
  for (uint32_t i = 0; i < m.tensors.size(); i++) {
    const ManifestTensor& mt = m.tensors[i];
    ASSERT_EQ(t->name(i), mt.name);
    ASSERT_EQ(std::string(t->name_cstr(i)), mt.name);
    ASSERT_EQ(t->size(i), mt.size);
    ASSERT_EQ(t->dtype(i), mt.dtype);
    ASSERT_EQ(std::vector<uint64_t>(t->shape(i).begin(), t->shape(i).end()), mt.shape);
    ASSERT_EQ(t->first_chunk(i), mt.first_chunk);
    ASSERT_EQ(t->ChunkCount(i), m.ChunkCount(mt));
  }
  for (uint64_t c = 0; c < m.chunks.size(); c++) ASSERT_EQ(t->chunk(c), m.chunks[c]);
}

// Regression: serializing a tensor of no dimensions (a scalar) passed
// memcpy the null data() of its empty shape, which UBSan stops on.
TEST(TensorTable, HoldsAScalarTensor) {
  Manifest m;
  m.chunk_size = 64 << 10;
  m.files.push_back({"model.safetensors", std::string(200, 'h'), 4, {0}, {}});
  ManifestTensor t;
  t.name = "scale";
  t.dtype = DType::kF32;
  t.size = 4;
  m.chunks.push_back(ChunkKey{});
  m.tensors.push_back(t);
  auto table = TensorTable::FromManifest(m);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_EQ(table->count(), 1u);
  EXPECT_EQ(table->name(0), "scale");
  EXPECT_TRUE(table->shape(0).empty());
  EXPECT_EQ(table->size(0), 4u);
}

TEST(TensorTable, FindsEveryNameAndNothingElse) {
  Manifest m = MakeManifest(5000, 1);
  auto idx = TensorTable::FromManifest(m);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  for (uint32_t i = 0; i < m.tensors.size(); i++)
    ASSERT_EQ(idx->Find(m.tensors[i].name), int64_t(i));
  EXPECT_EQ(idx->Find("layers.1.w"), -1);
  EXPECT_EQ(idx->Find(""), -1);
  EXPECT_EQ(idx->Find(m.tensors[7].name + "x"), -1);
  TensorTable none;
  EXPECT_EQ(none.Find("a"), -1);
  Manifest empty;
  empty.chunk_size = 1 << 20;
  auto e = TensorTable::FromManifest(empty);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->Find("a"), -1);
}

TEST(TensorTable, FirstOfEqualNamesWins) {
  Manifest m = MakeManifest(3, 1);
  m.tensors[0].name = "a";
  m.tensors[1].name = "b";
  m.tensors[2].name = "a";
  auto idx = TensorTable::FromManifest(m);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->Find("a"), 0);
  EXPECT_EQ(idx->Find("b"), 1);
}

// Every byte of a table flipped, one at a time (the checksum's 8 bytes
// aside): each is refused as Corruption, never read as a table.
// Quantized GGUF tensors have chunk lengths of their own (store/manifest.h):
// the table gives each tensor's, and refuses one the manifest could not hold.
TEST(TensorTable, KeepsEachTensorsChunkLength) {
  Manifest m = MakeManifest(60, 3);
  m.format = SourceFormat::kGguf;
  m.alignment = 32;
  for (uint32_t i = 0; i < m.tensors.size(); i += 3) m.tensors[i].chunk_len = 69632;
  m.chunks.clear();
  for (ManifestTensor& t : m.tensors) {
    t.first_chunk = m.chunks.size();
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) m.chunks.push_back(HashBytes(&j, sizeof(j)));
  }
  auto t = TensorTable::FromManifest(m);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  bool several = false;
  for (uint32_t i = 0; i < m.tensors.size(); i++) {
    const ManifestTensor& mt = m.tensors[i];
    ASSERT_EQ(t->ChunkLen(i), m.ChunkLen(mt)) << i;
    ASSERT_EQ(t->ChunkCount(i), m.ChunkCount(mt)) << i;
    for (uint64_t j = 0; j < m.ChunkCount(mt); j++) {
      ASSERT_EQ(t->ChunkStart(i, j), m.ChunkStart(mt, j));
      ASSERT_EQ(t->ChunkBytes(i, j), m.ChunkBytes(mt, j));
    }
    several |= mt.chunk_len != 0 && m.ChunkCount(mt) > 1;
  }
  EXPECT_TRUE(several);
  for (uint32_t bad : {5000u, 4096u * 300}) {
    Manifest b = m;
    b.tensors[0].chunk_len = bad;
    auto e = TensorTable::FromManifest(b);
    ASSERT_EQ(e.status().code(), Status::Code::kCorruption) << bad;
    EXPECT_NE(e.status().message().find("chunk length"), std::string::npos)
        << e.status().ToString();
  }
}

TEST(TensorTable, AnyFlippedByteIsCorruption) {
  Manifest m = MakeManifest(40, 2);
  m.metadata_json = "{}";
  std::string bytes = TensorTable::Serialize(m);
  std::vector<uint64_t> aligned((bytes.size() + 7) / 8);
  auto open = [&](const std::string& b) {
    std::memcpy(aligned.data(), b.data(), b.size());
    return TensorTable::Open(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(aligned.data()), b.size()),
        nullptr, "test table");
  };
  ASSERT_TRUE(open(bytes).ok());
  for (size_t i = 0; i < bytes.size(); i++) {
    if (i >= 8 && i < 16) continue;
    std::string b = bytes;
    b[i] = char(b[i] ^ (1 << (i % 8)));
    auto t = open(b);
    ASSERT_EQ(t.status().code(), Status::Code::kCorruption) << "byte " << i;
    ASSERT_NE(t.status().message().find("test table: tensor table"), std::string::npos);
  }
  EXPECT_EQ(open(bytes.substr(0, bytes.size() - 1)).status().code(), Status::Code::kCorruption);
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
    tables_bytes_ = TensorTable::Serialize(m_);
    tables_ = TensorTable::FromManifest(m_).value();
    // A store id of this process's own: tests run in parallel processes.
    char id[33];
    std::random_device rd;
    std::snprintf(id, sizeof(id), "%08x%08x%08x%08x", unsigned(::getpid()), rd(), rd(), rd());
    store_id_ = id;
    name_ = Segment::NameFor(store_id_, digest_);
    (void)RemoveSegment(name_);
  }
  void TearDown() override { (void)RemoveSegment(name_); }

  Manifest m_;
  std::string bytes_;
  ModelDigest digest_;
  Layout layout_;
  std::string tables_bytes_;
  TensorTable tables_;
  std::string store_id_, name_;
};

TEST_F(SegmentLayout, AttachingProcessesGetTheCreatorsLayout) {
  EXPECT_EQ(Segment::AttachResident(name_, digest_).status().code(), Status::Code::kNotFound);
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                                 Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  auto other = Segment::AttachResident(name_, digest_);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ((*other)->CopyManifest(), bytes_);
  auto t = (*other)->ReadTables();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->count(), m_.tensors.size());
  EXPECT_EQ(t->Find(m_.tensors[5].name), 5);
  auto l = (*other)->ReadLayout(tables_);
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
  EXPECT_EQ((*other)->ReadLayout(TensorTable::FromManifest(fewer).value()).status().code(),
            Status::Code::kCorruption);
}

TEST_F(SegmentLayout, DamagedLayoutBytesAreCorruptionNotALayout) {
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                                 Segment::Options{});
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
    auto l = (*creator)->ReadLayout(tables_);
    EXPECT_EQ(l.status().code(), Status::Code::kCorruption) << "byte " << at - h->layout_off;
    ASSERT_EQ(::pwrite(fd, &b, 1, off_t(at)), 1);
  }
  EXPECT_TRUE((*creator)->ReadLayout(tables_).ok());
  ::close(fd);
}

TEST_F(SegmentLayout, AHeaderOutOfShapeIsRefusedBeforeAnythingIsMapped) {
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                                 Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  ASSERT_TRUE(Segment::AttachResident(name_, digest_).ok());
  int fd = ::shm_open(name_.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  for (size_t field : {offsetof(SegmentHeader, slots_off), offsetof(SegmentHeader, units_off),
                       offsetof(SegmentHeader, pins_stride), offsetof(SegmentHeader, data_off),
                       offsetof(SegmentHeader, layout_len)}) {
    uint64_t v, bad = uint64_t(1) << 62;
    ASSERT_EQ(::pread(fd, &v, 8, off_t(field)), 8);
    ASSERT_EQ(::pwrite(fd, &bad, 8, off_t(field)), 8);
    EXPECT_FALSE(Segment::AttachResident(name_, digest_).ok()) << field;
    EXPECT_EQ(Segment::AttachExisting(name_).status().code(), Status::Code::kCorruption) << field;
    ASSERT_EQ(::pwrite(fd, &v, 8, off_t(field)), 8);
  }
  // A slot table entry out of range, which eviction would index by.
  uint64_t huge = ~0ull - 4095;
  ASSERT_EQ(::pwrite(fd, &huge, 8, off_t((*creator)->header()->slots_off)), 8);
  EXPECT_EQ(Segment::AttachExisting(name_).status().code(), Status::Code::kCorruption);
  ::close(fd);
}

TEST_F(SegmentLayout, ALayoutOutOfRangeIsRefusedEvenWithItsFingerprint) {
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                                 Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  const SegmentHeader* h = (*creator)->header();
  const uint64_t layout_off = h->layout_off;
  int fd = ::shm_open(name_.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  // Writes a layout (and its fingerprint, as a peer would) into the segment.
  auto put = [&](const Layout& l) {
    std::string b = Segment::LayoutBytes(l);
    ASSERT_EQ(::pwrite(fd, b.data(), b.size(), off_t(layout_off)), ssize_t(b.size()));
    uint64_t fp = l.Fingerprint();
    ASSERT_EQ(::pwrite(fd, &fp, 8, off_t(offsetof(SegmentHeader, fingerprint))), 8);
  };
  uint32_t big = 0, empty = 0;
  for (uint32_t t = 0; t < m_.tensors.size(); t++) {
    if (m_.tensors[t].size > 4096) big = t;
    if (m_.tensors[t].size == 0) empty = t;
  }
  std::vector<std::pair<const char*, std::function<void(Layout*)>>> cases = {
      {"slot past the end", [](Layout* l) { l->slots[0].offset = ~0ull - 4095; }},
      {"empty slot", [](Layout* l) { l->slots[0].bytes = 0; }},
      {"slot without pieces", [](Layout* l) { l->slots[0].npieces = 0; }},
      {"tensor without slots", [&](Layout* l) { l->tensors[big].nslots = 0; }},
      {"tensor past its slots", [&](Layout* l) { l->tensors[big].offset += 4096; }},
      {"slots for an empty tensor", [&](Layout* l) { l->tensors[empty].nslots = 1; }},
      {"piece past its slot", [](Layout* l) { l->pieces[0].offset = 1u << 30; }},
      {"unit past the slots", [](Layout* l) { l->units[0].first_slot = ~0u; }},
  };
  for (auto& [what, damage] : cases) {
    Layout l = layout_;
    damage(&l);
    put(l);
    EXPECT_EQ((*creator)->ReadLayout(tables_).status().code(), Status::Code::kCorruption) << what;
  }
  put(layout_);
  EXPECT_TRUE((*creator)->ReadLayout(tables_).ok());
  ::close(fd);
}

// A segment of another layout version (an older pstore's, still in use) is
// seen as in use while an attachment holds its lock, so `ps --gc` keeps it;
// once none does, it may go. The attachment here has a descriptor of its
// own, so its lock is another open file description's, as another
// process's is.
TEST_F(SegmentLayout, ASegmentOfAnotherVersionInUseIsSeenInUse) {
  auto creator = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                                 Segment::Options{});
  ASSERT_TRUE(creator.ok()) << creator.status().ToString();
  int fd = ::shm_open(name_.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  const uint32_t other = kLayoutVersion - 1;
  ASSERT_EQ(::pwrite(fd, &other, 4, off_t(offsetof(SegmentHeader, layout_version))), 4);
  ::close(fd);
  auto held = InspectSegment(name_);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_FALSE(held->complete);
  EXPECT_TRUE(held->locked);
  EXPECT_GT(held->live_attachments(), 0u);
  creator->reset();
  auto free = InspectSegment(name_);
  ASSERT_TRUE(free.ok()) << free.status().ToString();
  EXPECT_FALSE(free->locked);
  EXPECT_EQ(free->live_attachments(), 0u);
}

// The process table, claims and eviction, with two attachments in this
// process: each has its own descriptor, so its own liveness lock, and
// AbandonAsIfDead stands in for a death (the multi-process tests kill -9).
class SegmentSharing : public SegmentLayout {
 protected:
  void AttachTwo() {
    auto a = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                             Segment::Options{});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    auto b = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                             Segment::Options{});
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    a_ = std::move(a).value();
    b_ = std::move(b).value();
    ASSERT_NE(a_->me(), b_->me());
  }
  // A slot holding at least one tensor, and the first of them.
  std::pair<uint32_t, uint32_t> SlotWithTensor(uint32_t from = 0) const {
    for (uint32_t s = from; s < a_->nslots(); s++)
      if (a_->slot(s).ntensors > 0 && a_->slot(s).bytes > 0) return {s, a_->slot(s).first_tensor};
    ADD_FAILURE() << "no slot with a tensor";
    return {0, 0};
  }
  std::unique_ptr<Segment> a_, b_;
};

TEST_F(SegmentSharing, AClaimIsExclusiveAndGivenUpWhenItsOwnerGoes) {
  AttachTwo();
  const uint32_t s = SlotWithTensor().first;
  std::vector<uint32_t> busy;
  {
    SlotClaims mine(a_.get());
    mine.Claim({s}, nullptr);
    ASSERT_EQ(mine.size(), 1u);
    uint32_t w = b_->state(s).load();
    EXPECT_EQ(StateOf(w), kLoading);
    EXPECT_EQ(OwnerOf(w), a_->me());
    SlotClaims theirs(b_.get());
    theirs.Claim({s}, &busy);
    EXPECT_TRUE(theirs.empty());
    EXPECT_EQ(busy, std::vector<uint32_t>{s});
  }
  // Neither published: the slot is EMPTY again, and the other may claim it.
  EXPECT_EQ(StateOf(b_->state(s).load()), kEmpty);
  {
    SlotClaims theirs(b_.get());
    theirs.Claim({s}, nullptr);
    ASSERT_EQ(theirs.size(), 1u);
    theirs.Publish(0);
  }
  // A published claim stays published.
  EXPECT_EQ(StateOf(a_->state(s).load()), kReady);
  SlotClaims late(a_.get());
  late.Claim({s}, &busy);
  EXPECT_TRUE(late.empty());
}

TEST_F(SegmentSharing, ADeadLoadersClaimsAndPinsAreReapedByAnotherAttachment) {
  AttachTwo();
  const auto [s, t] = SlotWithTensor();
  const uint32_t dead = a_->me();
  // A process that dies runs no destructors: its claims are never given up.
  alignas(SlotClaims) unsigned char storage[sizeof(SlotClaims)];
  SlotClaims* claims = new (storage) SlotClaims(a_.get());
  {
#if PSTORE_TEST_LSAN
    // Its memory is never freed either, as a dead process's would not be.
    __lsan::ScopedDisabler not_a_leak;
#endif
    claims->Claim({s}, nullptr);
  }
  ASSERT_EQ(claims->size(), 1u);
  a_->pin(dead, t).fetch_add(1);
  EXPECT_TRUE(b_->SlotPinned(s));
  EXPECT_FALSE(b_->ReapIfDead(dead)) << "the owner is alive";
  EXPECT_EQ(StateOf(b_->state(s).load()), kLoading);

  a_->AbandonAsIfDead();
  EXPECT_TRUE(b_->ReapIfDead(dead));
  EXPECT_EQ(StateOf(b_->state(s).load()), kEmpty);
  EXPECT_EQ(b_->pin(dead, t).load(), 0u);
  EXPECT_FALSE(b_->SlotPinned(s));
  EXPECT_EQ(b_->entry(dead).used.load(), 0u);
}

TEST_F(SegmentSharing, AnUnpinnedUnitIsEvictedAfterItsSecondChanceAndAPinnedOneIsNot) {
  AttachTwo();
  // A slot of a gapless unit, the unit allocated and all its slots loaded.
  uint32_t s = 0, t = 0, u = 0;
  bool found = false;
  for (uint32_t from = 0; !found && from < a_->nslots(); from++) {
    std::tie(s, t) = SlotWithTensor(from);
    u = a_->FirstUnit(s);
    found = a_->FirstUnit(s) == a_->LastUnit(s) && a_->UnitGapless(u);
    from = s;
  }
  ASSERT_TRUE(found) << "no slot within a gapless unit";
  ASSERT_TRUE(b_->ReserveUnit(u).ok());
  const uint64_t before = b_->ResidentBytes();
  ASSERT_GE(before, b_->UnitUsedBytes(u));
  std::vector<uint32_t> in_unit;
  for (uint32_t k = 0; k < b_->nslots(); k++)
    if (b_->FirstUnit(k) <= u && u <= b_->LastUnit(k)) in_unit.push_back(k);
  {
    SlotClaims load(b_.get());
    load.Claim(in_unit, nullptr);
    ASSERT_EQ(load.size(), in_unit.size());
    for (size_t i = 0; i < load.size(); i++) load.Publish(i);
  }
  const uint64_t evictions = b_->header()->evictions.load();

  b_->ref(s) = 1;
  EXPECT_EQ(b_->TryEvictUnit(u), 0u) << "referenced since the last sweep";
  EXPECT_EQ(b_->ref(s), 0) << "the sweep takes its reference away";
  {
    TensorPin pin(a_.get(), t);
    EXPECT_EQ(b_->TryEvictUnit(u), 0u) << "pinned by the other attachment";
    EXPECT_EQ(StateOf(b_->state(s).load()), kReady) << "a refused eviction changes nothing";
  }
  EXPECT_GT(b_->TryEvictUnit(u), 0u);
  for (uint32_t k : in_unit) EXPECT_EQ(StateOf(b_->state(k).load()), kEmpty) << "slot " << k;
  EXPECT_FALSE(b_->UnitAllocated(u));
  EXPECT_LT(b_->ResidentBytes(), before);
  EXPECT_GT(b_->header()->evictions.load(), evictions);
}

// The owners of what an attachment maps and opens (pager/shm_object.h):
// each goes with its attachment, and a child the process execs keeps none.

// Lines of /proc/self/maps mapping /dev/shm<name>.
int Mappings(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) n += line.find("/dev/shm" + name) != std::string::npos;
  return n;
}

// This process's descriptors of /dev/shm<name>.
int Descriptors(const std::string& name) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code lec;
    auto target = std::filesystem::read_symlink(e.path(), lec);
    n += !lec && target.string().find("/dev/shm" + name) == 0;
  }
  return n;
}

// The lines of /proc/self/maps that overlap [begin, end) and map `what`
// (a file's path; "" for anonymous memory without access, as a reservation
// of address space is).
std::string MappedWithin(uintptr_t begin, uintptr_t end, const std::string& what) {
  std::ifstream maps("/proc/self/maps");
  std::string line, out;
  while (std::getline(maps, line)) {
    uintptr_t b = 0, e = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %7s", &b, &e, perms) != 3 || b >= end || e <= begin)
      continue;
    if (what.empty() ? std::string(perms) == "---p" && line.find('/') == std::string::npos
                     : line.find(what) != std::string::npos)
      out += line + "\n";
  }
  return out;
}

bool Mapped(const void* at) {
  unsigned char v;
  return ::mincore(const_cast<void*>(at), 1, &v) == 0;
}

TEST_F(SegmentSharing, AnAttachmentThatGoesLeavesNoMappingNorDescriptor) {
  AttachTwo();
  const int two = Mappings(name_);
  EXPECT_EQ(Descriptors(name_), 2);
  const uint8_t* data = a_->data();
  ASSERT_NE(data, nullptr);
  a_.reset();
  const int one = Mappings(name_);
  EXPECT_GT(one, 0);
  EXPECT_LT(one, two);
  EXPECT_EQ(Descriptors(name_), 1);
  EXPECT_FALSE(Mapped(data)) << "the destroyed attachment's data mapping";
  b_->AbandonAsIfDead();
  EXPECT_EQ(Mappings(name_), 0);
  EXPECT_EQ(Descriptors(name_), 0);
}

TEST_F(SegmentSharing, AChildTheProcessExecsDoesNotKeepADeadAttachmentAlive) {
  AttachTwo();
  const uint32_t dead = a_->me();
  // posix_spawn returns once the child has exec'd: it has whatever
  // descriptors were not close-on-exec, and with one the open file
  // description that holds the attachment's liveness lock.
  pid_t child = -1;
  char sleep_arg[] = "sleep", secs[] = "30";
  char* argv[] = {sleep_arg, secs, nullptr};
  ASSERT_EQ(::posix_spawnp(&child, "sleep", nullptr, nullptr, argv, environ), 0);
  a_->AbandonAsIfDead();
  const bool reaped = b_->ReapIfDead(dead);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(reaped) << "the exec'd child kept the dead attachment's lock";
}

TEST_F(SegmentLayout, ACreationThatFailsLeavesNoObjectBehind) {
  // Growing a file past RLIMIT_FSIZE fails (EFBIG; the signal it also sends
  // is ignored here): the segment cannot be sized.
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit small = {4096, old.rlim_max};
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto s = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                           Segment::Options{});
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(name_), std::string::npos) << s.status().ToString();
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + name_));
  // The name is free for the next try.
  auto again = Segment::Attach(name_, layout_, digest_, bytes_, tables_bytes_, store_id_,
                               Segment::Options{});
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

class ShmObject : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = "/pstore-test-shm-" + std::to_string(::getpid());
    RemoveShm(name_);
  }
  void TearDown() override { RemoveShm(name_); }
  std::string name_;
};

TEST_F(ShmObject, ADescriptorIsCloseOnExecAndAMappingGoesWithItsLastOwner) {
  auto obj = OpenShm(name_, ShmOpen::kCreate);
  ASSERT_TRUE(obj.ok()) << obj.status().ToString();
  EXPECT_NE(::fcntl(ShmFd(*obj), F_GETFD) & FD_CLOEXEC, 0);
  constexpr size_t kLen = 1 << 20;
  ASSERT_TRUE(ResizeShm(*obj, kLen, name_).ok());
  auto region = MapRange(ShmFd(*obj), bip::read_write, 0, kLen, name_);
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  uint8_t* at = Bytes(*region);
  at[kLen - 1] = 7;
  bip::mapped_region moved(std::move(*region));
  { bip::mapped_region emptied(std::move(*region)); }  // owns nothing
  EXPECT_TRUE(Mapped(at));
  EXPECT_EQ(Bytes(moved)[kLen - 1], 7);
  moved = bip::mapped_region();
  EXPECT_FALSE(Mapped(at));
}

TEST_F(ShmObject, AnAlignedMappingIsAlignedAndLeavesNothingMappedWhenItGoes) {
  auto obj = OpenShm(name_, ShmOpen::kCreate);
  ASSERT_TRUE(obj.ok()) << obj.status().ToString();
  constexpr size_t kLen = 3 << 20;
  ASSERT_TRUE(ResizeShm(*obj, kLen + 4096, name_).ok());
  for (int i = 0; i < 20; i++) {
    uintptr_t at = 0;
    {
      auto r = MapRangeAligned(ShmFd(*obj), bip::read_only, 4096, kLen, kHugePage, name_);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      at = reinterpret_cast<uintptr_t>(r->get_address());
      EXPECT_EQ(at % kHugePage, 0u);
      EXPECT_EQ(r->get_size(), kLen);
      EXPECT_TRUE(Mapped(r->get_address()));
    }
    // Nothing is left of the mapping nor of the reservation around it.
    EXPECT_EQ(MappedWithin(at - kHugePage, at + kLen + kHugePage, "/dev/shm" + name_), "");
    EXPECT_EQ(MappedWithin(at - kHugePage, at + kLen + kHugePage, ""), "") << "round " << i;
  }
  auto none = MapRange(ShmFd(*obj), bip::read_only, 0, 0, name_);
  EXPECT_EQ(none.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(OpenShm(name_ + "-none", ShmOpen::kReadOnly).status().code(), Status::Code::kNotFound);
}

// --- bulk loads in file order ---------------------------------------------------

class TempStore {
 public:
  TempStore() {
    char tmpl[] = "/tmp/pstore-pager-test-XXXXXX";
    if (char* p = ::mkdtemp(tmpl)) path_ = p;
  }
  ~TempStore() {
    if (path_.empty()) return;
    // The shared memory of stores made here (a store's budget file outlives
    // its processes by design; these stores do not).
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path().filename() != "ID") continue;
      std::ifstream f(it->path());
      std::string id;
      f >> id;
      for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
        if (!id.empty() && e.path().filename().string().rfind("pstore-" + id + "-", 0) == 0)
          std::filesystem::remove(e.path(), ec);
    }
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A safetensors file of `count` F16 tensors of `bytes` each, weight-like
// (small exponents), plus some tiny ones; returns the tensors' bytes by name.
std::vector<std::pair<std::string, std::string>> WriteModel(const std::string& path, int count,
                                                            uint64_t bytes, uint32_t seed,
                                                            int tiny = 0) {
  std::mt19937_64 rng(seed);
  std::vector<std::pair<std::string, std::string>> ts;
  for (int i = 0; i < count; i++) {
    std::string d(bytes, '\0');
    for (uint64_t j = 0; j + 1 < bytes; j += 2) {
      uint64_t r = rng();
      d[j] = char(r);
      d[j + 1] = char(0x20 + (r >> 8) % 16 + ((r >> 12) & 1) * 0x80);
    }
    ts.push_back({"layers." + std::to_string(i) + ".w", std::move(d)});
    ts.push_back({"layers." + std::to_string(i) + ".b", std::string(64 + i, char(i))});
  }
  for (int i = 0; i < tiny; i++) {
    // Appended, not "t" + std::to_string(i): GCC 12 warns (-Wrestrict) on
    // that operator+ when inlined, a false positive.
    std::string data = "t";
    data += std::to_string(i);
    ts.push_back({"tiny." + std::to_string(i), std::move(data)});
  }
  std::vector<testing_util::TestTensor> file;
  for (const auto& [name, data] : ts) file.push_back({name, "U8", {data.size()}, data});
  testing_util::WriteSafetensors(path, file);
  return ts;
}

// Imports src as m:1 into the store at root (made if need be).
Status ImportModel(const std::string& src, const std::string& root) {
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(root, false));
  return w->Import(src, {"m", "1"}, ImportOptions{}).status();
}

// A 40 MB model of 20 big and 20 small tensors (above the bulk threshold, so
// a prefetch of all of it goes in file order), written from seed and imported
// as m:1 into dir/s; its tensors.
std::vector<std::pair<std::string, std::string>> ImportBulkModel(const TempStore& dir,
                                                                 uint32_t seed) {
  std::string src = dir.path() + "/m.safetensors";
  auto ts = WriteModel(src, 20, 2000000, seed);
  Status st = ImportModel(src, dir.path() + "/s");
  EXPECT_TRUE(st.ok()) << st.ToString();
  return ts;
}

// Prefetches every tensor of m (without waiting).
void PrefetchAll(Model& m) {
  std::vector<uint32_t> all(m.tensor_count());
  for (uint32_t i = 0; i < all.size(); i++) all[i] = i;
  m.Prefetch(all);
}

TEST(LocateChunks, PlacesEveryChunkWhereItsFrameIs) {
  TempStore dir;
  std::string src = dir.path() + "/m.safetensors";
  // Thousands of distinct tiny tensors: chunk keys all over the key space,
  // both halves of the parallel scan and the boundary between them.
  WriteModel(src, 6, 300000, 1, 3000);
  ASSERT_TRUE(ImportModel(src, dir.path() + "/s").ok());
  auto r = StoreReader::Open(dir.path() + "/s");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const StoreView& view = (*r)->view();
  auto digest = view.Resolve("m:1");
  auto m = view.LoadManifest(*digest);
  ASSERT_TRUE(m.ok());
  std::vector<ChunkKey> keys = (*m)->chunks;
  keys.push_back(keys[0]);  // a key asked for twice is placed twice
  ChunkKey missing;
  missing.bytes.fill(0xab);
  keys.push_back(missing);
  std::vector<StoreView::ChunkPlace> places(keys.size());
  ASSERT_TRUE(view.LocateChunks(keys.data(), keys.size(), places.data()).ok());
  EXPECT_EQ(places.back().file, StoreView::ChunkPlace::kUnknown);
  EXPECT_EQ(places[keys.size() - 2].file, places[0].file);
  EXPECT_EQ(places[keys.size() - 2].offset, places[0].offset);
  rocksdb::ColumnFamilyMetaData md;
  view.db()->db()->GetColumnFamilyMetaData(view.db()->chunks(), &md);
  int inline_frames = 0, blob_frames = 0;
  for (size_t i = 0; i + 1 < keys.size(); i++) {
    rocksdb::PinnableSlice frame;
    ASSERT_TRUE(view.ReadFrame(keys[i], &frame).ok());
    ASSERT_NE(places[i].file, StoreView::ChunkPlace::kUnknown) << i;
    if (places[i].file == StoreView::ChunkPlace::kInline) {
      EXPECT_LT(frame.size(), 4096u);  // min_blob_size: small frames stay in the table
      inline_frames++;
      continue;
    }
    std::string path;
    for (const auto& b : md.blob_files)
      if (b.blob_file_number == places[i].file) path = b.blob_file_path + "/" + b.blob_file_name;
    ASSERT_FALSE(path.empty()) << "no blob file " << places[i].file;
    std::string bytes(frame.size(), '\0');
    int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pread(fd, bytes.data(), bytes.size(), off_t(places[i].offset)),
              ssize_t(bytes.size()));
    ::close(fd);
    EXPECT_EQ(bytes, frame.ToString()) << "chunk " << i;
    blob_frames++;
  }
  EXPECT_GT(inline_frames, 0);
  EXPECT_GT(blob_frames, 0);
  bool low_edge = false, high_edge = false;
  for (const ChunkKey& k : keys) {
    low_edge = low_edge || k.bytes[0] == 0x7f;
    high_edge = high_edge || k.bytes[0] == 0x80;
  }
  EXPECT_TRUE(low_edge && high_edge) << "keys on both sides of the scan's split";
}

TEST(BulkPrefetch, LoadsEveryTensorInFileOrderFromAColdCache) {
  TempStore dir;
  auto ts = ImportBulkModel(dir, 2);
  auto pager = Pager::Open(dir.path() + "/s", PagerOptions{});
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  auto model = (*pager)->OpenModel("m:1");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  // Some tensors resident first: the bulk load leaves them alone.
  for (uint32_t t = 0; t < 6; t++) {
    ASSERT_TRUE((*model)->Acquire(t).ok());
    ASSERT_TRUE((*model)->Release(t).ok());
  }
  uint64_t decoded_before = (*model)->Stats().bytes_decoded;
  // The blob files out of the OS cache (as after a reboot), so that the
  // warmer reads them ahead of the loaders.
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path() + "/s")) {
    if (e.path().extension() != ".blob") continue;
    int fd = ::open(e.path().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ::close(fd);
  }
  PrefetchAll(**model);
  ASSERT_TRUE((*model)->WaitPrefetch().ok());
  uint64_t total = 0;
  for (const auto& t : ts) total += t.second.size();
  ModelStats st = (*model)->Stats();
  EXPECT_EQ(st.file_order_prefetches, 1u);
  EXPECT_GT(st.frames_mapped, 0u) << "frames decoded straight from the blob files";
  EXPECT_EQ(st.bytes_decoded, total) << "every byte decoded once";
  EXPECT_GT(st.bytes_decoded - decoded_before, total / 2);
  uint64_t hits_before = st.hits;
  for (uint32_t t = 0; t < (*model)->tensor_count(); t++) {
    auto p = (*model)->Acquire(t);
    ASSERT_TRUE(p.ok());
    const std::string& want = ts[t].second;
    ASSERT_EQ((*model)->tables().name(t), ts[t].first);
    ASSERT_EQ(std::memcmp(*p, want.data(), want.size()), 0) << ts[t].first;
    ASSERT_TRUE((*model)->Release(t).ok());
  }
  EXPECT_EQ((*model)->Stats().hits - hits_before, (*model)->tensor_count()) << "all resident";
  (void)RemoveSegment(Segment::NameFor((*pager)->store_id(), (*model)->digest()));
}

TEST(BulkPrefetch, ADamagedFrameInABlobFileIsReportedWithItsTensorAndTheRestLoads) {
  TempStore dir;
  auto ts = ImportBulkModel(dir, 2);
  // One byte flipped in the middle of tensor 6's first frame (layers.3.w), in its blob file.
  ChunkKey damaged;
  {
    auto r = StoreReader::Open(dir.path() + "/s");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const StoreView& view = (*r)->view();
    auto digest = view.Resolve("m:1");
    ASSERT_TRUE(digest.ok());
    auto m = view.LoadManifest(*digest);
    ASSERT_TRUE(m.ok());
    damaged = (*m)->chunks[(*m)->tensors[6].first_chunk];
    StoreView::ChunkPlace place;
    ASSERT_TRUE(view.LocateChunks(&damaged, 1, &place).ok());
    auto paths = view.BlobFilePaths();
    ASSERT_TRUE(paths.count(place.file)) << "a big frame sits in a blob file";
    int fd = ::open(paths[place.file].c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t b;
    off_t at = off_t(place.offset + place.size / 2);
    ASSERT_EQ(::pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
    ::close(fd);
  }
  auto pager = Pager::Open(dir.path() + "/s", PagerOptions{});
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  auto model = (*pager)->OpenModel("m:1");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  PrefetchAll(**model);
  Status st = (*model)->WaitPrefetch();
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("tensor " + ts[6].first + " chunk 0"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(damaged.Hex()), std::string::npos) << st.message();
  EXPECT_EQ((*model)->Stats().file_order_prefetches, 1u);
  EXPECT_GT((*model)->Stats().frames_mapped, 0u);
  for (uint32_t t = 0; t < (*model)->tensor_count(); t++) {
    auto p = (*model)->Acquire(t);
    if (t == 6) {
      EXPECT_TRUE(p.status().IsCorruption()) << p.status().ToString();
      continue;
    }
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(std::memcmp(*p, ts[t].second.data(), ts[t].second.size()), 0) << ts[t].first;
    ASSERT_TRUE((*model)->Release(t).ok());
  }
  (void)RemoveSegment(Segment::NameFor((*pager)->store_id(), (*model)->digest()));
}

TEST(BulkPrefetch, UnderATightBudgetLoadsInTensorOrder) {
  TempStore dir;
  auto ts = ImportBulkModel(dir, 4);
  PagerOptions po;
  po.budget_bytes = 64ull << 20;  // holds the 40 MB model, but not twice
  auto pager = Pager::Open(dir.path() + "/s", po);
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  auto model = (*pager)->OpenModel("m:1");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  PrefetchAll(**model);
  ASSERT_TRUE((*model)->WaitPrefetch().ok());
  EXPECT_EQ((*model)->Stats().file_order_prefetches, 0u);
  for (uint32_t t = 0; t < (*model)->tensor_count(); t++) {
    auto p = (*model)->Acquire(t);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(std::memcmp(*p, ts[t].second.data(), ts[t].second.size()), 0) << ts[t].first;
    ASSERT_TRUE((*model)->Release(t).ok());
  }
  (void)RemoveSegment(Segment::NameFor((*pager)->store_id(), (*model)->digest()));
}

TEST(BulkPrefetch, APagerClosedWithPrefetchesQueuedFinishesThemFirst) {
  TempStore dir;
  ImportBulkModel(dir, 3);
  auto pager = Pager::Open(dir.path() + "/s", PagerOptions{});
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  auto model = (*pager)->OpenModel("m:1");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::string seg = Segment::NameFor((*pager)->store_id(), (*model)->digest());
  std::vector<uint32_t> all((*model)->tensor_count());
  for (uint32_t i = 0; i < all.size(); i++) all[i] = i;
  (*model)->Prefetch(all);  // the plan and its batches are queued
  pager->reset();           // runs them all before the loaders stop
  EXPECT_EQ((*model)->Stats().bytes_decoded, (*model)->tables().total_bytes());
  model->reset();
  (void)RemoveSegment(seg);
}

// --- the chunk-source seam ------------------------------------------------------

// Copies every chunk of model m:1 of the store at root into a memory source,
// but for the chunks of `skip`; returns the model's manifest through m.
Status CopyChunks(const std::string& root, MemoryChunkSource* to,
                  std::shared_ptr<const Manifest>* m, const std::vector<ChunkKey>& skip = {}) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<StoreReader> r, StoreReader::Open(root));
  PSTORE_ASSIGN_OR_RETURN(ModelDigest d, r->view().Resolve("m:1"));
  PSTORE_ASSIGN_OR_RETURN(*m, r->view().LoadManifest(d));
  std::shared_ptr<ChunkSource> from = GenerationChunkSource(r);
  FrameBatch frames;
  PSTORE_RETURN_IF_ERROR(from->ReadFrames((*m)->chunks, &frames));
  for (size_t i = 0; i < (*m)->chunks.size(); i++) {
    const ChunkKey& k = (*m)->chunks[i];
    if (!frames.found(i)) return Status::Corruption("chunk " + k.Hex() + " not in the store");
    if (std::find(skip.begin(), skip.end(), k) != skip.end()) continue;
    ChunkFrameRef ref{k, frames.frame(i), 0};
    PSTORE_RETURN_IF_ERROR(to->Write(std::span(&ref, 1)));
  }
  return Status::OK();
}

// A model m:1 imported into a store of its own, and every chunk of it in a
// memory source.
struct SeamModel {
  explicit SeamModel(uint32_t seed) {
    std::string src = dir.path() + "/m.safetensors";
    ts = WriteModel(src, 6, 300000, seed, 20);
    EXPECT_TRUE(ImportModel(src, dir.path() + "/s").ok());
    EXPECT_TRUE(CopyChunks(dir.path() + "/s", mem.get(), &m).ok());
  }
  TempStore dir;
  std::vector<std::pair<std::string, std::string>> ts;
  std::shared_ptr<MemoryChunkSource> mem = std::make_shared<MemoryChunkSource>();
  std::shared_ptr<const Manifest> m;
  // A pager on the store that reads chunks from source, and m:1 through it.
  void Open(std::shared_ptr<ChunkSource> source, std::unique_ptr<Pager>* pager,
            std::shared_ptr<Model>* model) {
    PagerOptions po;
    po.chunk_source = std::move(source);
    auto p = Pager::Open(dir.path() + "/s", po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto md = (*p)->OpenModel("m:1");
    ASSERT_TRUE(md.ok()) << md.status().ToString();
    *pager = std::move(p).value();
    *model = std::move(md).value();
  }
};

TEST(ChunkSourceSeam, APagerLoadsFromTheSourceItIsGiven) {
  SeamModel sm(5);
  std::unique_ptr<Pager> pager;
  std::shared_ptr<Model> model;
  ASSERT_NO_FATAL_FAILURE(sm.Open(sm.mem, &pager, &model));
  for (uint32_t t = 0; t < model->tensor_count(); t++) {
    auto p = model->Acquire(t);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(std::memcmp(*p, sm.ts[t].second.data(), sm.ts[t].second.size()), 0) << t;
    ASSERT_TRUE(model->Release(t).ok());
  }
  EXPECT_GT(model->Stats().bytes_read, 0u);
  (void)RemoveSegment(Segment::NameFor(pager->store_id(), model->digest()));
}

TEST(ChunkSourceSeam, AMissingOrWrongChunkIsAnErrorNamingModelTensorAndChunk) {
  SeamModel sm(6);
  ASSERT_TRUE(sm.m);
  const Manifest& m = *sm.m;
  // Tensor 2's second chunk is missing from a second source; tensor 4's
  // first chunk holds another chunk's frame there (a damaged copy).
  const ManifestTensor& t2 = m.tensors[2];
  const ManifestTensor& t4 = m.tensors[4];
  ASSERT_GE(m.ChunkCount(t2), 2u);
  const ChunkKey lost = m.chunks[t2.first_chunk + 1];
  const ChunkKey wrong = m.chunks[t4.first_chunk];
  auto damaged = std::make_shared<MemoryChunkSource>();
  std::shared_ptr<const Manifest> same;
  ASSERT_TRUE(CopyChunks(sm.dir.path() + "/s", damaged.get(), &same, {lost, wrong}).ok());
  {
    auto frame = sm.mem->Read(std::span(&m.chunks[t4.first_chunk + 1], 1));
    ASSERT_TRUE(frame.ok() && (*frame)[0]);
    ChunkFrameRef ref{wrong, *(*frame)[0], 0};
    ASSERT_TRUE(damaged->Write(std::span(&ref, 1)).ok());
  }
  std::unique_ptr<Pager> pager;
  std::shared_ptr<Model> model;
  ASSERT_NO_FATAL_FAILURE(sm.Open(damaged, &pager, &model));
  std::string buf(t2.size, '\0');
  auto expect_named = [&](const Status& st, const ManifestTensor& t, int chunk, const ChunkKey& key,
                          const std::string& what) {
    EXPECT_TRUE(st.IsCorruption()) << st.ToString();
    std::string want = "model m:1 tensor " + t.name + " chunk " + std::to_string(chunk) + " (key " +
                       key.Hex() + ")";
    EXPECT_NE(st.message().find(want), std::string::npos) << st.ToString();
    EXPECT_NE(st.message().find(what), std::string::npos) << st.ToString();
  };
  // Loads (Acquire) and copies out (Copy) name the chunk alike.
  expect_named(model->Acquire(2).status(), t2, 1, lost, "missing from memory");
  expect_named(model->Copy(2, buf.data(), buf.size()), t2, 1, lost, "missing from memory");
  expect_named(model->Acquire(4).status(), t4, 0, wrong, "pstore verify");
  // The other tensors load; nothing wrong was published for the failed ones.
  auto p = model->Acquire(3);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(std::memcmp(*p, sm.ts[3].second.data(), sm.ts[3].second.size()), 0);
  ASSERT_TRUE(model->Release(3).ok());
  // Another pager on the whole source then loads them right.
  std::unique_ptr<Pager> good;
  std::shared_ptr<Model> gm;
  ASSERT_NO_FATAL_FAILURE(sm.Open(sm.mem, &good, &gm));
  for (uint32_t t : {2u, 4u}) {
    auto q = gm->Acquire(t);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    EXPECT_EQ(std::memcmp(*q, sm.ts[t].second.data(), sm.ts[t].second.size()), 0) << t;
    ASSERT_TRUE(gm->Release(t).ok());
  }
  (void)RemoveSegment(Segment::NameFor(pager->store_id(), model->digest()));
}

// --- chunk lengths that are not a whole number of pages ----------------------

// A GGUF manifest of tensors of assorted sizes, a third of them with a
// quantized type's own chunk length (Q8_0, Q4_0, Q6_K at a 256 KiB chunk
// size: 51, 63 and 105 pages of 4 KiB), with made-up chunk keys.
Manifest MakeBlockManifest(uint32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Manifest m;
  m.format = SourceFormat::kGguf;
  m.chunk_size = 256 << 10;
  m.alignment = 32;
  m.files.push_back({"model.gguf", std::string(200, 'h'), 0, {}, {}});
  const uint32_t lens[] = {208896, 258048, 430080};
  uint64_t offset = 0;
  for (uint32_t i = 0; i < n; i++) {
    ManifestTensor t;
    t.name = "blk." + std::to_string(i) + ".w";
    t.dtype = DType::kU8;
    uint32_t kind = rng() % 4;
    t.size = kind == 0 ? 1 + rng() % 3000 : 1 + rng() % 5000000;
    if (i % 3 == 0) t.chunk_len = lens[rng() % 3];
    t.ggml_type = t.chunk_len ? 8 : 1;
    t.shape = {t.size};
    t.offset = offset;
    offset += (t.size + 31) / 32 * 32;
    t.first_chunk = m.chunks.size();
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
      std::string raw = t.name + "/" + std::to_string(j);
      m.chunks.push_back(HashBytes(raw.data(), raw.size()));
    }
    m.files[0].tensors.push_back(i);
    m.tensors.push_back(std::move(t));
  }
  m.files[0].data_size = offset;
  return m;
}

// On pages of 4, 16 and 64 KiB, every slot is whole pages of its own, each
// tensor's pieces are its chunks in order, each where the tensor has it, and
// the segment's check accepts the layout.
TEST(LayoutPages, ChunksOfTheirOwnLengthShareNoPage) {
  const Manifest m = MakeBlockManifest(120, 11);
  const std::string bytes = m.Serialize();
  const ModelDigest digest = Manifest::DigestOf(bytes);
  auto tables = TensorTable::FromManifest(m);
  ASSERT_TRUE(tables.ok()) << tables.status().ToString();
  const std::string tables_bytes = TensorTable::Serialize(m);
  char id[33];
  std::random_device rd;
  std::snprintf(id, sizeof(id), "%08x%08x%08x%08x", unsigned(::getpid()), rd(), rd(), rd());
  const std::string name = Segment::NameFor(id, digest);
  for (uint64_t page : {4096ull, 16384ull, 65536ull}) {
    SCOPED_TRACE(page);
    const Layout l = Layout::Build(m, page);
    uint64_t prev_end = 0;
    bool shared_slot = false;
    for (const Slot& s : l.slots) {
      ASSERT_EQ(s.offset % page, 0u);
      ASSERT_EQ(s.bytes % page, 0u);
      ASSERT_GE(s.offset, prev_end);
      prev_end = s.offset + s.bytes;
    }
    ASSERT_LE(prev_end, l.data_bytes);
    for (uint32_t ti = 0; ti < m.tensors.size(); ti++) {
      const ManifestTensor& t = m.tensors[ti];
      const TensorPlace& p = l.tensors[ti];
      if (t.size < page) continue;  // packed with others (or a slot of its own)
      ASSERT_EQ(p.offset % page, 0u) << ti;
      uint64_t j = 0;
      for (uint32_t si = p.first_slot; si < p.first_slot + p.nslots; si++) {
        const Slot& s = l.slots[si];
        ASSERT_EQ(s.first_tensor, ti);
        ASSERT_EQ(s.ntensors, 1u);
        shared_slot |= s.npieces > 1;
        for (uint32_t k = 0; k < s.npieces; k++, j++) {
          const SlotPiece& pc = l.pieces[s.first_piece + k];
          ASSERT_EQ(pc.tensor, ti);
          ASSERT_EQ(pc.chunk, t.first_chunk + j) << ti;
          ASSERT_EQ(s.offset + pc.offset, p.offset + m.ChunkStart(t, j)) << ti << " chunk " << j;
          ASSERT_EQ(pc.len, m.ChunkBytes(t, j));
          ASSERT_LE(uint64_t(pc.offset) + pc.len, s.bytes);
        }
      }
      ASSERT_EQ(j, m.ChunkCount(t)) << ti;  // every chunk, once
      const Slot& last = l.slots[p.first_slot + p.nslots - 1];
      ASSERT_LE(last.offset + last.bytes, p.offset + (t.size + page - 1) / page * page) << ti;
    }
    // Several chunks share a slot only where a chunk length is not whole pages.
    EXPECT_EQ(shared_slot, page > 4096);
    // The segment's check of a layout it carries.
    (void)RemoveSegment(name);
    auto seg = Segment::Attach(name, l, digest, bytes, tables_bytes, id, Segment::Options{});
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    auto read = (*seg)->ReadLayout(*tables);
    EXPECT_TRUE(read.ok()) << read.status().ToString();
    EXPECT_TRUE((*seg)->CheckLayout(LayoutView::Of(l), *tables).ok());
    seg->reset();
    (void)RemoveSegment(name);
  }
}

// A quantized GGUF model loaded through segments laid out for 16 and 64 KiB
// pages (a segment carries its layout, and a process opening it without
// check_shared uses it as it is, whatever its own page size): every tensor
// acquired and copied is the file's.
TEST(LayoutPages, AQuantizedModelLoadsOnPagesOverFourKiB) {
  TempStore dir;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.f, 0.02f);
  auto floats = [&](size_t n) {
    std::vector<float> x(n);
    for (float& f : x) f = nd(rng);
    return x;
  };
  // Q8_0 (type 8) and Q4_0 (type 2) tensors of many chunks and an F16 one.
  const std::vector<uint8_t> q8 = quant::QuantQ8_0(floats(32 * 120000));
  const std::vector<uint8_t> q4 = quant::QuantQ4_0(floats(32 * 200000));
  std::string f16(3000000, '\0');
  for (size_t i = 0; i < f16.size(); i += 2) {
    uint16_t h = quant::ToHalf(nd(rng));
    std::memcpy(&f16[i], &h, 2);
  }
  struct T {
    std::string name;
    uint32_t type;
    uint64_t elems;
    std::string data;
  };
  std::vector<T> ts = {{"q8", 8, 32 * 120000, std::string(q8.begin(), q8.end())},
                       {"q4", 2, 32 * 200000, std::string(q4.begin(), q4.end())},
                       {"h", 1, f16.size() / 2, f16}};
  std::string g = "GGUF";
  auto put = [&](auto v) { g.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(uint32_t(3));
  put(uint64_t(ts.size()));
  put(uint64_t(0));
  uint64_t off = 0;
  for (const T& t : ts) {
    put(uint64_t(t.name.size()));
    g += t.name;
    put(uint32_t(1));
    put(uint64_t(t.elems));
    put(t.type);
    put(off);
    off += (t.data.size() + 31) / 32 * 32;
  }
  for (const T& t : ts) {
    g.resize((g.size() + 31) / 32 * 32, '\0');
    g += t.data;
  }
  const std::string src = dir.path() + "/m.gguf";
  std::ofstream(src, std::ios::binary) << g;
  ASSERT_TRUE(ImportModel(src, dir.path() + "/s").ok());
  std::shared_ptr<const Manifest> m;
  std::string bytes;
  ModelDigest digest;
  {
    auto r = StoreReader::Open(dir.path() + "/s");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto d = (*r)->view().Resolve("m:1");
    ASSERT_TRUE(d.ok());
    auto lm = (*r)->view().LoadManifest(*d);
    auto lb = (*r)->view().LoadManifestBytes(*d);
    ASSERT_TRUE(lm.ok() && lb.ok());
    m = *lm;
    bytes = *lb;
    digest = *d;
  }
  ASSERT_EQ(m->ChunkLen(m->tensors[0]), 208896u);
  ASSERT_EQ(m->ChunkLen(m->tensors[1]), 258048u);
  for (uint64_t page : {16384ull, 65536ull}) {
    SCOPED_TRACE(page);
    auto pager = Pager::Open(dir.path() + "/s", PagerOptions{});
    ASSERT_TRUE(pager.ok()) << pager.status().ToString();
    const std::string name = Segment::NameFor((*pager)->store_id(), digest);
    (void)RemoveSegment(name);
    const Layout l = Layout::Build(*m, page);
    auto seg = Segment::Attach(name, l, digest, bytes, TensorTable::Serialize(*m),
                               (*pager)->store_id(), Segment::Options{});
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    ASSERT_EQ((*seg)->header()->page, page);
    auto model = (*pager)->OpenModel("m:1");
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    ASSERT_EQ((*model)->digest(), digest);
    ASSERT_EQ((*model)->tensor_count(), ts.size());
    for (uint32_t t = 0; t < ts.size(); t++) {
      std::string copy(ts[t].data.size(), '\0');
      ASSERT_TRUE((*model)->Copy(t, copy.data(), copy.size()).ok());
      EXPECT_TRUE(copy == ts[t].data) << ts[t].name;
      auto p = (*model)->Acquire(t);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      EXPECT_EQ(std::memcmp(*p, ts[t].data.data(), ts[t].data.size()), 0) << ts[t].name;
      ASSERT_TRUE((*model)->Release(t).ok());
      // Copied again, now from shared memory.
      std::fill(copy.begin(), copy.end(), '\0');
      ASSERT_TRUE((*model)->Copy(t, copy.data(), copy.size()).ok());
      EXPECT_TRUE(copy == ts[t].data) << ts[t].name;
    }
    EXPECT_GT((*model)->Stats().hits, 0u);
    EXPECT_GT((*seg)->header()->loads.load(), 0u);  // loaded into this segment
    model->reset();
    seg->reset();
    (void)RemoveSegment(name);
  }
}

}  // namespace
}  // namespace pstore
