// Remote garbage collection: deletes the objects of a remote (a RADOS pool
// and namespace) that no name needs, without ever deleting one that a push
// running on another host relies on (docs/remote.md, "Garbage collection").
//
// A run, with a token of its own:
//   1. Find: read the push claims, withdraw those older than the grace
//      (compare-and-remove, so a claim renewed meanwhile stays), read the
//      names and the manifests of the names and of the live claims, and list
//      the namespace. Live packs ("k.<id>"): those the locations
//      ("l.<digest>") of those manifests name and, for a claim, those the
//      chunk index maps its manifest's keys to. Candidates: packs not live,
//      chunk objects no such manifest references, manifest and locations
//      objects no name or claim names, claim objects ("p.<id>") whose claim
//      is gone.
//   2. Mark: set the xattr "pstore.gc" to the token on every candidate.
//   3. Check: read the claims again, then what each relies on (its "p.<id>",
//      or once that is gone the manifest it published), then the names and
//      their manifests; every candidate that a claim or a name now needs is
//      kept (its mark is removed). A name whose manifest is gone is skipped
//      if the name no longer points at it (removed meanwhile).
//   4. Sweep: delete each remaining candidate with one operation that
//      compares its mark with the token and removes it, so an object a push
//      retained after step 2 (which clears the mark) is never deleted.
//      Then the index entries naming a pack it deleted are removed (each
//      compared with the value read). A pack partly dead is kept whole.
// --dry-run stops after step 1 and changes nothing.
//
// Thread-safety: one call at a time per RemoteTier; runs on other hosts at
// the same time are safe (each deletes only objects carrying its own mark).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "store/remote/remote_tier.h"

namespace pstore {

struct GcOptions {
  // A claim not renewed for this many seconds is taken for a killed push's
  // and withdrawn (0: every claim not renewed this second). A live push
  // renews its claim every few seconds; a push whose claim is withdrawn
  // fails without publishing anything and must be run again.
  int64_t grace_seconds = 3600;
  bool dry_run = false;
  // Called with the step ("listing", "marking", "checking", "deleting"),
  // objects done and total (0 if not known). Returning false stops the run
  // (Aborted); marks left behind are harmless.
  std::function<bool(const char* step, uint64_t done, uint64_t total)> progress;
};

struct GcClaim {
  std::string id, host, model_digest;
  int64_t pid = 0;
  int64_t age_seconds = 0;
  bool withdrawn = false;
};

struct GcResult {
  uint64_t objects = 0;            // listed in the namespace
  uint64_t chunk_objects = 0;      // of which chunk objects
  uint64_t names = 0;              // names on the remote
  uint64_t referenced_chunks = 0;  // distinct chunks their manifests and live claims need
  uint64_t other_objects = 0;      // not pstore's: left alone
  std::vector<GcClaim> claims;     // the push claims found
  // Found dead (step 1); with dry_run, what a run would delete.
  uint64_t dead_chunks = 0, dead_manifests = 0, dead_claim_objects = 0, dead_bytes = 0;
  // Deleted (step 4).
  uint64_t deleted_chunks = 0, deleted_manifests = 0, deleted_claim_objects = 0;
  uint64_t deleted_bytes = 0;
  // Packs (k.<id>) and locations objects (l.<digest>): listed, found dead,
  // deleted; index entries removed because their pack was deleted.
  uint64_t pack_objects = 0, index_objects = 0;
  uint64_t dead_packs = 0, dead_locations = 0, deleted_packs = 0, deleted_locations = 0;
  uint64_t index_entries_removed = 0;
  // Packs kept because some of their chunks are used, and their bytes that
  // none uses (not reclaimed: packs are never rewritten).
  uint64_t partly_dead_packs = 0, live_packs_dead_bytes = 0;
  // Candidates kept because a push or a name needed them after step 1.
  uint64_t kept = 0;
  // Names whose locations name packs that are missing (a damaged remote:
  // removed by hand, or lost), with those packs' object names. Nothing is
  // deleted because of them; each such model reads the chunks of those
  // packs only where the chunk index says a push put them since, and is
  // repaired by pushing it again from a host whose store has it.
  std::map<std::string, std::vector<std::string>> names_missing_packs;
  double seconds = 0;
};

// Errors: IOError when the cluster does not answer within the timeout;
// Corruption when a name points at a manifest that is missing (and still
// does when read again) or an object does not match its digest, or a
// name's locations object is damaged (nothing is deleted: which chunks it
// needs is unknown; the message names the model and the remedy);
// Aborted when progress returned false.
Result<GcResult> CollectRemoteGarbage(RemoteTier* remote, const GcOptions& options);

}  // namespace pstore
