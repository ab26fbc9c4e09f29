// The store's folder: where things live, its configuration, the writer lock
// and the generations readers open.
//
//   STORE/ID             the store's id: 32 hex digits, fixed at creation
//   STORE/config.json    settings (chunk size, codec profile, memory budget, group)
//   STORE/LOCK           flock()ed exclusively by the one writer
//   STORE/db/            RocksDB, opened by the writer only
//   STORE/gen/NNNNNNNNNN/  a published generation: a RocksDB checkpoint (hard
//                        links to db/'s files) plus READERS, a lock file,
//                        SEQUENCE, the database's sequence number it holds,
//                        and NAMES, its names and their digests, with a
//                        checksum (store/names_file.h)
//   STORE/CURRENT        the number of the newest generation
//
// Modes and group of everything here: store/store_access.h.
//
// Readers open CURRENT's generation read-only while holding a shared flock on
// its READERS file; the writer deletes a generation only when it can take that
// lock exclusively, and unlinks READERS first so that a reader who opened it
// just before sees a deleted file (st_nlink == 0) once it gets the lock, and
// moves on to the newest generation. See docs/format.md, "Generations".
//
// Thread-safety: functions are reentrant. A WriterLock or GenerationLock is
// owned by one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "common/env.h"
#include "common/file_util.h"
#include "common/status.h"

namespace pstore {

class RocksDb;
struct StoreAccess;

// The chunk sizes a store may be configured with: no chunk of any store is
// longer than kMaxChunkSize.
constexpr uint32_t kMinChunkSize = 64u << 10;
constexpr uint32_t kMaxChunkSize = 4u << 20;

struct StoreConfig {
  uint32_t chunk_size = 256u << 10;  // bytes; a power of two, kMinChunkSize to kMaxChunkSize
  Profile profile = Profile::kDense;
  int zstd_level = 3;
  uint64_t budget_bytes = 0;  // shared-memory budget for mapped models; 0: half of RAM
  std::string group;          // group given access to the store and its shared memory
  // The "remotes" object of config.json as JSON text ("" when there is none),
  // kept as is; store/remote/remote_config.h reads and writes it.
  std::string remotes_json;

  std::string ToJson() const;
  static Result<StoreConfig> FromJson(std::string_view json);
  Status Validate() const;
};

struct StorePaths {
  std::string root;
  // What the store's own files (ID, config.json, CURRENT, SEQUENCE, NAMES)
  // are read and written through; tests put a fault-injecting Env here.
  Env* env = Env::Default();
  std::string id_file() const { return root + "/ID"; }
  std::string config_file() const { return root + "/config.json"; }
  std::string lock_file() const { return root + "/LOCK"; }
  std::string db() const { return root + "/db"; }
  std::string gen_root() const { return root + "/gen"; }
  std::string gen(uint64_t n) const;
  std::string current_file() const { return root + "/CURRENT"; }
};

// $PSTORE_DIR if set, else $XDG_DATA_HOME/pstore, else ~/.local/share/pstore.
std::string DefaultStorePath();

// Creates the folder, ID and config if the store does not exist yet (the
// caller holds the writer lock); loads them otherwise.
Status InitStoreDir(const StorePaths& p, const StoreConfig& config);
// NotFound with a helpful message when there is no store at p.root.
Result<std::string> ReadStoreId(const StorePaths& p);
Result<StoreConfig> ReadStoreConfig(const StorePaths& p);
Status WriteStoreConfig(const StorePaths& p, const StoreConfig& c);

// The one writer's exclusive lock on STORE/LOCK. With wait, blocks until the
// lock is free; without, a held lock is a Busy error naming the holder's pid.
class WriterLock {
 public:
  static Result<WriterLock> Acquire(const std::string& root, bool wait);
  WriterLock(WriterLock&&) = default;
  WriterLock& operator=(WriterLock&&) = default;

 private:
  explicit WriterLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// 0 when no generation was published yet.
Result<uint64_t> ReadCurrentGeneration(const StorePaths& p);
// Checkpoints db into a new generation and points CURRENT at it; returns its number.
// The generation's SEQUENCE file records the database's last sequence number
// it holds; its NAMES file holds names_text (every "name:tag<TAB>digest" line,
// so readers can resolve names without opening the database).
// Its files get access's modes and group (store/store_access.h).
Result<uint64_t> PublishGeneration(const StorePaths& p, RocksDb* db, std::string_view names_text,
                                   const StoreAccess& access);
// The last sequence number generation n holds (NotFound for generations
// published before SEQUENCE files existed).
Result<uint64_t> ReadGenerationSequence(const StorePaths& p, uint64_t n);
// Deletes every generation but the current one that no reader holds. Returns
// how many it deleted.
Result<int> RemoveUnusedGenerations(const StorePaths& p);
std::vector<uint64_t> ListGenerations(const StorePaths& p);

// A reader's shared hold on a generation: while it lives, the writer will not
// delete the generation's files.
class GenerationLock {
 public:
  // Locks the current generation (retrying if the writer replaces it meanwhile).
  static Result<GenerationLock> AcquireCurrent(const StorePaths& p);
  uint64_t number() const { return number_; }
  GenerationLock(GenerationLock&&) = default;
  GenerationLock& operator=(GenerationLock&&) = default;

 private:
  GenerationLock(uint64_t n, UniqueFd fd) : number_(n), fd_(std::move(fd)) {}
  uint64_t number_ = 0;
  UniqueFd fd_;
};

}  // namespace pstore
