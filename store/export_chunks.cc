// ExportChunks: see store/export_chunks.h.
#include "store/export_chunks.h"

#include <algorithm>
#include <exception>
#include <new>

#include "store/parallel.h"

namespace pstore {

ExportChunks::ExportChunks(const StoreView& view, const Manifest& m, std::string label,
                           const ExportOptions& options)
    : m_(m),
      label_(std::move(label)),
      options_(options),
      source_(view.db(), /*writable=*/false, "the store"),
      buf_(m.MaxChunkLen()),
      total_(m.TotalBytes()),
      last_report_(std::chrono::steady_clock::now()) {
  Plan();
  StartReaders(options.threads > 0 ? options.threads : DefaultThreads());
}

ExportChunks::~ExportChunks() {
  StopReaders();
}

void ExportChunks::Plan() {
  uint64_t in_window = 0;
  for (const ManifestFile& f : m_.files) {
    for (size_t ti : f.tensors) {
      if (ti >= m_.tensors.size()) continue;  // a checked manifest has none such
      const ManifestTensor& t = m_.tensors[ti];
      for (uint64_t j = 0; j < m_.ChunkCount(t); j++) {
        const uint64_t n = m_.ChunkBytes(t, j);
        if (windows_.empty() || (in_window > 0 && in_window + n > kWindowBytes)) {
          windows_.push_back(steps_.size());
          in_window = 0;
        }
        steps_.push_back(Step{ti, j, in_window});
        in_window += n;
        window_bytes_ = std::max(window_bytes_, in_window);
      }
    }
  }
  windows_.push_back(steps_.size());
}

void ExportChunks::StartReaders(int threads) {
  const size_t windows = windows_.size() - 1;
  if (windows == 0) return;
  threads = int(std::min<size_t>({size_t(threads), size_t(kMaxReaders), windows}));
  // One slot more than readers, so that the writer writes one window while
  // every reader decodes another.
  slots_.resize(size_t(threads) + 1);
  readers_.reserve(size_t(threads));
  try {
    for (int i = 0; i < threads; i++) readers_.emplace_back([this] { ReaderLoop(); });
  } catch (const std::exception&) {
    // Out of threads or memory: fewer readers (or none, and every chunk
    // read alone).
  }
  in_order_ = !readers_.empty();
}

void ExportChunks::StopReaders() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& r : readers_) r.join();
  readers_.clear();
  in_order_ = false;
}

ChunkUse ExportChunks::Use(const Step& s) const {
  return ChunkUse{label_, m_.tensors[s.tensor].name, s.chunk};
}

void ExportChunks::ReaderLoop() {
  ChunkDecoder decoder;
  FrameBatch batch;
  std::vector<ChunkKey> keys;
  std::vector<std::span<uint8_t>> outs;
  DecodedChunks result;
  const size_t windows = windows_.size() - 1;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] {
      return stop_ || next_window_ >= windows || next_window_ < consumed_ + slots_.size();
    });
    if (stop_ || next_window_ >= windows) return;
    const size_t w = next_window_++;
    Slot* slot = &slots_[w % slots_.size()];
    l.unlock();
    size_t bad = windows_[w];  // the step an error is the writer's at
    Status st;
    try {
      if (slot->bytes.size() < window_bytes_) slot->bytes.resize(window_bytes_);
      st = DecodeWindow(w, slot, &decoder, &batch, &keys, &outs, &result, &bad);
    } catch (const std::bad_alloc&) {
      st = Status::NoMemory("out of memory for export's read-ahead of model " + label_);
    } catch (const std::exception& e) {
      st = Status::Internal("export's read-ahead of model " + label_ + " failed: " + e.what());
    }
    l.lock();
    slot->status = std::move(st);
    slot->bad_step = slot->status.ok() ? SIZE_MAX : bad;
    slot->window = w;
    cv_.notify_all();
  }
}

Status ExportChunks::DecodeWindow(size_t w, Slot* slot, ChunkDecoder* decoder, FrameBatch* batch,
                                  std::vector<ChunkKey>* keys,
                                  std::vector<std::span<uint8_t>>* outs, DecodedChunks* result,
                                  size_t* bad) {
  const size_t begin = windows_[w], end = windows_[w + 1];
  keys->clear();
  outs->clear();
  for (size_t i = begin; i < end; i++) {
    const Step& s = steps_[i];
    const ManifestTensor& t = m_.tensors[s.tensor];
    keys->push_back(m_.chunks[t.first_chunk + s.chunk]);
    outs->emplace_back(slot->bytes.data() + s.offset, size_t(m_.ChunkBytes(t, s.chunk)));
  }
  result->Reset(keys->size());
  Status st = source_.ReadDecoded(*keys, *outs, decoder, batch, result);
  for (size_t k = 0; k < keys->size(); k++) {
    const Status& e = st.ok() ? result->status[k] : st;
    if (e.ok()) continue;
    *bad = begin + k;
    return ChunkUseError(e, Use(steps_[begin + k]), (*keys)[k]);
  }
  return Status::OK();
}

Result<const uint8_t*> ExportChunks::Ahead(size_t* end) {
  if (cursor_ == windows_[window_ + 1]) {
    // The writer is done with the last window: its slot goes to a reader.
    {
      std::lock_guard<std::mutex> l(mu_);
      consumed_++;
    }
    cv_.notify_all();
    window_++;
  }
  Slot* slot = &slots_[window_ % slots_.size()];
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return slot->window == window_; });
    // The chunks before a failed one are written first, so that what the
    // writer meets on its way (a full disk, a stop) is what is reported.
    if (cursor_ == slot->bad_step) return slot->status;
    *end = std::min(windows_[window_ + 1], slot->bad_step);
  }
  return slot->bytes.data() + steps_[cursor_].offset;
}

Status ExportChunks::Alone(const ManifestTensor& t, uint64_t j, std::span<uint8_t> out) {
  read_alone_++;
  return ReadChunk(source_, m_.chunks[t.first_chunk + j], ChunkUse{label_, t.name, j}, &decoder_,
                   &batch_, out);
}

Status ExportChunks::Report(uint64_t bytes) {
  done_ += bytes;
  if (options_.progress &&
      std::chrono::steady_clock::now() - last_report_ > std::chrono::milliseconds(100)) {
    last_report_ = std::chrono::steady_clock::now();
    if (!options_.progress(done_, total_))
      return Status::Aborted("export stopped at the caller's request");
  }
  return Status::OK();
}

Status ExportChunks::Write(const ManifestTensor& t,
                           const std::function<Status(const uint8_t*, size_t)>& sink) {
  const size_t ti = size_t(&t - m_.tensors.data());
  const uint64_t chunks = m_.ChunkCount(t);
  for (uint64_t j = 0; j < chunks;) {
    if (in_order_ &&
        !(cursor_ < steps_.size() && steps_[cursor_].tensor == ti && steps_[cursor_].chunk == j))
      StopReaders();  // asked out of order: the windows are of no use
    if (!in_order_) {
      const size_t n = size_t(m_.ChunkBytes(t, j));
      std::span<uint8_t> out(buf_.data(), n);
      PSTORE_RETURN_IF_ERROR(Alone(t, j, out));
      PSTORE_RETURN_IF_ERROR(sink(out.data(), out.size()));
      PSTORE_RETURN_IF_ERROR(Report(n));
      j++;
      continue;
    }
    // The tensor's chunks from here to the end of this window lie together
    // in its buffer: one call of the sink for them (a large one is written
    // without another copy).
    size_t end = 0;
    PSTORE_ASSIGN_OR_RETURN(const uint8_t* bytes, Ahead(&end));
    size_t n = 0;
    do {
      n += size_t(m_.ChunkBytes(t, j));
      cursor_++;
      read_ahead_++;
      j++;
    } while (j < chunks && cursor_ < end);
    PSTORE_RETURN_IF_ERROR(sink(bytes, n));
    PSTORE_RETURN_IF_ERROR(Report(n));
  }
  return Status::OK();
}

void ExportChunks::Finish() {
  if (options_.progress) options_.progress(total_, total_);
}

}  // namespace pstore
