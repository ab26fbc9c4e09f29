// warm, ps and bench: commands over the pager and the host's shared memory.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "pager/budget_object.h"
#include "pager/pager.h"
#include "store/formats/gguf.h"
#include "store/formats/safetensors.h"
#ifdef PSTORE_HAVE_RADOS
#include "store/remote/lazy_remote.h"
#endif
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace pstore::cli {

namespace {

struct PagerArgs {
  std::string ref;
  std::vector<std::string> prefixes;
  std::string budget;
  bool gc = false, gc_all = false, orphans = false;
  bool check = false;  // bench: PagerOptions::check_shared
  std::string under;
  std::string baseline;
  int runs = 5;
  int threads = 0;
  CLI::App* warm = nullptr;
  CLI::App* ps = nullptr;
  CLI::App* bench = nullptr;
};
PagerArgs g_args;

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
auto Now() { return std::chrono::steady_clock::now(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Result<std::unique_ptr<Pager>> OpenPager(const Globals& g) {
  PagerOptions po;
  if (!g_args.budget.empty()) {
    PSTORE_ASSIGN_OR_RETURN(po.budget_bytes, ParseSize(g_args.budget));
  }
  po.loader_threads = g_args.threads;
  po.check_shared = g_args.check;
#ifdef PSTORE_HAVE_RADOS
  // Models the store lacks open from its remote, if it has one.
  if (auto lazy = LazyRemote::ForStore(g.store); lazy.ok()) po.lazy = std::move(lazy).value();
#endif
  return Pager::Open(g.store, po);
}

// --- warm -----------------------------------------------------------------------

int CmdWarm(const Globals& g) {
  auto p = OpenPager(g);
  if (!p.ok()) return Fail(g, p.status());
  auto m = (*p)->OpenModel(g_args.ref);
  if (!m.ok()) return Fail(g, m.status());
  Model& model = **m;
  std::vector<uint32_t> ts;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < model.tensor_count(); i++) {
    const std::string& name = model.manifest().tensors[i].name;
    bool match = g_args.prefixes.empty();
    for (const auto& pre : g_args.prefixes)
      if (name.compare(0, pre.size(), pre) == 0) match = true;
    if (match) {
      ts.push_back(i);
      bytes += model.manifest().tensors[i].size;
    }
  }
  if (ts.empty()) return Fail(g, Status::NotFound("no tensor of " + g_args.ref + " matches the prefixes"));
  auto t0 = Now();
  model.Prefetch(ts);
  Status st = model.WaitPrefetch();
  double secs = Seconds(t0, Now());
  if (!st.ok()) return Fail(g, st);
  ModelStats s = model.Stats();
  StoreMemory mem = (*p)->Memory();
  if (g.json) {
    PrintJson({{"ok", true},
               {"model", g_args.ref},
               {"tensors", ts.size()},
               {"bytes", bytes},
               {"seconds", secs},
               {"loaded_here", s.bytes_decoded},
               {"model_resident_bytes", s.resident_bytes},
               {"store_resident_bytes", mem.resident_bytes},
               {"budget_bytes", mem.budget_bytes}});
  } else {
    std::printf("warmed %zu tensors (%s) of %s in %.3f s; %s decoded here (the rest was resident)\n",
                ts.size(), HumanBytes(double(bytes)).c_str(), g_args.ref.c_str(), secs,
                HumanBytes(double(s.bytes_decoded)).c_str());
    std::printf("resident: model %s, store %s of a %s budget\n",
                HumanBytes(double(s.resident_bytes)).c_str(), HumanBytes(double(mem.resident_bytes)).c_str(),
                HumanBytes(double(mem.budget_bytes)).c_str());
  }
  return kExitOk;
}

// --- ps -------------------------------------------------------------------------

int CmdPs(const Globals& g) {
  StorePaths paths{g.store};
  auto id = ReadStoreId(paths);
  if (!id.ok()) return Fail(g, id.status());
  std::map<ModelDigest, std::vector<std::string>> names;
  std::shared_ptr<StoreReader> reader;
  if (auto r = StoreReader::Open(g.store); r.ok()) {
    reader = std::move(r).value();
    if (auto ns = reader->view().ListNames(); ns.ok())
      for (const auto& n : *ns) names[n.digest].push_back(n.ref);
  }
  auto cfg = ReadStoreConfig(paths);
  uint64_t budget = cfg.ok() ? cfg->budget_bytes : 0;
  if (budget == 0) budget = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE)) / 2;

  nlohmann::json segs = nlohmann::json::array();
  uint64_t total = 0;
  int removed = 0;
  if (!g.json)
    std::printf("%-32s %-12s %10s %10s %13s %7s %9s  %s\n", "MODEL", "DIGEST", "SIZE", "RESIDENT",
                "SLOTS READY", "LOADS", "EVICTED", "PROCESSES");
  for (const auto& name : ListSegments(*id)) {
    auto info = InspectSegment(name);
    if (!info.ok()) continue;
    bool in_store = info->complete && names.count(info->digest);
    if ((g_args.gc || g_args.gc_all) && info->live_attachments() == 0 &&
        (g_args.gc_all || !in_store)) {
      if (RemoveSegment(name).ok()) removed++;
      continue;
    }
    total += info->resident_bytes;
    std::string label;
    if (!info->complete) label = "(incomplete)";
    else if (!in_store) label = "(not in the store)";
    else
      for (const auto& n : names[info->digest]) label += (label.empty() ? "" : ",") + n;
    nlohmann::json atts = nlohmann::json::array();
    std::string procs;
    for (const auto& a : info->attachments) {
      atts.push_back({{"pid", a.pid},
                      {"command", a.comm},
                      {"alive", a.alive},
                      {"pinned_bytes", a.pinned_bytes},
                      {"since_unix", a.start_unix}});
      procs += (procs.empty() ? "" : " ") + std::to_string(a.pid) + "/" + a.comm +
               (a.alive ? "" : "(dead)") +
               (a.pinned_bytes ? "[" + HumanBytes(double(a.pinned_bytes)) + " pinned]" : "");
    }
    if (g.json) {
      segs.push_back({{"segment", info->name},
                      {"models", label},
                      {"digest", info->complete ? info->digest.Hex() : ""},
                      {"data_bytes", info->data_bytes},
                      {"resident_bytes", info->resident_bytes},
                      {"slots", info->nslots},
                      {"ready_slots", info->ready_slots},
                      {"busy_slots", info->busy_slots},
                      {"loads", info->loads},
                      {"load_bytes", info->load_bytes},
                      {"evictions", info->evictions},
                      {"processes", atts}});
    } else {
      char slots[32];
      std::snprintf(slots, sizeof(slots), "%u/%u", info->ready_slots, info->nslots);
      std::printf("%-32s %-12s %10s %10s %13s %7llu %9s  %s\n", label.c_str(),
                  info->complete ? info->digest.Hex().substr(0, 12).c_str() : "-",
                  HumanBytes(double(info->data_bytes)).c_str(),
                  HumanBytes(double(info->resident_bytes)).c_str(), slots,
                  (unsigned long long)info->loads, HumanBytes(double(info->evicted_bytes)).c_str(),
                  procs.empty() ? "-" : procs.c_str());
    }
  }
  // The budget object goes too once nothing is left that uses it.
  bool budget_removed =
      g_args.gc_all && ListSegments(*id).empty() && RemoveBudgetObjectIfUnused(*id);
  if (g.json) {
    PrintJson({{"ok", true},
               {"budget_bytes", budget},
               {"resident_bytes", total},
               {"segments", segs},
               {"removed", removed},
               {"budget_object_removed", budget_removed}});
  } else {
    std::printf("\nresident %s of a %s budget", HumanBytes(double(total)).c_str(),
                HumanBytes(double(budget)).c_str());
    if (removed) std::printf("; removed %d unused segment(s)", removed);
    if (budget_removed) std::printf("; removed the budget object");
    std::printf("\n");
  }
  return kExitOk;
}

// --- ps --orphans ---------------------------------------------------------------

// Shared memory whose store is gone: found from /dev/shm alone, through the
// folder each store's budget object records (pager/budget_object.h).
int CmdOrphans(const Globals& g) {
  std::string under;
  if (!g_args.under.empty()) {
    std::error_code ec;
    under = std::filesystem::absolute(g_args.under, ec).lexically_normal().string();
    if (char* real = ::realpath(g_args.under.c_str(), nullptr)) {
      under = real;
      ::free(real);
    }
    while (under.size() > 1 && under.back() == '/') under.pop_back();
  }
  auto is_under = [&](const std::string& folder) {
    if (under.empty()) return true;
    return folder == under ||
           (folder.size() > under.size() && folder.compare(0, under.size(), under) == 0 &&
            (under == "/" || folder[under.size()] == '/'));
  };
  nlohmann::json orphans = nlohmann::json::array(), unknown = nlohmann::json::array();
  int segments_removed = 0, budgets_removed = 0;
  for (const std::string& id : ListSharedMemoryStores()) {
    std::vector<std::string> segs = ListSegments(id);
    std::optional<std::string> folder = ReadBudgetOwner(id);
    if (!folder) {
      // No record: an older pstore's budget object, or none. Its store may
      // well exist; only `pstore ps --gc-all` in that store removes it.
      if (under.empty()) unknown.push_back({{"store_id", id}, {"segments", segs.size()}});
      continue;
    }
    if (!is_under(*folder)) continue;
    auto found = ReadStoreId(StorePaths{*folder});
    std::string why;
    if (found.ok()) {
      if (*found == id) continue;  // the store is there: not an orphan
      why = "the folder holds another store (" + *found + ")";
    } else if (found.status().IsNotFound()) {
      why = "the folder is gone";
    } else {
      continue;  // cannot tell (no permission, a damaged ID file): leave it
    }
    // A process holding the budget object's in-use byte has the store open,
    // wherever its folder is for it (another mount namespace, a bind mount
    // since unmounted): nothing of such a store is removed. The lock, taken
    // without waiting, is held while removing, so no Pager opens the store
    // meanwhile (it goes at the end of this iteration). A budget object this
    // user cannot open counts as in use.
    auto locked = LockBudgetObjectUnused(id);
    const bool store_in_use = !locked.ok() && !locked.status().IsNotFound();
    int removed = 0;
    uint64_t bytes = 0, in_use = 0;
    for (const auto& name : segs) {
      auto info = InspectSegment(name);
      // A segment that cannot be inspected counts as used: it is left alone.
      bool used = !info.ok() || info->live_attachments() > 0;
      if (info.ok()) bytes += info->resident_bytes;
      if (g_args.gc && !store_in_use && !used && RemoveSegment(name).ok()) {
        removed++;
        continue;
      }
      in_use += used;
    }
    bool budget_removed = g_args.gc && locked.ok() && ListSegments(id).empty() &&
                          RemoveBudgetObjectLocked(id, *locked);
    segments_removed += removed;
    budgets_removed += budget_removed;
    orphans.push_back({{"store_id", id},
                       {"folder", *folder},
                       {"reason", why},
                       {"store_in_use", store_in_use},
                       {"segments", segs.size()},
                       {"segments_in_use", in_use},
                       {"resident_bytes", bytes},
                       {"segments_removed", removed},
                       {"budget_object_removed", budget_removed}});
  }
  if (g.json) {
    PrintJson({{"ok", true},
               {"orphans", orphans},
               {"unknown", unknown},
               {"segments_removed", segments_removed},
               {"budget_objects_removed", budgets_removed}});
    return kExitOk;
  }
  for (const auto& o : orphans)
    std::printf(
        "orphan store %s (%s: %s): %llu segment(s), %s resident, %llu in use%s%s\n",
        o["store_id"].get<std::string>().c_str(), o["folder"].get<std::string>().c_str(),
        o["reason"].get<std::string>().c_str(), (unsigned long long)o["segments"].get<uint64_t>(),
        HumanBytes(double(o["resident_bytes"].get<uint64_t>())).c_str(),
        (unsigned long long)o["segments_in_use"].get<uint64_t>(),
        o["store_in_use"].get<bool>()
            ? "; store in use (a process has it open, seen through another path): left alone"
            : "",
        g_args.gc ? (", removed " + std::to_string(o["segments_removed"].get<int>()) +
                     (o["budget_object_removed"].get<bool>() ? " and its budget object" : ""))
                        .c_str()
                  : "");
  for (const auto& u : unknown)
    std::printf(
        "store %s: %llu segment(s), folder unknown (made by an older pstore; run `pstore "
        "ps --gc-all` in its store, or remove /dev/shm/pstore-%s-* by hand once no "
        "process uses them)\n",
        u["store_id"].get<std::string>().c_str(), (unsigned long long)u["segments"].get<uint64_t>(),
        u["store_id"].get<std::string>().c_str());
  if (orphans.empty())
    std::printf("no orphaned shared memory%s\n", under.empty() ? "" : (" under " + under).c_str());
  else if (!g_args.gc)
    std::printf("remove what nobody uses with `pstore ps --orphans --gc`\n");
  return kExitOk;
}

// --- bench ----------------------------------------------------------------------

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
    PSTORE_RETURN_IF_ERROR(PreadFull(fd.get(), buf, h.data_size, h.data_offset, path));
    pr.push_back(Seconds(t0, Now()));
    ::munmap(buf, h.data_size ? h.data_size : 1);
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

int CmdBench(const Globals& g) {
  auto p = OpenPager(g);
  if (!p.ok()) return Fail(g, p.status());
  Pager& pager = **p;
  auto reader = pager.CurrentReader();
  if (!reader.ok()) return Fail(g, reader.status());
  if (Status s = (*reader)->EnsureDb(); !s.ok()) return Fail(g, s);
  auto digest = (*reader)->view().Resolve(g_args.ref);
  if (!digest.ok()) return Fail(g, digest.status());
  auto info = GetModelInfo((*reader)->view(), *digest);
  if (!info.ok()) return Fail(g, info.status());
  std::string seg_name = Segment::NameFor(pager.store_id(), *digest);
  int runs = std::max(1, g_args.runs);

  // Cold segment: nothing of the model in shared memory (OS cache as it is).
  auto drop = [&]() -> Status {
    // Our own last run's loader threads may hold the model a moment longer.
    for (int i = 0; i < 200; i++) {
      auto si = InspectSegment(seg_name);
      if (!si.ok() || si->live_attachments() == 0) return RemoveSegment(seg_name);
      ::usleep(10000);
    }
    return Status::Busy("other processes have " + g_args.ref +
                        " open; bench needs it unmapped to time loading (see pstore ps)");
  };
  std::vector<double> open_s, first_s, full_s;
  uint64_t resident = 0;
  for (int r = 0; r < runs; r++) {
    Status ds = drop();
    if (!ds.ok()) return Fail(g, ds);
    auto t0 = Now();
    auto m = pager.OpenModel(g_args.ref);
    if (!m.ok()) return Fail(g, m.status());
    auto t1 = Now();
    Model& model = **m;
    if (model.tensor_count() > 0) {
      auto a = model.Acquire(0);
      if (!a.ok()) return Fail(g, a.status());
      (void)model.Release(0);
    }
    auto t2 = Now();
    std::vector<uint32_t> all(model.tensor_count());
    for (uint32_t i = 0; i < all.size(); i++) all[i] = i;
    model.Prefetch(all);
    Status st = model.WaitPrefetch();
    if (!st.ok()) return Fail(g, st);
    auto t3 = Now();
    open_s.push_back(Seconds(t0, t1));
    first_s.push_back(Seconds(t1, t2));
    full_s.push_back(Seconds(t1, t3));
    resident = model.Stats().resident_bytes;
  }

  // Acquire latency of resident tensors.
  auto m = pager.OpenModel(g_args.ref);
  if (!m.ok()) return Fail(g, m.status());
  Model& model = **m;
  std::vector<double> lat;
  if (model.tensor_count() > 0) {
    std::mt19937 rng(1);
    const int n = 200000;
    lat.reserve(n);
    for (int i = 0; i < n; i++) {
      uint32_t t = rng() % model.tensor_count();
      auto t0 = Now();
      auto a = model.Acquire(t);
      auto t1 = Now();
      if (!a.ok()) return Fail(g, a.status());
      (void)model.Release(t);
      lat.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    std::sort(lat.begin(), lat.end());
  }
  auto pct = [&](double q) { return lat.empty() ? 0.0 : lat[size_t(q * double(lat.size() - 1))]; };

  BaselineTimes base;
  if (!g_args.baseline.empty()) {
    auto b = MeasureBaseline(g_args.baseline, runs);
    if (!b.ok()) return Fail(g, b.status());
    base = *b;
  }
  uint64_t manifest_bytes = 0;
  double full = Median(full_s);
  if (g.json) {
    nlohmann::json j = {{"ok", true},
                        {"model", g_args.ref},
                        {"raw_bytes", info->raw_bytes},
                        {"disk_bytes", info->stored_bytes + manifest_bytes},
                        {"memory_bytes", resident},
                        {"open_s", Median(open_s)},
                        {"first_tensor_s", Median(first_s)},
                        {"full_load_s", full},
                        {"acquire_p50_ns", pct(0.5)},
                        {"acquire_p99_ns", pct(0.99)},
                        {"runs", runs}};
    if (!g_args.baseline.empty()) {
      j["baseline_pread_s"] = base.pread_s;
      j["baseline_mmap_touch_s"] = base.mmap_s;
      j["full_load_over_pread"] = base.pread_s > 0 ? full / base.pread_s : 0;
    }
    PrintJson(j);
    return kExitOk;
  }
  std::printf("model            %s (%zu tensors)\n", g_args.ref.c_str(), info->tensors.size());
  std::printf("size on disk     %s stored for %s raw (%.3f)\n", HumanBytes(double(info->stored_bytes)).c_str(),
              HumanBytes(double(info->raw_bytes)).c_str(),
              info->raw_bytes ? double(info->stored_bytes) / double(info->raw_bytes) : 0.0);
  std::printf("size in memory   %s shared by every process on the host\n", HumanBytes(double(resident)).c_str());
  std::printf("open             %.3f ms\n", Median(open_s) * 1e3);
  std::printf("first tensor     %.3f ms (cold shared memory)\n", Median(first_s) * 1e3);
  std::printf("full load        %.3f ms (%s/s)\n", full * 1e3,
              HumanBytes(full > 0 ? double(info->raw_bytes) / full : 0).c_str());
  std::printf("acquire          p50 %.0f ns, p99 %.0f ns (resident tensor, %zu samples)\n", pct(0.5),
              pct(0.99), lat.size());
  if (!g_args.baseline.empty()) {
    std::printf("baseline pread   %.3f ms -> full load / pread = %.2f\n", base.pread_s * 1e3,
                base.pread_s > 0 ? full / base.pread_s : 0.0);
    std::printf("baseline mmap    %.3f ms (map and touch every page)\n", base.mmap_s * 1e3);
  }
  std::printf("(medians of %d runs)\n", runs);
  return kExitOk;
}

}  // namespace

void AddPagerCommands(CLI::App& app, Globals& g) {
  g_args.warm = app.add_subcommand("warm", "Page a model (or the tensors under some prefixes) into shared memory");
  g_args.warm->add_option("NAME:TAG", g_args.ref, "The model")->required();
  g_args.warm->add_option("--prefix", g_args.prefixes, "Only tensors whose names start so (repeatable), e.g. a layer");
  g_args.warm->add_option("--budget", g_args.budget, "Memory budget for this run (e.g. 8G); default: the store's");
  g_args.warm->add_option("--threads", g_args.threads, "Loader threads");

  g_args.ps = app.add_subcommand("ps", "Mapped models, attached processes, resident and pinned bytes, budget");
  g_args.ps->add_flag("--gc", g_args.gc, "Remove segments of models no longer in the store that nobody uses");
  g_args.ps->add_flag("--gc-all", g_args.gc_all,
                      "Remove every segment nobody uses (drops the shared cache), and the "
                      "budget object once no segment and no process uses it");
  g_args.ps->add_flag("--orphans", g_args.orphans,
                      "Without a store: shared memory of stores whose folder is gone or holds "
                      "another store (with --gc: remove what nobody uses)");
  g_args.ps->add_option("--under", g_args.under,
                        "With --orphans: only stores whose folder was under this folder");

  g_args.bench = app.add_subcommand("bench", "Size on disk and in memory, open, first-tensor and full-load times, acquire latency");
  g_args.bench->add_option("NAME:TAG", g_args.ref, "The model (it must not be open elsewhere)")->required();
  g_args.bench->add_option(
      "--baseline", g_args.baseline,
      "The model's safetensors or GGUF file, to time pread and mmap of it in the same run");
  g_args.bench->add_option("--runs", g_args.runs, "Runs per figure (medians are shown)");
  g_args.bench->add_option("--budget", g_args.budget, "Memory budget for this run");
  g_args.bench->add_option("--threads", g_args.threads, "Loader threads");
  g_args.bench->add_flag("--check", g_args.check,
                         "Check every tensor acquired against its chunk keys, as a reader that does "
                         "not trust the other processes using the store's shared memory");
}

int RunPagerCommand(CLI::App&, const Globals& g) {
  if (*g_args.warm) return CmdWarm(g);
  if (*g_args.ps) return g_args.orphans ? CmdOrphans(g) : CmdPs(g);
  if (*g_args.bench) return CmdBench(g);
  return Fail(g, Status::InvalidArgument("unknown command; see pstore --help"));
}

}  // namespace pstore::cli
