// warm and ps: commands over the pager and the host's shared memory. ps
// --orphans finds the shared memory of stores whose folder is gone.
//
// Thread-safety: run on the CLI's main thread.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "pager/budget_object.h"
#include "pager/pager.h"
#if defined(PSTORE_HAVE_RADOS)
#include "store/remote/lazy_remote.h"
#elif defined(PSTORE_REMOTE_BY_EXEC)
#include "api/lazy_module.h"
#endif
#include "tools/commands.h"

namespace pstore::cli {

Result<std::unique_ptr<Pager>> OpenPager(const Context& c, const PagerArgs& a) {
  PagerOptions po;
  if (!a.budget.empty()) {
    PSTORE_ASSIGN_OR_RETURN(po.budget_bytes, ParseSize(a.budget));
  }
  po.loader_threads = a.threads;
  po.check_shared = a.check;
#if defined(PSTORE_HAVE_RADOS)
  // Models the store lacks open from its remote, if it has one.
  if (auto lazy = LazyRemote::ForStore(c.store); lazy.ok()) po.lazy = std::move(lazy).value();
#elif defined(PSTORE_REMOTE_BY_EXEC)
  // The same through the module the C API loads (api/lazy_module.h), only for
  // a store that has a remote. As above, a remote that cannot be read leaves
  // models to the local store; a module that cannot be loaded is said when a
  // model the store lacks is opened.
  if (auto lazy = LoadModule(c.store); lazy.ok()) {
    po.lazy = std::move(lazy).value();
  } else if (lazy.status().IsNotFound()) {
    po.lazy = LoadLazyOpener(c.store);
  }
#endif
  return Pager::Open(c.store, po);
}

void AddPagerOptions(CLI::App* sub, PagerArgs& a, const char* budget_help) {
  sub->add_option("--budget", a.budget, budget_help);
  sub->add_option("--threads", a.threads, "Loader threads");
}

namespace {

// --- warm -----------------------------------------------------------------------

struct WarmArgs {
  std::string ref;
  std::vector<std::string> prefixes;
  PagerArgs pager;
};

struct WarmOutput : Output {
  std::string model;
  size_t tensors = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  ModelStats stats;
  StoreMemory memory;

  nlohmann::json Json() const {
    return {{"ok", true},
            {"model", model},
            {"tensors", tensors},
            {"bytes", bytes},
            {"seconds", seconds},
            {"loaded_here", stats.bytes_decoded},
            {"model_resident_bytes", stats.resident_bytes},
            {"store_resident_bytes", memory.resident_bytes},
            {"budget_bytes", memory.budget_bytes}};
  }
  void Text() const {
    std::printf(
        "warmed %zu tensors (%s) of %s in %.3f s; %s decoded here (the rest was resident)\n",
        tensors, HumanBytes(double(bytes)).c_str(), model.c_str(), seconds,
        HumanBytes(double(stats.bytes_decoded)).c_str());
    std::printf("resident: model %s, store %s of a %s budget\n",
                HumanBytes(double(stats.resident_bytes)).c_str(),
                HumanBytes(double(memory.resident_bytes)).c_str(),
                HumanBytes(double(memory.budget_bytes)).c_str());
  }
};

Result<WarmOutput> RunWarm(const Context& c, const WarmArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto pager, OpenPager(c, a.pager));
  PSTORE_ASSIGN_OR_RETURN(auto m, pager->OpenModel(a.ref));
  Model& model = *m;
  WarmOutput out;
  out.model = a.ref;
  std::vector<uint32_t> ts;
  for (uint32_t i = 0; i < model.tensor_count(); i++) {
    std::string_view name = model.tables().name(i);
    bool match = a.prefixes.empty();
    for (const auto& pre : a.prefixes)
      if (name.substr(0, pre.size()) == pre) match = true;
    if (match) {
      ts.push_back(i);
      out.bytes += model.tables().size(i);
    }
  }
  if (ts.empty()) return Status::NotFound("no tensor of " + a.ref + " matches the prefixes");
  out.tensors = ts.size();
  auto t0 = std::chrono::steady_clock::now();
  model.Prefetch(ts);
  Status st = model.WaitPrefetch();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  PSTORE_RETURN_IF_ERROR(st);
  out.stats = model.Stats();
  out.memory = pager->Memory();
  return out;
}

}  // namespace

Command AddWarmCommand(CLI::App& app) {
  auto a = std::make_shared<WarmArgs>();
  auto* sub = app.add_subcommand(
      "warm", "Page a model (or the tensors under some prefixes) into shared memory");
  sub->add_option("NAME:TAG", a->ref, "The model")->required();
  sub->add_option("--prefix", a->prefixes,
                  "Only tensors whose names start so (repeatable), e.g. a layer");
  AddPagerOptions(sub, a->pager, "Memory budget for this run (e.g. 8G); default: the store's");
  return {sub, [a](const Context& c) { return Emit(c, RunWarm(c, *a)); }};
}

namespace {

// --- ps -------------------------------------------------------------------------

struct PsArgs {
  bool gc = false, gc_all = false, orphans = false;
  std::string under;
};

struct PsOutput : Output {
  struct Row {
    SegmentInfo info;
    std::string label;  // the model's names, or why it has none
  };
  std::vector<Row> rows;
  uint64_t budget = 0, resident = 0;
  int removed = 0;
  bool budget_removed = false;

  nlohmann::json Json() const {
    nlohmann::json segs = nlohmann::json::array();
    for (const Row& r : rows) {
      const SegmentInfo& info = r.info;
      nlohmann::json atts = nlohmann::json::array();
      for (const auto& a : info.attachments) {
        atts.push_back({{"pid", a.pid},
                        {"command", a.comm},
                        {"alive", a.alive},
                        {"pinned_bytes", a.pinned_bytes},
                        {"since_unix", a.start_unix}});
      }
      segs.push_back({{"segment", info.name},
                      {"models", r.label},
                      {"digest", info.complete ? info.digest.Hex() : ""},
                      {"data_bytes", info.data_bytes},
                      {"resident_bytes", info.resident_bytes},
                      {"slots", info.nslots},
                      {"ready_slots", info.ready_slots},
                      {"busy_slots", info.busy_slots},
                      {"loads", info.loads},
                      {"load_bytes", info.load_bytes},
                      {"evictions", info.evictions},
                      {"processes", atts}});
    }
    return {
        {"ok", true},       {"budget_bytes", budget}, {"resident_bytes", resident},
        {"segments", segs}, {"removed", removed},     {"budget_object_removed", budget_removed}};
  }
  void Text() const {
    std::printf("%-32s %-12s %10s %10s %13s %7s %9s  %s\n", "MODEL", "DIGEST", "SIZE", "RESIDENT",
                "SLOTS READY", "LOADS", "EVICTED", "PROCESSES");
    for (const Row& r : rows) {
      const SegmentInfo& info = r.info;
      std::string procs;
      for (const auto& a : info.attachments) {
        if (!procs.empty()) procs += ' ';
        procs += std::to_string(a.pid);
        procs += '/';
        procs += a.comm;
        if (!a.alive) procs += "(dead)";
        if (a.pinned_bytes) {
          procs += '[';
          procs += HumanBytes(double(a.pinned_bytes));
          procs += " pinned]";
        }
      }
      char slots[32];
      std::snprintf(slots, sizeof(slots), "%u/%u", info.ready_slots, info.nslots);
      std::printf("%-32s %-12s %10s %10s %13s %7llu %9s  %s\n", r.label.c_str(),
                  info.complete ? info.digest.Hex().substr(0, 12).c_str() : "-",
                  HumanBytes(double(info.data_bytes)).c_str(),
                  HumanBytes(double(info.resident_bytes)).c_str(), slots,
                  (unsigned long long)info.loads, HumanBytes(double(info.evicted_bytes)).c_str(),
                  procs.empty() ? "-" : procs.c_str());
    }
    std::printf("\nresident %s of a %s budget", HumanBytes(double(resident)).c_str(),
                HumanBytes(double(budget)).c_str());
    if (removed) std::printf("; removed %d unused segment(s)", removed);
    if (budget_removed) std::printf("; removed the budget object");
    std::printf("\n");
  }
};

Result<PsOutput> RunPs(const Context& c, const PsArgs& a) {
  StorePaths paths{c.store};
  PSTORE_ASSIGN_OR_RETURN(std::string id, ReadStoreId(paths));
  std::map<ModelDigest, std::vector<std::string>> names;
  std::shared_ptr<StoreReader> reader;
  if (auto r = StoreReader::Open(c.store); r.ok()) {
    reader = std::move(r).value();
    if (auto ns = reader->view().ListNames(); ns.ok())
      for (const auto& n : *ns) names[n.digest].push_back(n.ref);
  }
  PsOutput out;
  auto cfg = ReadStoreConfig(paths);
  out.budget = cfg.ok() ? cfg->budget_bytes : 0;
  if (out.budget == 0)
    out.budget = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE)) / 2;

  for (const auto& name : ListSegments(id)) {
    auto info = InspectSegment(name);
    if (!info.ok()) continue;
    bool in_store = info->complete && names.count(info->digest);
    if ((a.gc || a.gc_all) && info->live_attachments() == 0 && (a.gc_all || !in_store)) {
      if (RemoveSegment(name).ok()) out.removed++;
      continue;
    }
    out.resident += info->resident_bytes;
    PsOutput::Row row;
    if (!info->complete)
      row.label = "(incomplete)";
    else if (!in_store)
      row.label = "(not in the store)";
    else
      for (const auto& n : names[info->digest]) row.label += (row.label.empty() ? "" : ",") + n;
    row.info = std::move(info).value();
    out.rows.push_back(std::move(row));
  }
  // The budget object goes too once nothing is left that uses it.
  out.budget_removed = a.gc_all && ListSegments(id).empty() && RemoveBudgetObjectIfUnused(id);
  return out;
}

// --- ps --orphans ---------------------------------------------------------------

struct OrphansOutput : Output {
  struct Orphan {
    std::string store_id, folder, reason;
    bool store_in_use = false;
    uint64_t segments = 0, segments_in_use = 0, resident_bytes = 0;
    int segments_removed = 0;
    bool budget_object_removed = false;
  };
  struct Unknown {
    std::string store_id;
    uint64_t segments = 0;
  };
  std::vector<Orphan> orphans;
  std::vector<Unknown> unknown;
  int segments_removed = 0, budgets_removed = 0;
  bool gc = false;
  std::string under;

  nlohmann::json Json() const {
    nlohmann::json os = nlohmann::json::array(), us = nlohmann::json::array();
    for (const Orphan& o : orphans) {
      os.push_back({{"store_id", o.store_id},
                    {"folder", o.folder},
                    {"reason", o.reason},
                    {"store_in_use", o.store_in_use},
                    {"segments", o.segments},
                    {"segments_in_use", o.segments_in_use},
                    {"resident_bytes", o.resident_bytes},
                    {"segments_removed", o.segments_removed},
                    {"budget_object_removed", o.budget_object_removed}});
    }
    for (const Unknown& u : unknown)
      us.push_back({{"store_id", u.store_id}, {"segments", u.segments}});
    return {{"ok", true},
            {"orphans", os},
            {"unknown", us},
            {"segments_removed", segments_removed},
            {"budget_objects_removed", budgets_removed}};
  }
  void Text() const {
    for (const Orphan& o : orphans) {
      std::printf(
          "orphan store %s (%s: %s): %llu segment(s), %s resident, %llu in use%s%s\n",
          o.store_id.c_str(), o.folder.c_str(), o.reason.c_str(), (unsigned long long)o.segments,
          HumanBytes(double(o.resident_bytes)).c_str(), (unsigned long long)o.segments_in_use,
          o.store_in_use
              ? "; store in use (a process has it open, seen through another path): left alone"
              : "",
          gc ? (", removed " + std::to_string(o.segments_removed) +
                (o.budget_object_removed ? " and its budget object" : ""))
                   .c_str()
             : "");
    }
    for (const Unknown& u : unknown) {
      std::printf(
          "store %s: %llu segment(s), folder unknown (made by an older pstore; run `pstore "
          "ps --gc-all` in its store, or remove /dev/shm/pstore-%s-* by hand once no "
          "process uses them)\n",
          u.store_id.c_str(), (unsigned long long)u.segments, u.store_id.c_str());
    }
    if (orphans.empty())
      std::printf("no orphaned shared memory%s\n",
                  under.empty() ? "" : (" under " + under).c_str());
    else if (!gc)
      std::printf("remove what nobody uses with `pstore ps --orphans --gc`\n");
  }
};

// The folder as the budget objects record it: absolute, symbolic links
// resolved where it exists, no trailing slash.
std::string CanonicalFolder(const std::string& path) {
  std::error_code ec;
  std::string f = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (char* real = ::realpath(path.c_str(), nullptr)) {
    f = real;
    ::free(real);
  }
  while (f.size() > 1 && f.back() == '/') f.pop_back();
  return f;
}

// Shared memory whose store is gone: found from /dev/shm alone, through the
// folder each store's budget object records (pager/budget_object.h).
Result<OrphansOutput> RunOrphans(const PsArgs& a) {
  OrphansOutput out;
  out.gc = a.gc;
  if (!a.under.empty()) out.under = CanonicalFolder(a.under);
  const std::string& under = out.under;
  auto is_under = [&](const std::string& folder) {
    if (under.empty()) return true;
    return folder == under ||
           (folder.size() > under.size() && folder.compare(0, under.size(), under) == 0 &&
            (under == "/" || folder[under.size()] == '/'));
  };
  for (const std::string& id : ListSharedMemoryStores()) {
    std::vector<std::string> segs = ListSegments(id);
    std::optional<std::string> folder = ReadBudgetOwner(id);
    if (!folder) {
      // No record: an older pstore's budget object, or none. Its store may
      // well exist; only `pstore ps --gc-all` in that store removes it.
      if (under.empty()) out.unknown.push_back({id, segs.size()});
      continue;
    }
    if (!is_under(*folder)) continue;
    auto found = ReadStoreId(StorePaths{*folder});
    OrphansOutput::Orphan o;
    if (found.ok()) {
      if (*found == id) continue;  // the store is there: not an orphan
      o.reason = "the folder holds another store (" + *found + ")";
    } else if (found.status().IsNotFound()) {
      o.reason = "the folder is gone";
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
    o.store_in_use = !locked.ok() && !locked.status().IsNotFound();
    for (const auto& name : segs) {
      auto info = InspectSegment(name);
      // A segment that cannot be inspected counts as used: it is left alone.
      bool used = !info.ok() || info->live_attachments() > 0;
      if (info.ok()) o.resident_bytes += info->resident_bytes;
      if (a.gc && !o.store_in_use && !used && RemoveSegment(name).ok()) {
        o.segments_removed++;
        continue;
      }
      o.segments_in_use += used;
    }
    o.budget_object_removed =
        a.gc && locked.ok() && ListSegments(id).empty() && RemoveBudgetObjectLocked(id, *locked);
    o.store_id = id;
    o.folder = *folder;
    o.segments = segs.size();
    out.segments_removed += o.segments_removed;
    out.budgets_removed += o.budget_object_removed;
    out.orphans.push_back(std::move(o));
  }
  return out;
}

}  // namespace

Command AddPsCommand(CLI::App& app) {
  auto a = std::make_shared<PsArgs>();
  auto* sub = app.add_subcommand(
      "ps", "Mapped models, attached processes, resident and pinned bytes, budget");
  sub->add_flag("--gc", a->gc, "Remove segments of models no longer in the store that nobody uses");
  sub->add_flag("--gc-all", a->gc_all,
                "Remove every segment nobody uses (drops the shared cache), and the "
                "budget object once no segment and no process uses it");
  sub->add_flag("--orphans", a->orphans,
                "Without a store: shared memory of stores whose folder is gone or holds "
                "another store (with --gc: remove what nobody uses)");
  sub->add_option("--under", a->under,
                  "With --orphans: only stores whose folder was under this folder");
  return {sub, [a](const Context& c) {
            return a->orphans ? Emit(c, RunOrphans(*a)) : Emit(c, RunPs(c, *a));
          }};
}

}  // namespace pstore::cli
