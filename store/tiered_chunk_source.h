// TieredChunkSource: the chunks of one lazily opened model, from the local
// store first, then the host's spool (store/lazy_cache.h), then a remote.
//
// Every frame fetched from the remote is decoded and checked against its key
// before it is handed on or kept: a frame that does not match (an object
// overwritten on the remote) is a Corruption error naming the model, the
// tensor, the chunk's index in it and the remote, and is neither handed on
// nor spooled. A checked frame is written through to the spool, so that this
// host never fetches it again (a restart or another process finds it there).
// Spooled frames are checked again when read: one that does not match is
// removed and fetched again.
//
// Decoding once: ReadDecoded (the pager's loads) decodes each frame straight
// into the reader's buffer, and that decode is the check; the frame is
// spooled after it succeeds. It reads the local store in the runs of
// kDecodeRunBytes a local store's ReadDecoded reads in (store/chunk_source.h);
// fetches from the remote are not split (docs/pager.md, "Memory a loader
// keeps"). Read returns frames, so it decodes each one
// into scratch to check it.
//
// Frames read ahead by ReadDecoded wait in memory, unchecked, up to
// kPendingBytes, and are queued for a background thread of the tier (started
// on need, ending when idle for kSpoolerIdle) that decodes each into scratch
// to check it, spools it and drops it from memory, so other processes and a
// restart find it in the spool soon after it arrived. A read that asks for a
// frame still waiting takes it from memory (decoded into its buffer, checked
// there and spooled) rather than reading it back; a frame the background
// check found wrong is dropped and the read that asks for it fails. Beyond
// kPendingBytes, or if the thread cannot start, frames are checked and
// spooled by the fetching thread. A frame the background thread could not
// spool (or that met an exception there) stays in memory for this process's
// reads. The destructor waits until the background thread has spooled what is
// queued, then tries once more to spool what it could not.
//
// The model's manifest gives each key its raw length and its place (tensor,
// index) for messages; a key the manifest does not hold is InvalidArgument.
//
// Read-ahead: a fetch of some chunks of a tensor also fetches the tensor's
// other chunks the host lacks (up to kReadAhead a round trip), since whoever
// acquires a tensor wants all of it. Within a process each key is fetched by
// one thread at a time; the others wait for it and read the spool.
//
// Writes go to the spool (each frame checked first).
//
// Thread-safety: all methods may be called from many threads at once; the
// sources, the cache and the manifest must outlive the tier.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "store/chunk_source.h"
#include "store/lazy_cache.h"
#include "store/manifest.h"

namespace pstore {

struct TieredStats {
  uint64_t local_chunks = 0;    // frames found in the local store
  uint64_t spool_chunks = 0;    // frames found in the spool
  uint64_t remote_chunks = 0;   // frames fetched from the remote
  uint64_t remote_bytes = 0;    // their bytes
  uint64_t spool_failures = 0;  // fetched frames that could not be spooled
  uint64_t check_decodes = 0;   // frames decoded into scratch only to check them
  uint64_t ahead_spooled = 0;   // frames read ahead and spooled in the background
};

class TieredChunkSource final : public ChunkSource {
 public:
  // local may be null (a store with no database yet). model names the model
  // in messages ("name:tag" or its digest).
  TieredChunkSource(ChunkSource* local, const LazyCache* cache, ChunkSource* remote,
                    std::shared_ptr<const Manifest> manifest, std::string model);
  // Waits until the frames read ahead that no read took are checked and
  // spooled; those the background thread could not spool are tried once
  // more here.
  ~TieredChunkSource() override;
  TieredChunkSource(const TieredChunkSource&) = delete;
  TieredChunkSource& operator=(const TieredChunkSource&) = delete;

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  Status Write(std::span<const ChunkFrameRef> frames) override;
  Status ReadDecoded(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                     ChunkDecoder* decoder, FrameBatch* batch, DecodedChunks* result) override;
  std::string Describe() const override;

  TieredStats stats() const;

  // The name of the background thread that spools frames read ahead (as
  // /proc/PID/task/TID/comm shows it; at most 15 characters).
  static constexpr const char* kSpoolerThreadName = "pstore-spool";

 private:
  struct Place {
    uint32_t tensor = 0;
    uint64_t index = 0;
    uint64_t raw_len = 0;
  };
  Result<const Place*> Find(const ChunkKey& key) const;
  std::string ChunkName(const ChunkKey& key, const Place& p) const;
  // Decodes frame into scratch and checks it against key.
  Status Check(const ChunkKey& key, const Place& p, std::string_view frame);
  // The error for a frame from the remote that does not match its key.
  Status RemoteMismatch(const ChunkKey& key, const Place& p, const Status& st) const;
  // Writes a checked frame through to the spool; false if it could not.
  bool Keep(const ChunkKey& key, const Place& p, std::string_view frame);
  // The frame read ahead for key and not yet asked for (unchecked), taken
  // out of pending_, or null; the error if the background check found it
  // wrong.
  Result<std::shared_ptr<std::string>> TakePending(const ChunkKey& key);
  // Keeps a frame read ahead in pending_ and queues it for the background
  // thread; false (the caller checks and spools it) beyond kPendingBytes.
  bool Defer(const ChunkKey& key, std::string* frame);
  // The background thread: checks and spools queued frames until nothing
  // is queued and either stop_ or kSpoolerIdle passed with nothing queued.
  void SpoolAhead();
  // Hands the entries of *want read ahead or found in the spool to use,
  // once check (a decode against the key) has passed; the others stay in
  // *want. A spooled frame that fails is removed (fetched again); one read
  // ahead that fails is the remote's damage, an error.
  Status FromSpool(std::span<const ChunkKey> keys, std::vector<size_t>* want,
                   const std::function<Status(size_t, std::string_view)>& check,
                   const std::function<void(size_t, std::string_view)>& use);
  // FromSpool for Read: checks them in scratch and copies them to *out.
  Status FromSpool(std::span<const ChunkKey> keys, std::vector<size_t>* want,
                   std::vector<std::optional<std::string>>* out);
  // ReadDecoded but for what result holds after an error (the caller sets
  // it): the local store in its runs (kDecodeRunBytes), then the spool, then
  // the remote.
  Status DecodeTiers(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                     ChunkDecoder* decoder, FrameBatch* batch, DecodedChunks* result);
  // FromSpool for ReadDecoded: decodes them into outs, checking them there.
  Status DecodeFromSpool(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                         ChunkDecoder* decoder, std::vector<size_t>* want, DecodedChunks* result);
  // Splits the wanted keys into those this thread claims (*mine, with the
  // read-ahead after them) and those another thread is fetching (*theirs).
  // On a first round, keys another thread fetched since this one missed
  // them in the spool go to *theirs too (the spool has them now, or
  // pending_), unless that fetch failed. Returns how many of *mine are
  // wanted keys (the rest is read-ahead).
  size_t ClaimOrWait(std::span<const ChunkKey> keys, const std::vector<size_t>& want, bool first,
                     std::vector<ChunkKey>* mine, std::vector<ChunkKey>* theirs);
  // Internal error if a wanted key this thread claimed (the first `own` of
  // mine) is still in rest: fetched, yet neither handed on nor spooled (it
  // would be claimed again and again).
  Status CheckClaimed(std::span<const ChunkKey> keys, const std::vector<ChunkKey>& mine, size_t own,
                      const std::vector<size_t>& rest) const;
  // Ends this thread's fetch of keys; st is how it went.
  void Release(const std::vector<ChunkKey>& keys, const Status& st);
  // Releases a claim however the read ends (in the .cc).
  class Claim;
  // Waits until no thread fetches keys; the error of a fetch of one of them
  // that failed meanwhile.
  Status WaitFor(const std::vector<ChunkKey>& keys);
  // Fetches the claimed keys (the first `own` are wanted, the rest
  // read-ahead, fetched only if the host lacks them); *got holds the wanted
  // ones' frames. Unless defer, every frame is checked and spooled here;
  // with defer, the wanted frames are left unchecked for the caller to
  // decode, and read-ahead frames wait in pending_ (within kPendingBytes).
  Status Fetch(const std::vector<ChunkKey>& keys, size_t own, bool defer,
               std::unordered_map<ChunkKey, std::optional<std::string>, ChunkKeyHasher>* got);

  // Chunks fetched in one round trip at most, read-ahead included.
  static constexpr size_t kReadAhead = 64;
  // Bytes of read-ahead frames waiting unchecked for a read, at most.
  static constexpr uint64_t kPendingBytes = 256ull << 20;
  // How long the background thread waits for work before it ends.
  static constexpr std::chrono::milliseconds kSpoolerIdle{500};

  ChunkSource* local_;
  const LazyCache* cache_;
  ChunkSource* remote_;
  std::shared_ptr<const Manifest> manifest_;
  std::string model_;
  std::unordered_map<ChunkKey, Place, ChunkKeyHasher> places_;

  // Keys being fetched by some thread, and keys fetched; fetched_cv_ is
  // signalled when a fetch ends.
  std::mutex mu_;
  std::condition_variable fetched_cv_;
  // (std::mutex, for the condition variable: not annotated)
  std::unordered_set<ChunkKey, ChunkKeyHasher> fetching_;  // GUARDED_BY(mu_)
  std::unordered_set<ChunkKey, ChunkKeyHasher> fetched_;   // GUARDED_BY(mu_)
  // Keys whose last fetch failed, and how (until they are claimed again).
  std::unordered_map<ChunkKey, Status, ChunkKeyHasher> failed_;  // GUARDED_BY(mu_)
  // Frames read ahead by ReadDecoded, unchecked (frame set), or found wrong
  // by the background check (frame null, bad its error); the bytes of the
  // frames.
  struct Ahead {
    std::shared_ptr<std::string> frame;
    Status bad;
  };
  std::unordered_map<ChunkKey, Ahead, ChunkKeyHasher> pending_;  // GUARDED_BY(mu_)
  uint64_t pending_bytes_ = 0;                                   // GUARDED_BY(mu_)
  // Keys of pending_ for the background thread, which waits on spool_cv_.
  std::deque<ChunkKey> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;           // GUARDED_BY(mu_)
  std::condition_variable spool_cv_;
  std::thread spooler_;    // GUARDED_BY(mu_)
  bool spooling_ = false;  // GUARDED_BY(mu_): spooler_ runs and has not decided to end

  std::atomic<uint64_t> local_chunks_{0}, spool_chunks_{0}, remote_chunks_{0}, remote_bytes_{0},
      spool_failures_{0}, check_decodes_{0}, ahead_spooled_{0};
};

}  // namespace pstore
