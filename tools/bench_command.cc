// bench: a model's size on disk and in memory, open, first-tensor and
// full-load times from cold shared memory, acquire latency of resident
// tensors, and optionally the source file read with pread and mmap as
// baselines.
//
// Thread-safety: run on the CLI's main thread.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <random>

#include "pager/pager.h"
#include "store/formats/gguf.h"
#include "store/formats/safetensors.h"
#include "tools/commands.h"

namespace pstore::cli {
namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
auto Now() {
  return std::chrono::steady_clock::now();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct BenchArgs {
  std::string ref, baseline;
  int runs = 5;
  PagerArgs pager;
};

struct BaselineTimes {
  double pread_s = 0, mmap_s = 0;
};

// Reads the source file's tensor data the two usual ways, as baselines.
Result<BaselineTimes> MeasureBaseline(const std::string& path, int runs) {
  struct {
    uint64_t data_offset, data_size;
  } h;
  if (gguf::HasMagic(path)) {
    PSTORE_ASSIGN_OR_RETURN(gguf::FileHeader gh, gguf::ReadFile(path));
    h = {gh.data_offset, gh.data_size};
  } else {
    PSTORE_ASSIGN_OR_RETURN(safetensors::FileHeader sh, safetensors::ReadHeader(path));
    h = {sh.data_offset, sh.data_size};
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("open " + path, errno);
  std::vector<double> pr, mm;
  volatile uint64_t sink = 0;
  for (int r = 0; r < runs; r++) {
    auto t0 = Now();
    void* buf = ::mmap(nullptr, h.data_size ? h.data_size : 1, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return Status::FromErrno("mmap of a buffer for " + path, errno);
    Status read = PreadFull(fd.get(), buf, h.data_size, h.data_offset, path);
    pr.push_back(Seconds(t0, Now()));
    ::munmap(buf, h.data_size ? h.data_size : 1);
    PSTORE_RETURN_IF_ERROR(read);
    auto t1 = Now();
    size_t len = h.data_offset + h.data_size;
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (m == MAP_FAILED) return Status::FromErrno("mmap " + path, errno);
    const uint8_t* p = static_cast<const uint8_t*>(m);
    uint64_t acc = 0;
    for (size_t off = h.data_offset; off < len; off += 4096) acc += p[off];
    sink = sink + acc;
    mm.push_back(Seconds(t1, Now()));
    ::munmap(m, len);
  }
  return BaselineTimes{Median(pr), Median(mm)};
}

struct BenchOutput : Output {
  std::string model;
  size_t tensors = 0;
  uint64_t raw_bytes = 0, stored_bytes = 0, resident = 0;
  double open_s = 0, first_s = 0, full_s = 0;
  std::vector<double> latencies_ns;  // sorted
  std::optional<BaselineTimes> base;
  int runs = 0;

  double Percentile(double q) const {
    return latencies_ns.empty() ? 0.0 : latencies_ns[size_t(q * double(latencies_ns.size() - 1))];
  }
  nlohmann::json Json() const {
    nlohmann::json j = {{"ok", true},
                        {"model", model},
                        {"raw_bytes", raw_bytes},
                        {"disk_bytes", stored_bytes},
                        {"memory_bytes", resident},
                        {"open_s", open_s},
                        {"first_tensor_s", first_s},
                        {"full_load_s", full_s},
                        {"acquire_p50_ns", Percentile(0.5)},
                        {"acquire_p99_ns", Percentile(0.99)},
                        {"runs", runs}};
    if (base) {
      j["baseline_pread_s"] = base->pread_s;
      j["baseline_mmap_touch_s"] = base->mmap_s;
      j["full_load_over_pread"] = base->pread_s > 0 ? full_s / base->pread_s : 0;
    }
    return j;
  }
  void Text() const {
    std::printf("model            %s (%zu tensors)\n", model.c_str(), tensors);
    std::printf("size on disk     %s stored for %s raw (%.3f)\n",
                HumanBytes(double(stored_bytes)).c_str(), HumanBytes(double(raw_bytes)).c_str(),
                raw_bytes ? double(stored_bytes) / double(raw_bytes) : 0.0);
    std::printf("size in memory   %s shared by every process on the host\n",
                HumanBytes(double(resident)).c_str());
    std::printf("open             %.3f ms\n", open_s * 1e3);
    std::printf("first tensor     %.3f ms (cold shared memory)\n", first_s * 1e3);
    std::printf("full load        %.3f ms (%s/s)\n", full_s * 1e3,
                HumanBytes(full_s > 0 ? double(raw_bytes) / full_s : 0).c_str());
    std::printf("acquire          p50 %.0f ns, p99 %.0f ns (resident tensor, %zu samples)\n",
                Percentile(0.5), Percentile(0.99), latencies_ns.size());
    if (base) {
      std::printf("baseline pread   %.3f ms -> full load / pread = %.2f\n", base->pread_s * 1e3,
                  base->pread_s > 0 ? full_s / base->pread_s : 0.0);
      std::printf("baseline mmap    %.3f ms (map and touch every page)\n", base->mmap_s * 1e3);
    }
    std::printf("(medians of %d runs)\n", runs);
  }
};

Result<BenchOutput> RunBench(const Context& c, const BenchArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto p, OpenPager(c, a.pager));
  Pager& pager = *p;
  PSTORE_ASSIGN_OR_RETURN(auto reader, pager.CurrentReader());
  PSTORE_RETURN_IF_ERROR(reader->EnsureDb());
  PSTORE_ASSIGN_OR_RETURN(ModelDigest digest, reader->view().Resolve(a.ref));
  PSTORE_ASSIGN_OR_RETURN(ModelInfo info, GetModelInfo(reader->view(), digest));
  std::string seg_name = Segment::NameFor(pager.store_id(), digest);
  BenchOutput out;
  out.model = a.ref;
  out.tensors = info.tensors.size();
  out.raw_bytes = info.raw_bytes;
  out.stored_bytes = info.stored_bytes;
  out.runs = std::max(1, a.runs);

  // Cold segment: nothing of the model in shared memory (OS cache as it is).
  auto drop = [&]() -> Status {
    // Our own last run's loader threads may hold the model a moment longer.
    for (int i = 0; i < 200; i++) {
      auto si = InspectSegment(seg_name);
      if (!si.ok() || si->live_attachments() == 0) return RemoveSegment(seg_name);
      ::usleep(10000);
    }
    return Status::Busy("other processes have " + a.ref +
                        " open; bench needs it unmapped to time loading (see pstore ps)");
  };
  std::vector<double> open_s, first_s, full_s;
  for (int r = 0; r < out.runs; r++) {
    PSTORE_RETURN_IF_ERROR(drop());
    auto t0 = Now();
    PSTORE_ASSIGN_OR_RETURN(auto m, pager.OpenModel(a.ref));
    auto t1 = Now();
    Model& model = *m;
    if (model.tensor_count() > 0) {
      PSTORE_RETURN_IF_ERROR(model.Acquire(0).status());
      (void)model.Release(0);
    }
    auto t2 = Now();
    std::vector<uint32_t> all(model.tensor_count());
    for (uint32_t i = 0; i < all.size(); i++) all[i] = i;
    model.Prefetch(all);
    PSTORE_RETURN_IF_ERROR(model.WaitPrefetch());
    auto t3 = Now();
    open_s.push_back(Seconds(t0, t1));
    first_s.push_back(Seconds(t1, t2));
    full_s.push_back(Seconds(t1, t3));
    out.resident = model.Stats().resident_bytes;
  }
  out.open_s = Median(open_s);
  out.first_s = Median(first_s);
  out.full_s = Median(full_s);

  // Acquire latency of resident tensors.
  PSTORE_ASSIGN_OR_RETURN(auto m, pager.OpenModel(a.ref));
  Model& model = *m;
  if (model.tensor_count() > 0) {
    std::mt19937 rng(1);
    const int n = 200000;
    out.latencies_ns.reserve(n);
    for (int i = 0; i < n; i++) {
      uint32_t t = rng() % model.tensor_count();
      auto t0 = Now();
      auto acquired = model.Acquire(t);
      auto t1 = Now();
      PSTORE_RETURN_IF_ERROR(acquired.status());
      (void)model.Release(t);
      out.latencies_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    std::sort(out.latencies_ns.begin(), out.latencies_ns.end());
  }
  if (!a.baseline.empty()) {
    PSTORE_ASSIGN_OR_RETURN(out.base, MeasureBaseline(a.baseline, out.runs));
  }
  return out;
}

}  // namespace

Command AddBenchCommand(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand("bench",
                                 "Size on disk and in memory, open, first-tensor and full-load "
                                 "times, acquire latency");
  sub->add_option("NAME:TAG", a->ref, "The model (it must not be open elsewhere)")->required();
  sub->add_option(
      "--baseline", a->baseline,
      "The model's safetensors or GGUF file, to time pread and mmap of it in the same run");
  sub->add_option("--runs", a->runs, "Runs per figure (medians are shown)");
  AddPagerOptions(sub, a->pager, "Memory budget for this run");
  sub->add_flag("--check", a->pager.check,
                "Check every tensor acquired against its chunk keys, as a reader that does "
                "not trust the other processes using the store's shared memory");
  return {sub, [a](const Context& c) { return Emit(c, RunBench(c, *a)); }};
}

}  // namespace pstore::cli
