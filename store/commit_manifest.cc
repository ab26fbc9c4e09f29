// StoreWriter::CommitModel: how Import and a pull commit a model whose chunks
// they have written (store/store.h): write the manifest and the name, like
// the chunks, without the WAL, then flush both families at once (the store's
// families are flushed atomically: rocks.h). RocksDB installs atomic flushes
// in the order of their memtables, so the flush that takes the manifest and
// name to disk comes with or after every flush holding the model's chunks
// (docs/format.md, "Commit"). Then publish a generation. On any failure, take
// out what was written so the store is as it was.
//
// Thread-safety: a StoreWriter method (one call at a time).
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <time.h>

#include "common/coding.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {

Result<StoreWriter::CommitOutcome> StoreWriter::CommitModel(Status st, const ModelCommit& c) {
  CommitOutcome out;
  const std::string ref = c.name.Ref();
  auto existing = view_->GetName(c.name);
  if (st.ok() && !existing.ok() && !existing.status().IsNotFound()) st = existing.status();
  if (st.ok() && existing.ok()) {
    if (existing->digest == c.digest) {
      out.unchanged = true;
    } else if (!c.force) {
      st = Status::Exists(ref + " already names another model (" + existing->digest.Hex() +
                          ") in this store; pass --force to replace it, or choose another tag");
    } else {
      out.replaced = true;
    }
  }
  // Whether the manifest and name may be in the memtables: from then on a
  // failure takes them out too.
  bool committed = false;
  bool manifest_was_there = false;
  if (st.ok() && !out.unchanged) {
    manifest_was_there = view_->LoadManifestBytes(c.digest).ok();
    rocksdb::WriteBatch b;
    if (!manifest_was_there) {
      b.Put(db_->meta(), keys::Manifest(c.digest),
            rocksdb::Slice(c.manifest.data(), c.manifest.size()));
    }
    std::string v(c.digest.view());
    PutVarint(&v, uint64_t(::time(nullptr)));
    b.Put(db_->meta(), keys::Name(ref), v);
    // Without the WAL: durable only through the flush below, installed with
    // or after every flush of a chunk written before it. A crash before
    // that install keeps neither manifest nor name; one after it keeps the
    // model whole.
    rocksdb::WriteOptions nowal;
    nowal.disableWAL = true;
    committed = true;
    st = FromRocks(db_->db()->Write(nowal, &b), "commit " + ref);
  }
  if (st.ok() && (committed || c.wrote_chunks)) st = db_->Flush("commit " + ref);
  if (st.ok() && committed) {
    // Committed: from here on the chunks belong to the model.
    Status ps = Publish();
    if (!ps.ok() && !ps.IsNoSpace()) {
      return ps.WithContext(ref + " was " + std::string(c.verb) +
                            ", but readers will see it only after the next change to the store");
    }
    // Out of space before readers could see it: take the commit back too,
    // so that a full disk never keeps a model nobody asked to keep.
    st = ps;
  }
  if (st.ok()) return out;
  // Nothing refers to the chunks written for this model: take them out again
  // so the store is as it was (compact would remove them too). On a full
  // disk their space goes back to the disk at once.
  auto make_undo = [&](rocksdb::WriteBatch* undo) {
    if (committed) {
      if (existing.ok()) {
        std::string v(existing->digest.view());
        PutVarint(&v, existing->tagged_unix);
        undo->Put(db_->meta(), keys::Name(ref), v);
      } else {
        undo->Delete(db_->meta(), keys::Name(ref));
      }
      if (!manifest_was_there) undo->Delete(db_->meta(), keys::Manifest(c.digest));
    }
    for (const ChunkKey& k : c.written) {
      undo->Delete(db_->chunks(), rocksdb::Slice(k.view().data(), 16));
      undo->Delete(db_->meta(), keys::ChunkRecord(k));
    }
  };
  Status taken = Status::OK();
  if (committed || !c.written.empty()) taken = TakeOut(make_undo, st.IsNoSpace());
  const std::string not_done = ref + " was not " + std::string(c.verb);
  if (st.IsNoSpace()) {
    std::string what = taken.ok() ? not_done + " and the store is as it was"
                                  : not_done +
                                        "; what it wrote is removed by the next `pstore "
                                        "compact` (" +
                                        taken.message() + ")";
    return Status::NoSpace("the disk holding the store is full: " + what +
                           "; remove models with `pstore rm` and run `pstore compact`, or free "
                           "space on the disk (" +
                           st.message() + ")");
  }
  if (!taken.ok()) {
    return st.WithContext(not_done + "; what it wrote is removed by the next `pstore compact` (" +
                          taken.message() + ")");
  }
  return st;
}

}  // namespace pstore
