// The writer's database files that a published generation still holds but
// db/ lost (deleted by hand, or by a tool that cleaned the folder): verify
// reports them, since every later change to the store would fail on them.
//
// Thread-safety: reentrant.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "common/file_util.h"
#include "store/store.h"

namespace pstore {

namespace {

// Blob file numbers of the files named NNNNNN.blob in dir.
std::vector<uint64_t> BlobFiles(const std::string& dir) {
  std::vector<uint64_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() <= 5 || n.compare(n.size() - 5, 5, ".blob") != 0) continue;
    char* end = nullptr;
    uint64_t num = std::strtoull(n.c_str(), &end, 10);
    if (end == n.c_str() + n.size() - 5) out.push_back(num);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint64_t> MissingIn(const std::string& db, const std::vector<uint64_t>& files) {
  std::vector<uint64_t> out;
  for (uint64_t f : files) {
    struct stat st;
    if (::stat((db + "/" + BlobFileName(f)).c_str(), &st) != 0 && errno == ENOENT) out.push_back(f);
  }
  return out;
}

}  // namespace

std::string BlobFileName(uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06llu.blob", (unsigned long long)number);
  return buf;
}

std::vector<uint64_t> MissingWriterBlobFiles(const StorePaths& p, uint64_t generation) {
  std::vector<uint64_t> files = BlobFiles(p.gen(generation));
  std::vector<uint64_t> missing = MissingIn(p.db(), files);
  if (missing.empty()) return missing;
  // Only compact deletes blob files, and only while it holds the writer lock:
  // look again with the lock shared, so that no writer runs meanwhile. A
  // writer at work now leaves the question for the next verify.
  UniqueFd lock(::open(p.lock_file().c_str(), O_RDONLY | O_CLOEXEC));
  if (!lock.valid() || ::flock(lock.get(), LOCK_SH | LOCK_NB) != 0) return {};
  missing = MissingIn(p.db(), files);
  ::flock(lock.get(), LOCK_UN);
  return missing;
}

}  // namespace pstore
