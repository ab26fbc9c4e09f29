// Files the writer's database (db/) needs but lost (deleted by hand, or by a
// tool that cleaned the folder) while readers' generations still hold their
// own links to them: verify reports them, since every later change to the
// store would fail on them.
//
// Thread-safety: reentrant.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <rocksdb/db.h>

#include "common/file_util.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {

std::string BlobFileName(uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06llu.blob", (unsigned long long)number);
  return buf;
}

Result<WriterFileCheck> CheckWriterFiles(const StorePaths& p) {
  WriterFileCheck out;
  // With the writer lock shared, no writer runs meanwhile: what db/ lists is
  // what it needs. A writer at work now leaves the question for the next
  // verify.
  UniqueFd lock(::open(p.lock_file().c_str(), O_RDONLY | O_CLOEXEC));
  if (!lock.valid()) {
    out.not_checked = std::string("cannot open the store's LOCK: ") + std::strerror(errno);
    return out;
  }
  if (::flock(lock.get(), LOCK_SH | LOCK_NB) != 0) {
    out.not_checked = "a writer holds the store's lock (it may be changing db/)";
    return out;
  }
  struct stat st;
  if (::stat(p.db().c_str(), &st) != 0) {
    out.not_checked = "the store has no db/";
    return out;
  }
  // A group member may read the store's generations but not db/'s files,
  // which RocksDB makes with the writer's umask.
  const std::string current = p.db() + "/CURRENT";
  UniqueFd probe(::open(current.c_str(), O_RDONLY | O_CLOEXEC));
  if (!probe.valid() && errno == EACCES) {
    out.not_checked = "this user may not read db/ (" + current + ": Permission denied)";
    return out;
  }
  auto db = RocksDb::OpenReadOnly(p.db());
  if (!db.ok() && db.status().message().find("Permission denied") != std::string::npos) {
    out.not_checked = "this user may not read db/ (" + db.status().message() + ")";
    return out;
  }
  if (!db.ok()) return db.status().WithContext("the store's database (db/) cannot be opened");
  out.db_checked = true;
  rocksdb::ColumnFamilyMetaData md;
  (*db)->db()->GetColumnFamilyMetaData((*db)->chunks(), &md);
  for (const auto& b : md.blob_files) {
    std::string path = p.db() + "/" + BlobFileName(b.blob_file_number);
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT)
      out.missing_blob_files.push_back(b.blob_file_number);
  }
  ::flock(lock.get(), LOCK_UN);
  if (!out.missing_blob_files.empty()) out.db = std::move(db).value();
  return out;
}

}  // namespace pstore
