// pstore: the admin command of a pstore store.
//
//   pstore [--store DIR] [--json] COMMAND ...
//
// Commands that change the store (import, rm, tag, compact, config) take the
// store's writer lock; the others read the newest published generation and run
// alongside a writer. Exit codes: see tools/cli_util.h and docs/cli.md.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pager/shm_access.h"
#include "store/chunk_read.h"
#include "store/lazy_ingest.h"
#include "store/store.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/gguf_info.h"

namespace pstore::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }
}  // namespace

bool ProgressLine::Interrupted() { return g_interrupted.load(); }

int Fail(const Globals& g, const Status& failed) {
  // Whatever failed after SIGINT or SIGTERM (a wait for the writer lock, a
  // read) failed because of it: report an interruption.
  Status s = failed;
  if (g_interrupted.load() && s.code() != Status::Code::kAborted)
    s = Status::Aborted("interrupted by a signal (" + failed.message() + ")");
  if (g.json) {
    nlohmann::json j;
    j["ok"] = false;
    j["error"] = s.message();
    j["code"] = Status::CodeName(s.code());
    std::cout << j.dump() << "\n";
  } else {
    std::fprintf(stderr, "pstore: %s\n", s.message().c_str());
  }
  return ExitCodeFor(s);
}

void PrintJson(const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; }

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TimeString(uint64_t unix_secs) {
  time_t t = time_t(unix_secs);
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm);
  return buf;
}

namespace {

Result<std::unique_ptr<StoreReader>> OpenReader(const Globals& g) {
  return StoreReader::Open(g.store);
}

// --- import -------------------------------------------------------------------

int CmdImport(const Globals& g, const std::string& source, const std::string& ref, bool force,
              const std::string& profile, int threads, bool wait) {
  auto name = ParseModelName(ref);
  if (!name.ok()) return Fail(g, name.status());
  ImportOptions opt;
  opt.force = force;
  opt.threads = threads;
  if (!profile.empty()) {
    auto p = ProfileFromName(profile);
    if (!p) return Fail(g, Status::InvalidArgument("unknown codec profile '" + profile +
                                                   "' (raw, lz4, zstd, fast, dense)"));
    opt.profile = *p;
  }
  if (Status s = CheckThreads(threads, "--threads"); !s.ok()) return Fail(g, s);
  // Before the writer lock, and before a missing store is created.
  if (Status s = StoreWriter::CheckImportSource(source); !s.ok()) return Fail(g, s);
  auto w = StoreWriter::Open(g.store, wait);
  if (!w.ok()) return Fail(g, w.status());
  ProgressLine line("importing", !g.json);
  opt.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = (*w)->Import(source, *name, opt);
  line.Finish();
  if (!r.ok()) return Fail(g, r.status());
  if (g.json) {
    PrintJson({{"ok", true},
               {"model", name->Ref()},
               {"digest", r->digest.Hex()},
               {"unchanged", r->unchanged},
               {"replaced", r->replaced},
               {"tensors", r->tensors},
               {"raw_bytes", r->raw_bytes},
               {"chunks", r->chunks},
               {"new_chunks", r->new_chunks},
               {"new_raw_bytes", r->new_raw_bytes},
               {"new_stored_bytes", r->new_stored_bytes},
               {"seconds", r->seconds}});
  } else {
    std::printf("%s %s (%s)\n", r->unchanged ? "unchanged" : r->replaced ? "replaced" : "imported",
                name->Ref().c_str(), r->digest.Hex().substr(0, 12).c_str());
    std::printf("  %llu tensors, %s of tensor data in %.2f s (%s/s)\n",
                (unsigned long long)r->tensors, HumanBytes(double(r->raw_bytes)).c_str(), r->seconds,
                HumanBytes(r->seconds > 0 ? double(r->raw_bytes) / r->seconds : 0).c_str());
    std::printf("  %llu of %llu chunks new: %s stored for %s raw (%.3f); the rest already in the "
                "store\n",
                (unsigned long long)r->new_chunks, (unsigned long long)r->chunks,
                HumanBytes(double(r->new_stored_bytes)).c_str(),
                HumanBytes(double(r->new_raw_bytes)).c_str(),
                r->new_raw_bytes ? double(r->new_stored_bytes) / double(r->new_raw_bytes) : 0.0);
  }
  return kExitOk;
}

// --- export -------------------------------------------------------------------

int CmdExport(const Globals& g, const std::string& ref, const std::string& path) {
  auto r = OpenReader(g);
  if (!r.ok()) return Fail(g, r.status());
  auto d = (*r)->view().Resolve(ref);
  if (!d.ok()) return Fail(g, d.status());
  ProgressLine line("exporting", !g.json);
  ExportOptions opt;
  opt.model = ref;
  opt.progress = [&](uint64_t done, uint64_t total) { return line.Update(done, total); };
  Status s = ExportModel((*r)->view(), *d, path, opt);
  line.Finish();
  if (!s.ok()) return Fail(g, s.WithContext("export of " + ref + " failed, nothing was written"));
  if (g.json) PrintJson({{"ok", true}, {"model", ref}, {"digest", d->Hex()}, {"path", path}});
  else std::printf("exported %s to %s\n", ref.c_str(), path.c_str());
  return kExitOk;
}

// --- ls -----------------------------------------------------------------------

int CmdLs(const Globals& g) {
  auto r = OpenReader(g);
  if (!r.ok()) return Fail(g, r.status());
  auto names = (*r)->view().ListNames();
  if (!names.ok()) return Fail(g, names.status());
  nlohmann::json arr = nlohmann::json::array();
  if (!g.json)
    std::printf("%-40s %-14s %10s %8s  %-19s %s\n", "MODEL", "DIGEST", "SIZE", "TENSORS", "FORMAT",
                "TAGGED");
  for (const auto& n : *names) {
    auto m = (*r)->view().LoadManifest(n.digest);
    uint64_t bytes = m.ok() ? (*m)->TotalBytes() : 0;
    size_t tensors = m.ok() ? (*m)->tensors.size() : 0;
    if (g.json) {
      arr.push_back({{"model", n.ref},
                     {"digest", n.digest.Hex()},
                     {"raw_bytes", bytes},
                     {"tensors", tensors},
                     {"tagged_unix", n.tagged_unix},
                     {"format", m.ok() ? SourceFormatName((*m)->format) : "unknown"},
                     {"ok", m.ok()}});
    } else {
      std::printf("%-40s %-14s %10s %8zu  %-19s %s%s\n", n.ref.c_str(),
                  n.digest.Hex().substr(0, 12).c_str(), HumanBytes(double(bytes)).c_str(), tensors,
                  m.ok() ? SourceFormatName((*m)->format) : "?", TimeString(n.tagged_unix).c_str(),
                  m.ok() ? "" : "  (unreadable: run pstore verify)");
    }
  }
  if (g.json) PrintJson({{"ok", true}, {"models", arr}});
  return kExitOk;
}

// --- info ---------------------------------------------------------------------

int CmdInfo(const Globals& g, const std::string& ref, bool all_tensors) {
  auto r = OpenReader(g);
  if (!r.ok()) return Fail(g, r.status());
  auto d = (*r)->view().Resolve(ref);
  if (!d.ok()) return Fail(g, d.status());
  auto info = GetModelInfo((*r)->view(), *d);
  if (!info.ok()) return Fail(g, info.status());
  if (g.json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : info->tensors) {
      tensors.push_back({{"name", t.name},
                         {"dtype", std::string(DTypeName(t.dtype))},
                         {"shape", t.shape},
                         {"raw_bytes", t.raw_bytes},
                         {"stored_bytes", t.stored_bytes},
                         {"chunks", t.chunks},
                         {"shared_chunks", t.shared_chunks}});
      if (IsGguf(info->format)) {
        tensors.back()["ggml_type"] = t.ggml_type;
        tensors.back()["ggml_type_name"] = TensorTypeName(*info, t);
      }
    }
    nlohmann::json j = {{"ok", true},
                        {"digest", info->digest.Hex()},
                        {"names", info->names},
                        {"format", SourceFormatName(info->format)},
                        {"files", info->files},
                        {"chunk_size", info->chunk_size},
                        {"raw_bytes", info->raw_bytes},
                        {"stored_bytes", info->stored_bytes},
                        {"unique_chunks", info->unique_chunks},
                        {"shared_chunks", info->shared_chunks},
                        {"tensors", tensors}};
    if (!info->metadata_json.empty())
      j["metadata"] = nlohmann::ordered_json::parse(info->metadata_json, nullptr, false);
    if (IsGguf(info->format)) j["gguf"] = GgufSummaryJson(*info);
    PrintJson(j);
    return kExitOk;
  }
  std::printf("model    %s\n", info->digest.Hex().c_str());
  std::string names;
  for (const auto& n : info->names) names += (names.empty() ? "" : ", ") + n;
  std::printf("names    %s\n", names.empty() ? "(none: removed at the next compact)" : names.c_str());
  std::printf("format   %s, %zu file(s), chunk size %s\n", SourceFormatName(info->format),
              info->files.size(), (std::to_string(info->chunk_size >> 10) + " KiB").c_str());
  std::printf("size     %s raw, %s stored (%.3f), %llu chunks, %llu shared with other models\n",
              HumanBytes(double(info->raw_bytes)).c_str(), HumanBytes(double(info->stored_bytes)).c_str(),
              info->raw_bytes ? double(info->stored_bytes) / double(info->raw_bytes) : 0.0,
              (unsigned long long)info->unique_chunks, (unsigned long long)info->shared_chunks);
  if (IsGguf(info->format))
    PrintGgufSummary(*info);
  else if (!info->metadata_json.empty())
    std::printf("metadata %s\n", info->metadata_json.c_str());
  std::printf("\n%-48s %-7s %-20s %10s %10s %6s %6s\n", "TENSOR",
              IsGguf(info->format) ? "TYPE" : "DTYPE", "SHAPE", "RAW", "STORED", "CHUNKS",
              "SHARED");
  size_t shown = 0;
  for (const auto& t : info->tensors) {
    if (!all_tensors && shown == 50) {
      std::printf("... %zu more (pass --all to list every tensor)\n", info->tensors.size() - shown);
      break;
    }
    std::printf("%-48s %-7s %-20s %10s %10s %6llu %6llu\n", t.name.c_str(),
                TensorTypeName(*info, t).c_str(), ShapeString(t.shape).c_str(),
                HumanBytes(double(t.raw_bytes)).c_str(), HumanBytes(double(t.stored_bytes)).c_str(),
                (unsigned long long)t.chunks, (unsigned long long)t.shared_chunks);
    shown++;
  }
  return kExitOk;
}

// --- rm, tag ------------------------------------------------------------------

int CmdRm(const Globals& g, const std::vector<std::string>& refs, bool wait) {
  auto w = StoreWriter::Open(g.store, wait, StoreConfig{}, /*may_use_reserve=*/true);
  if (!w.ok()) return Fail(g, w.status());
  for (const auto& ref : refs) {
    auto name = ParseModelName(ref);
    if (!name.ok()) return Fail(g, name.status());
    Status s = (*w)->Remove(*name);
    if (!s.ok()) return Fail(g, s);
    if (!g.json) std::printf("removed %s (its space is reclaimed by `pstore compact`)\n", name->Ref().c_str());
  }
  if (g.json) PrintJson({{"ok", true}, {"removed", refs}});
  return kExitOk;
}

int CmdTag(const Globals& g, const std::string& src, const std::string& dst, bool force, bool wait) {
  auto name = ParseModelName(dst);
  if (!name.ok()) return Fail(g, name.status());
  // tag frees nothing: it must not use up the space set aside for rm and compact.
  auto w = StoreWriter::Open(g.store, wait);
  if (!w.ok()) return Fail(g, w.status());
  Status s = (*w)->Tag(src, *name, force);
  if (!s.ok()) return Fail(g, s);
  if (g.json) PrintJson({{"ok", true}, {"source", src}, {"model", name->Ref()}});
  else std::printf("tagged %s as %s\n", src.c_str(), name->Ref().c_str());
  return kExitOk;
}

// --- verify -------------------------------------------------------------------

int CmdVerify(const Globals& g, int threads) {
  auto r = OpenReader(g);
  if (!r.ok()) return Fail(g, r.status());
  ProgressLine line("verifying", !g.json);
  auto writer = CheckWriterFiles(StorePaths{(*r)->root()});
  if (!writer.ok()) return Fail(g, writer.status());
  auto rep = VerifyStore((*r)->view(), threads,
                         [&](uint64_t d, uint64_t t) { return line.Update(d, t); }, &*writer);
  line.Finish();
  if (!rep.ok()) return Fail(g, rep.status());
  if (Status s = VerifyNamesFile(**r, &*rep); !s.ok()) return Fail(g, s);
  if (g.json) {
    nlohmann::json probs = nlohmann::json::array();
    for (const auto& p : rep->problems)
      probs.push_back({{"model", p.model},
                       {"tensor", p.tensor},
                       {"chunk", p.chunk},
                       {"chunk_key", p.chunk_key},
                       {"file", p.file},
                       {"error", p.error}});
    PrintJson({{"ok", rep->ok()},
               {"models", rep->models},
               {"manifests", rep->manifests},
               {"chunks_checked", rep->chunks_checked},
               {"bytes_checked", rep->bytes_checked},
               {"db_checked", writer->db_checked},
               {"db_not_checked_reason", writer->not_checked},
               {"problems", probs}});
  } else {
    for (const auto& p : rep->problems) {
      if (p.model.empty()) {
        std::printf("CORRUPT %s\n", p.error.c_str());
        continue;
      }
      // A chunk's problem is named as the pager and export name it.
      std::optional<ChunkKey> key = ChunkKey::FromHex(p.chunk_key);
      if (!p.tensor.empty() && p.chunk >= 0 && key)
        std::printf("CORRUPT %s: %s\n",
                    DescribeChunkUse({p.model, p.tensor, uint64_t(p.chunk)}, *key).c_str(),
                    p.error.c_str());
      else if (!p.chunk_key.empty())
        std::printf("CORRUPT model %s (key %s): %s\n", p.model.c_str(), p.chunk_key.c_str(),
                    p.error.c_str());
      else
        std::printf("CORRUPT model %s: %s\n", p.model.c_str(), p.error.c_str());
    }
    if (!writer->db_checked)
      std::printf("notice: the writer's database (db/) was not checked for lost files: %s\n",
                  writer->not_checked.c_str());
    std::printf("%s: %llu models, %llu chunks, %s checked, %zu problem(s)\n",
                rep->ok() ? "ok" : "FAILED", (unsigned long long)rep->models,
                (unsigned long long)rep->chunks_checked, HumanBytes(double(rep->bytes_checked)).c_str(),
                rep->problems.size());
  }
  return rep->ok() ? kExitOk : kExitCorrupt;
}

// --- compact ------------------------------------------------------------------

int CmdCompact(const Globals& g, bool wait) {
  auto w = StoreWriter::Open(g.store, wait, StoreConfig{}, /*may_use_reserve=*/true);
  if (!w.ok()) return Fail(g, w.status());
  // Lazily opened models whose chunks are all on the host become local ones
  // first; compacting goes on whatever happens there (a full disk, say).
  if (auto in = IngestLazyCache(w->get()); !in.ok() && !g.json) {
    std::fprintf(stderr, "note: the lazy cache was not ingested: %s\n",
                 in.status().ToString().c_str());
  }
  auto r = (*w)->Compact();
  if (!r.ok()) return Fail(g, r.status());
  int64_t freed = int64_t(r->disk_before) - int64_t(r->disk_after);
  if (g.json) {
    PrintJson({{"ok", true},
               {"manifests_removed", r->manifests_removed},
               {"chunks_removed", r->chunks_removed},
               {"stored_bytes_removed", r->stored_bytes_removed},
               {"disk_before", r->disk_before},
               {"disk_after", r->disk_after},
               {"bytes_freed", freed},
               {"generations_removed", r->generations_removed},
               {"generations_in_use", r->generations_in_use}});
  } else {
    std::printf("removed %llu unreferenced model(s) and %llu chunk(s) (%s of chunk data)\n",
                (unsigned long long)r->manifests_removed, (unsigned long long)r->chunks_removed,
                HumanBytes(double(r->stored_bytes_removed)).c_str());
    std::printf("disk: %s -> %s, %s freed\n", HumanBytes(double(r->disk_before)).c_str(),
                HumanBytes(double(r->disk_after)).c_str(),
                (freed < 0 ? "-" + HumanBytes(double(-freed)) : HumanBytes(double(freed))).c_str());
    if (r->generations_in_use > 0)
      std::printf("%d older generation(s) kept: readers still hold them; their space is freed by a "
                  "later compact once they close\n",
                  r->generations_in_use);
  }
  return kExitOk;
}

// --- stat ---------------------------------------------------------------------

int CmdStat(const Globals& g) {
  auto r = OpenReader(g);
  if (!r.ok()) return Fail(g, r.status());
  auto s = GetStoreStats((*r)->view(), g.store);
  if (!s.ok()) return Fail(g, s.status());
  if (g.json) {
    PrintJson({{"ok", true},
               {"store", g.store},
               {"store_id", (*r)->store_id()},
               {"generation", (*r)->generation()},
               {"names", s->names},
               {"models", s->models},
               {"logical_bytes", s->logical_bytes},
               {"unique_bytes", s->unique_bytes},
               {"stored_bytes", s->stored_bytes},
               {"chunks", s->chunks},
               {"disk_bytes", s->disk_bytes},
               {"dedup_ratio", s->dedup_ratio()},
               {"compression_ratio", s->compression_ratio()}});
    return kExitOk;
  }
  std::printf("store        %s (id %s, generation %llu)\n", g.store.c_str(), (*r)->store_id().c_str(),
              (unsigned long long)(*r)->generation());
  std::printf("models       %llu names, %llu distinct models\n", (unsigned long long)s->names,
              (unsigned long long)s->models);
  std::printf("logical      %s  (tensor bytes of every name)\n", HumanBytes(double(s->logical_bytes)).c_str());
  std::printf("unique       %s  (distinct chunks: %llu)\n", HumanBytes(double(s->unique_bytes)).c_str(),
              (unsigned long long)s->chunks);
  std::printf("stored       %s  (chunk frames)\n", HumanBytes(double(s->stored_bytes)).c_str());
  std::printf("on disk      %s  (the store's folder)\n", HumanBytes(double(s->disk_bytes)).c_str());
  std::printf("dedup        %.2fx  (logical / unique)\n", s->dedup_ratio());
  std::printf("compression  %.3f  (stored / unique)\n", s->compression_ratio());
  return kExitOk;
}

// --- config -------------------------------------------------------------------

int CmdConfig(const Globals& g, const ConfigArgs& a) {
  bool change = a.chunk_size || !a.profile.empty() || a.zstd_level || !a.budget.empty() || a.group;
  if (!change) {
    StorePaths p{g.store};
    auto id = ReadStoreId(p);
    if (!id.ok()) return Fail(g, id.status());
    auto c = ReadStoreConfig(p);
    if (!c.ok()) return Fail(g, c.status());
    if (g.json) {
      PrintJson(nlohmann::json::parse(c->ToJson()));
    } else {
      std::printf("chunk_size  %u\nprofile     %s\nzstd_level  %d\nbudget      %s\ngroup       %s\n",
                  c->chunk_size, std::string(ProfileName(c->profile)).c_str(), c->zstd_level,
                  c->budget_bytes ? HumanBytes(double(c->budget_bytes)).c_str() : "auto (half of RAM)",
                  c->group.empty() ? "(owner only)" : c->group.c_str());
    }
    return kExitOk;
  }
  StoreConfig init;
  auto w = StoreWriter::Open(g.store, a.wait, init);
  if (!w.ok()) return Fail(g, w.status());
  StoreConfig c = (*w)->config();
  if (a.chunk_size) c.chunk_size = a.chunk_size;
  if (!a.profile.empty()) {
    auto p = ProfileFromName(a.profile);
    if (!p) return Fail(g, Status::InvalidArgument("unknown codec profile '" + a.profile + "'"));
    c.profile = *p;
  }
  if (a.zstd_level) c.zstd_level = a.zstd_level;
  if (!a.budget.empty()) {
    auto b = ParseSize(a.budget);
    if (!b.ok()) return Fail(g, b.status());
    c.budget_bytes = *b;
  }
  if (a.group) c.group = *a.group;
  Status s = (*w)->SetConfig(c);
  if (!s.ok()) return Fail(g, s);
  if (a.group) {
    // The shared memory of the store, existing segments included.
    auto id = ReadStoreId((*w)->paths());
    if (!id.ok()) return Fail(g, id.status());
    auto opt = ShmAccessFor(c);
    if (!opt.ok()) return Fail(g, opt.status());
    auto n = ApplyShmAccess(*id, *opt);
    if (!n.ok()) return Fail(g, n.status());
  }
  if (g.json) PrintJson({{"ok", true}, {"config", nlohmann::json::parse(c.ToJson())}});
  else std::printf("configuration saved (new chunk size and codec apply to later imports)\n");
  return kExitOk;
}

}  // namespace

Result<uint64_t> ParseSize(const std::string& s) {
  size_t pos = 0;
  double v;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return Status::InvalidArgument("bad size '" + s + "' (e.g. 512M, 4G, 1.5GiB)");
  }
  std::string unit = s.substr(pos);
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB" || unit == "kiB") mult = 1024.0;
  else if (unit == "M" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "kB" || unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else return Status::InvalidArgument("bad size unit in '" + s + "' (use K, M, G, T or kB, MB, GB)");
  if (v < 0) return Status::InvalidArgument("size must not be negative");
  return uint64_t(v * mult);
}

int Main(int argc, char** argv) {
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  CLI::App app{"pstore: a store for model weights"};
  app.require_subcommand(1);
  app.fallthrough();  // --store and --json may follow the subcommand too
  app.footer(
      "Exit codes: 0 ok, 1 error, 2 bad usage, 3 not found, 4 invalid input, 5 corruption, "
      "6 store busy, 7 no space, 8 name exists, 9 interrupted.\n"
      "The store is --store, else $PSTORE_DIR, else $XDG_DATA_HOME/pstore, else "
      "~/.local/share/pstore.");
  Globals g;
  g.store = DefaultStorePath();
  app.add_option("--store", g.store, "The store's folder")->envname("PSTORE_DIR");
  app.add_flag("--json", g.json, "Print results as JSON");

  std::string source, ref, ref2, path, profile;
  std::vector<std::string> refs;
  bool force = false, wait = false, all = false;
  int threads = 0;

  auto* imp = app.add_subcommand("import",
                                 "Import a safetensors file, a sharded model (its folder or index "
                                 "file), or a GGUF file (split: any of its files)");
  imp->add_option("SOURCE", source,
                  "A .safetensors file, a folder, model.safetensors.index.json, or a .gguf file")
      ->required();
  imp->add_option("NAME:TAG", ref, "The name to import under (tag defaults to latest)")->required();
  imp->add_flag("--force", force, "Replace NAME:TAG if it names another model");
  imp->add_option("--profile", profile, "Codec profile: raw, lz4, zstd, fast, dense (default: the store's)");
  imp->add_option("--threads", threads, "Encoding threads (default: one per core)");
  imp->add_flag("--wait", wait, "Wait for another writer instead of failing");

  auto* exp = app.add_subcommand("export", "Write a model back as the file(s) it was imported from");
  exp->add_option("NAME:TAG", ref, "The model (name:tag or digest)")->required();
  exp->add_option("PATH", path, "Output file (a folder for sharded models)")->required();

  auto* ls = app.add_subcommand("ls", "List the store's models");
  std::string remote;
  auto* ls_remote = ls->add_option("--remote", remote, "List the models on this remote instead");

  auto* info = app.add_subcommand("info", "Show a model's tensors, sizes and sharing");
  info->add_option("NAME:TAG", ref, "The model (name:tag or digest)")->required();
  info->add_flag("--all", all, "List every tensor (default: the first 50)");

  auto* rm = app.add_subcommand("rm", "Remove names; compact reclaims space no model uses");
  rm->add_option("NAME:TAG", refs, "Names to remove")->required();
  rm->add_flag("--wait", wait, "Wait for another writer instead of failing");
  auto* rm_remote = rm->add_option("--remote", remote, "Remove the names on this remote instead");

  auto* tag = app.add_subcommand("tag", "Give a model another name");
  tag->add_option("SOURCE", ref, "The model (name:tag or digest)")->required();
  tag->add_option("NAME:TAG", ref2, "The new name")->required();
  tag->add_flag("--force", force, "Move NAME:TAG if it names another model");
  tag->add_flag("--wait", wait, "Wait for another writer instead of failing");

  auto* verify = app.add_subcommand("verify", "Decode every chunk and check every model; report what is wrong");
  verify->add_option("--threads", threads, "Checking threads (default: one per core)");

  auto* compact = app.add_subcommand("compact", "Delete chunks no model uses and reclaim their disk space");
  compact->add_flag("--wait", wait, "Wait for another writer instead of failing");

  auto* stat = app.add_subcommand("stat", "Logical, unique, stored and on-disk bytes; dedup and compression");

  ConfigArgs cfg;
  std::string group;
  auto* config = app.add_subcommand("config", "Show or change the store's settings");
  config->add_option("--chunk-size", cfg.chunk_size, "Chunk size in bytes for later imports (64 KiB to 4 MiB, power of two)");
  config->add_option("--profile", cfg.profile, "Default codec profile: raw, lz4, zstd, fast, dense");
  config->add_option("--zstd-level", cfg.zstd_level, "Zstandard level used by the zstd and dense profiles");
  config->add_option("--budget", cfg.budget, "Shared-memory budget for mapped models (e.g. 8G; 0: half of RAM)");
  auto* group_opt = config->add_option("--group", group, "Group given read access to the store and its shared memory");
  config->add_flag("--wait", cfg.wait, "Wait for another writer instead of failing");

  AddPagerCommands(app, g);
#ifdef PSTORE_HAVE_RADOS
  AddRemoteCommands(app, g);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (group_opt->count()) cfg.group = group;

  if (*imp) return CmdImport(g, source, ref, force, profile, threads, wait);
  if (*exp) return CmdExport(g, ref, path);
#ifdef PSTORE_HAVE_RADOS
  if (*ls && ls_remote->count()) return CmdRemoteLsNames(g, remote);
  if (*rm && rm_remote->count()) return CmdRemoteRmNames(g, remote, refs);
  if (auto rc = RunRemoteCommand(g)) return *rc;
#else
  if (ls_remote->count() || rm_remote->count()) {
    return Fail(g, Status::Unsupported("this pstore was built without librados (RADOS remotes); "
                                       "install librados-dev and libradospp-dev and rebuild"));
  }
#endif
  if (*ls) return CmdLs(g);
  if (*info) return CmdInfo(g, ref, all);
  if (*rm) return CmdRm(g, refs, wait);
  if (*tag) return CmdTag(g, ref, ref2, force, wait);
  if (*verify) return CmdVerify(g, threads);
  if (*compact) return CmdCompact(g, wait);
  if (*stat) return CmdStat(g);
  if (*config) return CmdConfig(g, cfg);
  return RunPagerCommand(app, g);
}

}  // namespace pstore::cli

int main(int argc, char** argv) { return pstore::cli::Main(argc, argv); }
