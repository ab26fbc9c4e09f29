// import_bench: end-to-end import throughput and stored/raw of each codec
// profile and chunk size over a folder of safetensors files, with single-
// threaded Zstandard (level 3) and LZ4 over the same tensor bytes timed in
// the same run as baselines.
//
//   import_bench [--runs N] [--threads N] [--profiles a,b] [--chunks KiB,KiB] DIR
//
// Each run imports every file of DIR as its own model into a fresh store (in
// $TMPDIR) through StoreWriter, as `pstore import` does: validation, hashing,
// dedup checks, encoding, RocksDB writes, flush, commit and a new generation.
// Throughput is tensor bytes over wall time; figures are medians of the runs.
#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/file_util.h"
#include "store/formats/safetensors.h"
#include "store/store.h"

using namespace pstore;
using bench::Median;
using bench::Now;
namespace fs = std::filesystem;

namespace {}  // namespace

int main(int argc, char** argv) {
  int runs = 3, threads = 0;
  std::vector<std::string> profiles = {"raw", "lz4", "zstd", "fast", "dense"};
  std::vector<std::string> chunks = {"256", "1024"};
  std::string dir;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (a == "--profiles" && i + 1 < argc)
      profiles = bench::SplitList(argv[++i]);
    else if (a == "--chunks" && i + 1 < argc)
      chunks = bench::SplitList(argv[++i]);
    else
      dir = a;
  }
  if (dir.empty()) {
    std::fprintf(
        stderr,
        "usage: import_bench [--runs N] [--threads N] [--profiles a,b] [--chunks KiB,..] DIR\n");
    return 2;
  }
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "no .safetensors files in %s\n", dir.c_str());
    return 2;
  }

  // The tensor bytes, for the baselines.
  std::vector<std::string> data;
  uint64_t raw = 0;
  for (const auto& f : files) {
    auto h = safetensors::ReadHeader(f);
    auto all = ReadFileToString(f);
    if (!h.ok() || !all.ok()) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 1;
    }
    data.push_back(all->substr(h->data_offset));
    raw += h->data_size;
  }
  std::printf("%zu files, %.1f MB of tensor data; medians of %d runs\n\n", files.size(), raw / 1e6,
              runs);
  std::printf("%-22s %9s %12s\n", "method", "stored/raw", "MB/s");
  {
    std::vector<double> tz, tl;
    uint64_t zs = 0, ls = 0;
    std::string out;
    for (int r = 0; r < runs; r++) {
      double t0 = Now();
      zs = 0;
      for (const auto& d : data) {
        out.resize(ZSTD_compressBound(d.size()));
        zs += ZSTD_compress(out.data(), out.size(), d.data(), d.size(), 3);
      }
      double t1 = Now();
      ls = 0;
      for (const auto& d : data) {
        out.resize(size_t(LZ4_compressBound(int(d.size()))));
        ls += size_t(LZ4_compress_default(d.data(), out.data(), int(d.size()), int(out.size())));
      }
      double t2 = Now();
      tz.push_back(t1 - t0);
      tl.push_back(t2 - t1);
    }
    std::printf("%-22s %9.4f %12.0f   (baseline: one thread, each file's tensor bytes)\n",
                "zstd -3", double(zs) / raw, raw / Median(tz) / 1e6);
    std::printf("%-22s %9.4f %12.0f   (baseline: one thread)\n", "lz4", double(ls) / raw,
                raw / Median(tl) / 1e6);
  }

  const char* tmp = std::getenv("TMPDIR");
  std::string base = std::string(tmp && *tmp ? tmp : "/tmp") + "/pstore-import-bench";
  for (const auto& ck : chunks) {
    for (const auto& pname : profiles) {
      auto prof = ProfileFromName(pname);
      if (!prof) {
        std::fprintf(stderr, "unknown profile %s\n", pname.c_str());
        return 2;
      }
      StoreConfig cfg;
      cfg.chunk_size = uint32_t(std::stoul(ck)) << 10;
      cfg.profile = *prof;
      std::vector<double> secs;
      uint64_t stored = 0, disk = 0;
      for (int r = 0; r < runs; r++) {
        (void)RemoveTree(base);
        auto w = StoreWriter::Open(base, false, cfg);
        if (!w.ok()) {
          std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
          return 1;
        }
        ImportOptions io;
        io.threads = threads;
        double t0 = Now();
        for (size_t i = 0; i < files.size(); i++) {
          std::string model = "m";
          model += std::to_string(i);  // not "m" + to_string: GCC 12's -Wrestrict misfires
          auto res = (*w)->Import(files[i], {model, "v1"}, io);
          if (!res.ok()) {
            std::fprintf(stderr, "%s: %s\n", files[i].c_str(), res.status().ToString().c_str());
            return 1;
          }
        }
        secs.push_back(Now() - t0);
        auto st = GetStoreStats((*w)->view(), base);
        stored = st->stored_bytes;
        disk = st->disk_bytes;
      }
      char label[64];
      std::snprintf(label, sizeof(label), "pstore %s, %s KiB", pname.c_str(), ck.c_str());
      std::printf("%-22s %9.4f %12.0f   (disk %.1f MB; end to end, %d threads)\n", label,
                  double(stored) / raw, raw / Median(secs) / 1e6, disk / 1e6,
                  threads ? threads : DefaultThreads());
      std::fflush(stdout);
    }
  }
  (void)RemoveTree(base);
  return 0;
}
