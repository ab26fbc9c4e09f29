// RadosConnection: see store/remote/rados_connection.h.
#include "store/remote/rados_connection.h"

#include <cerrno>
#include <cstring>

namespace pstore {

RadosConnection::~RadosConnection() {
  ioctx_.close();
  if (connected_) rados_.shutdown();
}

std::string RadosConnection::Name() const {
  return "rados:" + options_.pool + (options_.ns.empty() ? "" : "/" + options_.ns);
}

Status RadosConnection::Error(int r, const std::string& what) const {
  return RadosError(Name(), options_.timeout_seconds, r, what);
}

Status RadosConnection::Connect(const RadosOptions& options) {
  if (options.pool.empty()) return Status::InvalidArgument("rados: no pool given");
  if (options.timeout_seconds <= 0 || options.max_in_flight <= 0) {
    return Status::InvalidArgument("rados: timeout and operations in flight must be positive");
  }
  options_ = options;
  const std::string conf =
      options.conf_path.empty() ? std::string("the default Ceph conf") : options.conf_path;
  int r = rados_.init2(("client." + options.client_id).c_str(), "ceph", 0);
  if (r < 0) return Error(r, "initialising librados for client." + options.client_id);
  r = rados_.conf_read_file(options.conf_path.empty() ? nullptr : options.conf_path.c_str());
  if (r < 0) return Error(r, "reading " + conf);
  const std::string t = std::to_string(options.timeout_seconds);
  for (const char* opt : {"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"}) {
    r = rados_.conf_set(opt, t.c_str());
    if (r < 0) return Error(r, std::string("setting ") + opt);
  }
  r = rados_.connect();
  if (r < 0) {
    Status st = Error(r, "connecting as client." + options.client_id + " with " + conf);
    return Status::IOError(st.message() + " (check the mon addresses and the keyring it names)");
  }
  connected_ = true;
  r = rados_.ioctx_create(options.pool.c_str(), ioctx_);
  if (r == -ENOENT) {
    return Status::NotFound(Name() + ": the cluster of " + conf + " has no pool '" + options.pool +
                            "' (create it with: ceph osd pool create " + options.pool + ")");
  }
  if (r < 0) return Error(r, "opening pool " + options.pool);
  ioctx_.set_namespace(options.ns);
  return Status::OK();
}

}  // namespace pstore
