// The commands that read the store: ls, info, verify, stat. They read the
// newest published generation and run alongside a writer.
//
// Thread-safety: run on the CLI's main thread.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/chunk_read.h"
#include "store/store.h"
#include "tools/commands.h"
#include "tools/gguf_info.h"

namespace pstore::cli {
namespace {

// --- ls -----------------------------------------------------------------------

struct LsOutput : Output {
  struct Row {
    std::string ref;
    ModelDigest digest;
    uint64_t tagged_unix = 0;
    bool readable = false;  // its manifest loaded; the figures below are 0 otherwise
    uint64_t raw_bytes = 0;
    size_t tensors = 0;
    SourceFormat format{};
  };
  std::vector<Row> rows;

  nlohmann::json Json() const {
    nlohmann::json arr = nlohmann::json::array();
    for (const Row& r : rows) {
      arr.push_back({{"model", r.ref},
                     {"digest", r.digest.Hex()},
                     {"raw_bytes", r.raw_bytes},
                     {"tensors", r.tensors},
                     {"tagged_unix", r.tagged_unix},
                     {"format", r.readable ? SourceFormatName(r.format) : "unknown"},
                     {"ok", r.readable}});
    }
    return {{"ok", true}, {"models", arr}};
  }
  void Text() const {
    std::printf("%-40s %-14s %10s %8s  %-19s %s\n", "MODEL", "DIGEST", "SIZE", "TENSORS", "FORMAT",
                "TAGGED");
    for (const Row& r : rows) {
      std::printf("%-40s %-14s %10s %8zu  %-19s %s%s\n", r.ref.c_str(),
                  r.digest.Hex().substr(0, 12).c_str(), HumanBytes(double(r.raw_bytes)).c_str(),
                  r.tensors, r.readable ? SourceFormatName(r.format) : "?",
                  TimeString(r.tagged_unix).c_str(),
                  r.readable ? "" : "  (unreadable: run pstore verify)");
    }
  }
};

Result<LsOutput> RunLs(const Context& c) {
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(c.store));
  PSTORE_ASSIGN_OR_RETURN(auto names, r->view().ListNames());
  LsOutput out;
  for (const auto& n : names) {
    LsOutput::Row row;
    row.ref = n.ref;
    row.digest = n.digest;
    row.tagged_unix = n.tagged_unix;
    auto m = r->view().LoadManifest(n.digest);
    row.readable = m.ok();
    if (m.ok()) {
      row.raw_bytes = (*m)->TotalBytes();
      row.tensors = (*m)->tensors.size();
      row.format = (*m)->format;
    }
    out.rows.push_back(std::move(row));
  }
  return out;
}

}  // namespace

Command AddLsCommand(CLI::App& app) {
  auto remote = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("ls", "List the store's models");
  auto* remote_opt = sub->add_option("--remote", *remote, "List the models on this remote instead");
  return {sub, [remote, remote_opt](const Context& c) {
            if (remote_opt->count()) return RunRemoteLsNames(c, *remote);
            return Emit(c, RunLs(c));
          }};
}

namespace {

// --- info ---------------------------------------------------------------------

struct InfoArgs {
  std::string ref;
  bool all = false;
};

struct InfoOutput : Output {
  ModelInfo info;
  bool all_tensors = false;

  nlohmann::json Json() const {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : info.tensors) {
      tensors.push_back({{"name", t.name},
                         {"dtype", std::string(DTypeName(t.dtype))},
                         {"shape", t.shape},
                         {"raw_bytes", t.raw_bytes},
                         {"stored_bytes", t.stored_bytes},
                         {"chunks", t.chunks},
                         {"chunk_length", t.chunk_len},
                         {"shared_chunks", t.shared_chunks}});
      if (IsGguf(info.format)) {
        tensors.back()["ggml_type"] = t.ggml_type;
        tensors.back()["ggml_type_name"] = TensorTypeName(info, t);
      }
    }
    nlohmann::json j = {{"ok", true},
                        {"digest", info.digest.Hex()},
                        {"names", info.names},
                        {"format", SourceFormatName(info.format)},
                        {"files", info.files},
                        {"chunk_size", info.chunk_size},
                        {"raw_bytes", info.raw_bytes},
                        {"stored_bytes", info.stored_bytes},
                        {"unique_chunks", info.unique_chunks},
                        {"shared_chunks", info.shared_chunks},
                        {"tensors", tensors}};
    if (!info.metadata_json.empty())
      j["metadata"] = nlohmann::ordered_json::parse(info.metadata_json, nullptr, false);
    if (IsGguf(info.format)) j["gguf"] = GgufSummaryJson(info);
    return j;
  }
  void Text() const {
    std::printf("model    %s\n", info.digest.Hex().c_str());
    std::string names;
    for (const auto& n : info.names) names += (names.empty() ? "" : ", ") + n;
    std::printf("names    %s\n",
                names.empty() ? "(none: removed at the next compact)" : names.c_str());
    std::printf("format   %s, %zu file(s), chunk size %s\n", SourceFormatName(info.format),
                info.files.size(), (std::to_string(info.chunk_size >> 10) + " KiB").c_str());
    std::printf("size     %s raw, %s stored (%.3f), %llu chunks, %llu shared with other models\n",
                HumanBytes(double(info.raw_bytes)).c_str(),
                HumanBytes(double(info.stored_bytes)).c_str(),
                info.raw_bytes ? double(info.stored_bytes) / double(info.raw_bytes) : 0.0,
                (unsigned long long)info.unique_chunks, (unsigned long long)info.shared_chunks);
    if (IsGguf(info.format))
      PrintGgufSummary(info);
    else if (!info.metadata_json.empty())
      std::printf("metadata %s\n", info.metadata_json.c_str());
    std::printf("\n%-48s %-7s %-20s %10s %10s %6s %6s\n", "TENSOR",
                IsGguf(info.format) ? "TYPE" : "DTYPE", "SHAPE", "RAW", "STORED", "CHUNKS",
                "SHARED");
    size_t shown = 0;
    for (const auto& t : info.tensors) {
      if (!all_tensors && shown == 50) {
        std::printf("... %zu more (pass --all to list every tensor)\n",
                    info.tensors.size() - shown);
        break;
      }
      std::printf("%-48s %-7s %-20s %10s %10s %6llu %6llu\n", t.name.c_str(),
                  TensorTypeName(info, t).c_str(), ShapeString(t.shape).c_str(),
                  HumanBytes(double(t.raw_bytes)).c_str(),
                  HumanBytes(double(t.stored_bytes)).c_str(), (unsigned long long)t.chunks,
                  (unsigned long long)t.shared_chunks);
      shown++;
    }
  }
};

Result<InfoOutput> RunInfo(const Context& c, const InfoArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(c.store));
  PSTORE_ASSIGN_OR_RETURN(ModelDigest d, r->view().Resolve(a.ref));
  InfoOutput out;
  PSTORE_ASSIGN_OR_RETURN(out.info, GetModelInfo(r->view(), d));
  out.all_tensors = a.all;
  return out;
}

}  // namespace

Command AddInfoCommand(CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  auto* sub = app.add_subcommand("info", "Show a model's tensors, sizes and sharing");
  sub->add_option("NAME:TAG", a->ref, "The model (name:tag or digest)")->required();
  sub->add_flag("--all", a->all, "List every tensor (default: the first 50)");
  return {sub, [a](const Context& c) { return Emit(c, RunInfo(c, *a)); }};
}

namespace {

// --- verify -------------------------------------------------------------------

struct VerifyOutput : Output {
  VerifyReport rep;
  WriterFileCheck writer;

  int exit_code() const { return rep.ok() ? kExitOk : kExitCorrupt; }
  nlohmann::json Json() const {
    nlohmann::json probs = nlohmann::json::array();
    for (const auto& p : rep.problems)
      probs.push_back({{"model", p.model},
                       {"tensor", p.tensor},
                       {"chunk", p.chunk},
                       {"chunk_key", p.chunk_key},
                       {"file", p.file},
                       {"error", p.error}});
    return {{"ok", rep.ok()},
            {"models", rep.models},
            {"manifests", rep.manifests},
            {"chunks_checked", rep.chunks_checked},
            {"bytes_checked", rep.bytes_checked},
            {"db_checked", writer.db_checked},
            {"db_not_checked_reason", writer.not_checked},
            {"problems", probs}};
  }
  void Text() const {
    for (const auto& p : rep.problems) {
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
    if (!writer.db_checked)
      std::printf("notice: the writer's database (db/) was not checked for lost files: %s\n",
                  writer.not_checked.c_str());
    std::printf("%s: %llu models, %llu chunks, %s checked, %zu problem(s)\n",
                rep.ok() ? "ok" : "FAILED", (unsigned long long)rep.models,
                (unsigned long long)rep.chunks_checked,
                HumanBytes(double(rep.bytes_checked)).c_str(), rep.problems.size());
  }
};

Result<VerifyOutput> RunVerify(const Context& c, int threads) {
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(c.store));
  ProgressLine line("verifying", !c.json);
  VerifyOutput out;
  PSTORE_ASSIGN_OR_RETURN(out.writer, CheckWriterFiles(StorePaths{r->root()}));
  auto rep = VerifyStore(
      r->view(), threads, [&](uint64_t d, uint64_t t) { return line.Update(d, t); }, &out.writer);
  line.Finish();
  if (!rep.ok()) return rep.status();
  out.rep = std::move(rep).value();
  PSTORE_RETURN_IF_ERROR(VerifyNamesFile(*r, &out.rep));
  return out;
}

}  // namespace

Command AddVerifyCommand(CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  auto* sub = app.add_subcommand("verify",
                                 "Decode every chunk and check every model; report what is wrong");
  sub->add_option("--threads", *threads, "Checking threads (default: one per core)");
  return {sub, [threads](const Context& c) { return Emit(c, RunVerify(c, *threads)); }};
}

namespace {

// --- stat ---------------------------------------------------------------------

struct StatOutput : Output {
  std::string store, store_id;
  uint64_t generation = 0;
  StoreStats s;

  nlohmann::json Json() const {
    return {{"ok", true},
            {"store", store},
            {"store_id", store_id},
            {"generation", generation},
            {"names", s.names},
            {"models", s.models},
            {"logical_bytes", s.logical_bytes},
            {"unique_bytes", s.unique_bytes},
            {"stored_bytes", s.stored_bytes},
            {"chunks", s.chunks},
            {"disk_bytes", s.disk_bytes},
            {"dedup_ratio", s.dedup_ratio()},
            {"compression_ratio", s.compression_ratio()}};
  }
  void Text() const {
    std::printf("store        %s (id %s, generation %llu)\n", store.c_str(), store_id.c_str(),
                (unsigned long long)generation);
    std::printf("models       %llu names, %llu distinct models\n", (unsigned long long)s.names,
                (unsigned long long)s.models);
    std::printf("logical      %s  (tensor bytes of every name)\n",
                HumanBytes(double(s.logical_bytes)).c_str());
    std::printf("unique       %s  (distinct chunks: %llu)\n",
                HumanBytes(double(s.unique_bytes)).c_str(), (unsigned long long)s.chunks);
    std::printf("stored       %s  (chunk frames)\n", HumanBytes(double(s.stored_bytes)).c_str());
    std::printf("on disk      %s  (the store's folder)\n",
                HumanBytes(double(s.disk_bytes)).c_str());
    std::printf("dedup        %.2fx  (logical / unique)\n", s.dedup_ratio());
    std::printf("compression  %.3f  (stored / unique)\n", s.compression_ratio());
  }
};

Result<StatOutput> RunStat(const Context& c) {
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(c.store));
  StatOutput out;
  PSTORE_ASSIGN_OR_RETURN(out.s, GetStoreStats(r->view(), c.store));
  out.store = c.store;
  out.store_id = r->store_id();
  out.generation = r->generation();
  return out;
}

}  // namespace

Command AddStatCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "stat", "Logical, unique, stored and on-disk bytes; dedup and compression");
  return {sub, [](const Context& c) { return Emit(c, RunStat(c)); }};
}

}  // namespace pstore::cli
