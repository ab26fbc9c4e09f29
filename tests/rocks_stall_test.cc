// Publishing when a real RocksDB strands memtables.
//
// RocksDB 7.8 leaves a memtable marked as being flushed for good when an
// atomic flush has written its table but finds a background error set by
// another job before installing it (store/rocks.cc, "Memtables RocksDB never
// flushes again"); DB::Resume() would then wait for it forever. The test
// makes that happen as a full disk does: the flush is held while it writes
// its table, a compaction fails meanwhile for lack of space, then the flush
// goes on. The file system below does the holding and the failing.
#include <gtest/gtest.h>
#include <pthread.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "store/names_file.h"
#include "store/rocks.h"
#include "store/store.h"
#include "store/store_access.h"
#include "store/store_dir.h"

namespace pstore {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;
using std::chrono::steady_clock;

bool OnThread(const char* name) {
  char n[32] = {};
  return pthread_getname_np(pthread_self(), n, sizeof(n)) == 0 && std::string(n) == name;
}

bool IsTable(const std::string& f) {
  return f.size() > 4 && f.compare(f.size() - 4, 4, ".sst") == 0;
}

// Holds the flush thread when it creates its next table, until Release();
// refuses tables of the compaction threads for lack of space while armed.
class HoldingFs : public rocksdb::FileSystemWrapper {
 public:
  HoldingFs() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "HoldingFs"; }

  void HoldNextFlush() {
    std::lock_guard<std::mutex> l(mu_);
    hold_ = true;
    held_ = false;
  }
  bool WaitUntilHeld(seconds limit) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, limit, [&] { return held_; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  void FailCompactions(bool on) { fail_compactions_ = on; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    if (IsTable(f) && OnThread("rocksdb:low") && fail_compactions_)
      return rocksdb::IOStatus::NoSpace("injected: no space left for " + f);
    if (IsTable(f) && OnThread("rocksdb:high")) {
      std::unique_lock<std::mutex> l(mu_);
      if (hold_) {
        held_ = true;
        cv_.notify_all();
        cv_.wait(l, [&] { return !hold_; });
      }
    }
    return target()->NewWritableFile(f, o, r, dbg);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  bool held_ = false;
  std::atomic<bool> fail_compactions_{false};
};

class RocksStallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("pstore-rocks-stall-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
    p_.root = root_;
    {
      auto w = StoreWriter::Open(root_, false, StoreConfig{});  // an empty store, published
      ASSERT_TRUE(w.ok()) << w.status().ToString();
    }
    env_ = rocksdb::NewCompositeEnv(fs_);
    auto db = RocksDb::OpenPrimary(p_.db(), env_.get());
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value();
  }
  void TearDown() override {
    fs_->Release();
    db_.reset();
    fs::remove_all(root_);
  }
  rocksdb::Status Put(rocksdb::ColumnFamilyHandle* cf, const std::string& key) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return db_->db()->Put(wo, cf, key, "value of " + key);
  }
  // Four tables in the chunks' level 0, with automatic compactions off: turning
  // them on again starts a compaction at once.
  void FillLevel0() {
    ASSERT_TRUE(db_->db()->SetOptions(db_->chunks(), {{"disable_auto_compactions", "true"}}).ok());
    for (int i = 0; i < 4; i++) {
      // Overlapping tables, so that the compaction writes one (it would move
      // disjoint ones down whole).
      ASSERT_TRUE(Put(db_->chunks(), "a").ok());
      ASSERT_TRUE(Put(db_->chunks(), "z" + std::to_string(i)).ok());
      Status s = db_->Flush("flush table " + std::to_string(i));
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
  }
  uint64_t BackgroundErrors() {
    uint64_t n = 0;
    db_->db()->GetIntProperty("rocksdb.background-errors", &n);
    return n;
  }

  std::string root_;
  StorePaths p_;
  std::shared_ptr<HoldingFs> fs_ = std::make_shared<HoldingFs>();
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<RocksDb> db_;
};

// A publish on a disk filling up: a compaction fails for lack of space while
// the flush before the checkpoint writes its table. The flush fails and
// strands its memtable; the Resume() that follows a failed flush
// (store_dir.cc) would wait for it forever. The publish leaves the database
// stopped instead and publishes the generation with the WAL, holding what
// was committed; closing does not wait either, and the next open has it all.
TEST_F(RocksStallTest, APublishWhoseFlushIsStrandedEndsAndKeepsTheCommit) {
  FillLevel0();
  ASSERT_TRUE(Put(db_->meta(), "committed").ok());
  const uint64_t before = ReadCurrentGeneration(p_).value();
  fs_->HoldNextFlush();
  fs_->FailCompactions(true);
  std::promise<Result<uint64_t>> done;
  auto result = done.get_future();
  std::thread writer([&] {
    done.set_value(PublishGeneration(p_, db_.get(), EncodeNamesFile({}), StoreAccess{}));
  });
  ASSERT_TRUE(fs_->WaitUntilHeld(seconds(60))) << "the flush never wrote a table";
  ASSERT_TRUE(db_->db()->SetOptions(db_->chunks(), {{"disable_auto_compactions", "false"}}).ok());
  const auto t0 = steady_clock::now();
  while (BackgroundErrors() == 0 && steady_clock::now() - t0 < seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GT(BackgroundErrors(), 0u) << "the compaction did not fail";
  fs_->Release();

  if (result.wait_for(seconds(120)) != std::future_status::ready) {
    // Resume() waits forever: fail now, not at the test runner's timeout.
    ADD_FAILURE() << "the publish did not end";
    std::_Exit(1);
  }
  writer.join();
  EXPECT_TRUE(db_->stranded());
  Result<uint64_t> n = result.get();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_GT(*n, before);
  EXPECT_EQ(ReadCurrentGeneration(p_).value(), *n);
  {
    auto gen = RocksDb::OpenReadOnly(p_.gen(*n));
    ASSERT_TRUE(gen.ok()) << gen.status().ToString();
    std::string v;
    rocksdb::Status s = (*gen)->db()->Get(rocksdb::ReadOptions(), (*gen)->meta(), "committed", &v);
    EXPECT_TRUE(s.ok()) << "the generation lacks the commit: " << s.ToString();
  }
  // A later flush fails at once (the database stays stopped) and does not
  // resume it either.
  Status again = db_->Flush("flush again");
  EXPECT_FALSE(again.ok());

  fs_->FailCompactions(false);
  std::promise<void> closed;
  auto closing = closed.get_future();
  std::thread closer([&] {
    db_.reset();
    closed.set_value();
  });
  if (closing.wait_for(seconds(120)) != std::future_status::ready) {
    ADD_FAILURE() << "closing the database did not end";
    std::_Exit(1);
  }
  closer.join();
  auto db = RocksDb::OpenPrimary(p_.db());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  std::string v;
  rocksdb::Status s = (*db)->db()->Get(rocksdb::ReadOptions(), (*db)->meta(), "committed", &v);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(v, "value of committed");
  Status flushed_now = (*db)->Flush("flush after reopening");
  EXPECT_TRUE(flushed_now.ok()) << flushed_now.ToString();
  EXPECT_FALSE((*db)->stranded());
}

}  // namespace
}  // namespace pstore
