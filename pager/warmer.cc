#include "pager/warmer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>

#include "pager/shm_object.h"

namespace pstore {

void Warmer::Started() {
  std::lock_guard<std::mutex> l(mu_);
  started_++;
}

void Warmer::Finished() {
  {
    std::lock_guard<std::mutex> l(mu_);
    finished_++;
  }
  cv_.notify_all();
}

namespace {
// [begin, end) of fd mapped for reading, from the page holding begin (the
// region owns the mapping).
struct FileMap {
  bip::mapped_region region;
  void* p = nullptr;
  size_t len = 0;
  FileMap(int fd, uint64_t begin, uint64_t end) {
    static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
    uint64_t b = begin / page * page;
    auto r = MapRange(fd, bip::read_only, b, size_t(end - b), "a blob file");
    if (!r.ok()) return;
    region = std::move(r).value();
    p = region.get_address();
    len = region.get_size();
  }
  bool ok() const { return p != nullptr; }
};
}  // namespace

void Warmer::Run(const std::shared_ptr<Warmer>& self) {
  // The ranges mapped once (mappings cost no memory until populated); if
  // they are in the OS cache already (mincore), there is nothing to do.
  std::vector<std::vector<FileMap>> maps(batches.size());
  {
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident;
    uint64_t pages = 0, cached = 0;
    for (size_t b = 0; b < batches.size(); b++)
      for (const Range& r : batches[b]) {
        FileMap m(fds[r.file].get(), r.begin, r.end);
        if (!m.ok()) continue;
        resident.resize((m.len + page - 1) / page);
        if (::mincore(m.p, m.len, resident.data()) == 0) {
          pages += resident.size();
          for (unsigned char c : resident) cached += c & 1;
        }
        maps[b].push_back(std::move(m));
      }
    if (cached >= pages - pages / 16) return;
  }
  for (size_t b = 0; b < batches.size(); b++) {
    {
      std::unique_lock<std::mutex> l(mu_);
      // Loaders hold the warmer while their batches are queued: alone, it
      // stops (a batch whose task could not be queued never finishes).
      while (b >= finished_ + kAhead)
        if (!cv_.wait_for(l, std::chrono::milliseconds(100),
                          [&] { return b < finished_ + kAhead; }) &&
            self.use_count() == 1)
          return;
      if (b < started_) continue;  // the loaders got there first
    }
    // Populating a mapping of the range reads it into the OS cache without
    // copying it anywhere; its faults also keep the kernel's read-ahead of
    // the loaders' reads going.
    for (const FileMap& m : maps[b]) (void)::madvise(m.p, m.len, MADV_POPULATE_READ);
    maps[b].clear();
  }
}

}  // namespace pstore
