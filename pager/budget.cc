// Pager: the store's memory budget. Reserving memory for slots under the
// budget lock, and CLOCK eviction across every segment of the store.
#include <sys/stat.h>

#include <algorithm>

#include "pager/budget_lock.h"
#include "pager/pager.h"
#include "pager/shm_object.h"

namespace pstore {

Status Pager::ReserveSlots(Segment* seg, const std::vector<uint32_t>& slots) {
  if (slots.empty()) return Status::OK();
  BudgetGuard budget(&budget_mu_, budget_obj_.fd());
  if (!budget.locked()) return budget.status();
  // Memory comes in units (pager/layout.h): a gapless unit is allocated
  // whole (for huge pages), others slot by slot. A slot needs every unit it
  // overlaps.
  std::vector<uint32_t> units;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) within a gappy unit
  uint64_t bytes = 0;
  const uint64_t unit = seg->header()->unit_bytes;
  for (uint32_t s : slots) {
    const SlotInfo& si = seg->slot(s);
    for (uint32_t u = seg->FirstUnit(s); u <= seg->LastUnit(s); u++) {
      if (seg->UnitGapless(u)) {
        if (!seg->UnitAllocated(u) && std::find(units.begin(), units.end(), u) == units.end()) {
          units.push_back(u);
          bytes += seg->UnitUsedBytes(u);
        }
      } else {
        uint64_t b = std::max<uint64_t>(si.offset, uint64_t(u) * unit);
        uint64_t e = std::min<uint64_t>(si.offset + si.bytes, uint64_t(u + 1) * unit);
        ranges.push_back({b, e});
        bytes += e - b;
      }
    }
  }
  if (bytes == 0) return Status::OK();
  EvictToBudgetLocked(bytes);
  for (uint32_t u : units) PSTORE_RETURN_IF_ERROR(seg->ReserveUnit(u));
  // Ranges in gappy units, adjacent ones (in one unit) in one call.
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 0; i < ranges.size();) {
    uint64_t b = ranges[i].first, e = ranges[i].second;
    size_t j = i + 1;
    while (j < ranges.size() && ranges[j].first == e && ranges[j].first / unit == b / unit)
      e = ranges[j++].second;
    PSTORE_RETURN_IF_ERROR(seg->ReserveRange(b, e - b));
    i = j;
  }
  return Status::OK();
}

void Pager::EnforceBudget() {
  BudgetGuard budget(&budget_mu_, budget_obj_.fd());
  if (budget.locked()) EvictToBudgetLocked(0);
}

void Pager::PinDropped() {
  // Set while the store is over budget because of pins (pager.h).
  if (over_budget_->load(std::memory_order_relaxed)) EnforceBudget();
}

void Pager::EvictToBudgetLocked(uint64_t extra) {
  // Every segment of the store on this host. The list is read again only
  // when /dev/shm changed (a segment came or went). Segments of models this
  // process has open are counted through their attachment; the others by a
  // look at their size, and attached only for as long as an eviction needs
  // them, so that evicting never holds places in other models' process tables.
  MutexLock l(&mu_);
  struct stat dir;
  if (::stat("/dev/shm", &dir) != 0 || dir.st_mtim.tv_sec != shm_mtime_.tv_sec ||
      dir.st_mtim.tv_nsec != shm_mtime_.tv_nsec || seg_names_.empty()) {
    seg_names_ = ListSegments(store_id_);
    shm_mtime_ = dir.st_mtim;
  }
  std::vector<std::shared_ptr<Segment>> mine;  // alive meanwhile
  std::vector<std::string> theirs;
  uint64_t resident = 0;
  for (const auto& name : seg_names_) {
    auto it = segments_.find(name);
    if (it != segments_.end())
      if (auto sp = it->second.lock()) {
        sp->ReapDead(/*budget_locked=*/true);
        resident += sp->ResidentBytes();
        mine.push_back(std::move(sp));
        continue;
      }
    std::optional<uint64_t> bytes = ShmAllocatedBytes(name);
    if (!bytes) continue;  // removed meanwhile
    resident += *bytes;
    theirs.push_back(name);
  }
  if (resident + extra <= budget_) {
    over_budget_->store(0, std::memory_order_relaxed);
    return;
  }
  uint64_t need = resident + extra - budget_;
  uint64_t freed = 0;
  std::vector<Segment*> all;
  for (auto& sp : mine) all.push_back(sp.get());
  std::vector<std::unique_ptr<Segment>> attached;
  for (const auto& name : theirs) {
    auto opened = Segment::AttachExisting(name);
    if (!opened.ok()) continue;  // being created or removed
    (*opened)->ReapDead(/*budget_locked=*/true);
    all.push_back(opened->get());
    attached.push_back(std::move(opened).value());
  }
  // CLOCK over the units of every segment: the first sweep clears reference
  // bits, the second evicts what was not used since.
  for (int pass = 0; pass < 3 && freed < need && !all.empty(); pass++) {
    for (size_t k = 0; k < all.size() && freed < need; k++) {
      Segment* p = all[(evict_start_ + k) % all.size()];
      uint32_t n = p->nunits();
      for (uint32_t i = 0; i < n && freed < need; i++) {
        uint32_t u = p->header()->clock_hand.fetch_add(1) % n;
        freed += p->TryEvictUnit(u);
      }
    }
  }
  evict_start_++;
  // If everything else is pinned we stay over the budget by what is pinned,
  // and say so: the next release of a pin evicts again.
  over_budget_->store(freed < need ? 1 : 0, std::memory_order_relaxed);
}

void Pager::ReapUnderBudgetLock(Segment* seg, uint32_t a) {
  BudgetGuard budget(&budget_mu_, budget_obj_.fd());
  if (budget.locked()) seg->ReapIfDead(a, /*budget_locked=*/true);
}

}  // namespace pstore
