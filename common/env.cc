// The POSIX Env and the helpers over any Env.
#include "common/env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "common/file_util.h"

namespace pstore {

namespace {

class PosixReadFile final : public RandomAccessFile {
 public:
  PosixReadFile(std::string path, UniqueFd fd, const struct stat& st)
      : RandomAccessFile(std::move(path)),
        fd_(std::move(fd)),
        size_(uint64_t(st.st_size)),
        regular_(S_ISREG(st.st_mode)) {}
  Status Read(uint64_t offset, size_t n, void* buf) const override {
    return PreadFull(fd_.get(), buf, n, offset, path());
  }
  uint64_t size() const override { return size_; }
  bool regular() const override { return regular_; }
  void HintSequential() override { ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL); }

 private:
  UniqueFd fd_;
  uint64_t size_;
  bool regular_;
};

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, UniqueFd fd)
      : WritableFile(std::move(path)), fd_(std::move(fd)) {}
  Status Append(const void* data, size_t n) override {
    if (!fd_.valid()) return Status::Internal("write " + path() + ": the file is closed");
    PSTORE_RETURN_IF_ERROR(WriteFull(fd_.get(), data, n, path()));
    written_ += n;
    StartWriteback();
    return Status::OK();
  }
  Status Sync() override {
    if (!fd_.valid()) return Status::Internal("fsync " + path() + ": the file is closed");
    if (::fsync(fd_.get()) != 0) return Status::FromErrno("fsync " + path(), errno);
    return Status::OK();
  }
  Status Close() override {
    if (!fd_.valid()) return Status::OK();
    if (::close(fd_.Release()) != 0) return Status::FromErrno("close " + path(), errno);
    return Status::OK();
  }

 private:
  // Asks the kernel to start writing what was appended since the last call,
  // once that is kWritebackBytes, so that the data of a large file goes to
  // the disk while the rest is written and Sync waits for its tail only
  // (an exported model: hundreds of MB). A hint: Sync reports errors.
  static constexpr uint64_t kWritebackBytes = 8 << 20;
  void StartWriteback() {
#ifdef __linux__
    if (written_ - writeback_from_ < kWritebackBytes) return;
    (void)::sync_file_range(fd_.get(), off_t(writeback_from_), off_t(written_ - writeback_from_),
                            SYNC_FILE_RANGE_WRITE);
    writeback_from_ = written_;
#endif
  }

  UniqueFd fd_;
  uint64_t written_ = 0;         // bytes appended
  uint64_t writeback_from_ = 0;  // where the writeback not yet asked for starts
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override {
    // Only regular files, refused before an open that could block (a FIFO).
    PSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularFile(path));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("cannot stat " + path, errno);
    return std::unique_ptr<RandomAccessFile>(new PosixReadFile(path, std::move(fd), st));
  }
  Result<std::unique_ptr<WritableFile>> Create(const std::string& path, int mode) override {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd.valid()) return Status::FromErrno("cannot create " + path, errno);
    // The mode asked for, whatever the umask.
    if (::fchmod(fd.get(), mode_t(mode)) != 0) return Status::FromErrno("chmod " + path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, std::move(fd)));
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return Status::FromErrno("rename " + from + " to " + to, errno);
    return Status::OK();
  }
  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno("remove " + path, errno);
    return Status::OK();
  }
  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return Status::FromErrno("remove folder " + path, errno);
    return Status::OK();
  }
  Status CreateDirs(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return Status::FromErrno("cannot create folder " + path, ec.value());
    return Status::OK();
  }
  Status SyncDir(const std::string& dir) override { return FsyncDir(dir); }
  Status RemoveTree(const std::string& path) override { return pstore::RemoveTree(path); }
  bool Exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }
};

}  // namespace

Env* Env::Default() {
  static Env* const env = new PosixEnv;  // never deleted: usable until the process ends
  return env;
}

Result<std::string> ReadFileToString(Env* env, const std::string& path) {
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f, env->OpenForRead(path));
  std::string out(size_t(f->size()), '\0');
  PSTORE_RETURN_IF_ERROR(f->Read(0, out.size(), out.data()));
  return out;
}

Status WriteFileAtomic(Env* env, const std::string& path, std::string_view data, int mode) {
  std::string tmp = path + ".tmp";
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, env->Create(tmp, mode));
  Status s = f->Append(data.data(), data.size());
  if (s.ok()) s = f->Sync();
  Status c = f->Close();
  if (s.ok()) s = c;
  if (s.ok()) s = env->Rename(tmp, path);
  if (!s.ok()) {
    (void)env->Remove(tmp);
    return s;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  return env->SyncDir(dir.empty() ? "." : dir);
}

namespace {
constexpr size_t kAtomicWriteBufferBytes = size_t(1) << 20;
}  // namespace

AtomicFileWriter::AtomicFileWriter(Env* env, std::string path, std::string tmp,
                                   std::unique_ptr<WritableFile> f)
    : env_(env), path_(std::move(path)), tmp_(std::move(tmp)), file_(std::move(f)) {
  buf_.reserve(kAtomicWriteBufferBytes);
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(Env* env,
                                                                   const std::string& path,
                                                                   int mode) {
  std::string tmp =
      path + ".pstore-tmp-" + std::to_string(::getpid()) + "-" + std::to_string(::gettid());
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, env->Create(tmp, mode));
  return std::unique_ptr<AtomicFileWriter>(
      new AtomicFileWriter(env, path, std::move(tmp), std::move(f)));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) (void)env_->Remove(tmp_);
}

Status AtomicFileWriter::Append(const void* data, size_t n) {
  if (!status_.ok()) return status_;
  if (buf_.size() + n > kAtomicWriteBufferBytes) {
    PSTORE_RETURN_IF_ERROR(Flush());
    if (n >= kAtomicWriteBufferBytes) return status_ = file_->Append(data, n);
  }
  buf_.append(static_cast<const char*>(data), n);
  return Status::OK();
}

Status AtomicFileWriter::Flush() {
  if (status_.ok()) status_ = file_->Append(buf_.data(), buf_.size());
  buf_.clear();
  return status_;
}

Status AtomicFileWriter::Commit() {
  PSTORE_RETURN_IF_ERROR(Flush());
  PSTORE_RETURN_IF_ERROR(file_->Sync());
  PSTORE_RETURN_IF_ERROR(file_->Close());
  PSTORE_RETURN_IF_ERROR(env_->Rename(tmp_, path_));
  committed_ = true;
  std::string dir = std::filesystem::path(path_).parent_path().string();
  Status s = env_->SyncDir(dir.empty() ? "." : dir);
  if (!s.ok()) (void)env_->Remove(path_);  // a failed write leaves no file
  return s;
}

}  // namespace pstore
