// RadosChunkSource: see store/remote/rados_chunk_source.h.
#include "store/remote/rados_chunk_source.h"

#include <cerrno>
#include <functional>

#include "store/remote/rados_connection.h"
#include "store/remote/rados_io.h"

namespace pstore {

struct RadosChunkSource::Impl {
  RadosConnection conn;

  std::string Name() const { return conn.Name(); }
  Status Error(int r, const std::string& what) const { return conn.Error(r, what); }
  RemoteIo Io() { return conn.Io(); }

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

RadosConnection& RadosChunkSource::connection() {
  return impl_->conn;
}

std::string RadosChunkSource::Describe() const {
  return impl_->Name();
}

Result<std::unique_ptr<RadosChunkSource>> RadosChunkSource::Open(const RadosOptions& options) {
  auto impl = std::make_unique<Impl>();
  PSTORE_RETURN_IF_ERROR(impl->conn.Connect(options));
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
        return impl_->conn.ioctx().aio_operate(ObjectName(keys[i]), c, &ops[i], nullptr);
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
        return impl_->conn.ioctx().aio_stat(ObjectName(keys[i]), c, &sizes[i], &mtimes[i]);
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
        return impl_->conn.ioctx().aio_operate(ObjectName(frames[i].key), c, &ops[i]);
      },
      [&](size_t i, int r) {
        if (r == -EEXIST) return Status::OK();  // already stored: chunks are immutable
        if (r < 0) return impl_->Error(r, "writing chunk " + frames[i].key.Hex());
        return Status::OK();
      });
}

}  // namespace pstore
