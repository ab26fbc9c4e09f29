// Model: prefetching in the background, in batches of tensors or, for a bulk
// load, in the order the chunks sit in the store's files with a warmer ahead.
#include <fcntl.h>

#include <algorithm>
#include <thread>

#include "pager/model.h"
#include "pager/placed_frames.h"

namespace pstore {

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
    host_->loaders().Submit([work = std::move(work), finish] { finish(Guarded(work)); });
  } catch (...) {
    finish(Status::NoSpace("out of memory while queueing a prefetch"));
  }
}

void Model::SubmitPrefetch(std::vector<uint32_t> items, bool slots, std::shared_ptr<Warmer> warmer,
                           std::shared_ptr<const PlacedFrames> placed) {
  // The task holds the model (self): a prefetch outlives the caller's handle.
  RunInBackground([self = shared_from_this(), items = std::move(items), slots, warmer, placed] {
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
    SlotClaims mine(self->seg_.get());
    Status st = slots ? self->ClaimSlots(items, nullptr, &mine)
                      : self->ClaimAndReserve(items.data(), items.size(), nullptr, &mine);
    return st.ok() ? self->FillSlots(&mine, 0, mine.size(), placed.get()) : st;
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
  if (layout_.data_bytes > host_->budget() / 2) return false;
  std::vector<ChunkKey> keys(slots.size());
  for (size_t i = 0; i < slots.size(); i++)
    keys[i] = tables_.chunk(layout_.pieces[layout_.slots[slots[i]].first_piece].chunk);
  auto planned = source_->PlanSequentialRead(keys);
  if (!planned.ok() || !*planned) return false;
  const ReadPlan& plan = **planned;
  // The files the load reads, opened for the warmer (one that cannot be
  // opened is not warmed).
  auto warmer = std::make_shared<Warmer>();
  std::vector<uint32_t> file_index(plan.files.size(), ReadPlan::Place::kNoFile);
  for (size_t f = 0; f < plan.files.size(); f++) {
    UniqueFd fd(::open(plan.files[f].c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) continue;
    file_index[f] = uint32_t(warmer->fds.size());
    warmer->fds.push_back(std::move(fd));
  }
  // The loaders decode the frames of one-chunk slots straight from the
  // files, where the plan placed them.
  std::vector<bool> single(layout_.slots.size());
  for (uint32_t s : slots) single[s] = layout_.slots[s].npieces == 1;
  auto placed = std::make_shared<const PlacedFrames>(plan, slots, single, layout_.slots.size());
  if (placed->empty()) placed.reset();
  // Batches of about 4 MiB of slots, in file order, and the ranges of the
  // blob files each reads (frames less than 256 KiB apart share one).
  constexpr uint64_t kGap = 256 << 10;
  std::vector<std::vector<uint32_t>> batches;
  uint64_t batch_bytes = kPrefetchBatchBytes;
  for (uint32_t i : plan.order) {
    if (batch_bytes >= kPrefetchBatchBytes) {
      batches.emplace_back();
      warmer->batches.emplace_back();
      batch_bytes = 0;
    }
    batches.back().push_back(slots[i]);
    batch_bytes += layout_.slots[slots[i]].bytes;
    const ReadPlan::Place& p = plan.places[i];
    if (p.file == ReadPlan::Place::kNoFile || file_index[p.file] == ReadPlan::Place::kNoFile)
      continue;  // not in a file of its own, or not opened
    const uint32_t f = file_index[p.file];
    auto& ranges = warmer->batches.back();
    if (!ranges.empty() && ranges.back().file == f && p.offset >= ranges.back().begin &&
        p.offset <= ranges.back().end + kGap)
      ranges.back().end = std::max(ranges.back().end, p.offset + p.size);
    else
      ranges.push_back({f, p.offset, p.offset + p.size});
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
  for (auto& b : batches) SubmitPrefetch(std::move(b), /*slots=*/true, warmer, placed);
  file_order_prefetches_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Model::Prefetch(const std::vector<uint32_t>& tensors) {
  uint64_t total = 0;
  for (uint32_t t : tensors)
    if (t < layout_.tensors.size()) total += tables_.size(t);
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
    batch_bytes += tables_.size(t);
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

}  // namespace pstore
