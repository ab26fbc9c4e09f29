// What the RADOS benchmarks share: librados completions with an owner,
// asynchronous operations with a bounded number in flight, and a byte string
// moved as one object per fixed-size piece (the baseline "the file as 64 MiB
// objects"). Every helper exits the process with a message on an error: a
// benchmark has nothing to recover.
//
// Thread-safety: the helpers keep no state; librados' IoCtx may be shared.
#pragma once

#include <rados/librados.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pstore::bench {

struct CompletionDeleter {
  void operator()(librados::AioCompletion* c) const { c->release(); }
};
using Completion = std::unique_ptr<librados::AioCompletion, CompletionDeleter>;

// Runs n operations, in_flight at once; exits on the first error.
inline void RunAio(int in_flight, size_t n,
                   const std::function<int(size_t, librados::AioCompletion*)>& start,
                   const char* what) {
  std::deque<std::pair<size_t, Completion>> pending;
  auto wait_oldest = [&] {
    auto [i, c] = std::move(pending.front());
    pending.pop_front();
    c->wait_for_complete();
    int r = c->get_return_value();
    if (r < 0) {
      std::fprintf(stderr, "%s %zu: %s\n", what, i, std::strerror(-r));
      std::exit(1);
    }
  };
  for (size_t i = 0; i < n; ++i) {
    while (pending.size() >= size_t(in_flight)) wait_oldest();
    Completion c(librados::Rados::aio_create_completion());
    int r = start(i, c.get());
    if (r < 0) {
      std::fprintf(stderr, "%s %zu: start: %s\n", what, i, std::strerror(-r));
      std::exit(1);
    }
    pending.emplace_back(i, std::move(c));
  }
  while (!pending.empty()) wait_oldest();
}

// Connects as client.admin with conf (empty: the default search) and opens
// pool; exits on failure.
inline void ConnectPool(const std::string& conf, const std::string& pool, librados::Rados* rados,
                        librados::IoCtx* io) {
  if (rados->init2("client.admin", "ceph", 0) < 0 ||
      rados->conf_read_file(conf.empty() ? nullptr : conf.c_str()) < 0 || rados->connect() < 0 ||
      rados->ioctx_create(pool.c_str(), *io) < 0) {
    std::fprintf(stderr, "cannot connect to pool %s with %s\n", pool.c_str(), conf.c_str());
    std::exit(1);
  }
}

// `data` as objects of `piece` bytes (the last one shorter), named by
// names[i].
inline void WritePieces(librados::IoCtx& io, std::string_view data, size_t piece,
                        const std::vector<std::string>& names, int in_flight) {
  RunAio(
      in_flight, names.size(),
      [&](size_t i, librados::AioCompletion* c) {
        librados::bufferlist bl;
        bl.append(data.data() + i * piece, std::min(piece, data.size() - i * piece));
        return io.aio_write_full(names[i], c, bl);
      },
      "write");
}

// Reads back what WritePieces wrote (size bytes in all); exits on a short
// read.
inline void ReadPieces(librados::IoCtx& io, size_t size, size_t piece,
                       const std::vector<std::string>& names, int in_flight) {
  std::vector<librados::bufferlist> bufs(names.size());
  RunAio(
      in_flight, names.size(),
      [&](size_t i, librados::AioCompletion* c) {
        return io.aio_read(names[i], c, &bufs[i], piece, 0);
      },
      "read");
  for (size_t i = 0; i < names.size(); ++i) {
    if (bufs[i].length() != std::min(piece, size - i * piece)) {
      std::fprintf(stderr, "short read of %s\n", names[i].c_str());
      std::exit(1);
    }
  }
}

// Removes every object of io's namespace.
inline void RemoveAll(librados::IoCtx& io, int in_flight) {
  std::vector<std::string> names;
  for (auto it = io.nobjects_begin(); it != io.nobjects_end(); ++it) names.push_back(it->get_oid());
  RunAio(
      in_flight, names.size(),
      [&](size_t i, librados::AioCompletion* c) { return io.aio_remove(names[i], c); }, "remove");
}

}  // namespace pstore::bench
