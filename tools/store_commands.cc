// The commands that change the store: import, rm, tag, compact, config; and
// export, which writes a model back out. All but export take the store's
// writer lock (--wait to wait for it).
//
// Thread-safety: run on the CLI's main thread.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pager/shm_access.h"
#include "store/lazy_ingest.h"
#include "store/store.h"
#include "tools/commands.h"

namespace pstore::cli {
namespace {

// --- import -------------------------------------------------------------------

struct ImportArgs {
  std::string source, ref, profile;
  bool force = false, wait = false;
  int threads = 0;
};

struct ImportOutput : Output {
  std::string model;
  ImportResult r;

  nlohmann::json Json() const {
    return {{"ok", true},
            {"model", model},
            {"digest", r.digest.Hex()},
            {"unchanged", r.unchanged},
            {"replaced", r.replaced},
            {"tensors", r.tensors},
            {"raw_bytes", r.raw_bytes},
            {"chunks", r.chunks},
            {"new_chunks", r.new_chunks},
            {"new_raw_bytes", r.new_raw_bytes},
            {"new_stored_bytes", r.new_stored_bytes},
            {"seconds", r.seconds}};
  }
  void Text() const {
    std::printf("%s %s (%s)\n",
                r.unchanged  ? "unchanged"
                : r.replaced ? "replaced"
                             : "imported",
                model.c_str(), r.digest.Hex().substr(0, 12).c_str());
    std::printf("  %llu tensors, %s of tensor data in %.2f s (%s/s)\n",
                (unsigned long long)r.tensors, HumanBytes(double(r.raw_bytes)).c_str(), r.seconds,
                HumanBytes(r.seconds > 0 ? double(r.raw_bytes) / r.seconds : 0).c_str());
    std::printf(
        "  %llu of %llu chunks new: %s stored for %s raw (%.3f); the rest already in the "
        "store\n",
        (unsigned long long)r.new_chunks, (unsigned long long)r.chunks,
        HumanBytes(double(r.new_stored_bytes)).c_str(), HumanBytes(double(r.new_raw_bytes)).c_str(),
        r.new_raw_bytes ? double(r.new_stored_bytes) / double(r.new_raw_bytes) : 0.0);
  }
};

Result<ImportOutput> RunImport(const Context& c, const ImportArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(a.ref));
  ImportOptions opt;
  opt.force = a.force;
  opt.threads = a.threads;
  if (!a.profile.empty()) {
    auto p = ProfileFromName(a.profile);
    if (!p) {
      return Status::InvalidArgument("unknown codec profile '" + a.profile +
                                     "' (raw, lz4, zstd, fast, dense)");
    }
    opt.profile = *p;
  }
  PSTORE_RETURN_IF_ERROR(CheckThreads(a.threads, "--threads"));
  // Before the writer lock, and before a missing store is created.
  PSTORE_RETURN_IF_ERROR(StoreWriter::CheckImportSource(a.source));
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(c.store, a.wait));
  ProgressLine line("importing", !c.json);
  opt.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = w->Import(a.source, name, opt);
  line.Finish();
  if (!r.ok()) return r.status();
  ImportOutput out;
  out.model = name.Ref();
  out.r = std::move(r).value();
  return out;
}

}  // namespace

Command AddImportCommand(CLI::App& app) {
  auto a = std::make_shared<ImportArgs>();
  auto* sub = app.add_subcommand("import",
                                 "Import a safetensors file, a sharded model (its folder or index "
                                 "file), or a GGUF file (split: any of its files)");
  sub->add_option("SOURCE", a->source,
                  "A .safetensors file, a folder, model.safetensors.index.json, or a .gguf file")
      ->required();
  sub->add_option("NAME:TAG", a->ref, "The name to import under (tag defaults to latest)")
      ->required();
  sub->add_flag("--force", a->force, "Replace NAME:TAG if it names another model");
  sub->add_option("--profile", a->profile,
                  "Codec profile: raw, lz4, zstd, fast, dense (default: the store's)");
  sub->add_option("--threads", a->threads, "Encoding threads (default: one per core)");
  sub->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  return {sub, [a](const Context& c) { return Emit(c, RunImport(c, *a)); }};
}

namespace {

// --- export -------------------------------------------------------------------

struct ExportArgs {
  std::string ref, path;
  int threads = 0;
};

struct ExportOutput : Output {
  std::string model, path;
  ModelDigest digest;

  nlohmann::json Json() const {
    return {{"ok", true}, {"model", model}, {"digest", digest.Hex()}, {"path", path}};
  }
  void Text() const { std::printf("exported %s to %s\n", model.c_str(), path.c_str()); }
};

Result<ExportOutput> RunExport(const Context& c, const ExportArgs& a) {
  PSTORE_RETURN_IF_ERROR(CheckThreads(a.threads, "--threads"));
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(c.store));
  PSTORE_ASSIGN_OR_RETURN(ModelDigest d, r->view().Resolve(a.ref));
  ProgressLine line("exporting", !c.json);
  ExportOptions opt;
  opt.model = a.ref;
  opt.threads = a.threads;
  opt.progress = [&](uint64_t done, uint64_t total) { return line.Update(done, total); };
  Status s = ExportModel(r->view(), d, a.path, opt);
  line.Finish();
  if (!s.ok()) return s.WithContext("export of " + a.ref + " failed, nothing was written");
  ExportOutput out;
  out.model = a.ref;
  out.path = a.path;
  out.digest = d;
  return out;
}

}  // namespace

Command AddExportCommand(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* sub =
      app.add_subcommand("export", "Write a model back as the file(s) it was imported from");
  sub->add_option("NAME:TAG", a->ref, "The model (name:tag or digest)")->required();
  sub->add_option("PATH", a->path, "Output file (a folder for sharded models)")->required();
  sub->add_option("--threads", a->threads, "Decoding threads (default: one per core)");
  return {sub, [a](const Context& c) { return Emit(c, RunExport(c, *a)); }};
}

namespace {

// --- rm -----------------------------------------------------------------------

struct RmArgs {
  std::vector<std::string> refs;
  std::string remote;
  bool wait = false;
};

struct RmOutput : Output {
  std::vector<std::string> refs;     // as given
  std::vector<std::string> removed;  // parsed names, in order, until a failure

  nlohmann::json Json() const { return {{"ok", true}, {"removed", refs}}; }
  void Text() const {
    for (const auto& n : removed)
      std::printf("removed %s (its space is reclaimed by `pstore compact`)\n", n.c_str());
  }
};

Result<RmOutput> RunRm(const Context& c, const RmArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(
      auto w, StoreWriter::Open(c.store, a.wait, StoreConfig{}, /*may_use_reserve=*/true));
  RmOutput out;
  out.refs = a.refs;
  for (const auto& ref : a.refs) {
    auto name = ParseModelName(ref);
    if (!name.ok()) {
      out.stopped = name.status();
      break;
    }
    out.stopped = w->Remove(*name);
    if (!out.stopped.ok()) break;
    out.removed.push_back(name->Ref());
  }
  return out;
}

}  // namespace

Command AddRmCommand(CLI::App& app) {
  auto a = std::make_shared<RmArgs>();
  auto* sub = app.add_subcommand("rm", "Remove names; compact reclaims space no model uses");
  sub->add_option("NAME:TAG", a->refs, "Names to remove")->required();
  sub->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  auto* remote = sub->add_option("--remote", a->remote, "Remove the names on this remote instead");
  return {sub, [a, remote](const Context& c) {
            if (remote->count()) return RunRemoteRmNames(c, a->remote, a->refs);
            return Emit(c, RunRm(c, *a));
          }};
}

namespace {

// --- tag ----------------------------------------------------------------------

struct TagArgs {
  std::string source, ref;
  bool force = false, wait = false;
};

struct TagOutput : Output {
  std::string source, model;

  nlohmann::json Json() const { return {{"ok", true}, {"source", source}, {"model", model}}; }
  void Text() const { std::printf("tagged %s as %s\n", source.c_str(), model.c_str()); }
};

Result<TagOutput> RunTag(const Context& c, const TagArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(a.ref));
  // tag frees nothing: it must not use up the space set aside for rm and compact.
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(c.store, a.wait));
  PSTORE_RETURN_IF_ERROR(w->Tag(a.source, name, a.force));
  TagOutput out;
  out.source = a.source;
  out.model = name.Ref();
  return out;
}

}  // namespace

Command AddTagCommand(CLI::App& app) {
  auto a = std::make_shared<TagArgs>();
  auto* sub = app.add_subcommand("tag", "Give a model another name");
  sub->add_option("SOURCE", a->source, "The model (name:tag or digest)")->required();
  sub->add_option("NAME:TAG", a->ref, "The new name")->required();
  sub->add_flag("--force", a->force, "Move NAME:TAG if it names another model");
  sub->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  return {sub, [a](const Context& c) { return Emit(c, RunTag(c, *a)); }};
}

namespace {

// --- compact ------------------------------------------------------------------

struct CompactOutput : Output {
  CompactResult r;

  int64_t freed() const { return int64_t(r.disk_before) - int64_t(r.disk_after); }
  nlohmann::json Json() const {
    return {{"ok", true},
            {"manifests_removed", r.manifests_removed},
            {"chunks_removed", r.chunks_removed},
            {"stored_bytes_removed", r.stored_bytes_removed},
            {"disk_before", r.disk_before},
            {"disk_after", r.disk_after},
            {"bytes_freed", freed()},
            {"generations_removed", r.generations_removed},
            {"generations_in_use", r.generations_in_use}};
  }
  void Text() const {
    std::printf("removed %llu unreferenced model(s) and %llu chunk(s) (%s of chunk data)\n",
                (unsigned long long)r.manifests_removed, (unsigned long long)r.chunks_removed,
                HumanBytes(double(r.stored_bytes_removed)).c_str());
    const int64_t f = freed();
    std::printf("disk: %s -> %s, %s freed\n", HumanBytes(double(r.disk_before)).c_str(),
                HumanBytes(double(r.disk_after)).c_str(),
                (f < 0 ? "-" + HumanBytes(double(-f)) : HumanBytes(double(f))).c_str());
    if (r.generations_in_use > 0)
      std::printf(
          "%d older generation(s) kept: readers still hold them; their space is freed by a "
          "later compact once they close\n",
          r.generations_in_use);
  }
};

Result<CompactOutput> RunCompact(const Context& c, bool wait) {
  PSTORE_ASSIGN_OR_RETURN(
      auto w, StoreWriter::Open(c.store, wait, StoreConfig{}, /*may_use_reserve=*/true));
  // Lazily opened models whose chunks are all on the host become local ones
  // first; compacting goes on whatever happens there (a full disk, say).
  if (auto in = IngestLazyCache(w.get()); !in.ok() && !c.json) {
    std::fprintf(stderr, "note: the lazy cache was not ingested: %s\n",
                 in.status().ToString().c_str());
  }
  PSTORE_ASSIGN_OR_RETURN(CompactResult r, w->Compact());
  CompactOutput out;
  out.r = r;
  return out;
}

}  // namespace

Command AddCompactCommand(CLI::App& app) {
  auto wait = std::make_shared<bool>(false);
  auto* sub =
      app.add_subcommand("compact", "Delete chunks no model uses and reclaim their disk space");
  sub->add_flag("--wait", *wait, "Wait for another writer instead of failing");
  return {sub, [wait](const Context& c) { return Emit(c, RunCompact(c, *wait)); }};
}

namespace {

// --- config -------------------------------------------------------------------

struct ConfigArgs {
  uint32_t chunk_size = 0;
  std::string profile;
  int zstd_level = 0;
  std::string budget;
  std::optional<std::string> group;
  bool wait = false;

  bool changes() const {
    return chunk_size || !profile.empty() || zstd_level || !budget.empty() || group;
  }
};

struct ConfigOutput : Output {
  bool changed = false;  // saved, or only shown
  StoreConfig config;

  nlohmann::json Json() const {
    nlohmann::json j = nlohmann::json::parse(config.ToJson());
    if (!changed) return j;
    return {{"ok", true}, {"config", j}};
  }
  void Text() const {
    if (changed) {
      std::printf("configuration saved (new chunk size and codec apply to later imports)\n");
      return;
    }
    const StoreConfig& c = config;
    std::printf("chunk_size  %u\nprofile     %s\nzstd_level  %d\nbudget      %s\ngroup       %s\n",
                c.chunk_size, std::string(ProfileName(c.profile)).c_str(), c.zstd_level,
                c.budget_bytes ? HumanBytes(double(c.budget_bytes)).c_str() : "auto (half of RAM)",
                c.group.empty() ? "(owner only)" : c.group.c_str());
  }
};

Result<ConfigOutput> RunConfig(const Context& ctx, const ConfigArgs& a) {
  ConfigOutput out;
  if (!a.changes()) {
    StorePaths p{ctx.store};
    PSTORE_RETURN_IF_ERROR(ReadStoreId(p).status());
    PSTORE_ASSIGN_OR_RETURN(out.config, ReadStoreConfig(p));
    return out;
  }
  StoreConfig init;
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(ctx.store, a.wait, init));
  StoreConfig c = w->config();
  if (a.chunk_size) c.chunk_size = a.chunk_size;
  if (!a.profile.empty()) {
    auto p = ProfileFromName(a.profile);
    if (!p) return Status::InvalidArgument("unknown codec profile '" + a.profile + "'");
    c.profile = *p;
  }
  if (a.zstd_level) c.zstd_level = a.zstd_level;
  if (!a.budget.empty()) {
    PSTORE_ASSIGN_OR_RETURN(c.budget_bytes, ParseSize(a.budget));
  }
  if (a.group) c.group = *a.group;
  PSTORE_RETURN_IF_ERROR(w->SetConfig(c));
  if (a.group) {
    // The shared memory of the store, existing segments included.
    PSTORE_ASSIGN_OR_RETURN(std::string id, ReadStoreId(w->paths()));
    PSTORE_ASSIGN_OR_RETURN(auto opt, ShmAccessFor(c));
    PSTORE_RETURN_IF_ERROR(ApplyShmAccess(id, opt).status());
  }
  out.changed = true;
  out.config = c;
  return out;
}

}  // namespace

Command AddConfigCommand(CLI::App& app) {
  auto a = std::make_shared<ConfigArgs>();
  auto group = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("config", "Show or change the store's settings");
  sub->add_option("--chunk-size", a->chunk_size,
                  "Chunk size in bytes for later imports (64 KiB to 4 MiB, power of two)");
  sub->add_option("--profile", a->profile, "Default codec profile: raw, lz4, zstd, fast, dense");
  sub->add_option("--zstd-level", a->zstd_level,
                  "Zstandard level used by the zstd and dense profiles");
  sub->add_option("--budget", a->budget,
                  "Shared-memory budget for mapped models (e.g. 8G; 0: half of RAM)");
  auto* group_opt = sub->add_option("--group", *group,
                                    "Group given read access to the store and its shared memory");
  sub->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  return {sub, [a, group, group_opt](const Context& c) {
            if (group_opt->count()) a->group = *group;
            return Emit(c, RunConfig(c, *a));
          }};
}

}  // namespace pstore::cli
