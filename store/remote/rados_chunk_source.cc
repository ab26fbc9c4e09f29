// RadosChunkSource: see store/remote/rados_chunk_source.h.
#include "store/remote/rados_chunk_source.h"

#include <cerrno>
#include <functional>

#include "store/remote/rados_io.h"

namespace pstore {

struct RadosChunkSource::Impl {
  RadosOptions options;
  librados::Rados rados;
  librados::IoCtx ioctx;
  bool connected = false;

  ~Impl() {
    ioctx.close();
    if (connected) rados.shutdown();
  }

  std::string Name() const {
    return "rados:" + options.pool + (options.ns.empty() ? "" : "/" + options.ns);
  }

  RemoteIo Io() { return {&ioctx, Name(), options.timeout_seconds, options.max_in_flight}; }

  // A Status for librados error r (negative errno) on `what`.
  Status Error(int r, const std::string& what) const {
    return RadosError(Name(), options.timeout_seconds, r, what);
  }

  Status RunBatch(size_t n, const std::function<int(size_t, librados::AioCompletion*)>& start,
                  const std::function<Status(size_t, int)>& finish) {
    return RunAioBatch(Io(), n, start, finish);
  }
};

RadosChunkSource::RadosChunkSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RadosChunkSource::~RadosChunkSource() = default;

std::string RadosChunkSource::ObjectName(const ChunkKey& key) {
  return "c." + key.Hex();
}

std::string RadosChunkSource::Describe() const {
  return impl_->Name();
}

Result<std::unique_ptr<RadosChunkSource>> RadosChunkSource::Open(const RadosOptions& options) {
  if (options.pool.empty()) return Status::InvalidArgument("rados: no pool given");
  if (options.timeout_seconds <= 0 || options.max_in_flight <= 0) {
    return Status::InvalidArgument("rados: timeout and operations in flight must be positive");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const std::string where = impl->Name();
  const std::string conf =
      options.conf_path.empty() ? std::string("the default Ceph conf") : options.conf_path;
  int r = impl->rados.init2(("client." + options.client_id).c_str(), "ceph", 0);
  if (r < 0) return impl->Error(r, "initialising librados for client." + options.client_id);
  r = impl->rados.conf_read_file(options.conf_path.empty() ? nullptr : options.conf_path.c_str());
  if (r < 0) return impl->Error(r, "reading " + conf);
  const std::string t = std::to_string(options.timeout_seconds);
  for (const char* opt : {"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"}) {
    r = impl->rados.conf_set(opt, t.c_str());
    if (r < 0) return impl->Error(r, std::string("setting ") + opt);
  }
  r = impl->rados.connect();
  if (r < 0) {
    Status st = impl->Error(r, "connecting as client." + options.client_id + " with " + conf);
    return Status::IOError(st.message() + " (check the mon addresses and the keyring it names)");
  }
  impl->connected = true;
  r = impl->rados.ioctx_create(options.pool.c_str(), impl->ioctx);
  if (r == -ENOENT) {
    return Status::NotFound(where + ": the cluster of " + conf + " has no pool '" + options.pool +
                            "' (create it with: ceph osd pool create " + options.pool + ")");
  }
  if (r < 0) return impl->Error(r, "opening pool " + options.pool);
  impl->ioctx.set_namespace(options.ns);
  return std::unique_ptr<RadosChunkSource>(new RadosChunkSource(std::move(impl)));
}

Result<std::vector<std::optional<std::string>>> RadosChunkSource::Read(
    std::span<const ChunkKey> keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  std::vector<librados::bufferlist> bufs(keys.size());
  std::vector<int> rvals(keys.size(), 0);
  std::vector<librados::ObjectReadOperation> ops(keys.size());
  Status st = impl_->RunBatch(
      keys.size(),
      [&](size_t i, librados::AioCompletion* c) {
        ops[i].read(0, 0, &bufs[i], &rvals[i]);  // length 0: the whole object
        return impl_->ioctx.aio_operate(ObjectName(keys[i]), c, &ops[i], nullptr);
      },
      [&](size_t i, int r) {
        if (r == -ENOENT) return Status::OK();  // missing: a result
        if (r < 0) return impl_->Error(r, "reading chunk " + keys[i].Hex());
        out[i] = bufs[i].to_str();
        bufs[i].clear();
        return Status::OK();
      });
  if (!st.ok()) return st;
  return out;
}

Result<std::vector<bool>> RadosChunkSource::Contains(std::span<const ChunkKey> keys) {
  std::vector<bool> out(keys.size());
  std::vector<uint64_t> sizes(keys.size());
  std::vector<time_t> mtimes(keys.size());
  Status st = impl_->RunBatch(
      keys.size(),
      [&](size_t i, librados::AioCompletion* c) {
        return impl_->ioctx.aio_stat(ObjectName(keys[i]), c, &sizes[i], &mtimes[i]);
      },
      [&](size_t i, int r) {
        if (r == -ENOENT) return Status::OK();
        if (r < 0) return impl_->Error(r, "looking up chunk " + keys[i].Hex());
        out[i] = true;
        return Status::OK();
      });
  if (!st.ok()) return st;
  return out;
}

Status RadosChunkSource::Write(std::span<const ChunkFrameRef> frames) {
  std::vector<librados::ObjectWriteOperation> ops(frames.size());
  return impl_->RunBatch(
      frames.size(),
      [&](size_t i, librados::AioCompletion* c) {
        librados::bufferlist bl;
        bl.append(frames[i].frame.data(), frames[i].frame.size());
        ops[i].create(true);  // exclusive: an existing chunk is kept
        ops[i].write_full(bl);
        return impl_->ioctx.aio_operate(ObjectName(frames[i].key), c, &ops[i]);
      },
      [&](size_t i, int r) {
        if (r == -EEXIST) return Status::OK();  // already stored: chunks are immutable
        if (r < 0) return impl_->Error(r, "writing chunk " + frames[i].key.Hex());
        return Status::OK();
      });
}

}  // namespace pstore
