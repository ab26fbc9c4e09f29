// StoreWriter::CommitManifest and TakeOutChunks: committing a model whose
// chunks came from elsewhere (a remote), with Import's commit protocol
// (store/import.cc): flush the chunks and their records, then write the
// manifest and the name in one synced batch, then publish a generation.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <time.h>

#include "common/coding.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {

Status StoreWriter::CommitManifest(std::string_view bytes, const ModelDigest& digest,
                                   const ModelName& name, bool force, bool* unchanged) {
  *unchanged = false;
  if (Manifest::DigestOf(bytes) != digest) {
    return Status::Corruption("the manifest of " + name.Ref() + " does not match its digest " +
                              digest.Hex());
  }
  PSTORE_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(bytes, false));
  for (const ChunkKey& k : m.chunks) {
    PSTORE_ASSIGN_OR_RETURN(std::optional<ChunkRecord> rec, view_->GetChunkRecord(k));
    if (!rec) {
      return Status::Internal("cannot commit " + name.Ref() + ": chunk " + k.Hex() +
                              " is not in the store");
    }
  }
  auto existing = view_->GetName(name);
  if (!existing.ok() && !existing.status().IsNotFound()) return existing.status();
  if (existing.ok()) {
    if (existing->digest == digest) {
      *unchanged = true;
      return Status::OK();
    }
    if (!force) {
      return Status::Exists(name.Ref() + " already names another model (" + existing->digest.Hex() +
                            ") in the local store; pass --force to replace it");
    }
  }
  rocksdb::FlushOptions fo;
  fo.wait = true;
  PSTORE_RETURN_IF_ERROR(
      FromRocks(db_->db()->Flush(fo, {db_->meta(), db_->chunks()}), "flush chunks"));
  rocksdb::WriteBatch b;
  b.Put(db_->meta(), keys::Manifest(digest), rocksdb::Slice(bytes.data(), bytes.size()));
  std::string v(digest.view());
  PutVarint(&v, uint64_t(::time(nullptr)));
  b.Put(db_->meta(), keys::Name(name.Ref()), v);
  rocksdb::WriteOptions sync;
  sync.sync = true;
  PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->Write(sync, &b), "commit " + name.Ref()));
  Status ps = Publish();
  if (!ps.ok()) {
    return ps.WithContext(name.Ref() +
                          " was committed, but readers will see it only after the next change "
                          "to the store");
  }
  return Status::OK();
}

Status StoreWriter::TakeOutChunks(std::span<const ChunkKey> keys) {
  if (keys.empty()) return Status::OK();
  return TakeOut(
      [&](rocksdb::WriteBatch* undo) {
        for (const ChunkKey& k : keys) {
          undo->Delete(db_->chunks(), rocksdb::Slice(k.view().data(), 16));
          undo->Delete(db_->meta(), keys::ChunkRecord(k));
        }
      },
      false);
}

}  // namespace pstore
