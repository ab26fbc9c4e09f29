// Unit tests of the file-system interface (common/env.h), of the fault-
// injecting Env (common/fault_env.h), and of import, export and commit under
// injected faults: a full disk (ENOSPC), an I/O error (EIO) on a read, a
// write or an fsync, and a crash just before a rename. Each must give a clear
// error and leave the store and the destination as they were (or, for a
// crash after the commit, leave a committed model that the next writer
// publishes whole).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/fault_env.h"
#include "common/file_util.h"
#include "store/store.h"
#include "tests/test_files.h"
#include "tests/test_safetensors.h"

namespace pstore {
namespace {

namespace fs = std::filesystem;
using testing_util::ReadAll;
using testing_util::TempDir;
using testing_util::TestTensor;
using testing_util::WriteAll;
using testing_util::WriteSafetensors;

// Every file under dir (relative names), folders left out.
std::set<std::string> FilesUnder(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file()) out.insert(fs::relative(it->path(), dir).string());
  return out;
}

// Bytes that compress a little, as weights do: seeded.
TestTensor Tensor(const std::string& name, size_t bytes, uint64_t seed) {
  TestTensor t{name, "U8", {bytes}, std::string(bytes, '\0')};
  std::mt19937_64 rng(seed);
  for (auto& c : t.data) c = char(rng() % 40);
  return t;
}

std::vector<TestTensor> SampleModel(uint64_t seed) {
  return {Tensor("a", 150000, seed * 10 + 1), Tensor("b", 70000, seed * 10 + 2),
          Tensor("c", 300, seed * 10 + 3)};
}

// --- the POSIX Env ------------------------------------------------------------------

TEST(PosixEnv, WriteFileAtomicThenReadBack) {
  TempDir d;
  Env* env = Env::Default();
  std::string p = d.path() + "/f";
  ASSERT_TRUE(WriteFileAtomic(env, p, "first", 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(env, p, "second", 0600).ok());
  auto r = ReadFileToString(env, p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "second");
  EXPECT_EQ(FilesUnder(d.path()), std::set<std::string>{"f"}) << "a temporary was left";
}

TEST(PosixEnv, MissingFileIsNotFoundAndNamed) {
  TempDir d;
  auto r = Env::Default()->OpenForRead(d.path() + "/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(d.path() + "/nope"), std::string::npos);
}

TEST(PosixEnv, ReadPastTheEndIsAnError) {
  TempDir d;
  WriteAll(d.path() + "/f", "12345");
  auto f = Env::Default()->OpenForRead(d.path() + "/f");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->size(), 5u);
  EXPECT_TRUE((*f)->regular());
  char buf[8];
  EXPECT_TRUE((*f)->Read(1, 4, buf).ok());
  EXPECT_FALSE((*f)->Read(1, 5, buf).ok());
}

// --- the fault-injecting Env ---------------------------------------------------------

TEST(FaultInjectionEnv, NoSpaceWritesWhatFitsThenFails) {
  TempDir d;
  FaultInjectionEnv env;
  std::string p = d.path() + "/f";
  auto f = env.Create(p, 0600);
  ASSERT_TRUE(f.ok());
  env.FailWritesAfter(10, ENOSPC);
  Status s = (*f)->Append("0123456789abcdefghij", 20);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_NE(s.message().find(p), std::string::npos) << s.ToString();
  EXPECT_TRUE((*f)->Close().ok());
  EXPECT_EQ(ReadAll(p), "0123456789");
  EXPECT_EQ(env.injected(), 1);
}

TEST(FaultInjectionEnv, NoSpaceInWriteFileAtomicKeepsTheOldFile) {
  TempDir d;
  FaultInjectionEnv env;
  std::string p = d.path() + "/f";
  WriteAll(p, "old contents");
  env.FailWritesAfter(3, ENOSPC);
  Status s = WriteFileAtomic(&env, p, "new contents, longer", 0600);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(ReadAll(p), "old contents");
  EXPECT_EQ(FilesUnder(d.path()), std::set<std::string>{"f"}) << "the temporary was left";
}

TEST(FaultInjectionEnv, FailedFsyncInWriteFileAtomicKeepsTheOldFile) {
  TempDir d;
  FaultInjectionEnv env;
  std::string p = d.path() + "/f";
  WriteAll(p, "old");
  env.FailSyncs(EIO);
  Status s = WriteFileAtomic(&env, p, "new", 0600);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_EQ(ReadAll(p), "old");
  EXPECT_EQ(FilesUnder(d.path()), std::set<std::string>{"f"});
}

TEST(FaultInjectionEnv, CrashBeforeRenameLeavesWhatADeadProcessLeaves) {
  TempDir d;
  FaultInjectionEnv env;
  std::string p = d.path() + "/f";
  WriteAll(p, "old");
  env.CrashBeforeRename("/f");
  Status s = WriteFileAtomic(&env, p, "new", 0600);
  EXPECT_EQ(s.code(), Status::Code::kAborted) << s.ToString();
  EXPECT_TRUE(env.crashed());
  EXPECT_EQ(ReadAll(p), "old");
  // The temporary stays (a dead process removes nothing) and holds the data.
  EXPECT_EQ(ReadAll(p + ".tmp"), "new");
  // Everything after the crash fails.
  EXPECT_FALSE(env.Remove(p + ".tmp").ok());
  EXPECT_FALSE(env.OpenForRead(p).ok());
  EXPECT_TRUE(fs::exists(p + ".tmp"));
  env.Clear();
  EXPECT_TRUE(env.Remove(p + ".tmp").ok());
}

TEST(FaultInjectionEnv, ReadErrorOnlyForMatchingPathsAfterBudget) {
  TempDir d;
  FaultInjectionEnv env;
  WriteAll(d.path() + "/a", std::string(100, 'a'));
  WriteAll(d.path() + "/b", std::string(100, 'b'));
  env.FailReadsAfter(60, EIO, "/a");
  char buf[100];
  auto b = env.OpenForRead(d.path() + "/b");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE((*b)->Read(0, 100, buf).ok()) << "a file that does not match failed";
  auto a = env.OpenForRead(d.path() + "/a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE((*a)->Read(0, 50, buf).ok());
  Status s = (*a)->Read(50, 50, buf);
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_NE(s.message().find(d.path() + "/a"), std::string::npos) << s.ToString();
}

// --- import, export and commit under faults -------------------------------------------

class StoreFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    root_ = dir_.path() + "/store";
    base_src_ = Model("base.safetensors", SampleModel(1));
    new_src_ = Model("new.safetensors", SampleModel(2));
    // The store as it is before each faulty operation: one model.
    auto w = Writer(Env::Default());
    ASSERT_TRUE(w);
    auto r = w->Import(base_src_, ParseModelName("base:v1").value(), ImportOptions{});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    before_ = Snapshot();
  }

  std::unique_ptr<StoreWriter> Writer(Env* env) {
    StoreConfig c;
    c.chunk_size = 64 << 10;
    auto w = StoreWriter::Open(root_, false, c, /*may_use_reserve=*/false, env);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return w.ok() ? std::move(w).value() : nullptr;
  }
  std::string File(const std::string& name) { return dir_.path() + "/" + name; }
  std::string Model(const std::string& name, const std::vector<TestTensor>& ts) {
    WriteSafetensors(File(name), ts);
    return File(name);
  }

  // What a reader opening the store now sees, and what the database holds.
  struct State {
    std::vector<std::string> reader_names;
    std::string current;
    uint64_t chunks = 0, stored_bytes = 0;
    std::set<std::string> root_files;  // files directly in the store's folder
    bool operator==(const State&) const = default;
  };
  State Snapshot() {
    State s;
    auto rd = StoreReader::Open(root_);
    EXPECT_TRUE(rd.ok()) << rd.status().ToString();
    if (rd.ok()) {
      auto names = (*rd)->view().ListNames();
      EXPECT_TRUE(names.ok());
      if (names.ok())
        for (const auto& n : *names) s.reader_names.push_back(n.ref);
      auto st = GetStoreStats((*rd)->view(), root_);
      EXPECT_TRUE(st.ok());
      if (st.ok()) s.chunks = st->chunks, s.stored_bytes = st->stored_bytes;
    }
    s.current = ReadAll(root_ + "/CURRENT");
    for (const auto& e : fs::directory_iterator(root_))
      if (e.is_regular_file()) s.root_files.insert(e.path().filename().string());
    return s;
  }
  // The generation folders under gen/.
  std::vector<std::string> Generations() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root_ + "/gen"))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  // Disk bytes of the store's blob files (the chunks), hard links once.
  uint64_t BlobBytes() {
    std::set<std::pair<dev_t, ino_t>> seen;
    uint64_t total = 0;
    for (const auto& e : fs::recursive_directory_iterator(root_)) {
      struct stat st;
      if (e.path().extension() != ".blob" || ::lstat(e.path().c_str(), &st) != 0) continue;
      if (seen.insert({st.st_dev, st.st_ino}).second) total += uint64_t(st.st_blocks) * 512;
    }
    return total;
  }
  // The database's own view (a writer's), which a reader may not see yet.
  std::vector<std::string> WriterNames(StoreWriter* w) {
    std::vector<std::string> out;
    auto names = w->view().ListNames();
    EXPECT_TRUE(names.ok());
    if (names.ok())
      for (const auto& n : *names) out.push_back(n.ref);
    return out;
  }
  void ExpectVerifies() {
    auto rd = StoreReader::Open(root_);
    ASSERT_TRUE(rd.ok()) << rd.status().ToString();
    auto rep = VerifyStore((*rd)->view(), 2, nullptr);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    EXPECT_TRUE(rep->ok()) << rep->problems.size() << " problems";
  }
  Status ExportWith(Env* env, const std::string& ref, const std::string& out) {
    auto rd = StoreReader::Open(root_);
    if (!rd.ok()) return rd.status();
    auto d = (*rd)->view().Resolve(ref);
    if (!d.ok()) return d.status();
    ExportOptions o;
    o.env = env;
    return ExportModel((*rd)->view(), *d, out, o);
  }
  std::string ShardedModel(const std::string& name) {
    std::string folder = File(name);
    fs::create_directories(folder);
    auto ts = SampleModel(3);
    WriteSafetensors(folder + "/model-00001-of-00002.safetensors", {ts[0]});
    WriteSafetensors(folder + "/model-00002-of-00002.safetensors", {ts[1], ts[2]});
    WriteAll(folder + "/model.safetensors.index.json",
             "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
             "\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002."
             "safetensors\"}}\n");
    return folder;
  }

  TempDir dir_;
  std::string root_, base_src_, new_src_;
  State before_;
};

TEST_F(StoreFaultTest, ImportReadErrorNamesTheSourceAndChangesNothing) {
  FaultInjectionEnv env;
  auto w = Writer(&env);
  ASSERT_TRUE(w);
  // The header reads fine; the tensor data fails part-way.
  env.FailReadsAfter(100000, EIO, "new.safetensors");
  auto r = w->Import(new_src_, ParseModelName("new:v1").value(), ImportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIOError) << r.status().ToString();
  EXPECT_NE(r.status().message().find(new_src_), std::string::npos) << r.status().ToString();
  EXPECT_GE(env.injected(), 1);
  EXPECT_EQ(WriterNames(w.get()), std::vector<std::string>{"base:v1"});
  w.reset();
  EXPECT_EQ(Snapshot(), before_) << "the failed import changed the store";
  ExpectVerifies();
  // Nothing it left in the way: the same import then succeeds.
  auto w2 = Writer(Env::Default());
  ASSERT_TRUE(w2);
  EXPECT_TRUE(w2->Import(new_src_, ParseModelName("new:v1").value(), ImportOptions{}).ok());
}

TEST_F(StoreFaultTest, ImportOfShardedModelWithUnreadableIndexChangesNothing) {
  std::string folder = ShardedModel("sharded");
  FaultInjectionEnv env;
  auto w = Writer(&env);
  ASSERT_TRUE(w);
  env.FailReadsAfter(0, EIO, "model.safetensors.index.json");
  auto r = w->Import(folder, ParseModelName("sharded:v1").value(), ImportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIOError) << r.status().ToString();
  EXPECT_NE(r.status().message().find("model.safetensors.index.json"), std::string::npos)
      << r.status().ToString();
  w.reset();
  EXPECT_EQ(Snapshot(), before_);
}

// The commit is one atomic flush of RocksDB's two families; publishing the generation (SEQUENCE,
// NAMES, CURRENT) comes after it. A full disk there fails the command with
// NoSpace and the import is taken back whole (its commit and its chunks):
// readers keep the old generation, the store's folder holds no temporary, the
// next writer publishes nothing new, and the import can simply be run again.
TEST_F(StoreFaultTest, ImportWithDiskFullWhilePublishingIsTakenBackWhole) {
  const std::vector<std::string> gens_before = Generations();
  const uint64_t blobs_before = BlobBytes(), disk_before = DiskUsage(root_);
  FaultInjectionEnv env;
  auto w = Writer(&env);
  ASSERT_TRUE(w);
  env.FailWritesAfter(0, ENOSPC);
  auto r = w->Import(new_src_, ParseModelName("new:v1").value(), ImportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNoSpace()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("new:v1"), std::string::npos) << r.status().ToString();
  EXPECT_GE(env.injected(), 1);
  w.reset();
  State after = Snapshot();
  EXPECT_EQ(after.reader_names, before_.reader_names);
  EXPECT_EQ(after.current, before_.current);
  EXPECT_EQ(after.root_files, before_.root_files) << "a temporary was left in the store";
  // The space goes back at once: no generation keeps the import's blob files.
  EXPECT_EQ(Generations(), gens_before) << "the unpublished generation was left";
  EXPECT_EQ(BlobBytes(), blobs_before) << "the failed import's chunks still take space";
  // RocksDB's own small files (a new LOG, OPTIONS, MANIFEST) may grow a little.
  EXPECT_LT(DiskUsage(root_), disk_before + fs::file_size(new_src_) / 2);
  ExpectVerifies();

  // The disk has room again: a writer publishes nothing of the failed import.
  auto w2 = Writer(Env::Default());
  ASSERT_TRUE(w2);
  w2.reset();
  EXPECT_EQ(Snapshot().reader_names, before_.reader_names);

  // Run again, it imports.
  auto w3 = Writer(Env::Default());
  ASSERT_TRUE(w3);
  ASSERT_TRUE(w3->Import(new_src_, ParseModelName("new:v1").value(), ImportOptions{}).ok());
  w3.reset();
  EXPECT_EQ(Snapshot().reader_names, (std::vector<std::string>{"base:v1", "new:v1"}));
  std::string out = File("out.safetensors");
  ASSERT_TRUE(ExportWith(Env::Default(), "new:v1", out).ok());
  EXPECT_EQ(ReadAll(out), ReadAll(new_src_));
  ExpectVerifies();
}

// A crash just before CURRENT is renamed into place: the committed model is
// in the database, readers still see the old generation, and the next writer
// publishes it (the leftover CURRENT.tmp is overwritten and renamed).
TEST_F(StoreFaultTest, CommitCrashBeforeRenamingCurrentIsPublishedByTheNextWriter) {
  FaultInjectionEnv env;
  auto w = Writer(&env);
  ASSERT_TRUE(w);
  env.CrashBeforeRename("/CURRENT");
  auto r = w->Import(new_src_, ParseModelName("new:v1").value(), ImportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kAborted) << r.status().ToString();
  EXPECT_TRUE(env.crashed());
  w.reset();
  State after = Snapshot();
  EXPECT_EQ(after.reader_names, before_.reader_names) << "readers see a change never published";
  EXPECT_EQ(after.current, before_.current);
  EXPECT_TRUE(fs::exists(root_ + "/CURRENT.tmp")) << "the crash should leave its temporary";

  auto w2 = Writer(Env::Default());
  ASSERT_TRUE(w2);
  w2.reset();
  State published = Snapshot();
  EXPECT_EQ(published.reader_names, (std::vector<std::string>{"base:v1", "new:v1"}));
  EXPECT_FALSE(fs::exists(root_ + "/CURRENT.tmp"));
  std::string out = File("out.safetensors");
  ASSERT_TRUE(ExportWith(Env::Default(), "new:v1", out).ok());
  EXPECT_EQ(ReadAll(out), ReadAll(new_src_));
  ExpectVerifies();
}

// rm commits, then publishes: a crash before NAMES is renamed leaves readers
// with the model; the next writer publishes the removal.
TEST_F(StoreFaultTest, RemoveCrashBeforeRenamingNamesIsPublishedByTheNextWriter) {
  FaultInjectionEnv env;
  auto w = Writer(&env);
  ASSERT_TRUE(w);
  env.CrashBeforeRename("/NAMES");
  Status s = w->Remove(ParseModelName("base:v1").value());
  EXPECT_EQ(s.code(), Status::Code::kAborted) << s.ToString();
  w.reset();
  EXPECT_EQ(Snapshot().reader_names, before_.reader_names);
  auto w2 = Writer(Env::Default());
  ASSERT_TRUE(w2);
  w2.reset();
  EXPECT_TRUE(Snapshot().reader_names.empty());
}

TEST_F(StoreFaultTest, ExportWithDiskFullLeavesNoFile) {
  FaultInjectionEnv env;
  std::string out = File("out.safetensors");
  env.FailWritesAfter(100000, ENOSPC);
  Status s = ExportWith(&env, "base:v1", out);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_NE(s.message().find(out), std::string::npos) << s.ToString();
  EXPECT_FALSE(fs::exists(out));
  for (const auto& f : FilesUnder(dir_.path()))
    EXPECT_EQ(f.find("pstore-tmp"), std::string::npos) << "temporary left: " << f;
  EXPECT_EQ(Snapshot(), before_);
}

TEST_F(StoreFaultTest, ExportWithDiskFullKeepsTheFileItWouldReplace) {
  FaultInjectionEnv env;
  std::string out = File("out.safetensors");
  WriteAll(out, "what was there before");
  env.FailWritesAfter(100000, ENOSPC);
  Status s = ExportWith(&env, "base:v1", out);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(ReadAll(out), "what was there before");
}

TEST_F(StoreFaultTest, ExportWithWriteErrorOrFailedFsyncLeavesNoFile) {
  for (bool on_sync : {false, true}) {
    FaultInjectionEnv env;
    std::string out = File(on_sync ? "sync.safetensors" : "write.safetensors");
    if (on_sync)
      env.FailSyncs(EIO);
    else
      env.FailWritesAfter(5000, EIO);
    Status s = ExportWith(&env, "base:v1", out);
    EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
    EXPECT_GE(env.injected(), 1);
    EXPECT_FALSE(fs::exists(out)) << (on_sync ? "fsync" : "write");
  }
  for (const auto& f : FilesUnder(dir_.path()))
    EXPECT_EQ(f.find("pstore-tmp"), std::string::npos) << "temporary left: " << f;
}

TEST_F(StoreFaultTest, ExportCrashBeforeRenameKeepsTheDestination) {
  FaultInjectionEnv env;
  std::string out = File("out.safetensors");
  WriteAll(out, "what was there before");
  env.CrashBeforeRename("out.safetensors");
  Status s = ExportWith(&env, "base:v1", out);
  EXPECT_EQ(s.code(), Status::Code::kAborted) << s.ToString();
  EXPECT_EQ(ReadAll(out), "what was there before");
  // A later export (the process restarted) replaces it whole.
  ASSERT_TRUE(ExportWith(Env::Default(), "base:v1", out).ok());
  EXPECT_EQ(ReadAll(out), ReadAll(base_src_));
}

TEST_F(StoreFaultTest, ShardedExportWithDiskFullLeavesNoFolder) {
  {
    auto w = Writer(Env::Default());
    ASSERT_TRUE(w);
    auto r =
        w->Import(ShardedModel("sharded"), ParseModelName("sharded:v1").value(), ImportOptions{});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  // Enough room for the first shard, not for the second.
  FaultInjectionEnv env;
  std::string out = File("out-sharded");
  env.FailWritesAfter(170000, ENOSPC);
  Status s = ExportWith(&env, "sharded:v1", out);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_NE(s.message().find("model-00002-of-00002.safetensors"), std::string::npos)
      << s.ToString();
  EXPECT_FALSE(fs::exists(out)) << "the folder the export created is left";
  // Into an existing folder: the folder stays, and holds nothing new.
  fs::create_directories(out);
  WriteAll(out + "/keep", "x");
  env.FailWritesAfter(170000, ENOSPC);
  s = ExportWith(&env, "sharded:v1", out);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(FilesUnder(out), std::set<std::string>{"keep"});
}

}  // namespace
}  // namespace pstore
