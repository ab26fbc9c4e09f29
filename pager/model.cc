// Model: acquire, release and copy tensors, and the model's counters.
#include <cstring>

#include "pager/model.h"

namespace pstore {

namespace {
// Where an empty tensor is: a valid, non-NULL pointer to no bytes, the same
// for Acquire and Address.
const uint8_t kEmptyTensor[1] = {0};
}  // namespace

std::shared_ptr<Model> Model::Open(ModelParts parts) {
  return std::shared_ptr<Model>(new Model(std::move(parts)));
}

Model::Model(ModelParts parts)
    : host_(parts.host),
      source_(std::move(parts.source)),
      label_(std::move(parts.label)),
      seg_(std::move(parts.segment)),
      tables_(std::move(parts.tables)),
      digest_(parts.digest),
      layout_(std::move(parts.layout)) {
  if (parts.check_shared) check_.reset(new CheckState[tables_.count()]());
}

Model::~Model() {
  // Background prefetches hold a shared_ptr to the model, so none run now.
}

int64_t Model::Find(std::string_view name) const {
  return tables_.Find(name);
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
  // Dropped on every way out but success, where Release drops it.
  TensorPin pin(&seg, t);
  if (!Resident(p)) {
    PSTORE_RETURN_IF_ERROR(LoadSlots(t));
    misses_.fetch_add(1, std::memory_order_relaxed);
  } else {
    hits_.fetch_add(1, std::memory_order_relaxed);
  }
  for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++)
    if (!seg.ref(s)) seg.ref(s) = 1;
  if (p.nslots == 0) {
    pin.Keep();
    return kEmptyTensor;
  }
  if (check_) {
    // Checked whenever this handle's holds on t go from none to one: between
    // holds, any process that may write the segment can change the bytes.
    std::lock_guard<std::mutex> l(check_mu_[t % kCheckStripes]);
    CheckState& cs = check_[t];
    if (!cs.checked) {
      PSTORE_RETURN_IF_ERROR(CheckBytes(t, seg.data() + p.offset));
      cs.checked = true;
    }
    cs.held++;
  }
  pin.Keep();
  return seg.data() + p.offset;
}

const uint8_t* Model::Address(uint32_t t) const {
  const TensorPlace& p = layout_.tensors[t];
  return p.nslots ? seg_->data() + p.offset : kEmptyTensor;
}

Status Model::CheckBytes(uint32_t t, const uint8_t* p) const {
  const TensorTable& m = tables_;
  for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
    const ChunkKey& key = m.chunk(m.first_chunk(t) + j);
    if (HashBytes(p + m.ChunkStart(t, j), size_t(m.ChunkBytes(t, j))) != key)
      return Status::Corruption(
          "tensor " + std::string(m.name(t)) + " chunk " + std::to_string(j) + " (key " +
          key.Hex() + ") in shared memory " + seg_->name() +
          " does not match its key: a process that may write the store's shared memory changed "
          "it, or the memory is damaged; nothing wrong was returned. Remove the segment with "
          "`pstore ps --gc-all` once no process uses it, and see who may write it "
          "(docs/operations.md, \"Group mode and trust\")");
  }
  return Status::OK();
}

Status Model::Release(uint32_t t) {
  if (t >= layout_.tensors.size()) return Status::InvalidArgument("tensor index out of range");
  if (check_) {
    // Before the pin goes: an acquire from here on checks again.
    std::lock_guard<std::mutex> l(check_mu_[t % kCheckStripes]);
    CheckState& cs = check_[t];
    if (cs.held > 0 && --cs.held == 0) cs.checked = false;
  }
  std::atomic<uint32_t>& pin = seg_->pin(seg_->me(), t);
  uint32_t v = pin.load();
  do {
    if (v == 0)
      return Status::InvalidArgument("release of tensor " + std::string(tables_.name(t)) +
                                     " without a matching acquire");
  } while (!pin.compare_exchange_weak(v, v - 1));
  if (v == 1) host_->PinDropped();
  return Status::OK();
}

Status Model::Copy(uint32_t t, void* dst, size_t cap) {
  if (t >= layout_.tensors.size()) return Status::InvalidArgument("tensor index out of range");
  const TensorTable& m = tables_;
  const uint64_t size = m.size(t);
  if (cap < size)
    return Status::InvalidArgument("buffer of " + std::to_string(cap) + " bytes is too small for " +
                                   std::string(m.name(t)) + " (" + std::to_string(size) +
                                   " bytes)");
  Segment& seg = *seg_;
  const TensorPlace& p = layout_.tensors[t];
  TensorPin pin(&seg, t);
  if (Resident(p)) {
    if (size) std::memcpy(dst, seg.data() + p.offset, size);
    pin.Drop();
    // The copy is this process's own: checked, it stays right. Bytes that
    // fail the check are decoded from the store instead, below.
    if (!check_ || CheckBytes(t, static_cast<const uint8_t*>(dst)).ok()) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      return Status::OK();
    }
  }
  pin.Drop();
  // Not resident: decode straight into the caller's buffer; shared memory is
  // left alone.
  std::unique_ptr<ChunkDecoder> decoder = host_->TakeDecoder();
  struct GiveBack {
    ModelHost* h;
    std::unique_ptr<ChunkDecoder>& d;
    ~GiveBack() { h->GiveDecoder(std::move(d)); }
  } give_back{host_, decoder};
  host_->loaders().Touch();
  uint8_t* out = static_cast<uint8_t*>(dst);
  FrameBatch frame;
  for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
    const ChunkKey& key = m.chunk(m.first_chunk(t) + j);
    const uint64_t len = m.ChunkBytes(t, j);
    uint64_t frame_bytes = 0;
    PSTORE_RETURN_IF_ERROR(ReadChunk(*source_, key, ChunkUse{label_, m.name(t), j}, decoder.get(),
                                     &frame, std::span<uint8_t>(out + m.ChunkStart(t, j), len),
                                     &frame_bytes));
    bytes_read_.fetch_add(frame_bytes, std::memory_order_relaxed);
    bytes_decoded_.fetch_add(len, std::memory_order_relaxed);
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
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
  s.frames_mapped = frames_mapped_.load();
  s.resident_bytes = seg_->ResidentBytes();
  const SegmentHeader* h = seg_->header();
  s.segment_loads = h->loads.load();
  s.segment_bytes = h->load_bytes.load();
  s.evictions = h->evictions.load();
  for (uint32_t t = 0; t < layout_.tensors.size(); t++)
    if (seg_->pin(seg_->me(), t).load(std::memory_order_relaxed)) s.pinned_bytes += tables_.size(t);
  return s;
}

}  // namespace pstore
