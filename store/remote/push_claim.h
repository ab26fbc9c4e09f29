// PushClaim: what a push holds on a remote so that `remote gc` keeps every
// chunk it relies on (docs/remote.md, "Garbage collection"; formats in
// docs/format.md, "Remote objects").
//
// Protocol, push side:
//   1. Begin: set the xattr "claim.<id>" on the names object (the model's
//      digest, the time, host and pid), then write the object "p.<id>"
//      holding the model's manifest, so a gc can read which chunks it needs.
//   2. Retain, before relying on any object the push finds on the remote
//      (packs its locations name, chunk objects of older remotes, the
//      locations and the manifest object): read the object's gc mark and, if
//      a gc has set one, clear it. A gc deletes an object only if the mark
//      it set is still there, with one compare-and-remove operation.
//   3. KeepAlive between batches: renew the claim's time (compare-and-set),
//      so a gc does not take it for a killed push's.
//   4. Publish: one atomic operation on the names object compares the name
//      and the claim, sets the name and removes the claim. A push whose
//      claim a gc withdrew cannot publish; it fails with a busy error.
// A claim not published is withdrawn by the destructor (best effort; a
// killed push's claim is withdrawn by a gc once it is older than the grace).
//
// Thread-safety: one thread at a time per PushClaim; the free functions may
// be called from many threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/manifest.h"
#include "store/remote/remote_tier.h"

namespace pstore {

// The xattr a gc sets on an object it means to delete (its run's token).
inline constexpr const char* kGcMarkXattr = "pstore.gc";
// Claims: xattrs "claim.<id>" of the names object, objects "p.<id>".
inline constexpr std::string_view kClaimXattrPrefix = "claim.";
inline constexpr std::string_view kClaimObjectPrefix = "p.";
// A live push renews its claim once it is this old (between batches).
inline constexpr int kClaimRenewSeconds = 10;

struct ClaimRecord {
  std::string id;  // 32 lowercase hex digits
  ModelDigest digest;
  int64_t renewed = 0;  // unix seconds, on the pushing host's clock
  int64_t pid = 0;
  std::string host;
  std::string value;  // the xattr's bytes, as read or written

  // "pstore-claim 1 <digest hex> <renewed> <pid> <host>"
  std::string Format() const;
  // nullopt if the value is not a claim of this format.
  static std::optional<ClaimRecord> Parse(std::string_view id, std::string_view value);
  std::string Xattr() const { return std::string(kClaimXattrPrefix) + id; }
  std::string Object() const { return std::string(kClaimObjectPrefix) + id; }
};

// The claims on the remote (none if nothing was pushed). A claim xattr that
// does not parse is a Corruption error naming it.
Result<std::vector<ClaimRecord>> ReadClaims(const RemoteIo& io);

// Reads each object's gc mark and clears it where set: present[i] says
// whether object i exists, and if it does, no gc mark set before this call
// is left on it.
Result<std::vector<bool>> RetainObjects(const RemoteIo& io, const std::vector<std::string>& oids);

class PushClaim {
 public:
  // Takes a claim for the model `digest` whose manifest is `manifest`.
  static Result<std::unique_ptr<PushClaim>> Begin(RemoteTier* remote, const ModelDigest& digest,
                                                  std::string_view manifest);
  ~PushClaim();
  PushClaim(const PushClaim&) = delete;
  PushClaim& operator=(const PushClaim&) = delete;

  // Which chunks have objects of their own (c.<key>, remotes written before
  // packs), each retained (step 2).
  Result<std::vector<bool>> Retain(std::span<const ChunkKey> keys);
  // Renews the claim if it is due. Busy if a gc withdrew it.
  Status KeepAlive();
  // Retains the manifest object, or writes it if it is missing.
  Status PutManifest(std::string_view manifest);
  // Points ref at the claim's model if it still points at `expected`
  // (nullopt: absent) and the claim is still held, and drops the claim, in
  // one atomic operation. Busy if either changed.
  Status Publish(const std::string& ref, const std::optional<ModelDigest>& expected);
  // Renews the claim now. Busy if a gc withdrew it.
  Status Renew();
  const ClaimRecord& record() const { return record_; }

 private:
  PushClaim(RemoteTier* remote, ClaimRecord record);
  Status Withdrawn() const;
  void Drop();

  RemoteTier* remote_;
  ClaimRecord record_;
  // When the claim was last set, on this host's steady clock: renewals keep
  // their pace whatever the wall clock does.
  std::chrono::steady_clock::time_point renewed_at_ = std::chrono::steady_clock::now();
  bool held_ = true;
};

}  // namespace pstore
