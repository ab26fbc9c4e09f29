// Shared librados helpers: see store/remote/rados_io.h.
#include "store/remote/rados_io.h"

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <utility>

namespace pstore {
namespace {

// Owns a librados completion.
struct CompletionDeleter {
  void operator()(librados::AioCompletion* c) const { c->release(); }
};
using Completion = std::unique_ptr<librados::AioCompletion, CompletionDeleter>;

}  // namespace

Status RadosError(const std::string& where, int timeout_seconds, int r, const std::string& what) {
  std::string msg = where + ": " + what + ": " + std::strerror(-r);
  if (r == -ETIMEDOUT) {
    msg += " (no answer within " + std::to_string(timeout_seconds) +
           " s: check that the cluster is up and reachable, or raise the timeout (--timeout))";
  }
  return Status::IOError(msg);
}

Status RunAioBatch(const RemoteIo& io, size_t n,
                   const std::function<int(size_t, librados::AioCompletion*)>& start,
                   const std::function<Status(size_t, int)>& finish) {
  std::deque<std::pair<size_t, Completion>> pending;
  Status first;
  auto wait_oldest = [&] {
    auto [i, c] = std::move(pending.front());
    pending.pop_front();
    c->wait_for_complete();
    Status st = finish(i, c->get_return_value());
    if (first.ok() && !st.ok()) first = st;
  };
  const size_t limit = io.max_in_flight > 0 ? size_t(io.max_in_flight) : 1;
  for (size_t i = 0; i < n && first.ok(); ++i) {
    while (pending.size() >= limit) wait_oldest();
    Completion c(librados::Rados::aio_create_completion());
    int r = start(i, c.get());
    if (r < 0) {
      first = io.Error(r, "starting an operation");
      break;
    }
    pending.emplace_back(i, std::move(c));
  }
  while (!pending.empty()) wait_oldest();
  return first;
}

Result<std::map<std::string, librados::bufferlist>> ReadAllOmap(const RemoteIo& io,
                                                                const std::string& oid,
                                                                const std::string& what,
                                                                std::string after) {
  std::map<std::string, librados::bufferlist> out;
  for (;;) {
    std::map<std::string, librados::bufferlist> vals;
    bool more = false;
    int rv = 0;
    librados::ObjectReadOperation op;
    op.omap_get_vals2(after, 4096, &vals, &more, &rv);
    int r = io.ioctx->operate(oid, &op, nullptr);
    if (r == -ENOENT) return out;
    if (r < 0) return io.Error(r, "reading " + what);
    if (vals.empty()) return out;
    after = vals.rbegin()->first;
    out.merge(vals);
    if (!more) return out;
  }
}

Result<std::optional<VersionedBytes>> ReadVersioned(const RemoteIo& io, const std::string& oid) {
  Completion c(librados::Rados::aio_create_completion());
  librados::bufferlist bl;
  librados::ObjectReadOperation op;
  op.read(0, 0, nullptr, nullptr);
  int r = io.ioctx->aio_operate(oid, c.get(), &op, &bl);
  if (r == 0) {
    c->wait_for_complete();
    r = c->get_return_value();
  }
  if (r == -ENOENT) return std::optional<VersionedBytes>();
  if (r < 0) return io.Error(r, "reading " + oid);
  return std::optional<VersionedBytes>(VersionedBytes{bl.to_str(), c->get_version64()});
}

}  // namespace pstore
