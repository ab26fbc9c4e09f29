// lazy_bench: lazy opening from a remote against reading the same bytes with
// librados (docs/benchmarks.md, "Lazy opening from a remote").
//
//   lazy_bench --conf CEPH.conf --pool POOL --namespace NS --model NAME:TAG
//              --prefix layers.7. [--runs 3] [--work DIR] [--in-flight 64]
//
// The model must have been pushed to POOL/NS. Each run, in turn:
//   librados   the distinct chunks of the tensors whose names start with
//              PREFIX, read by their locations (byte ranges of packs,
//              LocatedChunkSource) or, for a model pushed before packs, their
//              chunk objects (RadosChunkSource); asynchronous reads,
//              --in-flight at once, connected beforehand, not timed
//   lazy       a new, empty store with the remote added; pstore_store_open,
//              pstore_model_open of the model (name and manifest from the
//              remote) and pstore_tensor_acquire of every tensor with PREFIX
//              (after pstore_model_prefetch_prefix, so loads run in
//              parallel), all timed, connecting included
// and prints the times, the bytes and the ratio as JSON lines.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "bench/bench_util.h"
#include "common/file_util.h"
#include "pstore.h"
#include "store/remote/pack_layout.h"
#include "store/remote/rados_chunk_source.h"
#include "store/remote/remote_config.h"
#include "store/remote/remote_tier.h"
#include "store/store.h"

using namespace pstore;
using pstore::bench::Now;

namespace {

struct Args {
  std::string conf, pool = "pstore", ns, model, prefix, work = "/tmp";
  int runs = 3, in_flight = 64;
};

int Usage() {
  std::fprintf(stderr,
               "usage: lazy_bench --conf CEPH.conf --pool POOL --namespace NS --model NAME:TAG "
               "--prefix PREFIX [--runs N] [--work DIR] [--in-flight N]\n");
  return 2;
}

int Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "lazy_bench: %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

// A new store at root whose only remote is the benchmark's.
Status MakeStore(const std::string& root, const Args& a) {
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(root, false));
  StoreConfig c = w->config();
  RemoteSpec r;
  r.name = "bench";
  r.url = "rados:" + a.pool;
  r.conf = a.conf;
  r.ns = a.ns;
  PSTORE_RETURN_IF_ERROR(AddRemote(&c, r, false));
  return w->SetConfig(c);
}

// Removes the store's shared memory (its segments outlive the process).
void RemoveShm(const std::string& root) {
  auto id = ReadFileToString(root + "/ID");
  if (!id.ok()) return;
  std::string prefix = "pstore-" + std::string(id->substr(0, 32));
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    std::string n = e.path().filename();
    if (n.rfind(prefix, 0) == 0) ::shm_unlink(n.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) return Usage();
    std::string v = argv[++i];
    if (k == "--conf")
      a.conf = v;
    else if (k == "--pool")
      a.pool = v;
    else if (k == "--namespace")
      a.ns = v;
    else if (k == "--model")
      a.model = v;
    else if (k == "--prefix")
      a.prefix = v;
    else if (k == "--runs")
      a.runs = std::stoi(v);
    else if (k == "--work")
      a.work = v;
    else if (k == "--in-flight")
      a.in_flight = std::stoi(v);
    else
      return Usage();
  }
  if (a.conf.empty() || a.model.empty() || a.prefix.empty()) return Usage();
  RadosOptions ro;
  ro.conf_path = a.conf;
  ro.pool = a.pool;
  ro.ns = a.ns;
  ro.max_in_flight = a.in_flight;
  auto tier = RemoteTier::Open(ro);
  if (!tier.ok()) return Die("connecting", tier.status());
  auto name = ParseModelName(a.model);
  if (!name.ok()) return Die("model", name.status());
  auto digest = (*tier)->GetName(name->Ref());
  if (!digest.ok() || !*digest) return Die("the remote's name " + a.model, digest.status());
  auto bytes = (*tier)->GetManifest(**digest);
  if (!bytes.ok() || !*bytes) return Die("the manifest", bytes.status());
  auto m = Manifest::Parse(**bytes, false);
  if (!m.ok()) return Die("parsing the manifest", m.status());
  std::vector<ChunkKey> keys;
  std::unordered_set<ChunkKey, ChunkKeyHasher> seen;
  uint64_t raw = 0, tensors = 0, model_raw = 0;
  for (const ManifestTensor& t : m->tensors) {
    model_raw += t.size;
    if (t.name.rfind(a.prefix, 0) != 0) continue;
    tensors++;
    raw += t.size;
    for (uint64_t j = 0; j < m->ChunkCount(t); ++j)
      if (seen.insert(m->chunks[t.first_chunk + j]).second)
        keys.push_back(m->chunks[t.first_chunk + j]);
  }
  std::printf(
      "{\"model\": \"%s\", \"model_raw_bytes\": %lu, \"prefix\": \"%s\", \"tensors\": %lu, "
      "\"raw_bytes\": %lu, \"chunks\": %zu}\n",
      a.model.c_str(), model_raw, a.prefix.c_str(), tensors, raw, keys.size());
  auto locs = ReadLocations((*tier)->Io(), **digest);
  if (!locs.ok()) return Die("the locations", locs.status());
  std::unique_ptr<ChunkSource> located;
  if (*locs) {
    located = std::make_unique<LocatedChunkSource>(
        (*tier)->Io(), std::make_shared<const Locations>(std::move(**locs)));
  }
  ChunkSource& baseline = located ? *located : (*tier)->chunks();
  std::vector<double> ratios;
  for (int run = 0; run < a.runs; ++run) {
    // librados: the layer's stored bytes.
    double t0 = Now();
    auto frames = baseline.Read(keys);
    double t_rados = Now() - t0;
    if (!frames.ok()) return Die("reading with librados", frames.status());
    uint64_t stored = 0;
    for (const auto& f : *frames) stored += f ? f->size() : 0;
    // lazy: a new store, open, acquire the layer.
    std::string root =
        a.work + "/lazy-bench-" + std::to_string(::getpid()) + "-" + std::to_string(run);
    if (Status st = MakeStore(root, a); !st.ok()) return Die("making a store", st);
    t0 = Now();
    pstore_store* s = nullptr;
    pstore_model* model = nullptr;
    pstore_status ps = pstore_store_open(root.c_str(), nullptr, &s);
    if (ps == PSTORE_OK) ps = pstore_model_open(s, a.model.c_str(), &model);
    const double t_open = Now() - t0;
    if (ps == PSTORE_OK) ps = pstore_model_prefetch_prefix(model, a.prefix.c_str(), nullptr);
    if (ps == PSTORE_OK) ps = pstore_model_prefetch_wait(model);
    const size_t n = ps == PSTORE_OK ? pstore_model_tensor_count(model) : 0;
    std::vector<size_t> held;
    for (size_t i = 0; ps == PSTORE_OK && i < n; ++i) {
      pstore_tensor_info info;
      info.struct_size = sizeof(info);
      ps = pstore_model_tensor_info(model, i, &info);
      if (ps != PSTORE_OK || std::strncmp(info.name, a.prefix.c_str(), a.prefix.size()) != 0)
        continue;
      const void* p = nullptr;
      ps = pstore_tensor_acquire(model, i, &p);
      if (ps == PSTORE_OK) held.push_back(i);
    }
    double t_lazy = Now() - t0;
    if (ps != PSTORE_OK) {
      std::fprintf(stderr, "lazy_bench: lazy open: %s\n", pstore_last_error());
      return 1;
    }
    for (size_t i : held) pstore_tensor_release(model, i);
    pstore_model_close(model);
    pstore_store_close(s);
    RemoveShm(root);
    (void)RemoveTree(root);
    ratios.push_back(t_lazy / t_rados);
    std::printf(
        "{\"run\": %d, \"librados_seconds\": %.4f, \"stored_bytes\": %lu, \"librados_MBps\": "
        "%.1f, \"lazy_seconds\": %.4f, \"of_which_open\": %.4f, \"lazy_raw_MBps\": %.1f, "
        "\"ratio\": %.2f}\n",
        run, t_rados, stored, stored / t_rados / 1e6, t_lazy, t_open, raw / t_lazy / 1e6,
        t_lazy / t_rados);
    std::fflush(stdout);
  }
  std::printf("{\"median_ratio\": %.2f}\n", pstore::bench::Median(ratios));
  return 0;
}
