#include "store/store_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/utilities/checkpoint.h>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "store/rocks.h"
#include "store/store_access.h"

namespace pstore {

namespace fs = std::filesystem;

std::string StorePaths::gen(uint64_t n) const {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/%010" PRIu64, n);
  return gen_root() + buf;
}

std::string DefaultStorePath() {
  if (const char* d = std::getenv("PSTORE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/pstore";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.local/share/pstore";
}

// --- config -----------------------------------------------------------------

std::string StoreConfig::ToJson() const {
  nlohmann::json j;
  j["chunk_size"] = chunk_size;
  j["profile"] = std::string(ProfileName(profile));
  j["zstd_level"] = zstd_level;
  j["budget_bytes"] = budget_bytes;
  j["group"] = group;
  if (!remotes_json.empty()) j["remotes"] = nlohmann::json::parse(remotes_json);
  return j.dump(2) + "\n";
}

Result<StoreConfig> StoreConfig::FromJson(std::string_view text) {
  StoreConfig c;
  try {
    auto j = nlohmann::json::parse(text);
    if (j.contains("chunk_size")) c.chunk_size = j.at("chunk_size").get<uint32_t>();
    if (j.contains("profile")) {
      auto p = ProfileFromName(j.at("profile").get<std::string>());
      if (!p) return Status::InvalidArgument("config.json: unknown codec profile");
      c.profile = *p;
    }
    if (j.contains("zstd_level")) c.zstd_level = j.at("zstd_level").get<int>();
    if (j.contains("budget_bytes")) c.budget_bytes = j.at("budget_bytes").get<uint64_t>();
    if (j.contains("group")) c.group = j.at("group").get<std::string>();
    if (j.contains("remotes")) {
      if (!j.at("remotes").is_object())
        return Status::InvalidArgument("config.json: \"remotes\" must be an object");
      c.remotes_json = j.at("remotes").dump();
    }
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("config.json is not valid: ") + e.what());
  }
  PSTORE_RETURN_IF_ERROR(c.Validate());
  return c;
}

Status StoreConfig::Validate() const {
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize || (chunk_size & (chunk_size - 1)))
    return Status::InvalidArgument("chunk size must be a power of two from 64 KiB to 4 MiB");
  if (zstd_level < 1 || zstd_level > 19)
    return Status::InvalidArgument("zstd level must be from 1 to 19");
  return Status::OK();
}

Result<std::string> ReadStoreId(const StorePaths& p) {
  auto id = ReadFileToString(p.env, p.id_file());
  if (!id.ok()) {
    if (id.status().IsNotFound())
      return Status::NotFound("no pstore store at " + p.root +
                              " (import a model to create one, or point --store or PSTORE_DIR at "
                              "an existing store)");
    return id.status();
  }
  std::string s = *id;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() != 32) return Status::Corruption("store ID file " + p.id_file() + " is malformed");
  return s;
}

Result<StoreConfig> ReadStoreConfig(const StorePaths& p) {
  auto text = ReadFileToString(p.env, p.config_file());
  if (!text.ok()) {
    if (text.status().IsNotFound()) return StoreConfig{};
    return text.status();
  }
  return StoreConfig::FromJson(*text);
}

Status WriteStoreConfig(const StorePaths& p, const StoreConfig& c) {
  PSTORE_RETURN_IF_ERROR(c.Validate());
  PSTORE_ASSIGN_OR_RETURN(StoreAccess a, AccessFor(c));
  PSTORE_RETURN_IF_ERROR(WriteFileAtomic(p.env, p.config_file(), c.ToJson(), int(a.file_mode)));
  return ApplyAccess(p.config_file(), a);
}

Status InitStoreDir(const StorePaths& p, const StoreConfig& config) {
  std::error_code ec;
  fs::create_directories(p.root, ec);
  if (ec) return Status::IOError("cannot create store folder " + p.root + ": " + ec.message());
  if (fs::exists(p.id_file())) return Status::OK();
  PSTORE_RETURN_IF_ERROR(config.Validate());
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(config));
  std::random_device rd;
  std::string id;
  for (int i = 0; i < 4; i++) {
    char buf[9];
    std::snprintf(buf, sizeof(buf), "%08x", unsigned(rd()));
    id += buf;
  }
  PSTORE_RETURN_IF_ERROR(WriteStoreConfig(p, config));
  fs::create_directories(p.gen_root(), ec);
  if (ec) return Status::IOError("cannot create " + p.gen_root() + ": " + ec.message());
  PSTORE_RETURN_IF_ERROR(ApplyStoreAccess(p.root, access));
  // The ID is written last: its presence marks a complete store folder.
  PSTORE_RETURN_IF_ERROR(WriteFileAtomic(p.env, p.id_file(), id + "\n", int(access.file_mode)));
  return ApplyAccess(p.id_file(), access);
}

// --- writer lock --------------------------------------------------------------

Result<WriterLock> WriterLock::Acquire(const std::string& root, bool wait) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Status::IOError("cannot create store folder " + root + ": " + ec.message());
  std::string path = root + "/LOCK";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Status::FromErrno("cannot open " + path, errno);
  // Made again (deleted by hand, or a new store): the store's access, like
  // every file pstore keeps in its folder (0640 of the group in group mode).
  // A store without a configuration yet gets it when it is created.
  if (auto config = ReadStoreConfig(StorePaths{root}); config.ok()) {
    if (auto access = AccessFor(*config); access.ok())
      PSTORE_RETURN_IF_ERROR(ApplyAccess(path, *access, /*recursive=*/false));
  }
  if (::flock(fd.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    if (errno == EWOULDBLOCK) {
      char buf[32] = {};
      ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
      std::string holder = n > 0 ? std::string(buf, size_t(n)) : "?";
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      return Status::Busy("another pstore process (pid " + holder +
                          ") is writing to the store at " + root +
                          "; wait for it to finish, or pass --wait to queue behind it");
    }
    return Status::FromErrno("cannot lock " + path, errno);
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) == 0) (void)!::pwrite(fd.get(), pid.data(), pid.size(), 0);
  return WriterLock(std::move(fd));
}

// --- generations --------------------------------------------------------------

Result<uint64_t> ReadCurrentGeneration(const StorePaths& p) {
  auto text = ReadFileToString(p.env, p.current_file());
  if (!text.ok()) {
    if (text.status().IsNotFound()) return uint64_t(0);
    return text.status();
  }
  char* end = nullptr;
  uint64_t n = std::strtoull(text->c_str(), &end, 10);
  if (end == text->c_str() || n == 0)
    return Status::Corruption("store file " + p.current_file() + " is malformed");
  return n;
}

Result<uint64_t> ReadGenerationSequence(const StorePaths& p, uint64_t n) {
  std::string path = p.gen(n) + "/SEQUENCE";
  PSTORE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(p.env, path));
  char* end = nullptr;
  uint64_t seq = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str()) return Status::Corruption("store file " + path + " is malformed");
  return seq;
}

std::vector<uint64_t> ListGenerations(const StorePaths& p) {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(p.gen_root(), ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() != 10 || name.find_first_not_of("0123456789") != std::string::npos) continue;
    out.push_back(std::strtoull(name.c_str(), nullptr, 10));
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// A checkpoint's log size limit that never flushes: its WAL is taken along.
constexpr uint64_t kKeepWal = ~uint64_t(0);

// Flushes both column families. A failed flush is a hard error after which
// RocksDB refuses every write until DB::Resume() recovers it (RocksDB does
// not recover by itself: store/rocks.h). Resume() is called at once, so that
// the writer can go on, and retry with its reserve released. A database
// stopped by an earlier failed flush (of an import's memtables) is resumed
// the same way. Not when RocksDB stranded memtables (store/rocks.cc): then
// Resume() would wait forever, and the database stays stopped until the
// writer opens a new instance (StoreWriter::Publish).
Status FlushForGeneration(RocksDb* db, const std::string& context) {
  Status s = db->Flush(context);
  if (s.ok() || db->stranded()) return s;
  if (!db->db()->Resume().ok()) return s;
  return db->Flush(context);
}

}  // namespace

Result<uint64_t> PublishGeneration(const StorePaths& p, RocksDb* db, std::string_view names_text,
                                   const StoreAccess& access) {
  std::vector<uint64_t> gens = ListGenerations(p);
  PSTORE_ASSIGN_OR_RETURN(uint64_t current, ReadCurrentGeneration(p));
  uint64_t n = std::max(current, gens.empty() ? 0 : gens.back()) + 1;
  std::string dir = p.gen(n);
  PSTORE_RETURN_IF_ERROR(p.env->RemoveTree(dir));  // a leftover from a crashed publish
  // The writer is the only writer and publishes after its writes, so this is
  // the last change the checkpoint holds (flushes keep sequence numbers).
  uint64_t sequence = db->db()->GetLatestSequenceNumber();
  rocksdb::Checkpoint* raw = nullptr;
  PSTORE_RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(db->db(), &raw), "checkpoint"));
  // A failure before CURRENT names it removes the new generation: its hard
  // links would otherwise keep the failed import's blob files on the disk
  // after the database drops them (a full disk while publishing). CURRENT is
  // read back first: its write can fail after the rename (the folder fsync).
  struct RemoveUnpublished {
    const StorePaths& p;
    const std::string& dir;
    uint64_t n;
    bool published = false;
    ~RemoveUnpublished() {
      if (published) return;
      auto current = ReadCurrentGeneration(p);
      if (current.ok() && *current != n) (void)p.env->RemoveTree(dir);
    }
  } guard{p, dir, n};
  std::unique_ptr<rocksdb::Checkpoint> ckpt(raw);
  // The memtables are flushed first, so that the generation carries no WAL:
  // every reader that opens a generation would replay it into memtables of
  // its own and keep them (megabytes for a model of thousands of tensors: its
  // manifest and chunk records) for as long as it has the generation open.
  // A flush that finds the disk full, even after Resume(), leaves the WAL
  // in the generation instead, which readers replay. RocksDB copies the last
  // non-empty WAL into a checkpoint (after a failed flush, the one with the
  // records not flushed) rather than linking it, so such a publish needs free
  // disk of about that WAL's size (the records of the writer's command) and a
  // few small files.
  Status flushed = FlushForGeneration(db, "flush the store's database " + p.db() +
                                              " before publishing generation " + std::to_string(n));
  // Only a full disk falls back to the WAL: any other failure (an I/O error,
  // damage) is the command's error, as it would be for a write.
  if (!flushed.ok() && !flushed.IsNoSpace()) return flushed;
  db->RemoveOldOptionsFiles();
  PSTORE_RETURN_IF_ERROR(FromRocks(ckpt->CreateCheckpoint(dir, flushed.ok() ? 0 : kKeepWal),
                                   "create generation " + dir));
  const int mode = int(access.file_mode);
  PSTORE_RETURN_IF_ERROR(
      WriteFileAtomic(p.env, dir + "/SEQUENCE", std::to_string(sequence) + "\n", mode));
  PSTORE_RETURN_IF_ERROR(WriteFileAtomic(p.env, dir + "/NAMES", names_text, mode));
  std::string readers = dir + "/READERS";
  UniqueFd fd(::open(readers.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, mode));
  if (!fd.valid()) return Status::FromErrno("cannot create " + readers, errno);
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync " + readers, errno);
  // The checkpoint's files (hard links to db/'s) and the ones above, readable
  // by exactly whom the store's configuration says.
  PSTORE_RETURN_IF_ERROR(ApplyAccess(dir, access));
  PSTORE_RETURN_IF_ERROR(p.env->SyncDir(dir));
  PSTORE_RETURN_IF_ERROR(p.env->SyncDir(p.gen_root()));
  PSTORE_RETURN_IF_ERROR(WriteFileAtomic(p.env, p.current_file(), std::to_string(n) + "\n", mode));
  guard.published = true;
  PSTORE_RETURN_IF_ERROR(ApplyAccess(p.current_file(), access));
  return n;
}

Result<int> RemoveUnusedGenerations(const StorePaths& p) {
  PSTORE_ASSIGN_OR_RETURN(uint64_t current, ReadCurrentGeneration(p));
  int removed = 0;
  for (uint64_t n : ListGenerations(p)) {
    if (n == current) continue;
    std::string dir = p.gen(n);
    std::string readers = dir + "/READERS";
    UniqueFd fd(::open(readers.c_str(), O_RDWR | O_CLOEXEC));
    if (fd.valid()) {
      if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // a reader holds it
      // Unlink while holding the lock: a reader that opened READERS already
      // finds it deleted once it gets the lock, and moves on.
      ::unlink(readers.c_str());
    } else if (n > current) {
      continue;  // being published right now (cannot happen with one writer, but be safe)
    }
    PSTORE_RETURN_IF_ERROR(p.env->RemoveTree(dir));
    removed++;
  }
  return removed;
}

Result<GenerationLock> GenerationLock::AcquireCurrent(const StorePaths& p) {
  uint64_t missing = 0;  // a generation CURRENT named that was not there
  for (int attempt = 0; attempt < 100; attempt++) {
    PSTORE_ASSIGN_OR_RETURN(uint64_t n, ReadCurrentGeneration(p));
    if (n == 0)
      return Status::NotFound("the store at " + p.root + " has no published generation yet");
    std::string readers = p.gen(n) + "/READERS";
    UniqueFd fd(::open(readers.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT) {
        // Replaced meanwhile: CURRENT names a newer one when read again. The
        // same number twice, its folder gone: CURRENT itself is wrong.
        std::error_code ec;
        if (n == missing && !fs::exists(p.gen(n), ec))
          return Status::Corruption("store file " + p.current_file() + " names generation " +
                                    std::to_string(n) +
                                    ", which does not exist; any writing command (such as "
                                    "`pstore compact`) publishes a new generation");
        missing = n;
        continue;
      }
      return Status::FromErrno("cannot open " + readers, errno);
    }
    if (::flock(fd.get(), LOCK_SH) != 0) return Status::FromErrno("cannot lock " + readers, errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + readers, errno);
    if (st.st_nlink == 0) continue;  // deleted while we waited
    return GenerationLock(n, std::move(fd));
  }
  return Status::Busy("the store's current generation kept changing; try again");
}

}  // namespace pstore
