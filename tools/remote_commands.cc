// The pstore command's remote commands: remote add|ls|rm, push, pull, and the
// --remote forms of ls and rm (docs/remote.md, docs/cli.md).
//
// push reads the newest published generation and runs alongside a writer;
// pull and remote add|rm take the store's writer lock.
#include <cstdio>
#include <iostream>

#include "store/lazy_ingest.h"
#include "store/remote/remote_config.h"
#include "store/remote/transfer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace pstore::cli {
namespace {

struct RemoteArgs {
  std::string name, url, conf, id = "admin", ns, remote, ref;
  int timeout = 30;
  bool force = false, wait = false;
};

RemoteArgs g_args;
CLI::App *g_add, *g_ls, *g_rm, *g_push, *g_pull, *g_ingest;

nlohmann::json SpecJson(const RemoteSpec& r) {
  return {{"name", r.name}, {"url", r.url},      {"conf", r.conf},
          {"id", r.id},     {"namespace", r.ns}, {"timeout_seconds", r.timeout_seconds}};
}

// The remote's spec from the store's config, connected.
Result<std::unique_ptr<RemoteTier>> Connect(const Globals& g, const std::string& remote) {
  StorePaths p{g.store};
  PSTORE_RETURN_IF_ERROR(ReadStoreId(p).status());
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  PSTORE_ASSIGN_OR_RETURN(RemoteSpec spec, FindRemote(c, remote));
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
  auto tier = Connect(g, a.remote);
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
  auto tier = Connect(g, a.remote);
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
  // What lazy opening spooled is in the store now, or may be made a model.
  if (auto in = IngestLazyCache(w->get()); !in.ok() && !g.json) {
    std::fprintf(stderr, "note: the lazy cache was not ingested: %s\n",
                 in.status().ToString().c_str());
  }
  return kExitOk;
}

int CmdIngest(const Globals& g, const RemoteArgs& a) {
  auto w = StoreWriter::Open(g.store, a.wait);
  if (!w.ok()) return Fail(g, w.status());
  auto r = IngestLazyCache(w->get());
  if (!r.ok()) return Fail(g, r.status().WithContext("the lazy cache was not ingested"));
  if (g.json) {
    PrintJson({{"ok", true},
               {"published", r->published},
               {"partial", r->partial},
               {"skipped", r->skipped},
               {"chunks", r->chunks}});
    return kExitOk;
  }
  for (const auto& m : r->published) std::printf("published %s (now a local model)\n", m.c_str());
  for (const auto& m : r->partial)
    std::printf("partial   %s (chunks still on the remote only; stays in the lazy cache)\n",
                m.c_str());
  for (const auto& m : r->skipped)
    std::printf("skipped   %s (the name is taken locally by another model)\n", m.c_str());
  std::printf("%llu spooled chunks moved into the store\n", (unsigned long long)r->chunks);
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
  g_ingest = remote->add_subcommand(
      "ingest", "Move chunks fetched by lazily opened models into the store; publish whole ones");
  g_ingest->add_flag("--wait", a.wait, "Wait for another writer instead of failing");

  g_push = app.add_subcommand("push", "Upload a model to a remote: missing chunks, manifest, name");
  g_push->add_option("NAME:TAG", a.ref, "The model")->required();
  g_push->add_option("--remote", a.remote, "The remote (default: the only one)");
  g_push->add_flag("--force", a.force, "Replace NAME:TAG on the remote if it names another model");
  g_pull = app.add_subcommand("pull", "Fetch a model from a remote into the store");
  g_pull->add_option("NAME:TAG", a.ref, "The model")->required();
  g_pull->add_option("--remote", a.remote, "The remote (default: the only one)");
  g_pull->add_flag("--force", a.force, "Replace NAME:TAG locally if it names another model");
  g_pull->add_flag("--wait", a.wait, "Wait for another writer instead of failing");
}

std::optional<int> RunRemoteCommand(const Globals& g) {
  if (*g_add) return CmdRemoteAdd(g, g_args);
  if (*g_ls) return CmdRemoteLs(g);
  if (*g_rm) return CmdRemoteRm(g, g_args);
  if (*g_ingest) return CmdIngest(g, g_args);
  if (*g_push) return CmdPush(g, g_args);
  if (*g_pull) return CmdPull(g, g_args);
  return std::nullopt;
}

}  // namespace pstore::cli
