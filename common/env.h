// Env: the file-system operations pstore's own files go through in store/ and
// store/formats/ (model files read by import, files written by export, the
// store's ID, config.json, CURRENT and a generation's SEQUENCE and NAMES), so
// that tests can put a fault-injecting Env (common/fault_env.h) in place of
// the real one and check what a full disk, an I/O error or a crash at a
// chosen moment does. RocksDB's own files do not go through it, nor do the
// lock files that exist only to be flock()ed (STORE/LOCK, a generation's
// READERS), nor shared memory.
//
// Env::Default() is the POSIX implementation; it lives as long as the process
// and is never deleted. Every error is a Status naming the path and what was
// being done ("cannot open ...", "write ...", "rename A to B"); ENOSPC and
// EDQUOT are Status::NoSpace.
//
// Thread-safety: an Env may be used from any number of threads at once.
// A RandomAccessFile's Read may be called concurrently; a WritableFile is used
// by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pstore {

// A file opened for reading at any offset.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly n bytes at offset into buf (retrying short reads); reading
  // past the end of the file is an IOError. Thread-safe.
  virtual Status Read(uint64_t offset, size_t n, void* buf) const = 0;
  // The file's size and whether it is a regular file, as when it was opened.
  virtual uint64_t size() const = 0;
  virtual bool regular() const = 0;
  // The file will be read from start to end (a hint; may do nothing).
  virtual void HintSequential() {}
  const std::string& path() const { return path_; }

 protected:
  explicit RandomAccessFile(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

// A file being written from start to end. Destroying it closes it (an error
// on that close is lost: call Close to see it).
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all n bytes (retrying short writes).
  virtual Status Append(const void* data, size_t n) = 0;
  // Flushes the file's data to stable storage (fsync).
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
  const std::string& path() const { return path_; }

 protected:
  explicit WritableFile(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

class Env {
 public:
  virtual ~Env() = default;
  // The POSIX file system. Never null; not to be deleted.
  static Env* Default();

  // Opens path for reading. A missing file is NotFound.
  virtual Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) = 0;
  // Creates path (or truncates it) for writing, with permission bits mode.
  virtual Result<std::unique_ptr<WritableFile>> Create(const std::string& path, int mode) = 0;
  // Replaces `to` with `from` atomically (rename(2)).
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Unlinks a file; a missing file is NotFound.
  virtual Status Remove(const std::string& path) = 0;
  // Removes an empty folder.
  virtual Status RemoveDir(const std::string& path) = 0;
  // Creates a folder and its missing parents (mode 0777 before the umask);
  // an existing folder is not an error.
  virtual Status CreateDirs(const std::string& path) = 0;
  // fsyncs a folder, making the names created or renamed in it durable.
  virtual Status SyncDir(const std::string& dir) = 0;
  // Removes a file tree; a missing path is not an error.
  virtual Status RemoveTree(const std::string& path) = 0;
  // Whether path names anything (a broken symbolic link counts as nothing).
  virtual bool Exists(const std::string& path) = 0;
};

// Helpers over an Env.

// Reads a whole file.
Result<std::string> ReadFileToString(Env* env, const std::string& path);
// Writes data to path via path + ".tmp", fsync and rename, then fsyncs the
// folder: after a crash the file holds either its old or its new contents.
// On an error the temporary is removed and path is as it was.
Status WriteFileAtomic(Env* env, const std::string& path, std::string_view data, int mode);

// A file written in pieces and put in place whole, as an exported model is:
// the pieces go, gathered into 1 MiB writes, to a temporary beside path
// (unique among live threads; one left by a crash is truncated and reused by
// a later writer with the same pid and tid); Commit syncs it, renames it
// over path and syncs the folder. Until Commit succeeds the temporary is
// removed when the writer is destroyed (an early return, an exception), and
// a folder sync that fails removes path again: a failed write leaves no
// file. The first failed write sticks: later calls return it.
class AtomicFileWriter {
 public:
  static Result<std::unique_ptr<AtomicFileWriter>> Create(Env* env, const std::string& path,
                                                          int mode);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  Status Append(const void* data, size_t n);
  Status Commit();

 private:
  AtomicFileWriter(Env* env, std::string path, std::string tmp, std::unique_ptr<WritableFile> f);
  Status Flush();

  Env* const env_;
  const std::string path_, tmp_;
  std::unique_ptr<WritableFile> file_;
  std::string buf_;
  Status status_;
  bool committed_ = false;
};

}  // namespace pstore
