// pager_bench: what the pager costs against reading the safetensors file by
// hand, each baseline timed in the same run.
//
//   pager_bench STORE NAME:TAG SOURCE.safetensors|SOURCE.gguf [--runs N] [--cold] [--threads N]
//               [--check]
//
//   --check               every process checks what it acquires against the
//                         chunk keys (PagerOptions::check_shared), to measure
//                         what that costs
//
//   load (OS cache warm)  full load of the model into fresh shared memory
//                         (prefetch every tensor, wait)  vs  pread of the file's
//                         data section into a fresh buffer
//   load (OS cache cold)  the same after `echo 3 > /proc/sys/vm/drop_caches`
//                         before each (needs root; --cold)
//   second process        a new process opens the resident model and acquires
//                         every tensor, touching every page  vs  a new process
//                         that mmaps the file and touches every page (each a
//                         fresh exec of this program, as another service on
//                         the host would be; timed inside it, from its start
//                         of work, so that neither pays for exec and linking)
//   acquire               latency of acquire (+release) of resident tensors
// Figures are medians of the runs; the ratios are pstore over baseline.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "pager/pager.h"
#include "store/formats/gguf.h"
#include "store/formats/safetensors.h"

using namespace pstore;
using bench::Median;
using bench::Now;

namespace {

bool DropCaches() {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd < 0) return false;
  bool ok = ::write(fd, "3\n", 2) == 2;
  ::close(fd);
  return ok;
}

// Where a source file's tensor data lies.
struct DataSection {
  uint64_t data_offset = 0, data_size = 0;
};

// The data section of a safetensors or GGUF file.
Result<DataSection> ReadDataSection(const std::string& path) {
  if (gguf::HasMagic(path)) {
    PSTORE_ASSIGN_OR_RETURN(gguf::FileHeader h, gguf::ReadFile(path));
    return DataSection{h.data_offset, h.data_size};
  }
  PSTORE_ASSIGN_OR_RETURN(safetensors::FileHeader h, safetensors::ReadHeader(path));
  return DataSection{h.data_offset, h.data_size};
}

double PreadFile(const std::string& path, const DataSection& h) {
  int fd = ::open(path.c_str(), O_RDONLY);
  double t0 = Now();
  void* buf =
      ::mmap(nullptr, h.data_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  Status s = PreadFull(fd, buf, h.data_size, h.data_offset, path);
  double t = Now() - t0;
  ::munmap(buf, h.data_size);
  ::close(fd);
  if (!s.ok()) std::abort();
  return t;
}

// Runs this program again as `pager_bench --child ARGS...` in a fresh
// process and returns the seconds it prints.
double InChild(const std::vector<std::string>& args) {
  // Everything the child needs is made before fork (the parent has threads).
  std::vector<std::string> strs = {"pager_bench", "--child"};
  strs.insert(strs.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : strs) argv.push_back(a.data());
  argv.push_back(nullptr);
  int p[2];
  if (::pipe(p) != 0) std::abort();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::close(p[0]);
    ::close(p[1]);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  ::close(p[1]);
  char buf[64] = {};
  ssize_t n = ::read(p[0], buf, sizeof(buf) - 1);
  ::close(p[0]);
  int status;
  ::waitpid(pid, &status, 0);
  if (n <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "child process failed\n");
    std::exit(1);
  }
  return std::atof(buf);
}

// The children: "second ROOT REF THREADS" (open the resident model with
// THREADS loader threads (0: the default), acquire every tensor, touch every
// page) and "mmap FILE" (map the file, touch every page).
int ChildMain(int argc, char** argv) {
  std::string mode = argc > 2 ? argv[2] : "";
  double t = -1;
  uint64_t acc = 0;
  if (mode == "second" && argc == 7) {
    PagerOptions po;
    po.loader_threads = std::atoi(argv[5]);
    po.check_shared = std::string(argv[6]) == "1";
    double t0 = Now();
    auto p = Pager::Open(argv[3], po);
    if (!p.ok()) return 1;
    auto m = (*p)->OpenModel(argv[4]);
    if (!m.ok()) return 1;
    for (uint32_t i = 0; i < (*m)->tensor_count(); i++) {
      auto ptr = (*m)->Acquire(i);
      if (!ptr.ok()) return 1;
      uint64_t n = (*m)->tables().size(i);
      for (uint64_t off = 0; off < n; off += 4096) acc += (*ptr)[off];
    }
    t = Now() - t0;
  } else if (mode == "mmap" && argc == 4) {
    auto h = ReadDataSection(argv[3]);
    if (!h.ok()) return 1;
    double t0 = Now();
    int fd = ::open(argv[3], O_RDONLY);
    size_t len = h->data_offset + h->data_size;
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 1;
    const uint8_t* p = static_cast<const uint8_t*>(m);
    for (size_t off = h->data_offset; off < len; off += 4096) acc += p[off];
    t = Now() - t0;
    ::munmap(m, len);
    ::close(fd);
  } else {
    return 2;
  }
  std::printf("%.9f %d\n", t, int(acc & 1));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--child") return ChildMain(argc, argv);
  if (argc < 4) {
    std::fprintf(
        stderr,
        "usage: pager_bench STORE NAME:TAG SOURCE.safetensors [--runs N] [--cold] [--threads N] "
        "[--check]\n");
    return 2;
  }
  std::string root = argv[1], ref = argv[2], src = argv[3];
  int runs = 5;
  bool cold = false;
  PagerOptions po;
  for (int i = 4; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else if (a == "--cold")
      cold = true;
    else if (a == "--threads" && i + 1 < argc)
      po.loader_threads = std::atoi(argv[++i]);
    else if (a == "--check")
      po.check_shared = true;
  }
  auto h = ReadDataSection(src);
  if (!h.ok()) {
    std::fprintf(stderr, "%s\n", h.status().ToString().c_str());
    return 1;
  }
  auto pager = Pager::Open(root, po);
  if (!pager.ok()) {
    std::fprintf(stderr, "%s\n", pager.status().ToString().c_str());
    return 1;
  }
  auto reader = (*pager)->CurrentReader();
  if (!reader.ok() || !(*reader)->EnsureDb().ok()) {
    std::fprintf(stderr, "cannot open the store's newest generation\n");
    return 1;
  }
  auto digest = (*reader)->view().Resolve(ref);
  if (!digest.ok()) {
    std::fprintf(stderr, "%s\n", digest.status().ToString().c_str());
    return 1;
  }
  std::string seg = Segment::NameFor((*pager)->store_id(), *digest);
  uint64_t raw = 0;
  {
    auto m = (*reader)->view().LoadManifest(*digest);
    raw = (*m)->TotalBytes();
  }
  auto full_load = [&]() -> double {
    auto m = (*pager)->OpenModel(ref);
    if (!m.ok()) std::abort();
    std::vector<uint32_t> all((*m)->tensor_count());
    for (uint32_t i = 0; i < all.size(); i++) all[i] = i;
    double t0 = Now();
    (*m)->Prefetch(all);
    if (!(*m)->WaitPrefetch().ok()) std::abort();
    return Now() - t0;
  };
  auto drop_segment = [&] {
    for (int i = 0; i < 300; i++) {
      auto si = InspectSegment(seg);
      if (!si.ok() || si->live_attachments() == 0) break;
      ::usleep(10000);
    }
    (void)RemoveSegment(seg);
  };

  std::printf("model %s: %.1f MB of tensors; file %s; medians of %d runs%s\n\n", ref.c_str(),
              raw / 1e6, src.c_str(), runs,
              po.check_shared ? "; checking shared memory (check_shared)" : "");
  std::printf("%-34s %12s %12s %8s\n", "figure", "pstore", "baseline", "ratio");

  // Warm OS cache.
  std::vector<double> load, pr;
  for (int r = 0; r < runs; r++) {
    pr.push_back(PreadFile(src, *h));
    drop_segment();
    load.push_back(full_load());
  }
  std::printf("%-34s %10.1fms %10.1fms %8.2f   (baseline: pread into a fresh buffer)\n",
              "full load, OS cache warm", Median(load) * 1e3, Median(pr) * 1e3,
              Median(load) / Median(pr));

  if (cold) {
    std::vector<double> cl, cp;
    bool ok = true;
    for (int r = 0; r < runs && ok; r++) {
      ok = DropCaches();
      cp.push_back(PreadFile(src, *h));
      drop_segment();
      ok = ok && DropCaches();
      cl.push_back(full_load());
    }
    if (ok)
      std::printf("%-34s %10.1fms %10.1fms %8.2f   (caches dropped before each)\n",
                  "full load, OS cache cold", Median(cl) * 1e3, Median(cp) * 1e3,
                  Median(cl) / Median(cp));
    else
      std::printf("%-34s   (cannot drop caches here: needs root)\n", "full load, OS cache cold");
  }

  // A second process, model resident: every tensor, every page touched.
  (void)full_load();
  std::vector<double> sp, mm;
  for (int r = 0; r < runs; r++) {
    sp.push_back(InChild(
        {"second", root, ref, std::to_string(po.loader_threads), po.check_shared ? "1" : "0"}));
    mm.push_back(InChild({"mmap", src}));
  }
  std::printf("%-34s %10.1fms %10.1fms %8.2f   (baseline: mmap the file, touch every page)\n",
              "second process, every tensor", Median(sp) * 1e3, Median(mm) * 1e3,
              Median(sp) / Median(mm));

  // Acquire latency, resident.
  {
    auto m = (*pager)->OpenModel(ref);
    std::mt19937 rng(7);
    std::vector<double> lat;
    uint32_t n = (*m)->tensor_count();
    for (int i = 0; i < 300000 && n; i++) {
      uint32_t t = rng() % n;
      auto a = std::chrono::steady_clock::now();
      auto p = (*m)->Acquire(t);
      auto b = std::chrono::steady_clock::now();
      if (!p.ok()) std::abort();
      (void)(*m)->Release(t);
      lat.push_back(std::chrono::duration<double, std::nano>(b - a).count());
    }
    std::sort(lat.begin(), lat.end());
    std::printf("%-34s %10.0fns %10.0fns            (p50, p99 of %zu)\n",
                "acquire, resident tensor", lat[lat.size() / 2], lat[lat.size() * 99 / 100],
                lat.size());
  }
  return 0;
}
