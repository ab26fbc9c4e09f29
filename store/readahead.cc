#include "store/readahead.h"

#include <fcntl.h>
#include <unistd.h>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pstore {

namespace {

thread_local uint64_t tls_window = 0;

// An open descriptor of a blob file, shared by the file and queued requests
// (a request may outlive the file).
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() { ::close(fd); }
};

// One background thread issues the kernel's read-ahead, in order.
class Advisor {
 public:
  static Advisor& Get() {
    static Advisor* a = new Advisor;  // never destroyed: lives with the process
    return *a;
  }
  void Add(std::shared_ptr<Fd> fd, uint64_t off, uint64_t len) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back({std::move(fd), off, len});
      if (!started_) {
        started_ = true;
        std::thread([this] { Run(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  struct Request {
    std::shared_ptr<Fd> fd;
    uint64_t off, len;
  };
  void Run() {
    for (;;) {
      Request r;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !queue_.empty(); });
        r = std::move(queue_.front());
        queue_.pop_front();
      }
      // In pieces, so that a request far ahead does not hold back the next.
      constexpr uint64_t kPiece = 4ull << 20;
      for (uint64_t at = r.off; at < r.off + r.len; at += kPiece)
        (void)::posix_fadvise(r.fd->fd, off_t(at), off_t(std::min(kPiece, r.off + r.len - at)),
                              POSIX_FADV_WILLNEED);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;
  bool started_ = false;
};

class ReadaheadFile : public rocksdb::FSRandomAccessFileOwnerWrapper {
 public:
  ReadaheadFile(std::unique_ptr<rocksdb::FSRandomAccessFile>&& t, std::shared_ptr<Fd> fd)
      : FSRandomAccessFileOwnerWrapper(std::move(t)), fd_(std::move(fd)) {}

  rocksdb::IOStatus Read(uint64_t offset, size_t n, const rocksdb::IOOptions& options,
                         rocksdb::Slice* result, char* scratch,
                         rocksdb::IODebugContext* dbg) const override {
    OnRead(offset, n);
    return target()->Read(offset, n, options, result, scratch, dbg);
  }
  rocksdb::IOStatus MultiRead(rocksdb::FSReadRequest* reqs, size_t num_reqs,
                              const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override {
    if (num_reqs > 0) {
      uint64_t begin = UINT64_MAX, end = 0;
      for (size_t i = 0; i < num_reqs; i++) {
        begin = std::min(begin, reqs[i].offset);
        end = std::max(end, reqs[i].offset + reqs[i].len);
      }
      OnRead(begin, end - begin);
    }
    return target()->MultiRead(reqs, num_reqs, options, dbg);
  }

 private:
  // Keeps the kernel `window` bytes ahead of the run of reads, asking in
  // steps of a quarter window so that requests stay large.
  void OnRead(uint64_t off, uint64_t n) const {
    const uint64_t w = tls_window;
    if (w == 0) return;
    uint64_t from, to;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (off < run_begin_ || off > ahead_) run_begin_ = ahead_ = off;  // a new run
      to = off + n + w;
      if (to < ahead_ + w / 4) return;
      from = std::max(ahead_, off);
      ahead_ = to;
    }
    Advisor::Get().Add(fd_, from, to - from);
  }

  std::shared_ptr<Fd> fd_;
  mutable std::mutex mu_;
  mutable uint64_t run_begin_ = 0, ahead_ = 0;  // the run, and how far it is read ahead
};

class ReadaheadFs : public rocksdb::FileSystemWrapper {
 public:
  explicit ReadaheadFs(const std::shared_ptr<rocksdb::FileSystem>& t) : FileSystemWrapper(t) {}
  const char* Name() const override { return "PstoreReadaheadFs"; }

  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewRandomAccessFile(f, o, r, dbg);
    if (!s.ok() || o.use_direct_reads || f.size() < 5 || f.compare(f.size() - 5, 5, ".blob") != 0)
      return s;
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s;  // no read-ahead; reads work as before
    r->reset(new ReadaheadFile(std::move(*r), std::make_shared<Fd>(fd)));
    return s;
  }
};

}  // namespace

ReadaheadScope::ReadaheadScope(uint64_t window) : saved_(tls_window) { tls_window = window; }
ReadaheadScope::~ReadaheadScope() { tls_window = saved_; }

rocksdb::Env* ReadaheadEnv() {
  static rocksdb::Env* env =
      rocksdb::NewCompositeEnv(std::make_shared<ReadaheadFs>(rocksdb::FileSystem::Default()))
          .release();  // never destroyed: databases may be open until exit
  return env;
}

}  // namespace pstore
