// FaultInjectionEnv: an Env (common/env.h) over another one that fails on
// purpose, for tests of what pstore does when the disk fills up, a device
// returns an I/O error, or the process dies at a chosen moment:
//
//   - writes fail with a chosen errno (ENOSPC, EIO, ...) once a number of
//     bytes has been written through the files it created: the write that
//     crosses the limit writes what fits and then fails, as a full disk does;
//   - fsyncs fail with a chosen errno;
//   - reads fail with a chosen errno once a number of bytes has been read
//     from files whose path contains a given part;
//   - a "crash before rename": the first rename onto a path containing a
//     given part is not done, and from then on every operation through this
//     Env fails (Status::Aborted), so that nothing a dead process could not
//     have done afterwards (removing its temporaries, say) gets done. What is
//     left on disk is what a crash at that moment leaves (the page cache
//     aside: data written is not lost).
//
// Faults are armed by the test and stay armed until Clear(). The real work
// is done by the base Env, which must outlive this one; files opened through
// this Env must not outlive it.
//
// Thread-safety: like any Env, usable from many threads; arming a fault while
// other threads use the Env takes effect for operations that start after it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "common/env.h"

namespace pstore {

class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base = Env::Default()) : base_(base) {}

  // Writes fail with err once `bytes` more bytes have been written.
  void FailWritesAfter(uint64_t bytes, int err);
  // Every fsync of a file or folder fails with err.
  void FailSyncs(int err);
  // Reads of files whose path contains path_part ("" for all) fail with err
  // once `bytes` more bytes have been read from them.
  void FailReadsAfter(uint64_t bytes, int err, std::string path_part = "");
  // The first rename whose target contains path_part is not done and the Env
  // behaves as a dead process from then on.
  void CrashBeforeRename(std::string path_part);
  // Disarms every fault and forgets a crash.
  void Clear();

  bool crashed() const;
  // Operations failed on purpose so far (a test checks that its fault fired).
  int injected() const;
  uint64_t bytes_written() const;
  uint64_t bytes_read() const;

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> Create(const std::string& path, int mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Status CreateDirs(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Status RemoveTree(const std::string& path) override;
  bool Exists(const std::string& path) override;

 private:
  friend class FaultReadFile;
  friend class FaultWritableFile;
  // Status::Aborted once crashed, else OK. REQUIRES: mu_ held.
  Status DeadLocked(std::string_view what) const;
  Status Dead(std::string_view what) const;
  // How many of n bytes may be written now, and the error after them (0: none).
  size_t AllowWrite(size_t n, int* err);
  size_t AllowRead(const std::string& path, size_t n, int* err);
  int SyncError();

  Env* const base_;
  mutable std::mutex mu_;
  bool crashed_ = false;
  int injected_ = 0;
  uint64_t written_ = 0, read_ = 0;
  int write_err_ = 0;
  uint64_t write_budget_ = 0;
  int sync_err_ = 0;
  int read_err_ = 0;
  uint64_t read_budget_ = 0;
  std::string read_part_;
  bool crash_armed_ = false;
  std::string crash_part_;
};

}  // namespace pstore
