// The lazy cache's files: see store/lazy_cache.h.
#include "store/lazy_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/coding.h"
#include "common/file_util.h"

namespace pstore {

namespace fs = std::filesystem;

namespace {

constexpr char kSpoolMagic[8] = {'p', 's', 't', 's', 'p', 'o', 'o', 'l'};
constexpr size_t kSpoolHeader = 16;  // magic, raw length (fixed 64)
// The contents of a locations file for a model the remote has none for.
constexpr std::string_view kNoLocations = "none\n";

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

Result<std::optional<std::string>> ReadIfThere(const std::string& path) {
  auto r = ReadFileToString(path);
  if (r.ok()) return std::optional<std::string>(std::move(r).value());
  if (r.status().IsNotFound()) return std::optional<std::string>();
  return r.status();
}

void RemoveQuietly(const std::string& path) {
  (void)::unlink(path.c_str());
}

// Removes path; a missing file is not an error.
Status RemoveIfThere(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Status::IOError(Errno("cannot remove " + path));
  return Status::OK();
}

}  // namespace

LazyCache::LazyCache(std::string root, StoreAccess access)
    : root_(std::move(root)), access_(access) {
  // Readers of the group write here too (as they write shared memory).
  if (access_.group()) access_.dir_mode |= 0070;
}

Status LazyCache::MakeDir(const std::string& path, bool durable) const {
  if (::mkdir(path.c_str(), access_.dir_mode & 0777) == 0) {
    if (access_.group() && ::chown(path.c_str(), uid_t(-1), access_.gid) != 0)
      return Status::IOError(Errno("cannot give " + path + " to the store's group"));
    if (::chmod(path.c_str(), access_.dir_mode) != 0)
      return Status::IOError(Errno("cannot set the mode of " + path));
    // The new folder's entry in its parent, so that a file synced in it
    // is found after a power loss.
    if (durable) return FsyncDir(fs::path(path).parent_path().string());
    return Status::OK();
  }
  if (errno == EEXIST) return Status::OK();
  return Status::IOError(Errno("cannot create " + path));
}

Status LazyCache::WriteWhole(const std::string& path, std::string_view data, bool durable) const {
  static std::atomic<uint64_t> counter{0};
  PSTORE_RETURN_IF_ERROR(MakeDir(dir(), durable));
  PSTORE_RETURN_IF_ERROR(MakeDir(dir() + "/tmp"));
  PSTORE_RETURN_IF_ERROR(MakeDir(fs::path(path).parent_path().string(), durable));
  const std::string tmp = dir() + "/tmp/" + std::to_string(::getpid()) + "." +
                          std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
  UniqueFd fd(
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, access_.file_mode & 0777));
  if (fd.get() < 0) return Status::IOError(Errno("cannot create " + tmp));
  // The mode is set, not left to the writer's umask: other members of the
  // group read what this process spools.
  Status st = ::fchmod(fd.get(), access_.file_mode) == 0
                  ? WriteFull(fd.get(), data.data(), data.size(), tmp)
                  : Status::IOError(Errno("cannot set the mode of " + tmp));
  if (st.ok() && access_.group() && ::fchown(fd.get(), uid_t(-1), access_.gid) != 0)
    st = Status::IOError(Errno("cannot give " + tmp + " to the store's group"));
  if (st.ok() && durable && ::fsync(fd.get()) != 0)
    st = Status::IOError(Errno("cannot sync " + tmp));
  fd.Reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = Status::IOError(Errno("cannot rename " + tmp + " to " + path));
  if (!st.ok()) RemoveQuietly(tmp);
  if (st.ok() && durable) st = FsyncDir(fs::path(path).parent_path().string());
  return st;
}

Result<std::optional<std::string>> LazyCache::GetManifest(const ModelDigest& digest) const {
  const std::string path = dir() + "/manifests/" + digest.Hex();
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes, ReadIfThere(path));
  if (bytes && Manifest::DigestOf(*bytes) != digest) {
    RemoveQuietly(path);
    return std::optional<std::string>();
  }
  return bytes;
}

Status LazyCache::PutManifest(const ModelDigest& digest, std::string_view bytes) const {
  return WriteWhole(dir() + "/manifests/" + digest.Hex(), bytes, /*durable=*/true);
}

Status LazyCache::RemoveManifest(const ModelDigest& digest) const {
  const std::string manifest = dir() + "/manifests/" + digest.Hex();
  if (::access(manifest.c_str(), F_OK) == 0) {
    PSTORE_RETURN_IF_ERROR(RemoveIfThere(manifest));
    // The manifest is gone for good before its locations go.
    PSTORE_RETURN_IF_ERROR(FsyncDir(dir() + "/manifests"));
  }
  std::error_code ec;
  for (const auto& r : fs::directory_iterator(dir() + "/locations", ec)) {
    // A file directly in locations/ was written by a pstore that kept
    // locations per digest only.
    const std::string path =
        r.is_directory() ? r.path().string() + "/" + digest.Hex() : r.path().string();
    if (r.is_directory() || r.path().filename() == digest.Hex())
      PSTORE_RETURN_IF_ERROR(RemoveIfThere(path));
  }
  return Status::OK();
}

std::string LazyCache::LocationsPath(const std::string& remote, const ModelDigest& digest) const {
  return dir() + "/locations/" + remote + "/" + digest.Hex();
}

Result<LazyCache::CachedLocations> LazyCache::GetLocations(const std::string& remote,
                                                           const ModelDigest& digest) const {
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                          ReadIfThere(LocationsPath(remote, digest)));
  CachedLocations out;
  if (!bytes) return out;
  if (*bytes == kNoLocations) {
    out.kind = CachedLocations::kNone;
    return out;
  }
  out.kind = CachedLocations::kBytes;
  out.bytes = std::move(*bytes);
  return out;
}

Status LazyCache::PutLocations(const std::string& remote, const ModelDigest& digest,
                               const std::optional<std::string_view>& bytes) const {
  PSTORE_RETURN_IF_ERROR(MakeDir(dir(), /*durable=*/true));
  PSTORE_RETURN_IF_ERROR(MakeDir(dir() + "/locations", /*durable=*/true));
  return WriteWhole(LocationsPath(remote, digest), bytes ? *bytes : kNoLocations,
                    /*durable=*/true);
}

Status LazyCache::RemoveLocations(const std::string& remote, const ModelDigest& digest) const {
  return RemoveIfThere(LocationsPath(remote, digest));
}

namespace {

std::string NamePath(const std::string& lazy, const std::string& remote, const std::string& ref) {
  return lazy + "/names/" + remote + "/" + ToHex(ref);
}

std::optional<CachedName> ParseName(const std::string& remote, std::string_view text) {
  size_t tab = text.find('\t');
  if (tab == std::string_view::npos || text.size() != tab + 1 + 32 + 1 || text.back() != '\n')
    return std::nullopt;
  auto digest = ModelDigest::FromHex(text.substr(tab + 1, 32));
  if (!digest) return std::nullopt;
  return CachedName{remote, std::string(text.substr(0, tab)), *digest};
}

}  // namespace

Result<std::optional<ModelDigest>> LazyCache::GetName(const std::string& remote,
                                                      const std::string& ref) const {
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> text,
                          ReadIfThere(NamePath(dir(), remote, ref)));
  if (!text) return std::optional<ModelDigest>();
  std::optional<CachedName> n = ParseName(remote, *text);
  if (!n || n->ref != ref) return std::optional<ModelDigest>();
  return std::optional<ModelDigest>(n->digest);
}

Status LazyCache::PutName(const std::string& remote, const std::string& ref,
                          const ModelDigest& digest) const {
  PSTORE_RETURN_IF_ERROR(MakeDir(dir(), /*durable=*/true));
  PSTORE_RETURN_IF_ERROR(MakeDir(dir() + "/names", /*durable=*/true));
  return WriteWhole(NamePath(dir(), remote, ref), ref + "\t" + digest.Hex() + "\n",
                    /*durable=*/true);
}

Status LazyCache::RemoveName(const std::string& remote, const std::string& ref) const {
  return RemoveIfThere(NamePath(dir(), remote, ref));
}

std::vector<CachedName> LazyCache::ListNames() const {
  std::vector<CachedName> out;
  std::error_code ec;
  for (const auto& r : fs::directory_iterator(dir() + "/names", ec)) {
    std::error_code ec2;
    for (const auto& f : fs::directory_iterator(r.path(), ec2)) {
      auto text = ReadFileToString(f.path().string());
      if (!text.ok()) continue;
      if (auto n = ParseName(r.path().filename().string(), *text)) out.push_back(std::move(*n));
    }
  }
  return out;
}

Result<std::optional<SpooledFrame>> LazyCache::GetFrame(const ChunkKey& key) const {
  const std::string path = dir() + "/spool/" + key.Hex();
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes, ReadIfThere(path));
  if (!bytes) return std::optional<SpooledFrame>();
  if (bytes->size() < kSpoolHeader || std::memcmp(bytes->data(), kSpoolMagic, 8) != 0) {
    RemoveQuietly(path);
    return std::optional<SpooledFrame>();
  }
  SpooledFrame f;
  f.raw_len = LoadLE64(reinterpret_cast<const uint8_t*>(bytes->data()) + 8);
  f.frame = bytes->substr(kSpoolHeader);
  return std::optional<SpooledFrame>(std::move(f));
}

Status LazyCache::PutFrame(const ChunkKey& key, uint64_t raw_len, std::string_view frame) const {
  PSTORE_RETURN_IF_ERROR(MakeDir(dir()));
  std::string data(kSpoolMagic, 8);
  PutFixed64(&data, raw_len);
  data.append(frame);
  return WriteWhole(dir() + "/spool/" + key.Hex(), data);
}

Status LazyCache::RemoveFrame(const ChunkKey& key) const {
  return RemoveIfThere(dir() + "/spool/" + key.Hex());
}

bool LazyCache::HasFrame(const ChunkKey& key) const {
  return ::access((dir() + "/spool/" + key.Hex()).c_str(), F_OK) == 0;
}

std::vector<ChunkKey> LazyCache::ListSpool() const {
  std::vector<ChunkKey> out;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(dir() + "/spool", ec)) {
    if (auto k = ChunkKey::FromHex(f.path().filename().string())) out.push_back(*k);
  }
  return out;
}

int LazyCache::RemoveStaleTemporaries(std::chrono::seconds age) const {
  int n = 0;
  const time_t now = ::time(nullptr);
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(dir() + "/tmp", ec)) {
    struct stat st;
    if (::lstat(f.path().c_str(), &st) != 0) continue;
    if (now - st.st_mtime < age.count()) continue;
    if (::unlink(f.path().c_str()) == 0) n++;
  }
  return n;
}

}  // namespace pstore
