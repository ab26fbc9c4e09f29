// Push claims and retaining objects: see store/remote/push_claim.h.
#include "store/remote/push_claim.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "store/remote/rados_io.h"

namespace pstore {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomId() {
  std::random_device rd;
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "unknown";
  for (char* p = buf; *p; ++p) {
    if (*p == ' ') *p = '_';
  }
  return buf;
}

librados::bufferlist Bytes(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

}  // namespace

std::string ClaimRecord::Format() const {
  return "pstore-claim 1 " + digest.Hex() + " " + std::to_string(renewed) + " " +
         std::to_string(pid) + " " + host;
}

std::optional<ClaimRecord> ClaimRecord::Parse(std::string_view id, std::string_view value) {
  std::istringstream in{std::string(value)};
  std::string magic, version, digest;
  ClaimRecord r;
  if (!(in >> magic >> version >> digest >> r.renewed >> r.pid >> r.host)) return std::nullopt;
  if (magic != "pstore-claim" || version != "1" || id.size() != 32) return std::nullopt;
  auto d = ModelDigest::FromHex(digest);
  if (!d) return std::nullopt;
  r.digest = *d;
  r.id = std::string(id);
  r.value = std::string(value);
  return r;
}

Result<std::vector<ClaimRecord>> ReadClaims(const RemoteIo& io) {
  std::map<std::string, librados::bufferlist> attrs;
  int rv = 0;
  librados::ObjectReadOperation op;
  op.getxattrs(&attrs, &rv);
  int r = io.ioctx->operate(RemoteTier::kNamesObject, &op, nullptr);
  std::vector<ClaimRecord> out;
  if (r == -ENOENT) return out;
  if (r < 0) return io.Error(r, "reading the push claims");
  for (auto& [name, value] : attrs) {
    if (!name.starts_with(kClaimXattrPrefix)) continue;
    std::string_view id = std::string_view(name).substr(kClaimXattrPrefix.size());
    auto rec = ClaimRecord::Parse(id, value.to_str());
    if (!rec) {
      return Status::Corruption(io.where + ": the names object's push claim " + name +
                                " is not one this pstore can read; nothing was changed");
    }
    out.push_back(std::move(*rec));
  }
  return out;
}

Result<std::vector<bool>> RetainObjects(const RemoteIo& io, const std::vector<std::string>& oids) {
  std::vector<bool> present(oids.size());
  std::vector<std::map<std::string, librados::bufferlist>> attrs(oids.size());
  std::vector<int> rvals(oids.size());
  std::vector<librados::ObjectReadOperation> reads(oids.size());
  std::vector<size_t> marked;
  PSTORE_RETURN_IF_ERROR(RunAioBatch(
      io, oids.size(),
      [&](size_t i, librados::AioCompletion* c) {
        reads[i].getxattrs(&attrs[i], &rvals[i]);
        return io.ioctx->aio_operate(oids[i], c, &reads[i], nullptr);
      },
      [&](size_t i, int r) {
        if (r == -ENOENT) return Status::OK();
        if (r < 0) return io.Error(r, "looking up " + oids[i]);
        present[i] = true;
        if (attrs[i].count(kGcMarkXattr)) marked.push_back(i);
        attrs[i].clear();
        return Status::OK();
      }));
  if (marked.empty()) return present;
  // A gc marked these: clear its mark, so its compare-and-remove fails. If
  // the gc was faster, the object is gone and counts as missing.
  std::vector<librados::ObjectWriteOperation> clears(marked.size());
  PSTORE_RETURN_IF_ERROR(RunAioBatch(
      io, marked.size(),
      [&](size_t j, librados::AioCompletion* c) {
        clears[j].assert_exists();
        clears[j].rmxattr(kGcMarkXattr);
        return io.ioctx->aio_operate(oids[marked[j]], c, &clears[j]);
      },
      [&](size_t j, int r) {
        if (r == -ENOENT) {
          present[marked[j]] = false;
          return Status::OK();
        }
        if (r == -ENODATA) return Status::OK();  // another push cleared it
        if (r < 0) return io.Error(r, "clearing the gc mark of " + oids[marked[j]]);
        return Status::OK();
      }));
  return present;
}

PushClaim::PushClaim(RemoteTier* remote, ClaimRecord record)
    : remote_(remote), record_(std::move(record)) {}

PushClaim::~PushClaim() {
  if (held_) Drop();
}

Result<std::unique_ptr<PushClaim>> PushClaim::Begin(RemoteTier* remote, const ModelDigest& digest,
                                                    std::string_view manifest) {
  ClaimRecord rec;
  rec.id = RandomId();
  rec.digest = digest;
  rec.renewed = NowSeconds();
  rec.pid = ::getpid();
  rec.host = HostName();
  rec.value = rec.Format();
  RemoteIo io = remote->Io();
  librados::ObjectWriteOperation op;
  op.create(false);
  op.setxattr(rec.Xattr().c_str(), Bytes(rec.value));
  int r = io.ioctx->operate(RemoteTier::kNamesObject, &op);
  if (r < 0) return io.Error(r, "taking a push claim");
  std::unique_ptr<PushClaim> claim(new PushClaim(remote, std::move(rec)));
  // The claim's manifest, so that a gc knows which chunks the push needs.
  librados::ObjectWriteOperation put;
  put.create(true);
  put.write_full(Bytes(manifest));
  r = io.ioctx->operate(claim->record_.Object(), &put);
  if (r < 0) return io.Error(r, "writing the push claim's manifest");
  return claim;
}

Result<std::vector<bool>> PushClaim::Retain(std::span<const ChunkKey> keys) {
  std::vector<std::string> oids;
  oids.reserve(keys.size());
  for (const ChunkKey& k : keys) oids.push_back(RadosChunkSource::ObjectName(k));
  return RetainObjects(remote_->Io(), oids);
}

Status PushClaim::KeepAlive() {
  if (std::chrono::steady_clock::now() - renewed_at_ < std::chrono::seconds(kClaimRenewSeconds)) {
    return Status::OK();
  }
  return Renew();
}

Status PushClaim::Renew() {
  ClaimRecord next = record_;
  next.renewed = NowSeconds();
  next.value = next.Format();
  RemoteIo io = remote_->Io();
  librados::ObjectWriteOperation op;
  op.cmpxattr(record_.Xattr().c_str(), LIBRADOS_CMPXATTR_OP_EQ, Bytes(record_.value));
  op.setxattr(record_.Xattr().c_str(), Bytes(next.value));
  int r = io.ioctx->operate(RemoteTier::kNamesObject, &op);
  if (r == -ECANCELED || r == -ENODATA || r == -ENOENT) {
    held_ = false;
    return Withdrawn();
  }
  if (r < 0) return io.Error(r, "renewing the push claim");
  record_ = std::move(next);
  renewed_at_ = std::chrono::steady_clock::now();
  return Status::OK();
}

Status PushClaim::Withdrawn() const {
  return Status::Busy(remote_->Describe() + ": a `remote gc` withdrew this push's claim (" +
                      record_.id +
                      ") because it was not renewed within the gc's grace period (was the push "
                      "stopped, or the gc's --grace too short?); nothing was published: run the "
                      "push again");
}

Status PushClaim::PutManifest(std::string_view manifest) {
  RemoteIo io = remote_->Io();
  PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have,
                          RetainObjects(io, {RemoteTier::ManifestObject(record_.digest)}));
  if (have[0]) return Status::OK();
  return remote_->PutManifest(record_.digest, manifest);
}

Status PushClaim::Publish(const std::string& ref, const std::optional<ModelDigest>& expected) {
  RemoteIo io = remote_->Io();
  librados::bufferlist want;
  if (expected) want.append(expected->Hex());  // absent compares as empty
  int cmp = 0;
  librados::ObjectWriteOperation op;
  op.omap_cmp({{ref, {want, LIBRADOS_CMPXATTR_OP_EQ}}}, &cmp);
  op.cmpxattr(record_.Xattr().c_str(), LIBRADOS_CMPXATTR_OP_EQ, Bytes(record_.value));
  op.omap_set({{ref, Bytes(record_.digest.Hex())}});
  op.rmxattr(record_.Xattr().c_str());
  int r = io.ioctx->operate(RemoteTier::kNamesObject, &op);
  if (r == -ECANCELED || r == -ENODATA) {
    // Which compare failed: the claim, or the name?
    librados::bufferlist v;
    int g = io.ioctx->getxattr(RemoteTier::kNamesObject, record_.Xattr().c_str(), v);
    if (g == -ENODATA || g == -ENOENT || (g >= 0 && v.to_str() != record_.value)) {
      held_ = false;
      return Withdrawn();
    }
    return Status::Busy(io.where + ": " + ref +
                        " was changed on the remote by someone else at the same time; run the "
                        "command again");
  }
  if (r < 0) return io.Error(r, "publishing " + ref);
  held_ = false;  // removed with the name's update; its manifest copy is no longer needed
  io.ioctx->remove(record_.Object());
  return Status::OK();
}

void PushClaim::Drop() {
  held_ = false;
  // Best effort, both at once (a push that failed on a timeout waits at most
  // one more): what is left, a gc withdraws once it is older than its grace.
  RemoteIo io = remote_->Io();
  librados::ObjectWriteOperation ops[2];
  ops[0].cmpxattr(record_.Xattr().c_str(), LIBRADOS_CMPXATTR_OP_EQ, Bytes(record_.value));
  ops[0].rmxattr(record_.Xattr().c_str());
  ops[1].remove();
  const std::string oids[2] = {RemoteTier::kNamesObject, record_.Object()};
  (void)RunAioBatch(
      io, 2,
      [&](size_t i, librados::AioCompletion* c) {
        return io.ioctx->aio_operate(oids[i], c, &ops[i]);
      },
      [](size_t, int) { return Status::OK(); });
}

}  // namespace pstore
