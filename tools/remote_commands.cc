// The pstore command's remote commands: remote add|ls|rm|gc, push, pull, and
// the --remote forms of ls and rm (docs/remote.md, docs/cli.md).
//
// push reads the newest published generation and runs alongside a writer;
// remote gc reads only the config; pull and remote add|rm take the store's
// writer lock.
#include <cstdio>
#include <iostream>

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

RemoteArgs g_args;
CLI::App *g_add, *g_ls, *g_rm, *g_gc, *g_push, *g_pull;

nlohmann::json SpecJson(const RemoteSpec& r) {
  return {{"name", r.name}, {"url", r.url},      {"conf", r.conf},
          {"id", r.id},     {"namespace", r.ns}, {"timeout_seconds", r.timeout_seconds}};
}

// The remote's spec from the store's config, connected; a timeout > 0
// replaces the remote's.
Result<std::unique_ptr<RemoteTier>> Connect(const Globals& g, const std::string& remote,
                                            int timeout = 0) {
  StorePaths p{g.store};
  PSTORE_RETURN_IF_ERROR(ReadStoreId(p).status());
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  PSTORE_ASSIGN_OR_RETURN(RemoteSpec spec, FindRemote(c, remote));
  if (timeout > 0) spec.timeout_seconds = timeout;
  auto tier = RemoteTier::Open(spec.ToRadosOptions());
  if (!tier.ok()) return tier.status().WithContext("remote " + spec.name);
  return tier;
}

int CmdRemoteAdd(const Globals& g, const RemoteArgs& a) {
  RemoteSpec r;
  r.name = a.name;
  r.url = a.url;
  r.conf = a.conf;
  r.id = a.id;
  r.ns = a.ns;
  r.timeout_seconds = a.timeout;
  if (Status s = ValidateRemote(r); !s.ok()) return Fail(g, s);
  auto w = StoreWriter::Open(g.store, a.wait);
  if (!w.ok()) return Fail(g, w.status());
  StoreConfig c = (*w)->config();
  if (Status s = AddRemote(&c, r, a.force); !s.ok()) return Fail(g, s);
  if (Status s = (*w)->SetConfig(c); !s.ok()) return Fail(g, s);
  if (g.json)
    PrintJson({{"ok", true}, {"remote", SpecJson(r)}});
  else
    std::printf("added remote %s (%s)\n", r.name.c_str(), r.url.c_str());
  return kExitOk;
}

int CmdRemoteLs(const Globals& g) {
  StorePaths p{g.store};
  if (auto id = ReadStoreId(p); !id.ok()) return Fail(g, id.status());
  auto c = ReadStoreConfig(p);
  if (!c.ok()) return Fail(g, c.status());
  auto all = ListRemotes(*c);
  if (!all.ok()) return Fail(g, all.status());
  if (g.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& r : *all) arr.push_back(SpecJson(r));
    PrintJson({{"ok", true}, {"remotes", arr}});
    return kExitOk;
  }
  std::printf("%-16s %-24s %-10s %-12s %8s  %s\n", "NAME", "URL", "ID", "NAMESPACE", "TIMEOUT",
              "CONF");
  for (auto& r : *all) {
    std::printf("%-16s %-24s %-10s %-12s %7ds  %s\n", r.name.c_str(), r.url.c_str(), r.id.c_str(),
                r.ns.c_str(), r.timeout_seconds,
                r.conf.empty() ? "(librados default)" : r.conf.c_str());
  }
  return kExitOk;
}

int CmdRemoteRm(const Globals& g, const RemoteArgs& a) {
  auto w = StoreWriter::Open(g.store, a.wait);
  if (!w.ok()) return Fail(g, w.status());
  StoreConfig c = (*w)->config();
  if (Status s = RemoveRemote(&c, a.name); !s.ok()) return Fail(g, s);
  if (Status s = (*w)->SetConfig(c); !s.ok()) return Fail(g, s);
  if (g.json)
    PrintJson({{"ok", true}, {"removed", a.name}});
  else
    std::printf("removed remote %s (nothing on the cluster was changed)\n", a.name.c_str());
  return kExitOk;
}

void PrintTransfer(const Globals& g, const char* verb, const std::string& ref,
                   const std::string& where, const TransferResult& r) {
  if (g.json) {
    PrintJson({{"ok", true},
               {"model", ref},
               {"remote", where},
               {"digest", r.digest.Hex()},
               {"unchanged", r.unchanged},
               {"chunks", r.chunks},
               {"raw_bytes", r.raw_bytes},
               {"moved_chunks", r.moved_chunks},
               {"moved_bytes", r.moved_bytes},
               {"manifest_bytes", r.manifest_bytes},
               {"seconds", r.seconds}});
    return;
  }
  std::printf("%s %s (%s) %s %s\n", r.unchanged ? "unchanged" : verb, ref.c_str(),
              r.digest.Hex().substr(0, 12).c_str(), std::string(verb) == "pushed" ? "to" : "from",
              where.c_str());
  std::printf("  %llu of %llu chunks moved (%s stored bytes) in %.2f s; the rest were there\n",
              (unsigned long long)r.moved_chunks, (unsigned long long)r.chunks,
              HumanBytes(double(r.moved_bytes)).c_str(), r.seconds);
}

int CmdPush(const Globals& g, const RemoteArgs& a) {
  auto reader = StoreReader::Open(g.store);
  if (!reader.ok()) return Fail(g, reader.status());
  auto tier = Connect(g, a.remote, a.op_timeout);
  if (!tier.ok()) return Fail(g, tier.status());
  ProgressLine line("pushing", !g.json);
  TransferOptions o;
  o.force = a.force;
  o.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = Push((*reader)->view(), a.ref, tier->get(), o);
  line.Finish();
  if (!r.ok()) {
    return Fail(g, r.status().WithContext("push of " + a.ref +
                                          " failed; the remote names nothing new (run it again "
                                          "to finish)"));
  }
  PrintTransfer(g, "pushed", a.ref, (*tier)->Describe(), *r);
  return kExitOk;
}

int CmdPull(const Globals& g, const RemoteArgs& a) {
  auto tier = Connect(g, a.remote, a.op_timeout);
  if (!tier.ok()) return Fail(g, tier.status());
  auto w = StoreWriter::Open(g.store, a.wait);
  if (!w.ok()) return Fail(g, w.status());
  ProgressLine line("pulling", !g.json);
  TransferOptions o;
  o.force = a.force;
  o.progress = [&](uint64_t d, uint64_t t) { return line.Update(d, t); };
  auto r = Pull(w->get(), a.ref, tier->get(), o);
  line.Finish();
  if (!r.ok()) {
    return Fail(
        g, r.status().WithContext("pull of " + a.ref + " failed and the local store is as it was"));
  }
  PrintTransfer(g, "pulled", a.ref, (*tier)->Describe(), *r);
  return kExitOk;
}

int CmdRemoteGc(const Globals& g, const RemoteArgs& a) {
  if (a.grace < 0) return Fail(g, Status::InvalidArgument("--grace must be 0 or more seconds"));
  if (a.grace < kMinGraceSeconds && !a.force) {
    return Fail(g, Status::InvalidArgument(
                       "--grace " + std::to_string(a.grace) + " is below " +
                       std::to_string(kMinGraceSeconds) +
                       " s: it can withdraw the claims of pushes that are running (one batch "
                       "of a push can take about 3 timeouts), which then fail and must be run "
                       "again; raise it, or pass --force if no push is running"));
  }
  auto tier = Connect(g, a.name, a.op_timeout);
  if (!tier.ok()) return Fail(g, tier.status());
  const bool show = !g.json && ::isatty(2);
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
  auto r = CollectRemoteGarbage(tier->get(), o);
  if (show) std::fprintf(stderr, "\r\033[K");
  if (!r.ok()) return Fail(g, r.status().WithContext("remote gc of " + (*tier)->Describe()));
  const GcResult& x = *r;
  if (g.json) {
    nlohmann::json claims = nlohmann::json::array();
    for (const GcClaim& c : x.claims) {
      claims.push_back({{"id", c.id},
                        {"host", c.host},
                        {"pid", c.pid},
                        {"digest", c.model_digest},
                        {"age_seconds", c.age_seconds},
                        {"withdrawn", c.withdrawn}});
    }
    PrintJson({{"ok", true},
               {"remote", (*tier)->Describe()},
               {"dry_run", a.dry_run},
               {"grace_seconds", a.grace},
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
               {"kept", x.kept},
               {"seconds", x.seconds}});
    return kExitOk;
  }
  std::printf("%s: %llu objects, %llu names, %llu chunks referenced of %llu\n",
              (*tier)->Describe().c_str(), (unsigned long long)x.objects,
              (unsigned long long)x.names, (unsigned long long)x.referenced_chunks,
              (unsigned long long)x.chunk_objects);
  for (const GcClaim& c : x.claims) {
    std::printf("  push of %s by %s pid %lld, renewed %lld s ago%s\n",
                c.model_digest.substr(0, 12).c_str(), c.host.c_str(), (long long)c.pid,
                (long long)c.age_seconds,
                c.withdrawn ? (a.dry_run ? ": would be withdrawn" : ": withdrawn") : ": kept");
  }
  if (a.dry_run) {
    std::printf(
        "would delete %llu chunks, %llu manifests, %llu claim objects (%s); "
        "nothing was changed\n",
        (unsigned long long)x.dead_chunks, (unsigned long long)x.dead_manifests,
        (unsigned long long)x.dead_claim_objects, HumanBytes(double(x.dead_bytes)).c_str());
  } else {
    std::printf("deleted %llu chunks, %llu manifests, %llu claim objects (%s) in %.2f s",
                (unsigned long long)x.deleted_chunks, (unsigned long long)x.deleted_manifests,
                (unsigned long long)x.deleted_claim_objects,
                HumanBytes(double(x.deleted_bytes)).c_str(), x.seconds);
    if (x.kept)
      std::printf("; kept %llu that a push or a name needed meanwhile", (unsigned long long)x.kept);
    std::printf("\n");
  }
  if (x.other_objects) {
    std::printf("left alone %llu objects that are not pstore's\n",
                (unsigned long long)x.other_objects);
  }
  return kExitOk;
}

}  // namespace

int CmdRemoteLsNames(const Globals& g, const std::string& remote) {
  auto tier = Connect(g, remote);
  if (!tier.ok()) return Fail(g, tier.status());
  auto names = (*tier)->ListNames();
  if (!names.ok()) return Fail(g, names.status());
  if (g.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& [ref, d] : *names) arr.push_back({{"model", ref}, {"digest", d.Hex()}});
    PrintJson({{"ok", true}, {"remote", (*tier)->Describe()}, {"models", arr}});
    return kExitOk;
  }
  std::printf("%-40s %s\n", "MODEL", "DIGEST");
  for (auto& [ref, d] : *names) std::printf("%-40s %s\n", ref.c_str(), d.Hex().c_str());
  return kExitOk;
}

int CmdRemoteRmNames(const Globals& g, const std::string& remote,
                     const std::vector<std::string>& refs) {
  auto tier = Connect(g, remote);
  if (!tier.ok()) return Fail(g, tier.status());
  for (const auto& ref : refs) {
    auto name = ParseModelName(ref);
    if (!name.ok()) return Fail(g, name.status());
    auto d = (*tier)->GetName(name->Ref());
    if (!d.ok()) return Fail(g, d.status());
    if (!*d) {
      return Fail(g, Status::NotFound((*tier)->Describe() + " has no model called " + name->Ref()));
    }
    if (Status s = (*tier)->RemoveName(name->Ref(), **d); !s.ok()) return Fail(g, s);
    if (!g.json)
      std::printf("removed %s from %s\n", name->Ref().c_str(), (*tier)->Describe().c_str());
  }
  if (g.json) PrintJson({{"ok", true}, {"removed", refs}});
  return kExitOk;
}

void AddRemoteCommands(CLI::App& app, Globals&) {
  RemoteArgs& a = g_args;
  auto* remote = app.add_subcommand("remote", "Add, list or remove the store's remotes");
  remote->require_subcommand(1);
  g_add = remote->add_subcommand("add", "Add a remote: a Ceph RADOS pool");
  g_add->add_option("NAME", a.name, "The remote's name")->required();
  g_add->add_option("URL", a.url, "rados:POOL")->required();
  g_add->add_option("--conf", a.conf, "The Ceph conf (default: librados' search)");
  g_add->add_option("--id", a.id, "The Ceph client id, without client. (default admin)");
  g_add->add_option("--namespace", a.ns, "The RADOS namespace within the pool");
  g_add->add_option("--timeout", a.timeout, "Seconds to wait for the cluster (default 30)");
  g_add->add_flag("--force", a.force, "Replace a remote of that name");
  g_add->add_flag("--wait", a.wait, "Wait for another writer instead of failing");
  g_ls = remote->add_subcommand("ls", "List the store's remotes");
  g_rm = remote->add_subcommand("rm", "Forget a remote (nothing on the cluster changes)");
  g_rm->add_option("NAME", a.name, "The remote's name")->required();
  g_rm->add_flag("--wait", a.wait, "Wait for another writer instead of failing");
  g_gc = remote->add_subcommand(
      "gc", "Delete the remote's chunks and manifests that no remote name needs");
  g_gc->add_option("NAME", a.name, "The remote's name")->required();
  g_gc->add_option("--grace", a.grace,
                   "Seconds after which an unrenewed push claim is taken for a killed push's "
                   "(default 3600)");
  g_gc->add_flag("--dry-run", a.dry_run, "Report what would be deleted; change nothing");
  g_gc->add_flag("--force", a.force,
                 "Accept a --grace below " + std::to_string(kMinGraceSeconds) + " seconds");
  g_gc->add_option("--timeout", a.op_timeout,
                   "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));

  g_push = app.add_subcommand("push", "Upload a model to a remote: missing chunks, manifest, name");
  g_push->add_option("NAME:TAG", a.ref, "The model")->required();
  g_push->add_option("--remote", a.remote, "The remote (default: the only one)");
  g_push->add_flag("--force", a.force, "Replace NAME:TAG on the remote if it names another model");
  g_push
      ->add_option("--timeout", a.op_timeout,
                   "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));
  g_pull = app.add_subcommand("pull", "Fetch a model from a remote into the store");
  g_pull->add_option("NAME:TAG", a.ref, "The model")->required();
  g_pull->add_option("--remote", a.remote, "The remote (default: the only one)");
  g_pull->add_flag("--force", a.force, "Replace NAME:TAG locally if it names another model");
  g_pull->add_flag("--wait", a.wait, "Wait for another writer instead of failing");
  g_pull
      ->add_option("--timeout", a.op_timeout,
                   "Seconds to wait for the cluster (default: the remote's)")
      ->check(CLI::Range(1, 3600));
}

std::optional<int> RunRemoteCommand(const Globals& g) {
  if (*g_add) return CmdRemoteAdd(g, g_args);
  if (*g_ls) return CmdRemoteLs(g);
  if (*g_rm) return CmdRemoteRm(g, g_args);
  if (*g_gc) return CmdRemoteGc(g, g_args);
  if (*g_push) return CmdPush(g, g_args);
  if (*g_pull) return CmdPull(g, g_args);
  return std::nullopt;
}

}  // namespace pstore::cli
