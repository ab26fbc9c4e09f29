// The pstore command's remote commands: remote add|ls|rm|gc|ingest, push,
// pull, and the --remote forms of ls and rm (docs/remote.md, docs/cli.md).
//
// push reads the newest published generation and runs alongside a writer;
// remote gc reads only the config; pull and remote add|rm|ingest take the
// store's writer lock.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "store/lazy_ingest.h"
#include "store/remote/remote_config.h"
#include "store/remote/remote_gc.h"
#include "store/remote/transfer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace pstore::cli {
namespace {

struct RemoteArgs {
  std::string name, url, conf, id = "admin", ns, remote, ref;
  int timeout = 30;
  int op_timeout = 0;  // --timeout of push, pull, remote gc: overrides the remote's
  int64_t grace = 3600;
  bool force = false, wait = false, dry_run = false;
};

// A shorter gc grace needs --force: a running push renews its claim only
// between batches, and a batch can take a few timeouts on a slow cluster.
constexpr int64_t kMinGraceSeconds = 60;

nlohmann::json SpecJson(const RemoteSpec& r) {
  return {{"name", r.name}, {"url", r.url},      {"conf", r.conf},
          {"id", r.id},     {"namespace", r.ns}, {"timeout_seconds", r.timeout_seconds}};
}

// The remote's spec from the store's config, connected; a timeout > 0
// replaces the remote's.
Result<std::unique_ptr<RemoteTier>> Connect(const Context& ctx, const std::string& remote,
                                            int timeout = 0) {
  StorePaths p{ctx.store};
  PSTORE_RETURN_IF_ERROR(ReadStoreId(p).status());
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  PSTORE_ASSIGN_OR_RETURN(RemoteSpec spec, FindRemote(c, remote));
  if (timeout > 0) spec.timeout_seconds = timeout;
  auto tier = RemoteTier::Open(spec.ToRadosOptions());
  if (!tier.ok()) return tier.status().WithContext("remote " + spec.name);
  return tier;
}

struct RemoteAddOutput : Output {
  RemoteSpec r;
  nlohmann::json Json() const { return {{"ok", true}, {"remote", SpecJson(r)}}; }
  void Text() const { std::printf("added remote %s (%s)\n", r.name.c_str(), r.url.c_str()); }
};

Result<RemoteAddOutput> CmdRemoteAdd(const Context& ctx, const RemoteArgs& a) {
  RemoteSpec r;
  r.name = a.name;
  r.url = a.url;
  r.conf = a.conf;
  r.id = a.id;
  r.ns = a.ns;
  r.timeout_seconds = a.timeout;
  PSTORE_RETURN_IF_ERROR(ValidateRemote(r));
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(ctx.store, a.wait));
  StoreConfig c = w->config();
  PSTORE_RETURN_IF_ERROR(AddRemote(&c, r, a.force));
  PSTORE_RETURN_IF_ERROR(w->SetConfig(c));
  RemoteAddOutput out;
  out.r = r;
  return out;
}

struct RemoteLsOutput : Output {
  std::vector<RemoteSpec> all;
  nlohmann::json Json() const {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& r : all) arr.push_back(SpecJson(r));
    return {{"ok", true}, {"remotes", arr}};
  }
  void Text() const {
    std::printf("%-16s %-24s %-10s %-12s %8s  %s\n", "NAME", "URL", "ID", "NAMESPACE", "TIMEOUT",
                "CONF");
    for (auto& r : all) {
      std::printf("%-16s %-24s %-10s %-12s %7ds  %s\n", r.name.c_str(), r.url.c_str(), r.id.c_str(),
                  r.ns.c_str(), r.timeout_seconds,
                  r.conf.empty() ? "(librados default)" : r.conf.c_str());
    }
  }
};

Result<RemoteLsOutput> CmdRemoteLs(const Context& ctx) {
  StorePaths p{ctx.store};
  PSTORE_RETURN_IF_ERROR(ReadStoreId(p).status());
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  RemoteLsOutput out;
  PSTORE_ASSIGN_OR_RETURN(out.all, ListRemotes(c));
  return out;
}

struct RemoteRmOutput : Output {
  std::string name;
  nlohmann::json Json() const { return {{"ok", true}, {"removed", name}}; }
  void Text() const {
    std::printf("removed remote %s (nothing on the cluster was changed)\n", name.c_str());
  }
};

Result<RemoteRmOutput> CmdRemoteRm(const Context& ctx, const RemoteArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(ctx.store, a.wait));
  StoreConfig c = w->config();
  PSTORE_RETURN_IF_ERROR(RemoveRemote(&c, a.name));
  PSTORE_RETURN_IF_ERROR(w->SetConfig(c));
  RemoteRmOutput out;
  out.name = a.name;
  return out;
}

// What push and pull report.
struct TransferOutput : Output {
  const char* verb = "";  // "pushed" or "pulled"
  std::string ref, where;
  TransferResult r;

  nlohmann::json Json() const {
    return {{"ok", true},
            {"model", ref},
            {"remote", where},
            {"digest", r.digest.Hex()},
            {"unchanged", r.unchanged},
            {"chunks", r.chunks},
            {"raw_bytes", r.raw_bytes},
            {"moved_chunks", r.moved_chunks},
            {"moved_bytes", r.moved_bytes},
            {"manifest_bytes", r.manifest_bytes},
            {"seconds", r.seconds}};
  }
  void Text() const {
    std::printf("%s %s (%s) %s %s\n", r.unchanged ? "unchanged" : verb, ref.c_str(),
                r.digest.Hex().substr(0, 12).c_str(), std::string(verb) == "pushed" ? "to" : "from",
                where.c_str());
    std::printf("  %llu of %llu chunks moved (%s stored bytes) in %.2f s; the rest were there\n",
                (unsigned long long)r.moved_chunks, (unsigned long long)r.chunks,
                HumanBytes(double(r.moved_bytes)).c_str(), r.seconds);
  }
};

Result<TransferOutput> CmdPush(const Context& c, const RemoteArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto reader, StoreReader::Open(c.store));
  PSTORE_ASSIGN_OR_RETURN(auto tier, Connect(c, a.remote, a.op_timeout));
  ProgressLine line("pushing", !c.json);
  TransferOptions o;
  o.force = a.force;
  o.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = Push(reader->view(), a.ref, tier.get(), o);
  line.Finish();
  if (!r.ok()) {
    return r.status().WithContext("push of " + a.ref +
                                  " failed; the remote names nothing new (run it again to finish)");
  }
  return TransferOutput{{}, "pushed", a.ref, tier->Describe(), std::move(r).value()};
}

Result<TransferOutput> CmdPull(const Context& c, const RemoteArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto tier, Connect(c, a.remote, a.op_timeout));
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(c.store, a.wait));
  ProgressLine line("pulling", !c.json);
  TransferOptions o;
  o.force = a.force;
  o.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = Pull(w.get(), a.ref, tier.get(), o);
  line.Finish();
  if (!r.ok()) {
    return r.status().WithContext("pull of " + a.ref + " failed and the local store is as it was");
  }
  // What lazy opening spooled is in the store now, or may be made a model.
  if (auto in = IngestLazyCache(w.get()); !in.ok() && !c.json) {
    std::fprintf(stderr, "note: the lazy cache was not ingested: %s\n",
                 in.status().ToString().c_str());
  }
  return TransferOutput{{}, "pulled", a.ref, tier->Describe(), std::move(r).value()};
}

// remote ingest: what lazily opened models fetched, into the store.
struct IngestOutput : Output {
  IngestResult r;
  nlohmann::json Json() const {
    return {{"ok", true},           {"published", r.published}, {"partial", r.partial},
            {"skipped", r.skipped}, {"failed", r.failed},       {"chunks", r.chunks}};
  }
  void Text() const {
    for (const auto& m : r.published) std::printf("published %s (now a local model)\n", m.c_str());
    for (const auto& m : r.partial)
      std::printf("partial   %s (chunks still on the remote only; stays in the lazy cache)\n",
                  m.c_str());
    for (const auto& m : r.skipped)
      std::printf("skipped   %s (the name is taken locally by another model)\n", m.c_str());
    for (const auto& m : r.failed)
      std::printf("failed    %s (stays in the lazy cache)\n", m.c_str());
    std::printf("%llu spooled chunks moved into the store\n", (unsigned long long)r.chunks);
  }
};

Result<IngestOutput> CmdIngest(const Context& c, const RemoteArgs& a) {
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(c.store, a.wait));
  auto r = IngestLazyCache(w.get());
  if (!r.ok()) return r.status().WithContext("the lazy cache was not ingested");
  IngestOutput out;
  out.r = std::move(r).value();
  return out;
}

// remote gc: chunks, manifests and claim objects no remote name or push needs.
struct GcOutput : Output {
  std::string where;
  bool dry_run = false;
  int64_t grace = 0;
  GcResult x;

  nlohmann::json Json() const {
    nlohmann::json claims = nlohmann::json::array();
    for (const GcClaim& c : x.claims) {
      claims.push_back({{"id", c.id},
                        {"host", c.host},
                        {"pid", c.pid},
                        {"digest", c.model_digest},
                        {"age_seconds", c.age_seconds},
                        {"withdrawn", c.withdrawn}});
    }
    nlohmann::json damaged = nlohmann::json::object();
    for (const auto& [ref, packs] : x.names_missing_packs) damaged[ref] = packs;
    return {{"ok", true},
            {"remote", where},
            {"dry_run", dry_run},
            {"names_missing_packs", damaged},
            {"grace_seconds", grace},
            {"objects", x.objects},
            {"chunk_objects", x.chunk_objects},
            {"names", x.names},
            {"referenced_chunks", x.referenced_chunks},
            {"other_objects", x.other_objects},
            {"claims", claims},
            {"dead_chunks", x.dead_chunks},
            {"dead_manifests", x.dead_manifests},
            {"dead_claim_objects", x.dead_claim_objects},
            {"dead_bytes", x.dead_bytes},
            {"deleted_chunks", x.deleted_chunks},
            {"deleted_manifests", x.deleted_manifests},
            {"deleted_claim_objects", x.deleted_claim_objects},
            {"deleted_bytes", x.deleted_bytes},
            {"pack_objects", x.pack_objects},
            {"index_objects", x.index_objects},
            {"dead_packs", x.dead_packs},
            {"dead_locations", x.dead_locations},
            {"deleted_packs", x.deleted_packs},
            {"deleted_locations", x.deleted_locations},
            {"index_entries_removed", x.index_entries_removed},
            {"partly_dead_packs", x.partly_dead_packs},
            {"live_packs_dead_bytes", x.live_packs_dead_bytes},
            {"kept", x.kept},
            {"seconds", x.seconds}};
  }
  void Text() const {
    std::printf(
        "%s: %llu objects (%llu packs, %llu chunk objects), %llu names needing %llu "
        "distinct chunks\n",
        where.c_str(), (unsigned long long)x.objects, (unsigned long long)x.pack_objects,
        (unsigned long long)x.chunk_objects, (unsigned long long)x.names,
        (unsigned long long)x.referenced_chunks);
    for (const GcClaim& c : x.claims) {
      std::printf("  push of %s by %s pid %lld, renewed %lld s ago%s\n",
                  c.model_digest.substr(0, 12).c_str(), c.host.c_str(), (long long)c.pid,
                  (long long)c.age_seconds,
                  c.withdrawn ? (dry_run ? ": would be withdrawn" : ": withdrawn") : ": kept");
    }
    if (dry_run) {
      std::printf(
          "would delete %llu packs, %llu chunks, %llu manifests, %llu claim objects (%s); "
          "nothing was changed\n",
          (unsigned long long)x.dead_packs, (unsigned long long)x.dead_chunks,
          (unsigned long long)x.dead_manifests, (unsigned long long)x.dead_claim_objects,
          HumanBytes(double(x.dead_bytes)).c_str());
    } else {
      std::printf(
          "deleted %llu packs, %llu chunks, %llu manifests, %llu claim objects (%s) in "
          "%.2f s",
          (unsigned long long)x.deleted_packs, (unsigned long long)x.deleted_chunks,
          (unsigned long long)x.deleted_manifests, (unsigned long long)x.deleted_claim_objects,
          HumanBytes(double(x.deleted_bytes)).c_str(), x.seconds);
      if (x.kept)
        std::printf("; kept %llu that a push or a name needed meanwhile",
                    (unsigned long long)x.kept);
      std::printf("\n");
    }
    if (x.partly_dead_packs) {
      std::printf("kept %llu packs whole that hold %s no model uses (packs are not rewritten)\n",
                  (unsigned long long)x.partly_dead_packs,
                  HumanBytes(double(x.live_packs_dead_bytes)).c_str());
    }
    for (const auto& [ref, packs] : x.names_missing_packs) {
      std::string list;
      for (const std::string& p : packs) list += (list.empty() ? "" : ", ") + p;
      std::printf(
          "damaged: the locations of %s name %zu missing pack%s (%s); their chunks are read only "
          "where a push has put them since: push %s again from a host whose store has it "
          "(`pstore push`); nothing was deleted because of it\n",
          ref.c_str(), packs.size(), packs.size() == 1 ? "" : "s", list.c_str(), ref.c_str());
    }
    if (x.other_objects) {
      std::printf("left alone %llu objects that are not pstore's\n",
                  (unsigned long long)x.other_objects);
    }
  }
};

Result<GcOutput> CmdRemoteGc(const Context& c, const RemoteArgs& a) {
  if (a.grace < 0) return Status::InvalidArgument("--grace must be 0 or more seconds");
  if (a.grace < kMinGraceSeconds && !a.force) {
    return Status::InvalidArgument(
        "--grace " + std::to_string(a.grace) + " is below " + std::to_string(kMinGraceSeconds) +
        " s: it can withdraw the claims of pushes that are running (one batch of a push can "
        "take about 3 timeouts), which then fail and must be run again; raise it, or pass "
        "--force if no push is running");
  }
  PSTORE_ASSIGN_OR_RETURN(auto tier, Connect(c, a.name, a.op_timeout));
  const bool show = !c.json && ::isatty(2);
  GcOptions o;
  o.grace_seconds = a.grace;
  o.dry_run = a.dry_run;
  o.progress = [&](const char* step, uint64_t done, uint64_t total) {
    if (show) {
      if (total)
        std::fprintf(stderr, "\rgc: %s %llu / %llu objects   ", step, (unsigned long long)done,
                     (unsigned long long)total);
      else
        std::fprintf(stderr, "\rgc: %s %llu objects   ", step, (unsigned long long)done);
    }
    return !ProgressLine::Interrupted();
  };
  auto r = CollectRemoteGarbage(tier.get(), o);
  if (show) std::fprintf(stderr, "\r\033[K");
  if (!r.ok()) return r.status().WithContext("remote gc of " + tier->Describe());
  GcOutput out;
  out.where = tier->Describe();
  out.dry_run = a.dry_run;
  out.grace = a.grace;
  out.x = std::move(r).value();
  return out;
}

struct RemoteNamesOutput : Output {
  std::string where;
  std::vector<std::pair<std::string, ModelDigest>> names;
  nlohmann::json Json() const {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& [ref, d] : names) arr.push_back({{"model", ref}, {"digest", d.Hex()}});
    return {{"ok", true}, {"remote", where}, {"models", arr}};
  }
  void Text() const {
    std::printf("%-40s %s\n", "MODEL", "DIGEST");
    for (auto& [ref, d] : names) std::printf("%-40s %s\n", ref.c_str(), d.Hex().c_str());
  }
};

Result<RemoteNamesOutput> CmdRemoteLsNames(const Context& c, const std::string& remote) {
  PSTORE_ASSIGN_OR_RETURN(auto tier, Connect(c, remote));
  RemoteNamesOutput out;
  out.where = tier->Describe();
  PSTORE_ASSIGN_OR_RETURN(auto names, tier->ListNames());
  for (auto& [ref, d] : names) out.names.emplace_back(ref, d);
  return out;
}

struct RemoteRmNamesOutput : Output {
  std::vector<std::string> refs;     // as given
  std::vector<std::string> removed;  // parsed names, in order, until a failure
  std::string where;
  nlohmann::json Json() const { return {{"ok", true}, {"removed", refs}}; }
  void Text() const {
    for (const auto& n : removed) std::printf("removed %s from %s\n", n.c_str(), where.c_str());
  }
};

// Removes one name from the remote and records it in `out`.
Status RemoveRemoteName(RemoteTier& tier, const std::string& ref, RemoteRmNamesOutput* out) {
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  PSTORE_ASSIGN_OR_RETURN(auto d, tier.GetName(name.Ref()));
  if (!d) return Status::NotFound(tier.Describe() + " has no model called " + name.Ref());
  PSTORE_RETURN_IF_ERROR(tier.RemoveName(name.Ref(), *d));
  out->removed.push_back(name.Ref());
  return Status::OK();
}

// Removes the names in turn; stops at the first that fails.
Result<RemoteRmNamesOutput> CmdRemoteRmNames(const Context& c, const std::string& remote,
                                             const std::vector<std::string>& refs) {
  PSTORE_ASSIGN_OR_RETURN(auto tier, Connect(c, remote));
  RemoteRmNamesOutput out;
  out.refs = refs;
  out.where = tier->Describe();
  for (const auto& ref : refs) {
    out.stopped = RemoveRemoteName(*tier, ref, &out);
    if (!out.stopped.ok()) break;
  }
  return out;
}

}  // namespace

int RunRemoteLsNames(const Context& c, const std::string& remote) {
  return Emit(c, CmdRemoteLsNames(c, remote));
}

int RunRemoteRmNames(const Context& c, const std::string& remote,
                     const std::vector<std::string>& refs) {
  return Emit(c, CmdRemoteRmNames(c, remote, refs));
}

std::vector<Command> AddRemoteCommands(CLI::App& app) {
  auto a = std::make_shared<RemoteArgs>();
  auto* remote = app.add_subcommand("remote", kRemoteHelp);
  remote->require_subcommand(1);
  auto* add = remote->add_subcommand("add", "Add a remote: a Ceph RADOS pool");
  add->add_option("NAME", a->name, "The remote's name")->required();
  add->add_option("URL", a->url, "rados:POOL")->required();
  add->add_option("--conf", a->conf, "The Ceph conf (default: librados' search)");
  add->add_option("--id", a->id, "The Ceph client id, without client. (default admin)");
  add->add_option("--namespace", a->ns, "The RADOS namespace within the pool");
  add->add_option("--timeout", a->timeout, "Seconds to wait for the cluster (default 30)");
  add->add_flag("--force", a->force, "Replace a remote of that name");
  add->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  auto* ls = remote->add_subcommand("ls", "List the store's remotes");
  auto* rm = remote->add_subcommand("rm", "Forget a remote (nothing on the cluster changes)");
  rm->add_option("NAME", a->name, "The remote's name")->required();
  rm->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  auto* ingest = remote->add_subcommand(
      "ingest", "Move chunks fetched by lazily opened models into the store; publish whole ones");
  ingest->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  auto* gc = remote->add_subcommand(
      "gc", "Delete the remote's chunks and manifests that no remote name needs");
  gc->add_option("NAME", a->name, "The remote's name")->required();
  gc->add_option("--grace", a->grace,
                 "Seconds after which an unrenewed push claim is taken for a killed push's "
                 "(default 3600)");
  gc->add_flag("--dry-run", a->dry_run, "Report what would be deleted; change nothing");
  gc->add_flag("--force", a->force,
               "Accept a --grace below " + std::to_string(kMinGraceSeconds) + " seconds");
  gc->add_option("--timeout", a->op_timeout,
                 "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));

  auto* push = app.add_subcommand("push", kPushHelp);
  push->add_option("NAME:TAG", a->ref, "The model")->required();
  push->add_option("--remote", a->remote, "The remote (default: the only one)");
  push->add_flag("--force", a->force, "Replace NAME:TAG on the remote if it names another model");
  push->add_option("--timeout", a->op_timeout,
                   "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));
  auto* pull = app.add_subcommand("pull", kPullHelp);
  pull->add_option("NAME:TAG", a->ref, "The model")->required();
  pull->add_option("--remote", a->remote, "The remote (default: the only one)");
  pull->add_flag("--force", a->force, "Replace NAME:TAG locally if it names another model");
  pull->add_flag("--wait", a->wait, "Wait for another writer instead of failing");
  pull->add_option("--timeout", a->op_timeout,
                   "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));

  return {
      {add, [a](const Context& c) { return Emit(c, CmdRemoteAdd(c, *a)); }},
      {ls, [](const Context& c) { return Emit(c, CmdRemoteLs(c)); }},
      {rm, [a](const Context& c) { return Emit(c, CmdRemoteRm(c, *a)); }},
      {ingest, [a](const Context& c) { return Emit(c, CmdIngest(c, *a)); }},
      {gc, [a](const Context& c) { return Emit(c, CmdRemoteGc(c, *a)); }},
      {push, [a](const Context& c) { return Emit(c, CmdPush(c, *a)); }},
      {pull, [a](const Context& c) { return Emit(c, CmdPull(c, *a)); }},
  };
}

}  // namespace pstore::cli
