// PlacedFrames: see pager/placed_frames.h.
#include "pager/placed_frames.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file_util.h"

namespace pstore {

PlacedFrames::PlacedFrames(const ReadPlan& plan, const std::vector<uint32_t>& slots,
                           const std::vector<bool>& single, size_t nslots) {
  std::vector<std::string_view> files(plan.files.size());
  for (size_t f = 0; f < plan.files.size(); f++) {
    UniqueFd fd(::open(plan.files[f].c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || st.st_size <= 0) continue;
    auto m = MapRange(fd.get(), bip::read_only, 0, size_t(st.st_size), plan.files[f]);
    if (!m.ok()) continue;
    files[f] = std::string_view(static_cast<const char*>(m->get_address()), size_t(st.st_size));
    maps_.push_back(std::move(m).value());
  }
  frames_.resize(nslots);
  for (size_t i = 0; i < plan.places.size() && i < slots.size(); i++) {
    const ReadPlan::Place& p = plan.places[i];
    if (p.file == ReadPlan::Place::kNoFile || p.file >= files.size() || !single[slots[i]]) continue;
    std::string_view file = files[p.file];
    if (file.empty() || p.size == 0 || p.offset > file.size() || p.size > file.size() - p.offset)
      continue;
    frames_[slots[i]] = file.substr(p.offset, p.size);
    placed_++;
  }
}

void PlacedFrames::Populate(std::vector<std::string_view>* frames) {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  constexpr uintptr_t kGap = 64 << 10;  // neighbours closer than this: one call
  for (size_t i = 0; i < frames->size();) {
    if ((*frames)[i].empty()) {
      i++;
      continue;
    }
    uintptr_t b = uintptr_t((*frames)[i].data()) / page * page;
    uintptr_t e = uintptr_t((*frames)[i].data() + (*frames)[i].size());
    size_t j = i + 1;
    for (; j < frames->size(); j++) {
      if ((*frames)[j].empty()) continue;
      uintptr_t fb = uintptr_t((*frames)[j].data()), fe = fb + (*frames)[j].size();
      if (fb < b || fb > e + kGap) break;
      e = std::max(e, fe);
    }
    if (::madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_READ) != 0)
      for (size_t k = i; k < j; k++) (*frames)[k] = std::string_view();
    i = j;
  }
}

}  // namespace pstore
