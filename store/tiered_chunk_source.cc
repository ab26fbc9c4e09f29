// Local store, spool, remote: see store/tiered_chunk_source.h.
#include "store/tiered_chunk_source.h"

#include <pthread.h>

#include <functional>
#include <system_error>
#include <unordered_set>

#include "codec/chunk_codec.h"
#include "store/chunk_read.h"

namespace pstore {

TieredChunkSource::TieredChunkSource(ChunkSource* local, const LazyCache* cache,
                                     ChunkSource* remote, std::shared_ptr<const Manifest> manifest,
                                     std::string model)
    : local_(local),
      cache_(cache),
      remote_(remote),
      manifest_(std::move(manifest)),
      model_(std::move(model)) {
  const Manifest& m = *manifest_;
  for (uint32_t t = 0; t < m.tensors.size(); ++t) {
    const ManifestTensor& mt = m.tensors[t];
    const uint64_t n = m.ChunkCount(mt);
    for (uint64_t j = 0; j < n; ++j)
      places_.emplace(m.chunks[mt.first_chunk + j], Place{t, j, m.ChunkBytes(mt, j)});
  }
}

// A thread's claim on the keys it fetches, ended by Release or, if an
// exception leaves the read first, by the destructor: no key stays claimed
// (every later load of it would wait for good).
class TieredChunkSource::Claim {
 public:
  Claim(TieredChunkSource* tier, const std::vector<ChunkKey>* keys) : tier_(tier), keys_(keys) {}
  ~Claim() {
    if (tier_ == nullptr) return;
    try {
      tier_->Release(*keys_,
                     Status::Internal("the fetch of this chunk from " + tier_->remote_->Describe() +
                                      " was cut short by an exception; retry"));
    } catch (...) {
      tier_->Release(*keys_, Status::OK());  // ends the claims, allocating nothing
    }
  }
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  void Release(const Status& st) {
    tier_->Release(*keys_, st);  // if it throws, the destructor ends the claims
    tier_ = nullptr;
  }

 private:
  TieredChunkSource* tier_;
  const std::vector<ChunkKey>* keys_;
};

TieredChunkSource::~TieredChunkSource() {
  std::thread spooler;
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    spooler.swap(spooler_);
  }
  spool_cv_.notify_all();
  if (spooler.joinable()) spooler.join();
  // Frames the background thread checked but could not spool (the spool
  // full or unwritable then, memory short) get one more try now that no
  // read will take them from memory.
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [key, ahead] : pending_) {
    if (!ahead.frame) continue;  // found wrong: never kept
    try {
      const Place& p = places_.at(key);
      if (Check(key, p, *ahead.frame).ok()) Keep(key, p, *ahead.frame);
    } catch (...) {  // a destructor throws nothing: left to the next fetch
    }
  }
}

bool TieredChunkSource::Defer(const ChunkKey& key, std::string* frame) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (pending_bytes_ + frame->size() > kPendingBytes) return false;
    if (!spooling_) {
      // One that ended when its queue stayed empty has let go of mu_.
      if (spooler_.joinable()) spooler_.join();
      // A thread that cannot start (a pids limit reached) leaves the frame
      // to the fetching thread, like a full queue.
      try {
        spooler_ = std::thread([this] { SpoolAhead(); });
      } catch (const std::system_error&) {
        return false;
      }
      spooling_ = true;
    }
    pending_bytes_ += frame->size();
    auto& ahead = pending_[key];
    if (ahead.frame) pending_bytes_ -= ahead.frame->size();
    ahead = Ahead{std::make_shared<std::string>(std::move(*frame)), Status::OK()};
    queue_.push_back(key);
  }
  spool_cv_.notify_one();
  return true;
}

void TieredChunkSource::SpoolAhead() {
  // Named, so that it can be told apart in ps, top and the tests.
  pthread_setname_np(pthread_self(), kSpoolerThreadName);
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    // Ends when stopped, or idle for kSpoolerIdle (the next Defer starts
    // another), with everything queued done.
    spool_cv_.wait_for(l, kSpoolerIdle, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) {
      spooling_ = false;
      return;
    }
    const ChunkKey key = queue_.front();
    queue_.pop_front();
    auto it = pending_.find(key);
    if (it == pending_.end() || !it->second.frame) continue;  // a read took it
    std::shared_ptr<std::string> frame = it->second.frame;
    l.unlock();
    // An exception (out of memory in the check's scratch, the spool's copy
    // or a message) leaves the frame as not kept: an exception out of this
    // thread would end the process.
    bool checked = false, kept = false;
    Status bad;  // the error for the read that wants the frame, if it is wrong
    try {
      const Place& p = places_.at(key);
      Status st = Check(key, p, *frame);
      if (st.ok()) {
        kept = Keep(key, p, *frame);
      } else if (st.IsCorruption()) {
        bad = RemoteMismatch(key, p, st);
      }
      // Anything else (out of memory) says nothing of the frame: it stays
      // unchecked, for the read that wants it.
      checked = st.ok() || st.IsCorruption();
    } catch (...) {
    }
    l.lock();
    it = pending_.find(key);
    if (it == pending_.end() || it->second.frame != frame) continue;  // a read took it meanwhile
    if (!checked || (bad.ok() && !kept)) continue;  // not spooled: stays for this process's reads
    pending_bytes_ -= frame->size();
    if (kept) {
      pending_.erase(it);
      ahead_spooled_.fetch_add(1, std::memory_order_relaxed);
    } else {
      it->second = Ahead{nullptr, std::move(bad)};
    }
  }
}

std::string TieredChunkSource::Describe() const {
  return "the local store, then " + remote_->Describe();
}

Result<const TieredChunkSource::Place*> TieredChunkSource::Find(const ChunkKey& key) const {
  auto it = places_.find(key);
  if (it == places_.end()) {
    return Status::InvalidArgument("chunk " + key.Hex() + " is not a chunk of model " + model_);
  }
  return &it->second;
}

std::string TieredChunkSource::ChunkName(const ChunkKey& key, const Place& p) const {
  return "model " + model_ + ", tensor " + manifest_->tensors[p.tensor].name + ", chunk " +
         std::to_string(p.index) + " (" + key.Hex() + ")";
}

Status TieredChunkSource::Check(const ChunkKey& key, const Place& p, std::string_view frame) {
  thread_local ChunkDecoder decoder;
  thread_local std::vector<uint8_t> raw;
  raw.resize(p.raw_len);
  check_decodes_.fetch_add(1, std::memory_order_relaxed);
  return decoder.Decode(frame, key, raw);
}

Status TieredChunkSource::RemoteMismatch(const ChunkKey& key, const Place& p,
                                         const Status& st) const {
  // Only a frame that does not decode to its key is the remote's damage; a
  // decoder that ran out of memory says nothing about the frame.
  if (!st.IsCorruption()) return st.WithContext("checking " + ChunkName(key, p));
  return RemoteFrameMismatch(*remote_, ChunkName(key, p), key, st, "it was neither used nor kept");
}

bool TieredChunkSource::Keep(const ChunkKey& key, const Place& p, std::string_view frame) {
  if (cache_->PutFrame(key, p.raw_len, frame).ok()) return true;
  spool_failures_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

Result<std::shared_ptr<std::string>> TieredChunkSource::TakePending(const ChunkKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = pending_.find(key);
  if (it == pending_.end()) return std::shared_ptr<std::string>();
  Ahead ahead = std::move(it->second);
  pending_.erase(it);
  if (!ahead.frame) return ahead.bad;
  pending_bytes_ -= ahead.frame->size();
  return std::move(ahead.frame);
}

Result<std::vector<std::optional<std::string>>> TieredChunkSource::Read(
    std::span<const ChunkKey> keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  std::vector<const Place*> places(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    PSTORE_ASSIGN_OR_RETURN(places[i], Find(keys[i]));
  }
  // 1. The local store.
  if (local_ != nullptr && !keys.empty()) {
    PSTORE_ASSIGN_OR_RETURN(out, local_->Read(keys));
  }
  // 2. The spool; 3. the remote, each key fetched by one thread at a time.
  std::vector<size_t> want;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (out[i]) {
      local_chunks_.fetch_add(1, std::memory_order_relaxed);
    } else {
      want.push_back(i);
    }
  }
  PSTORE_RETURN_IF_ERROR(FromSpool(keys, &want, &out));
  for (bool first = true; !want.empty(); first = false) {
    std::vector<ChunkKey> mine, theirs;
    std::unordered_map<ChunkKey, std::optional<std::string>, ChunkKeyHasher> got;
    const size_t own = ClaimOrWait(keys, want, first, &mine, &theirs);
    Claim claim(this, &mine);
    if (!mine.empty()) {
      Status st = Fetch(mine, own, /*defer=*/false, &got);
      claim.Release(st);
      PSTORE_RETURN_IF_ERROR(st);
    }
    std::vector<size_t> rest;
    for (size_t i : want) {
      auto it = got.find(keys[i]);
      if (it != got.end() && it->second) {
        out[i] = *it->second;
      } else {
        rest.push_back(i);
      }
    }
    // What other threads fetched is in the spool now; if their fetch failed,
    // so does this read (rather than wait out the same timeout again).
    PSTORE_RETURN_IF_ERROR(WaitFor(theirs));
    PSTORE_RETURN_IF_ERROR(FromSpool(keys, &rest, &out));
    PSTORE_RETURN_IF_ERROR(CheckClaimed(keys, mine, own, rest));
    want = std::move(rest);
  }
  return out;
}

Status TieredChunkSource::FromSpool(std::span<const ChunkKey> keys, std::vector<size_t>* want,
                                    const std::function<Status(size_t, std::string_view)>& check,
                                    const std::function<void(size_t, std::string_view)>& use) {
  std::vector<size_t> rest;
  for (size_t i : *want) {
    const Place& p = places_.at(keys[i]);
    PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<std::string> ahead, TakePending(keys[i]));
    if (ahead) {
      Status st = check(i, *ahead);
      if (!st.ok()) return RemoteMismatch(keys[i], p, st);
      Keep(keys[i], p, *ahead);
      // Never moved from: the background thread may still be reading it.
      use(i, *ahead);
      continue;
    }
    PSTORE_ASSIGN_OR_RETURN(std::optional<SpooledFrame> f, cache_->GetFrame(keys[i]));
    Status st = f && f->raw_len == p.raw_len ? check(i, f->frame) : Status::OK();
    if (f && f->raw_len == p.raw_len && st.ok()) {
      use(i, f->frame);
      spool_chunks_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!st.ok() && !st.IsCorruption()) return st;  // out of memory: the frame may be sound
    if (f) (void)cache_->RemoveFrame(keys[i]);      // damaged: fetched again
    rest.push_back(i);
  }
  *want = std::move(rest);
  return Status::OK();
}

Status TieredChunkSource::FromSpool(std::span<const ChunkKey> keys, std::vector<size_t>* want,
                                    std::vector<std::optional<std::string>>* out) {
  return FromSpool(
      keys, want,
      [&](size_t i, std::string_view frame) { return Check(keys[i], places_.at(keys[i]), frame); },
      [&](size_t i, std::string_view frame) { (*out)[i].emplace(frame); });
}

Status TieredChunkSource::DecodeFromSpool(std::span<const ChunkKey> keys,
                                          std::span<const std::span<uint8_t>> outs,
                                          ChunkDecoder* decoder, std::vector<size_t>* want,
                                          DecodedChunks* result) {
  return FromSpool(
      keys, want,
      [&](size_t i, std::string_view frame) { return decoder->Decode(frame, keys[i], outs[i]); },
      [&](size_t i, std::string_view frame) { result->frame_bytes[i] = frame.size(); });
}

Status TieredChunkSource::CheckClaimed(std::span<const ChunkKey> keys,
                                       const std::vector<ChunkKey>& mine, size_t own,
                                       const std::vector<size_t>& rest) const {
  const std::unordered_set<ChunkKey, ChunkKeyHasher> claimed(mine.begin(),
                                                             mine.begin() + long(own));
  for (size_t i : rest) {
    if (claimed.count(keys[i])) {
      return Status::Internal("lazy read of " + ChunkName(keys[i], places_.at(keys[i])) +
                              ": fetched from " + remote_->Describe() +
                              " but neither kept nor found in the spool " + cache_->dir() +
                              " (check the spool folder is writable and not full, then retry)");
    }
  }
  return Status::OK();
}

Status TieredChunkSource::ReadDecoded(std::span<const ChunkKey> keys,
                                      std::span<const std::span<uint8_t>> outs,
                                      ChunkDecoder* decoder, FrameBatch* batch,
                                      DecodedChunks* result) {
  result->Reset(keys.size());
  Status st = DecodeTiers(keys, outs, decoder, batch, result);
  return st.ok() ? st : result->Fail(keys.size(), st);
}

Status TieredChunkSource::DecodeTiers(std::span<const ChunkKey> keys,
                                      std::span<const std::span<uint8_t>> outs,
                                      ChunkDecoder* decoder, FrameBatch* batch,
                                      DecodedChunks* result) {
  for (const ChunkKey& k : keys) PSTORE_RETURN_IF_ERROR(Find(k).status());
  // 1. The local store, decoded (and checked) by the caller's decoder, in
  // the local store's runs.
  std::vector<size_t> want;
  if (local_ != nullptr && !keys.empty()) {
    PSTORE_RETURN_IF_ERROR(ReadDecodedInRuns(*local_, keys, outs, decoder, batch, result, &want));
    local_chunks_.fetch_add(keys.size() - want.size(), std::memory_order_relaxed);
  } else {
    for (size_t i = 0; i < keys.size(); ++i) want.push_back(i);
  }
  // 2. Read ahead or spooled; 3. the remote, as in Read, but each frame
  // fetched for this read is decoded once, into outs, and spooled after.
  PSTORE_RETURN_IF_ERROR(DecodeFromSpool(keys, outs, decoder, &want, result));
  for (bool first = true; !want.empty(); first = false) {
    std::vector<ChunkKey> mine, theirs;
    std::unordered_map<ChunkKey, std::optional<std::string>, ChunkKeyHasher> got;
    const size_t own = ClaimOrWait(keys, want, first, &mine, &theirs);
    Claim claim(this, &mine);
    std::vector<size_t> rest;
    if (!mine.empty()) {
      Status st = Fetch(mine, own, /*defer=*/true, &got);
      for (size_t i : want) {
        auto it = got.find(keys[i]);
        if (!st.ok() || it == got.end()) {
          rest.push_back(i);
          continue;
        }
        const Place& p = places_.at(keys[i]);
        st = decoder->Decode(*it->second, keys[i], outs[i]);
        if (!st.ok()) st = RemoteMismatch(keys[i], p, st);
        result->frame_bytes[i] = it->second->size();
      }
      // Spooled before the claims end, so that the threads waiting for
      // these keys find them there.
      if (st.ok())
        for (const auto& [key, frame] : got) Keep(key, places_.at(key), *frame);
      claim.Release(st);
      PSTORE_RETURN_IF_ERROR(st);
    } else {
      rest = want;
    }
    PSTORE_RETURN_IF_ERROR(WaitFor(theirs));
    PSTORE_RETURN_IF_ERROR(DecodeFromSpool(keys, outs, decoder, &rest, result));
    PSTORE_RETURN_IF_ERROR(CheckClaimed(keys, mine, own, rest));
    want = std::move(rest);
  }
  return Status::OK();
}

size_t TieredChunkSource::ClaimOrWait(std::span<const ChunkKey> keys,
                                      const std::vector<size_t>& want, bool first,
                                      std::vector<ChunkKey>* mine, std::vector<ChunkKey>* theirs) {
  size_t own = 0;
  std::unordered_set<ChunkKey, ChunkKeyHasher> asked;
  std::vector<uint32_t> tensors;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i : want) {
      const ChunkKey& k = keys[i];
      if (!asked.insert(k).second) continue;
      if (fetching_.count(k) || (first && fetched_.count(k) && !failed_.count(k))) {
        theirs->push_back(k);
      } else {
        fetching_.insert(k);
        failed_.erase(k);  // tried again
        mine->push_back(k);
        tensors.push_back(places_.at(k).tensor);
      }
    }
    own = mine->size();
    // Read-ahead: the rest of the tensors asked for, which their readers
    // want next, in the same round trip.
    const Manifest& m = *manifest_;
    for (uint32_t t : tensors) {
      const ManifestTensor& mt = m.tensors[t];
      for (uint64_t j = 0; j < m.ChunkCount(mt) && mine->size() < kReadAhead; ++j) {
        const ChunkKey& k = m.chunks[mt.first_chunk + j];
        if (asked.count(k) || fetching_.count(k) || fetched_.count(k)) continue;
        asked.insert(k);
        fetching_.insert(k);
        failed_.erase(k);
        mine->push_back(k);
      }
    }
  }
  return own;
}

void TieredChunkSource::Release(const std::vector<ChunkKey>& keys, const Status& st) {
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const ChunkKey& k : keys) {
      fetching_.erase(k);
      if (!st.ok()) failed_[k] = st;
    }
  }
  fetched_cv_.notify_all();
}

Status TieredChunkSource::WaitFor(const std::vector<ChunkKey>& keys) {
  std::unique_lock<std::mutex> l(mu_);
  for (const ChunkKey& k : keys) {
    fetched_cv_.wait(l, [&] { return !fetching_.count(k); });
    auto it = failed_.find(k);
    if (it != failed_.end()) return it->second;
  }
  return Status::OK();
}

Status TieredChunkSource::Fetch(
    const std::vector<ChunkKey>& keys, size_t own, bool defer,
    std::unordered_map<ChunkKey, std::optional<std::string>, ChunkKeyHasher>* got) {
  // The caller's own keys were missed by the local store and the spool, so
  // they are fetched whatever a lookup says (a chunk record without its frame
  // answers Contains but not Read). Read-ahead keys the host has after all
  // are not fetched.
  std::vector<ChunkKey> fetch(keys.begin(), keys.begin() + long(own));
  std::vector<ChunkKey> ahead(keys.begin() + long(own), keys.end());
  std::vector<bool> have(ahead.size(), false);
  if (local_ != nullptr && !ahead.empty()) {
    PSTORE_ASSIGN_OR_RETURN(have, local_->Contains(ahead));
  }
  for (size_t j = 0; j < ahead.size(); ++j)
    if (!have[j] && !cache_->HasFrame(ahead[j])) fetch.push_back(ahead[j]);
  if (fetch.empty()) return Status::OK();
  PSTORE_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> frames, remote_->Read(fetch));
  for (size_t j = 0; j < fetch.size(); ++j) {
    const Place& p = places_.at(fetch[j]);
    if (!frames[j]) {
      return RemoteFrameMissing(*remote_, ChunkName(fetch[j], p), fetch[j]);
    }
    remote_chunks_.fetch_add(1, std::memory_order_relaxed);
    remote_bytes_.fetch_add(frames[j]->size(), std::memory_order_relaxed);
    if (defer && j < own) {  // the caller decodes it, and that checks it
      {
        std::lock_guard<std::mutex> l(mu_);
        fetched_.insert(fetch[j]);
      }
      (*got)[fetch[j]] = std::move(frames[j]);
      continue;
    }
    if (defer) {  // read ahead: checked and spooled in the background, if there is room
      {
        std::lock_guard<std::mutex> l(mu_);
        fetched_.insert(fetch[j]);
      }
      if (Defer(fetch[j], &*frames[j])) continue;
    }
    Status st = Check(fetch[j], p, *frames[j]);
    if (!st.ok()) return RemoteMismatch(fetch[j], p, st);
    Keep(fetch[j], p, *frames[j]);
    {
      std::lock_guard<std::mutex> l(mu_);
      fetched_.insert(fetch[j]);
    }
    if (j < own) (*got)[fetch[j]] = std::move(frames[j]);
  }
  return Status::OK();
}

Result<std::vector<bool>> TieredChunkSource::Contains(std::span<const ChunkKey> keys) {
  std::vector<bool> out(keys.size(), false);
  if (local_ != nullptr && !keys.empty()) {
    PSTORE_ASSIGN_OR_RETURN(out, local_->Contains(keys));
  }
  std::vector<ChunkKey> ask;
  std::vector<size_t> at;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (out[i]) continue;
    PSTORE_ASSIGN_OR_RETURN(std::optional<SpooledFrame> f, cache_->GetFrame(keys[i]));
    if (f) {
      out[i] = true;
    } else {
      ask.push_back(keys[i]);
      at.push_back(i);
    }
  }
  if (ask.empty()) return out;
  PSTORE_ASSIGN_OR_RETURN(std::vector<bool> remote, remote_->Contains(ask));
  for (size_t j = 0; j < ask.size(); ++j) out[at[j]] = remote[j];
  return out;
}

Status TieredChunkSource::Write(std::span<const ChunkFrameRef> frames) {
  for (const ChunkFrameRef& f : frames) {
    PSTORE_ASSIGN_OR_RETURN(const Place* p, Find(f.key));
    Status st = Check(f.key, *p, f.frame);
    if (!st.ok()) {
      if (!st.IsCorruption()) return st.WithContext("checking " + ChunkName(f.key, *p));
      return Status::Corruption("not keeping " + ChunkName(f.key, *p) + ": " + st.message());
    }
  }
  for (const ChunkFrameRef& f : frames) {
    PSTORE_RETURN_IF_ERROR(cache_->PutFrame(f.key, f.raw_len, f.frame));
  }
  return Status::OK();
}

TieredStats TieredChunkSource::stats() const {
  TieredStats s;
  s.local_chunks = local_chunks_.load(std::memory_order_relaxed);
  s.spool_chunks = spool_chunks_.load(std::memory_order_relaxed);
  s.remote_chunks = remote_chunks_.load(std::memory_order_relaxed);
  s.remote_bytes = remote_bytes_.load(std::memory_order_relaxed);
  s.spool_failures = spool_failures_.load(std::memory_order_relaxed);
  s.check_decodes = check_decodes_.load(std::memory_order_relaxed);
  s.ahead_spooled = ahead_spooled_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace pstore
