// remote_bench: push and pull against the plain librados baseline, in the same
// run, on one cluster (docs/benchmarks.md, "Push and pull").
//
// For each model file, each run: the file's bytes written to RADOS as 64 MiB
// objects (the baseline) and read back, then `push` of the model from a store
// that holds it into an empty namespace and `pull` of it into an empty store
// (StoreWriter::Open, RemoteTier::Open, Push/Pull: what `pstore push` and
// `pstore pull` run, connection and store opening included). Rates are the
// model's raw tensor bytes (pstore) and the file's bytes (baseline) per
// second; the baseline gets as many operations in flight as pull may have
// (--threads x the smaller of --in-flight and a batch), which its object
// count caps. "pull, client alone" is pull's work after the network: the
// frames, read into memory beforehand, decoded, checked, written and
// committed into an empty store (the most pull can reach on this host). With --repush
// BASE,CHANGED: pushes BASE, then CHANGED, into one namespace and reports
// the share of the first push's bytes the second one uploaded.
//
// Usage: remote_bench --conf CEPH_CONF --work DIR [--pool P] [--files F,...]
//                     [--repush BASE,CHANGED] [--runs N] [--in-flight K]
//                     [--threads T]
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/rados_util.h"
#include "store/memory_chunk_source.h"
#include "store/remote/remote_tier.h"
#include "store/remote/transfer.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"

namespace fs = std::filesystem;
using pstore::bench::Median;
using pstore::bench::Now;

namespace {

struct Args {
  std::string conf, pool = "pstore", work;
  std::vector<std::string> files, repush;
  int runs = 3, in_flight = 64, threads = 0;
};

template <typename T>
T Check(pstore::Result<T> r, const std::string& what) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", what.c_str(), r.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.empty()) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(1);
  }
  return s;
}

pstore::RadosOptions Remote(const Args& a, const std::string& ns) {
  pstore::RadosOptions o;
  o.conf_path = a.conf;
  o.pool = a.pool;
  o.ns = ns;
  o.max_in_flight = a.in_flight;
  return o;
}

pstore::TransferOptions Transfer(const Args& a) {
  pstore::TransferOptions o;
  o.threads = a.threads;
  return o;
}

// The name of the i-th model: "m<i>:v" (built by appending: GCC 12 warns
// falsely about "literal" + std::string).
std::string RefOf(size_t i) {
  std::string r = "m";
  r += std::to_string(i);
  r += ":v";
  return r;
}

// A store at dir holding each file under RefOf(i).
void ImportAll(const std::string& dir, const std::vector<std::string>& files) {
  auto w = Check(pstore::StoreWriter::Open(dir, false), "opening " + dir);
  for (size_t i = 0; i < files.size(); ++i) {
    pstore::ModelName name = Check(pstore::ParseModelName(RefOf(i)), "name");
    Check(w->Import(files[i], name, pstore::ImportOptions{}), "importing " + files[i]);
  }
}

pstore::TransferResult PushOne(const Args& a, const std::string& store, const std::string& ref,
                               const std::string& ns) {
  auto reader = Check(pstore::StoreReader::Open(store), "opening " + store);
  auto tier = Check(pstore::RemoteTier::Open(Remote(a, ns)), "connecting");
  return Check(pstore::Push(reader->view(), ref, tier.get(), Transfer(a)), "push " + ref);
}

pstore::TransferResult PullOne(const Args& a, const std::string& store, const std::string& ref,
                               const std::string& ns) {
  auto tier = Check(pstore::RemoteTier::Open(Remote(a, ns)), "connecting");
  auto w = Check(pstore::StoreWriter::Open(store, false), "opening " + store);
  return Check(pstore::Pull(w.get(), ref, tier.get(), Transfer(a)), "pull " + ref);
}

// Pull's client work alone, with no network: the model's frames are read
// from the store at src into memory first, then PullChunks stores them into
// an empty store at dst (decoding and checking each, writing, committing), as
// pull does with the frames it fetches. Returns the seconds PullChunks took.
double ClientOnly(const Args& a, const std::string& src, const std::string& ref,
                  const std::string& dst) {
  auto reader = Check(pstore::StoreReader::Open(src), "opening " + src);
  pstore::ModelName name = Check(pstore::ParseModelName(ref), "name");
  const pstore::ModelDigest digest = Check(reader->view().GetName(name), "name").digest;
  const std::string manifest = Check(reader->view().LoadManifestBytes(digest), "manifest");
  const pstore::Manifest m = Check(pstore::Manifest::Parse(manifest, false), "manifest");
  std::vector<pstore::ChunkKey> keys(m.chunks.begin(), m.chunks.end());
  pstore::RocksChunkSource local(reader->view().db(), false, src);
  pstore::MemoryChunkSource mem;
  for (size_t at = 0; at < keys.size(); at += 256) {
    std::span<const pstore::ChunkKey> some(keys.data() + at,
                                           std::min<size_t>(256, keys.size() - at));
    auto frames = Check(local.Read(some), "reading " + src);
    for (size_t i = 0; i < some.size(); ++i) {
      const pstore::ChunkFrameRef f{some[i], *frames[i], 0};
      if (!mem.Write({&f, 1}).ok()) std::exit(1);
    }
  }
  pstore::TransferOptions o = Transfer(a);
  o.batch = 256;  // as pull from packs
  auto w = Check(pstore::StoreWriter::Open(dst, false), "opening " + dst);
  const double t0 = Now();
  Check(pstore::PullChunks(w.get(), name, manifest, &mem, o), "storing " + ref);
  return Now() - t0;
}

void Line(const char* what, const std::vector<double>& mbs, double base) {
  std::printf("  %-28s", what);
  for (double v : mbs) std::printf(" %7.1f", v);
  std::printf("   median %7.1f MB/s", Median(mbs));
  if (base > 0) std::printf("  (%.2f x baseline)", Median(mbs) / base);
  std::printf("\n");
}

void Figures(const Args& a, librados::IoCtx& io, size_t f) {
  const std::string& file = a.files[f];
  const std::string data = ReadAll(file);
  const std::string src = a.work + "/src";
  const std::string ref = RefOf(f);
  const size_t piece = size_t(64) << 20;
  const int threads = a.threads > 0 ? a.threads : 2 * pstore::DefaultThreads();
  // What pull may have in flight: a batch per worker, each batch's reads up
  // to --in-flight at once.
  const int base_in_flight =
      threads * int(std::min<size_t>(size_t(a.in_flight), Transfer(a).batch));
  std::vector<std::string> names;
  for (size_t i = 0; i * piece < data.size(); ++i) names.push_back("file." + std::to_string(i));
  std::vector<double> bw, br, pw, pr, local, push_s, push_commit, pull_s, pull_commit;
  uint64_t raw = 0, moved = 0;
  for (int run = 0; run < a.runs; ++run) {
    const std::string tag =
        std::to_string(getpid()) + "-" + std::to_string(f) + "-" + std::to_string(run);
    io.set_namespace("bench-file-" + tag);
    double t0 = Now();
    pstore::bench::WritePieces(io, data, piece, names, base_in_flight);
    bw.push_back(data.size() / (Now() - t0) / 1e6);
    t0 = Now();
    pstore::TransferResult p = PushOne(a, src, ref, "bench-pstore-" + tag);
    pw.push_back(p.raw_bytes / (Now() - t0) / 1e6);
    push_s.push_back(Now() - t0);
    push_commit.push_back(p.commit_seconds);
    raw = p.raw_bytes;
    moved = p.moved_bytes;
    t0 = Now();
    pstore::bench::ReadPieces(io, data.size(), piece, names, base_in_flight);
    br.push_back(data.size() / (Now() - t0) / 1e6);
    const std::string dst = a.work + "/pulled";
    t0 = Now();
    pstore::TransferResult q = PullOne(a, dst, ref, "bench-pstore-" + tag);
    pr.push_back(raw / (Now() - t0) / 1e6);
    pull_s.push_back(Now() - t0);
    pull_commit.push_back(q.commit_seconds);
    fs::remove_all(dst);
    local.push_back(raw / ClientOnly(a, src, ref, dst) / 1e6);
    fs::remove_all(dst);
    pstore::bench::RemoveAll(io, base_in_flight);
    io.set_namespace("bench-pstore-" + tag);
    pstore::bench::RemoveAll(io, base_in_flight);
  }
  std::printf(
      "%s: %.1f MB file, %.1f MB of distinct chunks raw, %.1f MB of frames moved; "
      "%zu baseline objects, %d in flight; MB/s per run:\n",
      file.c_str(), data.size() / 1e6, raw / 1e6, moved / 1e6, names.size(), base_in_flight);
  Line("baseline write (64 MiB obj)", bw, 0);
  Line("push", pw, Median(bw));
  Line("baseline read (64 MiB obj)", br, 0);
  Line("pull", pr, Median(br));
  Line("pull, client alone", local, Median(br));
  std::printf(
      "  medians: push %.2f s (%.2f s of it manifest and name), pull %.2f s (%.2f s of "
      "it flush, commit and publish)\n",
      Median(push_s), Median(push_commit), Median(pull_s), Median(pull_commit));
  std::fflush(stdout);
}

void Repush(const Args& a, librados::IoCtx& io) {
  const std::string dir = a.work + "/repush";
  ImportAll(dir, a.repush);
  const std::string ns = "bench-repush-" + std::to_string(getpid());
  pstore::TransferResult first = PushOne(a, dir, RefOf(0), ns);
  pstore::TransferResult second = PushOne(a, dir, RefOf(1), ns);
  std::printf(
      "re-push: %s uploaded %.1f MB in %llu chunks; then %s uploaded %.1f MB in %llu "
      "chunks = %.1f%% of the first push's bytes\n",
      a.repush[0].c_str(), first.moved_bytes / 1e6, (unsigned long long)first.moved_chunks,
      a.repush[1].c_str(), second.moved_bytes / 1e6, (unsigned long long)second.moved_chunks,
      100.0 * second.moved_bytes / std::max<uint64_t>(first.moved_bytes, 1));
  io.set_namespace(ns);
  pstore::bench::RemoveAll(io, a.in_flight);
  fs::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  a.files = {"/work/corpus/combined.safetensors"};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--conf")
      a.conf = v;
    else if (k == "--pool")
      a.pool = v;
    else if (k == "--work")
      a.work = v;
    else if (k == "--files")
      a.files = pstore::bench::SplitList(v);
    else if (k == "--repush")
      a.repush = pstore::bench::SplitList(v);
    else if (k == "--runs")
      a.runs = std::stoi(v);
    else if (k == "--in-flight")
      a.in_flight = std::stoi(v);
    else if (k == "--threads")
      a.threads = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (a.work.empty() || (!a.repush.empty() && a.repush.size() != 2)) {
    std::fprintf(stderr,
                 "usage: remote_bench --conf CEPH_CONF --work DIR [--pool P] [--files F,...] "
                 "[--repush BASE,CHANGED] [--runs N] [--in-flight K] [--threads T]\n");
    return 2;
  }
  fs::create_directories(a.work);
  librados::Rados rados;
  librados::IoCtx io;
  pstore::bench::ConnectPool(a.conf, a.pool, &rados, &io);
  if (!a.files.empty() && !a.files[0].empty()) {
    ImportAll(a.work + "/src", a.files);
    for (size_t f = 0; f < a.files.size(); ++f) Figures(a, io, f);
    fs::remove_all(a.work + "/src");
  }
  if (!a.repush.empty()) Repush(a, io);
  io.close();
  rados.shutdown();
  return 0;
}
