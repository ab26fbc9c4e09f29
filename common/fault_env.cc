// FaultInjectionEnv: the files it hands out and the bookkeeping of its faults.
#include "common/fault_env.h"

#include <algorithm>
#include <cstring>

namespace pstore {

class FaultReadFile final : public RandomAccessFile {
 public:
  FaultReadFile(FaultInjectionEnv* env, std::unique_ptr<RandomAccessFile> base)
      : RandomAccessFile(base->path()), env_(env), base_(std::move(base)) {}
  Status Read(uint64_t offset, size_t n, void* buf) const override {
    PSTORE_RETURN_IF_ERROR(env_->Dead("read " + path()));
    int err = 0;
    size_t ok = env_->AllowRead(path(), n, &err);
    if (ok > 0) PSTORE_RETURN_IF_ERROR(base_->Read(offset, ok, buf));
    if (err != 0) return Status::FromErrno("read " + path() + " (injected)", err);
    return Status::OK();
  }
  uint64_t size() const override { return base_->size(); }
  bool regular() const override { return base_->regular(); }
  void HintSequential() override { base_->HintSequential(); }

 private:
  FaultInjectionEnv* env_;
  std::unique_ptr<RandomAccessFile> base_;
};

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(FaultInjectionEnv* env, std::unique_ptr<WritableFile> base)
      : WritableFile(base->path()), env_(env), base_(std::move(base)) {}
  Status Append(const void* data, size_t n) override {
    PSTORE_RETURN_IF_ERROR(env_->Dead("write " + path()));
    int err = 0;
    size_t ok = env_->AllowWrite(n, &err);
    if (ok > 0) PSTORE_RETURN_IF_ERROR(base_->Append(data, ok));
    if (err != 0) return Status::FromErrno("write " + path() + " (injected)", err);
    return Status::OK();
  }
  Status Sync() override {
    PSTORE_RETURN_IF_ERROR(env_->Dead("fsync " + path()));
    if (int err = env_->SyncError(); err != 0)
      return Status::FromErrno("fsync " + path() + " (injected)", err);
    return base_->Sync();
  }
  // A dead process's descriptors are closed by the kernel: closing is allowed.
  Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* env_;
  std::unique_ptr<WritableFile> base_;
};

void FaultInjectionEnv::FailWritesAfter(uint64_t bytes, int err) {
  std::lock_guard<std::mutex> l(mu_);
  write_budget_ = bytes;
  write_err_ = err;
}

void FaultInjectionEnv::FailSyncs(int err) {
  std::lock_guard<std::mutex> l(mu_);
  sync_err_ = err;
}

void FaultInjectionEnv::FailReadsAfter(uint64_t bytes, int err, std::string path_part) {
  std::lock_guard<std::mutex> l(mu_);
  read_budget_ = bytes;
  read_err_ = err;
  read_part_ = std::move(path_part);
}

void FaultInjectionEnv::CrashBeforeRename(std::string path_part) {
  std::lock_guard<std::mutex> l(mu_);
  crash_armed_ = true;
  crash_part_ = std::move(path_part);
}

void FaultInjectionEnv::Clear() {
  std::lock_guard<std::mutex> l(mu_);
  crashed_ = crash_armed_ = false;
  write_err_ = sync_err_ = read_err_ = 0;
}

bool FaultInjectionEnv::crashed() const {
  std::lock_guard<std::mutex> l(mu_);
  return crashed_;
}

int FaultInjectionEnv::injected() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

uint64_t FaultInjectionEnv::bytes_written() const {
  std::lock_guard<std::mutex> l(mu_);
  return written_;
}

uint64_t FaultInjectionEnv::bytes_read() const {
  std::lock_guard<std::mutex> l(mu_);
  return read_;
}

Status FaultInjectionEnv::DeadLocked(std::string_view what) const {
  if (!crashed_) return Status::OK();
  return Status::Aborted(std::string(what) + ": the process crashed (injected) before this");
}

Status FaultInjectionEnv::Dead(std::string_view what) const {
  std::lock_guard<std::mutex> l(mu_);
  return DeadLocked(what);
}

size_t FaultInjectionEnv::AllowWrite(size_t n, int* err) {
  std::lock_guard<std::mutex> l(mu_);
  size_t ok = n;
  *err = 0;
  if (write_err_ != 0) {
    ok = size_t(std::min<uint64_t>(n, write_budget_));
    write_budget_ -= ok;
    if (ok < n) {
      *err = write_err_;
      injected_++;
    }
  }
  written_ += ok;
  return ok;
}

size_t FaultInjectionEnv::AllowRead(const std::string& path, size_t n, int* err) {
  std::lock_guard<std::mutex> l(mu_);
  size_t ok = n;
  *err = 0;
  if (read_err_ != 0 && path.find(read_part_) != std::string::npos) {
    ok = size_t(std::min<uint64_t>(n, read_budget_));
    read_budget_ -= ok;
    if (ok < n) {
      *err = read_err_;
      injected_++;
    }
  }
  read_ += ok;
  return ok;
}

int FaultInjectionEnv::SyncError() {
  std::lock_guard<std::mutex> l(mu_);
  if (sync_err_ != 0) injected_++;
  return sync_err_;
}

Result<std::unique_ptr<RandomAccessFile>> FaultInjectionEnv::OpenForRead(const std::string& path) {
  PSTORE_RETURN_IF_ERROR(Dead("open " + path));
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f, base_->OpenForRead(path));
  return std::unique_ptr<RandomAccessFile>(new FaultReadFile(this, std::move(f)));
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::Create(const std::string& path, int mode) {
  PSTORE_RETURN_IF_ERROR(Dead("create " + path));
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base_->Create(path, mode));
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, std::move(f)));
}

Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  {
    std::lock_guard<std::mutex> l(mu_);
    PSTORE_RETURN_IF_ERROR(DeadLocked("rename " + from));
    if (crash_armed_ && to.find(crash_part_) != std::string::npos) {
      crash_armed_ = false;
      crashed_ = true;
      injected_++;
      return Status::Aborted("rename " + from + " to " + to +
                             ": the process crashed (injected) before the rename");
    }
  }
  return base_->Rename(from, to);
}

Status FaultInjectionEnv::Remove(const std::string& path) {
  PSTORE_RETURN_IF_ERROR(Dead("remove " + path));
  return base_->Remove(path);
}

Status FaultInjectionEnv::RemoveDir(const std::string& path) {
  PSTORE_RETURN_IF_ERROR(Dead("remove folder " + path));
  return base_->RemoveDir(path);
}

Status FaultInjectionEnv::CreateDirs(const std::string& path) {
  PSTORE_RETURN_IF_ERROR(Dead("create folder " + path));
  return base_->CreateDirs(path);
}

Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  PSTORE_RETURN_IF_ERROR(Dead("fsync " + dir));
  if (int err = SyncError(); err != 0)
    return Status::FromErrno("fsync " + dir + " (injected)", err);
  return base_->SyncDir(dir);
}

Status FaultInjectionEnv::RemoveTree(const std::string& path) {
  PSTORE_RETURN_IF_ERROR(Dead("remove " + path));
  return base_->RemoveTree(path);
}

bool FaultInjectionEnv::Exists(const std::string& path) {
  return base_->Exists(path);
}

}  // namespace pstore
