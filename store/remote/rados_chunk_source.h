// RadosChunkSource: a ChunkSource on a Ceph RADOS pool, through librados.
//
// Layout (docs/format.md, "Remote chunk objects"): one object per chunk,
// named "c." + the key's 32 hex digits, in the pool and namespace given;
// the object's data is the chunk frame, written whole by one atomic
// operation (exclusive create + write_full), so a reader never sees part of
// a frame and a second writer of the same key keeps the first frame.
//
// Every batch is sent with librados' asynchronous operations, at most
// `max_in_flight` at once. Every operation, and connecting, is bounded by
// `timeout_seconds` (librados' rados_osd_op_timeout, rados_mon_op_timeout
// and client_mount_timeout): an unreachable cluster is an error within that
// time, never a hang.
//
// Credentials stay in the Ceph conf and keyring that `conf_path` names;
// pstore never reads, copies or prints them.
//
// Thread-safety: all methods may be called from many threads at once
// (librados' Rados and IoCtx are; the object holds no other state).
#pragma once

#include <memory>
#include <string>

#include "store/chunk_source.h"

namespace pstore {

class RadosConnection;  // store/remote/rados_connection.h

struct RadosOptions {
  // The Ceph conf to read (mon addresses, keyring); empty: librados' default
  // search (/etc/ceph/ceph.conf, ...).
  std::string conf_path;
  // The client's id, without "client." (its key must be in the keyring).
  std::string client_id = "admin";
  // The pool (must exist) and the namespace within it ("" is the default).
  std::string pool;
  std::string ns;
  // Bound on connecting and on each operation, in seconds (> 0).
  int timeout_seconds = 30;
  // Operations in flight at once per batch (> 0).
  int max_in_flight = 64;
};

class RadosChunkSource final : public ChunkSource {
 public:
  ~RadosChunkSource() override;

  // Connects to the cluster and opens the pool. Errors: NotFound if the pool
  // does not exist; IOError if the cluster cannot be reached or refuses the
  // client within the timeout; InvalidArgument for bad options.
  static Result<std::unique_ptr<RadosChunkSource>> Open(const RadosOptions& options);

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  Status Write(std::span<const ChunkFrameRef> frames) override;
  std::string Describe() const override;
  std::string Locate(const ChunkKey& key) const override { return ObjectName(key); }

  // The object name of a chunk: "c." + 32 hex digits.
  static std::string ObjectName(const ChunkKey& key);

  // The source's connection, for the other objects of the same remote
  // (RemoteTier): one connection serves them all. Valid as long as this.
  RadosConnection& connection();

 private:
  struct Impl;
  explicit RadosChunkSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pstore
