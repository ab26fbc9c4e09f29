// RadosConnection: the owner of one client connection to a Ceph cluster and
// of an I/O context on a pool and namespace, for the remote tier's parts that
// talk to RADOS (the chunk source, the names and manifests). Connecting, and
// every operation after it, is bounded by the options' timeout; errors name
// the pool and say what to check.
//
// Thread-safety: Connect runs once, before any other use; after it, ioctx()
// may be used from many threads at once (librados' IoCtx is thread-safe).
#pragma once

#include <rados/librados.hpp>

#include <string>

#include "common/status.h"
#include "store/remote/rados_chunk_source.h"
#include "store/remote/rados_io.h"

namespace pstore {

class RadosConnection {
 public:
  RadosConnection() = default;
  RadosConnection(const RadosConnection&) = delete;
  RadosConnection& operator=(const RadosConnection&) = delete;
  // Closes the I/O context and shuts the connection down.
  ~RadosConnection();

  // Checks the options, connects and opens the pool. Errors: InvalidArgument
  // for bad options; NotFound if the pool does not exist; IOError if the
  // cluster cannot be reached or refuses the client within the timeout.
  Status Connect(const RadosOptions& options);

  librados::IoCtx& ioctx() { return ioctx_; }
  const RadosOptions& options() const { return options_; }
  // "rados:POOL" or "rados:POOL/NAMESPACE".
  std::string Name() const;
  // A Status for librados error r (negative errno) on `what` (RadosError).
  Status Error(int r, const std::string& what) const;
  // The connected pool as store/remote/rados_io.h's view of it.
  RemoteIo Io() { return {&ioctx_, Name(), options_.timeout_seconds, options_.max_in_flight}; }

 private:
  RadosOptions options_;
  librados::Rados rados_;
  librados::IoCtx ioctx_;
  bool connected_ = false;
};

}  // namespace pstore
