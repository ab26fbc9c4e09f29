#include "pager/pager.h"

#include <fcntl.h>
#include <malloc.h>
#include <rocksdb/db.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "pager/budget_object.h"
#include "pager/ofd_lock.h"
#include "pager/shm_access.h"
#include "store/rocks.h"

namespace pstore {

namespace {

constexpr int kWaitSliceMs = 10;  // how often a waiter checks that a loader is alive

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

constexpr auto kIdleTrimAfter = std::chrono::milliseconds(50);

// Runs fn on a loader thread, where an exception must not escape: it becomes
// an error for whoever waits on the work.
template <typename F>
Status Guarded(F&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return Status::NoSpace("out of memory while loading");
  } catch (const std::exception& e) {
    return Status::Internal(std::string("loading failed: ") + e.what());
  }
}

}  // namespace

// --- LoaderPool -----------------------------------------------------------------

LoaderPool::LoaderPool(int threads, std::function<void()> on_idle) : on_idle_(std::move(on_idle)) {
  for (int i = 0; i < threads; i++) {
    try {
      StartThread();
    } catch (const std::system_error& e) {
      start_status_ = Status::IOError("cannot start loader thread " + std::to_string(i + 1) +
                                      " of " + std::to_string(threads) + " (" + e.what() +
                                      "); ask for fewer loader threads");
      Stop();
      threads_.clear();
      return;
    }
  }
}

void LoaderPool::StartThread() {
  threads_.emplace_back([this] {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        if (!cv_.wait_for(l, kIdleTrimAfter, [this] { return stop_ || !queue_.empty(); })) {
          // Nothing to do for a while: give scratch memory back, once.
          if (dirty_.exchange(false)) {
            l.unlock();
            if (on_idle_) on_idle_();
          }
          continue;
        }
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
      dirty_.store(true, std::memory_order_relaxed);
    }
  });
}

LoaderPool::~LoaderPool() { Stop(); }

void LoaderPool::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // Threads leave once the queue is empty, so tasks that queue more (a bulk
  // prefetch's plan) still have them run.
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void LoaderPool::Submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

// --- Pager ----------------------------------------------------------------------

Pager::~Pager() {
  // Finish background loads before segments go. The pool stays reachable
  // while it stops: queued tasks still use it.
  if (pool_) pool_->Stop();
  pool_.reset();
  if (over_budget_) ::munmap(over_budget_, size_t(::sysconf(_SC_PAGESIZE)));
}

Result<std::unique_ptr<Pager>> Pager::Open(const std::string& root, const PagerOptions& opt) {
  PSTORE_RETURN_IF_ERROR(CheckThreads(opt.loader_threads, "loader_threads"));
  std::unique_ptr<Pager> p(new Pager);
  p->root_ = root;
  StorePaths paths{root};
  PSTORE_ASSIGN_OR_RETURN(p->store_id_, ReadStoreId(paths));
  PSTORE_ASSIGN_OR_RETURN(p->config_, ReadStoreConfig(paths));
  p->budget_ = opt.budget_bytes ? opt.budget_bytes : p->config_.budget_bytes;
  p->check_shared_ = opt.check_shared;
  if (p->budget_ == 0) {
    uint64_t ram = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE));
    p->budget_ = ram / 2;
  }
  PSTORE_ASSIGN_OR_RETURN(p->seg_opt_, ShmAccessFor(p->config_));
  std::string lock_name = BudgetObjectName(p->store_id_);
  PSTORE_ASSIGN_OR_RETURN(p->budget_fd_, OpenBudgetObject(p->store_id_, p->seg_opt_.mode));
  int fd = p->budget_fd_.get();
  PSTORE_RETURN_IF_ERROR(SetShmAccess(fd, lock_name, p->seg_opt_));
  long page = ::sysconf(_SC_PAGESIZE);
  int e = ::posix_fallocate(fd, 0, page);
  if (e != 0) return Status::FromErrno("allocate shared memory " + lock_name, e);
  void* m = ::mmap(nullptr, size_t(page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return Status::FromErrno("map " + lock_name, errno);
  p->over_budget_ = static_cast<std::atomic<uint32_t>*>(m);
  {
    // Record the store's folder, so that its shared memory can be found
    // once the folder is gone (`pstore ps --orphans`).
    std::error_code ec;
    std::string folder = std::filesystem::absolute(root, ec).lexically_normal().string();
    if (char* real = ::realpath(root.c_str(), nullptr)) {
      folder = real;
      ::free(real);
    }
    while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
    // Written only when there is no record or the recorded folder does not
    // hold this store (gone, or another store's), and never from a read-only
    // store folder: a reader in another mount namespace (a container) or
    // through a bind mount sees the store at a path that is not the host's,
    // and must not make the host's store look orphaned.
    struct statvfs vfs;
    const bool read_only = ::statvfs(root.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0;
    bool write = false;
    if (!read_only) {
      std::optional<std::string> recorded = ReadBudgetOwner(p->store_id_);
      if (!recorded) {
        write = true;
      } else if (*recorded != folder) {
        auto id = ReadStoreId(StorePaths{*recorded});
        write = id.ok() ? *id != p->store_id_ : id.status().IsNotFound();
      }
    }
    std::lock_guard<std::mutex> local(p->budget_mu_);
    if (write && OfdLock(fd, kBudgetLockByte, true)) {
      WriteBudgetOwner(static_cast<uint8_t*>(m), size_t(page), p->store_id_, folder);
      OfdUnlock(fd, kBudgetLockByte);
    }
  }
  int threads = opt.loader_threads > 0 ? opt.loader_threads
                                       : std::max(2, int(std::thread::hardware_concurrency()));
  Pager* raw = p.get();
  p->pool_ = std::make_unique<LoaderPool>(threads, [raw] { raw->Trim(); });
  PSTORE_RETURN_IF_ERROR(p->pool_->start_status());
  PSTORE_ASSIGN_OR_RETURN(auto reader, StoreReader::Open(root, /*lazy_db=*/true));
  p->reader_ = std::move(reader);
  return p;
}

Result<std::shared_ptr<StoreReader>> Pager::CurrentReader() {
  StorePaths paths{root_};
  PSTORE_ASSIGN_OR_RETURN(uint64_t current, ReadCurrentGeneration(paths));
  std::lock_guard<std::mutex> l(mu_);
  if (reader_ && reader_->generation() == current) return reader_;
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(root_, /*lazy_db=*/true));
  reader_ = std::move(r);
  return reader_;
}

Result<std::shared_ptr<Segment>> Pager::GetSegment(const ModelDigest& d, const Layout& layout,
                                                   std::string_view manifest,
                                                   std::shared_ptr<const Manifest> parsed) {
  std::string name = Segment::NameFor(store_id_, d);
  std::lock_guard<std::mutex> l(mu_);
  auto it = segments_.find(name);
  if (it != segments_.end())
    if (auto s = it->second.lock()) return s;
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Segment> seg,
                          Segment::Attach(name, layout, d, manifest, store_id_, seg_opt_, parsed));
  std::shared_ptr<Segment> s(std::move(seg));
  segments_[name] = s;
  return s;
}

std::shared_ptr<Segment> Pager::FindResident(const ModelDigest& d) {
  std::string name = Segment::NameFor(store_id_, d);
  std::lock_guard<std::mutex> l(mu_);
  auto it = segments_.find(name);
  if (it != segments_.end())
    if (auto s = it->second.lock()) return s;
  auto seg = Segment::AttachResident(name, d);
  if (!seg.ok()) return nullptr;  // none, or unusable: the store's copy is used
  std::shared_ptr<Segment> s(std::move(seg).value());
  segments_[name] = s;
  return s;
}

Result<std::shared_ptr<Model>> Pager::OpenModel(std::string_view ref) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<StoreReader> reader, CurrentReader());
  // Name and manifest without the database when the generation's NAMES file
  // and a resident segment can answer; the database is opened otherwise, and
  // by the first load.
  PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> named, reader->ResolveName(ref));
  ModelDigest digest;
  if (named) {
    digest = *named;
  } else {
    PSTORE_RETURN_IF_ERROR(reader->EnsureDb());
    PSTORE_ASSIGN_OR_RETURN(digest, reader->view().Resolve(ref));
  }
  std::shared_ptr<Model> model(new Model);
  model->pager_ = this;
  model->reader_ = reader;
  model->digest_ = digest;
  // A resident model's segment holds its manifest and layout: a process
  // opening it parses the one and copies the other, nothing from the store.
  // The manifest used is the segment's private copy, checked against the
  // digest when it was attached (never the bytes in shared memory, which
  // processes that may write the segment can change), or the store's.
  std::shared_ptr<Segment> resident = FindResident(digest);
  std::shared_ptr<const Manifest> m;
  if (resident) {
    m = resident->manifest();
    PSTORE_ASSIGN_OR_RETURN(model->layout_, resident->ReadLayout(*m));
    model->seg_ = std::move(resident);
  } else {
    PSTORE_RETURN_IF_ERROR(reader->EnsureDb());
    PSTORE_ASSIGN_OR_RETURN(std::string bytes, reader->view().LoadManifestBytes(digest));
    auto parsed = Manifest::Parse(bytes, /*with_headers=*/false);
    if (!parsed.ok()) return parsed.status().WithContext("model " + digest.Hex());
    m = std::make_shared<const Manifest>(std::move(parsed).value());
    model->layout_ = Layout::Build(*m, uint64_t(::sysconf(_SC_PAGESIZE)));
    PSTORE_ASSIGN_OR_RETURN(model->seg_, GetSegment(digest, model->layout_, bytes, m));
    // A segment this process had attached already keeps its own manifest:
    // the same model's, so the same.
    m = model->seg_->manifest();
  }
  model->manifest_ = m;
  if (check_shared_) model->check_.reset(new Model::CheckState[m->tensors.size()]());
  // Pins of processes that died are gone now; what they held may be over budget.
  EnforceBudget();
  return model;
}

StoreMemory Pager::Memory() {
  StoreMemory m;
  m.budget_bytes = budget_;
  for (const auto& name : ListSegments(store_id_)) {
    int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) continue;
    struct stat st;
    if (::fstat(fd, &st) == 0) m.resident_bytes += uint64_t(st.st_blocks) * 512;
    ::close(fd);
    m.segments++;
  }
  return m;
}

std::unique_ptr<ChunkDecoder> Pager::TakeDecoder() {
  {
    std::lock_guard<std::mutex> l(decoders_mu_);
    if (!decoders_.empty()) {
      auto d = std::move(decoders_.back());
      decoders_.pop_back();
      return d;
    }
  }
  return std::make_unique<ChunkDecoder>();
}

void Pager::GiveDecoder(std::unique_ptr<ChunkDecoder> d) {
  std::lock_guard<std::mutex> l(decoders_mu_);
  decoders_.push_back(std::move(d));
}

void Pager::Trim() {
  {
    std::lock_guard<std::mutex> l(decoders_mu_);
    for (auto& d : decoders_) d->ReleaseMemory();
  }
  // RocksDB's read buffers and our scratch are freed, but glibc keeps freed
  // memory in its arenas; a process that loaded a model should not keep
  // megabytes it no longer uses.
  ::malloc_trim(0);
}

Status Pager::ReserveSlots(Segment* seg, const std::vector<uint32_t>& slots) {
  if (slots.empty()) return Status::OK();
  std::lock_guard<std::mutex> local(budget_mu_);
  if (!OfdLock(budget_fd_.get(), 0, true)) return Status::FromErrno("budget lock", errno);
  struct Unlock {
    int fd;
    ~Unlock() { OfdUnlock(fd, 0); }
  } unlock{budget_fd_.get()};
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
  std::lock_guard<std::mutex> local(budget_mu_);
  if (!OfdLock(budget_fd_.get(), 0, true)) return;
  EvictToBudgetLocked(0);
  OfdUnlock(budget_fd_.get(), 0);
}

void Pager::EvictToBudgetLocked(uint64_t extra) {
  // Every segment of the store on this host. The list is read again only
  // when /dev/shm changed (a segment came or went). Segments of models this
  // process has open are counted through their attachment; the others by a
  // look at their size, and attached only for as long as an eviction needs
  // them, so that evicting never holds places in other models' process tables.
  std::lock_guard<std::mutex> l(mu_);
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
    UniqueFd fd(::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0));
    struct stat st;
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0) continue;  // removed meanwhile
    resident += uint64_t(st.st_blocks) * 512;
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
  std::lock_guard<std::mutex> local(budget_mu_);
  if (!OfdLock(budget_fd_.get(), 0, true)) return;
  seg->ReapIfDead(a, /*budget_locked=*/true);
  OfdUnlock(budget_fd_.get(), 0);
}

// --- Model ----------------------------------------------------------------------

Model::~Model() {
  // Background prefetches hold a shared_ptr to the model, so none run now.
}

int64_t Model::Find(std::string_view name) const {
  // Built on the first lookup by name: a process that goes by index (or
  // never looks up) does not pay for it when it opens the model.
  std::call_once(by_name_once_, [this] { by_name_.Build(manifest_->tensors); });
  return by_name_.Find(name);
}

void Model::Unclaim(uint32_t s) {
  std::atomic<uint32_t>& word = seg_->state(s);
  word.store(MakeState(kEmpty, 0));
  FutexWakeAll(&word);
}

Result<std::vector<uint32_t>> Model::ClaimAndReserve(const uint32_t* tensors, size_t n,
                                                     std::vector<uint32_t>* busy) {
  std::vector<uint32_t> slots;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += layout_.tensors[tensors[i]].nslots;
  slots.reserve(total);
  for (size_t i = 0; i < n; i++) {
    const TensorPlace& p = layout_.tensors[tensors[i]];
    for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++) slots.push_back(s);
  }
  return ClaimSlots(slots, busy);
}

Result<std::vector<uint32_t>> Model::ClaimSlots(const std::vector<uint32_t>& slots,
                                                std::vector<uint32_t>* busy) {
  Segment& seg = *seg_;
  std::vector<uint32_t> mine;
  mine.reserve(slots.size());  // no allocation (and so no throw) once slots are claimed
  for (uint32_t s : slots) {
    std::atomic<uint32_t>& word = seg.state(s);
    uint32_t w = word.load();
    while (StateOf(w) == kEmpty) {
      if (word.compare_exchange_weak(w, MakeState(kLoading, seg.me()))) {
        mine.push_back(s);
        break;
      }
    }
    if (busy && (StateOf(w) == kLoading || StateOf(w) == kEvicting)) busy->push_back(s);
  }
  Status st;
  try {
    st = pager_->ReserveSlots(&seg, mine);
  } catch (...) {
    for (uint32_t s : mine) Unclaim(s);
    throw;
  }
  if (!st.ok()) {
    for (uint32_t s : mine) Unclaim(s);
    return st;
  }
  return mine;
}

Status Model::FillSlot(uint32_t s) { return FillSlots(&s, 1); }

Status Model::FillSlots(const uint32_t* slots, size_t n) {
  // Whatever happens, every slot ends published or unclaimed: an exception
  // (out of memory) must not leave a claim that everyone would wait on.
  try {
    return FillSlotsOrThrow(slots, n);
  } catch (...) {
    for (size_t i = 0; i < n; i++) {
      uint32_t w = seg_->state(slots[i]).load();
      if (StateOf(w) == kLoading && OwnerOf(w) == seg_->me()) Unclaim(slots[i]);
    }
    throw;
  }
}

Status Model::FillSlotsOrThrow(const uint32_t* slots, size_t n) {
  Segment& seg = *seg_;
  Status first_error = reader_->EnsureDb();
  if (!first_error.ok()) {
    for (size_t i = 0; i < n; i++) Unclaim(slots[i]);
    return first_error;
  }
  std::unique_ptr<ChunkDecoder> decoder = pager_->TakeDecoder();
  // Slots go in groups: one MultiGet per group (RocksDB then reads each
  // table block once for all the group's small chunks), and each slot is
  // published as soon as its group is decoded. A group holds up to 512 chunks
  // or 1 MiB of them (so frames are still in cache when decoded).
  constexpr size_t kGroupPieces = 512;
  constexpr uint64_t kGroupBytes = 1ull << 20;
  std::vector<ChunkKey> keys;
  std::vector<rocksdb::PinnableSlice> frames(kGroupPieces * 2);
  std::vector<Status> statuses(kGroupPieces * 2);
  for (size_t i = 0; i < n;) {
    uint64_t t0 = NowNs();
    size_t end = i, npieces = 0;
    uint64_t nbytes = 0;
    while (end < n && (npieces == 0 || (npieces + layout_.slots[slots[end]].npieces <= kGroupPieces &&
                                        nbytes + layout_.slots[slots[end]].bytes <= kGroupBytes))) {
      npieces += layout_.slots[slots[end]].npieces;
      nbytes += layout_.slots[slots[end]].bytes;
      end++;
    }
    keys.clear();
    for (size_t k = i; k < end; k++) {
      const Slot& sl = layout_.slots[slots[k]];
      for (uint32_t p = 0; p < sl.npieces; p++)
        keys.push_back(manifest_->chunks[layout_.pieces[sl.first_piece + p].chunk]);
    }
    if (frames.size() < keys.size()) {
      frames.resize(keys.size());
      statuses.resize(keys.size());
    }
    for (size_t k = 0; k < keys.size(); k++) frames[k].Reset();
    reader_->view().ReadFrames(keys.data(), keys.size(), frames.data(), statuses.data());
    size_t at = 0;
    for (size_t k = i; k < end; k++) {
      uint32_t s = slots[k];
      const Slot& sl = layout_.slots[s];
      uint8_t* dst = seg.data_rw() + sl.offset;
      Status st;
      uint64_t read = 0, decoded = 0;
      for (uint32_t p = 0; p < sl.npieces; p++, at++) {
        const SlotPiece& pc = layout_.pieces[sl.first_piece + p];
        if (!st.ok()) continue;
        st = statuses[at];
        if (st.ok())
          st = decoder->Decode(std::string_view(frames[at].data(), frames[at].size()), keys[at],
                               std::span<uint8_t>(dst + pc.offset, pc.len));
        if (!st.ok()) {
          const ManifestTensor& t = manifest_->tensors[pc.tensor];
          st = st.WithContext("model " + digest_.Hex() + " tensor " + t.name + " chunk " +
                              std::to_string(pc.chunk - t.first_chunk));
        }
        read += frames[at].size();
        decoded += pc.len;
      }
      std::atomic<uint32_t>& word = seg.state(s);
      if (!st.ok()) {
        Unclaim(s);  // its unit stays allocated, for the next loader
        if (first_error.ok()) first_error = st;
        continue;
      }
      word.store(MakeState(kReady, 0), std::memory_order_release);
      FutexWakeAll(&word);
      seg.header()->loads.fetch_add(1, std::memory_order_relaxed);
      seg.header()->load_bytes.fetch_add(decoded, std::memory_order_relaxed);
      slots_loaded_.fetch_add(1, std::memory_order_relaxed);
      bytes_read_.fetch_add(read, std::memory_order_relaxed);
      bytes_decoded_.fetch_add(decoded, std::memory_order_relaxed);
    }
    load_ns_.fetch_add(NowNs() - t0, std::memory_order_relaxed);
    i = end;
  }
  pager_->GiveDecoder(std::move(decoder));
  pager_->pool_->Touch();
  return first_error;
}

Status Model::LoadSlots(uint32_t t) {
  Segment& seg = *seg_;
  for (;;) {
    std::vector<uint32_t> theirs;
    PSTORE_ASSIGN_OR_RETURN(std::vector<uint32_t> mine, ClaimAndReserve(&t, 1, &theirs));
    if (mine.empty() && theirs.empty()) return Status::OK();
    // Load our claims, the pool's threads and this one together.
    if (!mine.empty()) {
      struct Batch {
        std::vector<uint32_t> slots;
        std::atomic<size_t> next{0};
        std::mutex mu;
        std::condition_variable cv;
        size_t finished = 0;
        Status error;
      };
      std::shared_ptr<Batch> batch;
      try {
        batch = std::make_shared<Batch>();
        batch->slots = std::move(mine);
      } catch (...) {
        for (uint32_t s : mine) Unclaim(s);
        throw;
      }
      // Helpers hold the model weakly: one still queued after the batch is
      // done must not keep the model (and its attachment) alive.
      std::weak_ptr<Model> weak = weak_from_this();
      auto work = [weak, batch] {
        for (;;) {
          size_t i = batch->next.fetch_add(1);
          if (i >= batch->slots.size()) return;
          auto self = weak.lock();
          if (!self) return;
          Status st = Guarded([&] { return self->FillSlot(batch->slots[i]); });
          std::lock_guard<std::mutex> l(batch->mu);
          if (!st.ok() && batch->error.ok()) batch->error = st;
          if (++batch->finished == batch->slots.size()) batch->cv.notify_all();
        }
      };
      size_t helpers = std::min<size_t>(batch->slots.size() - 1, size_t(pager_->pool_->threads()));
      try {
        for (size_t h = 0; h < helpers; h++) pager_->pool_->Submit(work);
      } catch (...) {
        // Fewer helpers: this thread does the rest.
      }
      work();
      std::unique_lock<std::mutex> l(batch->mu);
      batch->cv.wait(l, [&] { return batch->finished == batch->slots.size(); });
      if (!batch->error.ok()) return batch->error;
    }
    // Wait for other processes' loads; take over from a loader that died.
    for (uint32_t s : theirs) {
      std::atomic<uint32_t>& word = seg.state(s);
      for (;;) {
        uint32_t w = word.load();
        uint32_t st = StateOf(w);
        if (st == kReady || st == kEmpty) break;
        FutexWait(&word, w, kWaitSliceMs);
        if (word.load() != w) continue;
        // No progress: is the loader (or evictor) alive? A dead one is reaped
        // under the budget lock (a dead evictor's unit is sorted out then).
        pager_->ReapUnderBudgetLock(&seg, OwnerOf(w));
      }
    }
  }
}

bool Model::Resident(const TensorPlace& p) const {
  // seq_cst: read after the caller's pin (the evictor checks pins after
  // marking slots EVICTING).
  for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++)
    if (StateOf(seg_->state(s).load(std::memory_order_seq_cst)) != kReady) return false;
  return true;
}

Result<const uint8_t*> Model::Acquire(uint32_t t) {
  if (t >= layout_.tensors.size()) return Status::InvalidArgument("tensor index out of range");
  acquires_.fetch_add(1, std::memory_order_relaxed);
  Segment& seg = *seg_;
  const TensorPlace& p = layout_.tensors[t];
  std::atomic<uint32_t>& pin = seg.pin(seg.me(), t);
  pin.fetch_add(1, std::memory_order_seq_cst);
  if (!Resident(p)) {
    Status st;
    try {
      st = LoadSlots(t);
    } catch (...) {
      pin.fetch_sub(1);
      throw;
    }
    if (!st.ok()) {
      pin.fetch_sub(1);
      return st;
    }
    misses_.fetch_add(1, std::memory_order_relaxed);
  } else {
    hits_.fetch_add(1, std::memory_order_relaxed);
  }
  for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++)
    if (!seg.ref(s)) seg.ref(s) = 1;
  static const uint8_t kEmptyTensor[1] = {0};
  if (p.nslots == 0) return kEmptyTensor;
  if (check_) {
    // Checked whenever this handle's holds on t go from none to one: between
    // holds, any process that may write the segment can change the bytes.
    std::lock_guard<std::mutex> l(check_mu_[t % kCheckStripes]);
    CheckState& cs = check_[t];
    if (!cs.checked) {
      Status st = CheckBytes(t, seg.data() + p.offset);
      if (!st.ok()) {
        pin.fetch_sub(1);
        return st;
      }
      cs.checked = true;
    }
    cs.held++;
  }
  return seg.data() + p.offset;
}

Status Model::CheckBytes(uint32_t t, const uint8_t* p) const {
  const ManifestTensor& mt = manifest_->tensors[t];
  for (uint64_t j = 0; j < manifest_->ChunkCount(mt); j++) {
    const ChunkKey& key = manifest_->chunks[mt.first_chunk + j];
    if (HashBytes(p + j * manifest_->chunk_size, size_t(manifest_->ChunkBytes(mt, j))) != key)
      return Status::Corruption(
          "tensor " + mt.name + " chunk " + std::to_string(j) + " (key " + key.Hex() +
          ") in shared memory " + seg_->name() +
          " does not match its key: a process that may write the store's shared memory changed "
          "it, or the memory is damaged; nothing wrong was returned. Remove the segment with "
          "`pstore ps --gc-all` once no process uses it, and see who may write it "
          "(docs/operations.md, \"Group mode and trust\")");
  }
  return Status::OK();
}

Status Model::Release(uint32_t t) {
  if (t >= layout_.tensors.size()) return Status::InvalidArgument("tensor index out of range");
  std::atomic<uint32_t>& pin = seg_->pin(seg_->me(), t);
  if (check_) {
    // Before the pin goes: an acquire from here on checks again.
    std::lock_guard<std::mutex> l(check_mu_[t % kCheckStripes]);
    CheckState& cs = check_[t];
    if (cs.held > 0 && --cs.held == 0) cs.checked = false;
  }
  uint32_t v = pin.load();
  do {
    if (v == 0) return Status::InvalidArgument("release of tensor " + manifest_->tensors[t].name +
                                               " without a matching acquire");
  } while (!pin.compare_exchange_weak(v, v - 1));
  if (v == 1 && pager_->over_budget_->load(std::memory_order_relaxed)) pager_->EnforceBudget();
  return Status::OK();
}

Status Model::Copy(uint32_t t, void* dst, size_t cap) {
  if (t >= layout_.tensors.size()) return Status::InvalidArgument("tensor index out of range");
  const ManifestTensor& mt = manifest_->tensors[t];
  if (cap < mt.size)
    return Status::InvalidArgument("buffer of " + std::to_string(cap) + " bytes is too small for " +
                                   mt.name + " (" + std::to_string(mt.size) + " bytes)");
  Segment& seg = *seg_;
  const TensorPlace& p = layout_.tensors[t];
  std::atomic<uint32_t>& pin = seg.pin(seg.me(), t);
  pin.fetch_add(1, std::memory_order_seq_cst);
  if (Resident(p)) {
    if (mt.size) std::memcpy(dst, seg.data() + p.offset, mt.size);
    pin.fetch_sub(1);
    // The copy is this process's own: checked, it stays right. Bytes that
    // fail the check are decoded from the store instead, below.
    if (!check_ || CheckBytes(t, static_cast<const uint8_t*>(dst)).ok()) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      return Status::OK();
    }
  } else {
    pin.fetch_sub(1);
  }
  // Not resident: decode straight into the caller's buffer; shared memory is
  // left alone.
  PSTORE_RETURN_IF_ERROR(reader_->EnsureDb());
  std::unique_ptr<ChunkDecoder> decoder = pager_->TakeDecoder();
  struct GiveBack {
    Pager* p;
    std::unique_ptr<ChunkDecoder>& d;
    ~GiveBack() { p->GiveDecoder(std::move(d)); }
  } give_back{pager_, decoder};
  pager_->pool_->Touch();
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (uint64_t j = 0; j < manifest_->ChunkCount(mt); j++) {
    const ChunkKey& key = manifest_->chunks[mt.first_chunk + j];
    rocksdb::PinnableSlice frame;
    PSTORE_RETURN_IF_ERROR(reader_->view().ReadFrame(key, &frame));
    Status st = decoder->Decode(std::string_view(frame.data(), frame.size()), key,
                                  std::span<uint8_t>(out + j * manifest_->chunk_size,
                                                     size_t(manifest_->ChunkBytes(mt, j))));
    if (!st.ok()) return st.WithContext("tensor " + mt.name + " chunk " + std::to_string(j));
    bytes_read_.fetch_add(frame.size(), std::memory_order_relaxed);
    bytes_decoded_.fetch_add(manifest_->ChunkBytes(mt, j), std::memory_order_relaxed);
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
}

void Model::Warmer::Started() {
  std::lock_guard<std::mutex> l(mu_);
  started_++;
}

void Model::Warmer::Finished() {
  {
    std::lock_guard<std::mutex> l(mu_);
    finished_++;
  }
  cv_.notify_all();
}

namespace {
// [begin, end) of fd mapped for reading, from the page holding begin.
struct FileMap {
  void* p = MAP_FAILED;
  size_t len = 0;
  FileMap(int fd, uint64_t begin, uint64_t end) {
    static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
    uint64_t b = begin / page * page;
    len = size_t(end - b);
    p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, off_t(b));
  }
  FileMap(FileMap&& o) noexcept : p(o.p), len(o.len) { o.p = MAP_FAILED; }
  FileMap(const FileMap&) = delete;
  FileMap& operator=(const FileMap&) = delete;
  ~FileMap() {
    if (p != MAP_FAILED) ::munmap(p, len);
  }
  bool ok() const { return p != MAP_FAILED; }
};
}  // namespace

void Model::Warmer::Run(const std::shared_ptr<Warmer>& self) {
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
        if (!cv_.wait_for(l, std::chrono::milliseconds(100), [&] { return b < finished_ + kAhead; }) &&
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

void Model::RunInBackground(std::function<Status()> work) {
  auto self = shared_from_this();
  {
    std::lock_guard<std::mutex> l(prefetch_mu_);
    prefetch_pending_++;
  }
  auto finish = [self](const Status& st) {
    std::lock_guard<std::mutex> l(self->prefetch_mu_);
    if (!st.ok() && self->prefetch_error_.ok()) self->prefetch_error_ = st;
    if (--self->prefetch_pending_ == 0) self->prefetch_cv_.notify_all();
  };
  try {
    pager_->pool_->Submit([work = std::move(work), finish] { finish(Guarded(work)); });
  } catch (...) {
    finish(Status::NoSpace("out of memory while queueing a prefetch"));
  }
}

void Model::SubmitPrefetch(std::vector<uint32_t> items, bool slots,
                           std::shared_ptr<Warmer> warmer) {
  // The task holds the model (self): a prefetch outlives the caller's handle.
  RunInBackground([self = shared_from_this(), items = std::move(items), slots, warmer] {
    struct Busy {
      Warmer* w;
      explicit Busy(Warmer* w) : w(w) {
        if (w) w->Started();
      }
      ~Busy() {
        if (w) w->Finished();
      }
    } busy(warmer.get());
    // Slots resident or being loaded by someone else are left alone.
    auto mine = slots ? self->ClaimSlots(items, nullptr)
                      : self->ClaimAndReserve(items.data(), items.size(), nullptr);
    return mine.ok() ? self->FillSlots(mine->data(), mine->size()) : mine.status();
  });
}

bool Model::PrefetchInFileOrder(const std::vector<uint32_t>& tensors) {
  Segment& seg = *seg_;
  std::vector<uint32_t> slots;
  for (uint32_t t : tensors) {
    if (t >= layout_.tensors.size()) continue;
    const TensorPlace& p = layout_.tensors[t];
    for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++)
      if (StateOf(seg.state(s).load(std::memory_order_relaxed)) == kEmpty) slots.push_back(s);
  }
  std::sort(slots.begin(), slots.end());
  slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
  if (slots.empty()) return true;
  // File order scatters a load over the segment's memory units, which is
  // right when they all fit; under a tighter budget, tensor order keeps what
  // is loaded together, and eviction of half-filled units does not churn.
  if (layout_.data_bytes > pager_->budget() / 2) return false;
  if (!reader_->EnsureDb().ok()) return false;
  const StoreView& view = reader_->view();
  // Locating scans the store's whole chunk index: worth it for a good share
  // of the store's chunks only.
  if (slots.size() * 8 < view.EstimateChunkCount()) return false;
  std::vector<ChunkKey> keys(slots.size());
  for (size_t i = 0; i < slots.size(); i++)
    keys[i] = manifest_->chunks[layout_.pieces[layout_.slots[slots[i]].first_piece].chunk];
  std::vector<StoreView::ChunkPlace> places(slots.size());
  if (!view.LocateChunks(keys.data(), keys.size(), places.data()).ok()) return false;
  std::vector<uint32_t> order(slots.size());
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return places[a] < places[b]; });
  // The blob files the load reads, opened for the warmer (one that cannot be
  // opened is not warmed).
  auto warmer = std::make_shared<Warmer>();
  std::unordered_map<uint64_t, uint32_t> file_index;
  {
    std::unordered_map<uint64_t, std::string> paths = view.BlobFilePaths();
    for (const StoreView::ChunkPlace& p : places) {
      auto path = paths.find(p.file);
      if (path == paths.end() || file_index.count(p.file)) continue;
      UniqueFd fd(::open(path->second.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd.valid()) continue;
      file_index[p.file] = uint32_t(warmer->fds.size());
      warmer->fds.push_back(std::move(fd));
    }
  }
  // Batches of about 4 MiB of slots, in file order, and the ranges of the
  // blob files each reads (frames less than 256 KiB apart share one).
  constexpr uint64_t kGap = 256 << 10;
  std::vector<std::vector<uint32_t>> batches;
  uint64_t batch_bytes = kPrefetchBatchBytes;
  for (uint32_t i : order) {
    if (batch_bytes >= kPrefetchBatchBytes) {
      batches.emplace_back();
      warmer->batches.emplace_back();
      batch_bytes = 0;
    }
    batches.back().push_back(slots[i]);
    batch_bytes += layout_.slots[slots[i]].bytes;
    const StoreView::ChunkPlace& p = places[i];
    auto f = file_index.find(p.file);
    if (f == file_index.end() || p.size == 0) continue;  // in the index, or unknown
    auto& ranges = warmer->batches.back();
    if (!ranges.empty() && ranges.back().file == f->second && p.offset >= ranges.back().begin &&
        p.offset <= ranges.back().end + kGap)
      ranges.back().end = std::max(ranges.back().end, p.offset + p.size);
    else
      ranges.push_back({f->second, p.offset, p.offset + p.size});
  }
  // A hint: without it (no thread to be had, or an error) the loaders read
  // everything themselves.
  try {
    std::thread([warmer] {
      try {
        warmer->Run(warmer);
      } catch (...) {
      }
    }).detach();
  } catch (...) {
  }
  for (auto& b : batches) SubmitPrefetch(std::move(b), /*slots=*/true, warmer);
  file_order_prefetches_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Model::Prefetch(const std::vector<uint32_t>& tensors) {
  uint64_t total = 0;
  for (uint32_t t : tensors)
    if (t < layout_.tensors.size()) total += manifest_->tensors[t].size;
  if (total < kBulkBytes) {
    PrefetchInBatches(tensors);
    return;
  }
  // A bulk load reads the chunks in the order they sit in the store's files,
  // with a warmer ahead of the loaders (docs/pager.md, "Cold loads"). Finding
  // that order takes a pass over the store's chunk index: a loader thread
  // plans it.
  RunInBackground([self = shared_from_this(), tensors] {
    if (!self->PrefetchInFileOrder(tensors)) self->PrefetchInBatches(tensors);
    return Status::OK();
  });
}

void Model::PrefetchInBatches(const std::vector<uint32_t>& tensors) {
  // Tensors go to the loaders in batches of about 4 MiB, so that the budget
  // lock is taken once per batch rather than once per (small) tensor.
  std::vector<uint32_t> batch;
  uint64_t batch_bytes = 0;
  for (uint32_t t : tensors) {
    if (t >= layout_.tensors.size()) continue;
    batch.push_back(t);
    batch_bytes += manifest_->tensors[t].size;
    if (batch_bytes >= kPrefetchBatchBytes) {
      SubmitPrefetch(std::move(batch), /*slots=*/false);
      batch.clear();
      batch_bytes = 0;
    }
  }
  if (!batch.empty()) SubmitPrefetch(std::move(batch), /*slots=*/false);
}

Status Model::WaitPrefetch() {
  std::unique_lock<std::mutex> l(prefetch_mu_);
  prefetch_cv_.wait(l, [&] { return prefetch_pending_ == 0; });
  Status st = prefetch_error_;
  prefetch_error_ = Status::OK();
  return st;
}

ModelStats Model::Stats() const {
  ModelStats s;
  s.acquires = acquires_.load();
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.slots_loaded = slots_loaded_.load();
  s.bytes_read = bytes_read_.load();
  s.bytes_decoded = bytes_decoded_.load();
  s.load_ns = load_ns_.load();
  s.file_order_prefetches = file_order_prefetches_.load();
  s.resident_bytes = seg_->ResidentBytes();
  const SegmentHeader* h = seg_->header();
  s.segment_loads = h->loads.load();
  s.segment_bytes = h->load_bytes.load();
  s.evictions = h->evictions.load();
  for (uint32_t t = 0; t < layout_.tensors.size(); t++)
    if (seg_->pin(seg_->me(), t).load(std::memory_order_relaxed))
      s.pinned_bytes += manifest_->tensors[t].size;
  return s;
}

}  // namespace pstore
