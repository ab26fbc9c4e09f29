// rados_layout: measures object layouts for the remote chunk tier on a RADOS
// pool, to choose one (docs/remote.md). Every layout moves the same bytes
// (a file, repeated up to --bytes) with librados' asynchronous operations,
// --in-flight at once:
//
//   file64m      the baseline: the bytes as 64 MiB objects (write_full, read)
//   chunk256k    one object per 256 KiB chunk, named by its key
//   chunk1m      one object per 1 MiB chunk
//   packNNm      256 KiB chunks packed into NN MiB objects, plus a chunk index
//                in omap (key -> pack, offset, length) on 64 index objects;
//                read back either as whole packs (a pull) or chunk by chunk
//                by byte range after an omap lookup (a lazy fetch)
//   source       RadosChunkSource (store/remote/) writing and reading the
//                bytes' 256 KiB chunks as coded frames (the default profile,
//                the file cut at 256 KiB offsets): what the remote tier moves
//
// Usage: rados_layout --conf CEPH_CONF [--pool P] [--file F] [--bytes N]
//                     [--in-flight K] [--layouts a,b,...]
#include <rados/librados.hpp>

#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/rados_util.h"
#include "codec/chunk_codec.h"
#include "codec/hash.h"
#include "store/remote/rados_chunk_source.h"

using pstore::bench::Now;

namespace {

int g_in_flight = 16;

void Run(size_t n, const std::function<int(size_t, librados::AioCompletion*)>& start,
         const char* what) {
  pstore::bench::RunAio(g_in_flight, n, start, what);
}

void Report(const char* layout, const char* op, size_t bytes, size_t ops, double secs) {
  std::printf("%-10s %-22s %8.1f MB/s %9.0f ops/s %7zu ops %7.2f s\n", layout, op,
              bytes / secs / 1e6, ops / secs, ops, secs);
  std::fflush(stdout);
}

// One object per piece of `piece` bytes.
void ObjectPerPiece(librados::IoCtx& io, const std::string& data, size_t piece,
                    const char* layout) {
  size_t n = (data.size() + piece - 1) / piece;
  std::vector<std::string> names(n);
  for (size_t i = 0; i < n; ++i) {
    size_t len = std::min(piece, data.size() - i * piece);
    names[i] =
        "c." + pstore::HashBytes(data.data() + i * piece, len).Hex() + "." + std::to_string(i);
  }
  double t0 = Now();
  pstore::bench::WritePieces(io, data, piece, names, g_in_flight);
  Report(layout, "write", data.size(), n, Now() - t0);
  t0 = Now();
  pstore::bench::ReadPieces(io, data.size(), piece, names, g_in_flight);
  double secs = Now() - t0;
  Report(layout, "read", data.size(), n, secs);
}

// Chunks of `chunk` bytes packed into objects of `pack` bytes, with the
// chunk index in omap on kShards index objects.
void Packs(librados::IoCtx& io, const std::string& data, size_t chunk, size_t pack,
           const char* layout) {
  constexpr size_t kShards = 64;
  size_t nchunks = (data.size() + chunk - 1) / chunk;
  size_t per_pack = pack / chunk;
  size_t npacks = (nchunks + per_pack - 1) / per_pack;
  struct Loc {
    std::string key;  // 32 hex
    size_t pack, offset, len;
  };
  std::vector<Loc> locs(nchunks);
  for (size_t i = 0; i < nchunks; ++i) {
    size_t len = std::min(chunk, data.size() - i * chunk);
    locs[i] = {pstore::HashBytes(data.data() + i * chunk, len).Hex() + std::to_string(i % 10),
               i / per_pack, (i % per_pack) * chunk, len};
  }
  auto pack_name = [&](size_t p) { return std::string(layout) + ".p." + std::to_string(p); };
  auto shard_of = [&](const std::string& hex) {
    return size_t(std::stoul(hex.substr(0, 2), nullptr, 16)) % kShards;
  };
  auto shard_name = [&](size_t s) { return std::string(layout) + ".i." + std::to_string(s); };
  // Write: the packs, then the index entries (one omap_set per shard).
  double t0 = Now();
  Run(
      npacks,
      [&](size_t p, librados::AioCompletion* c) {
        size_t off = p * per_pack * chunk;
        librados::bufferlist bl;
        bl.append(data.data() + off, std::min(per_pack * chunk, data.size() - off));
        return io.aio_write_full(pack_name(p), c, bl);
      },
      "write pack");
  double t_packs = Now() - t0;
  std::vector<std::map<std::string, librados::bufferlist>> shard_vals(kShards);
  for (const Loc& l : locs) {
    char v[64];
    int n = std::snprintf(v, sizeof v, "%zu,%zu,%zu", l.pack, l.offset, l.len);
    shard_vals[shard_of(l.key)][l.key].append(v, n);
  }
  std::vector<librados::ObjectWriteOperation> wops(kShards);
  Run(
      kShards,
      [&](size_t s, librados::AioCompletion* c) {
        wops[s].omap_set(shard_vals[s]);
        return io.aio_operate(shard_name(s), c, &wops[s]);
      },
      "omap set");
  double t1 = Now();
  Report(layout, "write (packs)", data.size(), npacks, t_packs);
  Report(layout, "write (packs + index)", data.size(), npacks + kShards, t1 - t0);
  // Pull: whole packs.
  std::vector<librados::bufferlist> bufs(std::max(npacks, nchunks));
  t0 = Now();
  Run(
      npacks,
      [&](size_t p, librados::AioCompletion* c) {
        bufs[p].clear();
        return io.aio_read(pack_name(p), c, &bufs[p], per_pack * chunk, 0);
      },
      "read pack");
  Report(layout, "read whole packs", data.size(), npacks, Now() - t0);
  // Lazy: omap lookup of every key (by shard), then byte-range reads.
  t0 = Now();
  std::vector<std::set<std::string>> shard_keys(kShards);
  for (const Loc& l : locs) shard_keys[shard_of(l.key)].insert(l.key);
  std::vector<std::map<std::string, librados::bufferlist>> got(kShards);
  std::vector<int> rvals(kShards);
  std::vector<librados::ObjectReadOperation> rops(kShards);
  Run(
      kShards,
      [&](size_t s, librados::AioCompletion* c) {
        rops[s].omap_get_vals_by_keys(shard_keys[s], &got[s], &rvals[s]);
        return io.aio_operate(shard_name(s), c, &rops[s], nullptr);
      },
      "omap get");
  double t_index = Now() - t0;
  size_t found = 0;
  for (auto& g : got) found += g.size();
  if (found != nchunks) {
    std::fprintf(stderr, "index lookup found %zu of %zu\n", found, nchunks);
    std::exit(1);
  }
  Run(
      nchunks,
      [&](size_t i, librados::AioCompletion* c) {
        bufs[i].clear();
        return io.aio_read(pack_name(locs[i].pack), c, &bufs[i], locs[i].len, locs[i].offset);
      },
      "read range");
  double t_all = Now() - t0;
  Report(layout, "index lookup (omap)", 0, kShards, t_index);
  Report(layout, "read chunks by range", data.size(), nchunks, t_all - t_index);
  Report(layout, "lookup + range reads", data.size(), nchunks + kShards, t_all);
}

// The chunk source: frames of data's 256 KiB chunks, written then read in
// batches of 256 chunks.
void Source(const std::string& conf, const std::string& pool, const std::string& data) {
  constexpr size_t kChunk = size_t(256) << 10, kBatch = 256;
  pstore::RadosOptions o;
  o.conf_path = conf;
  o.pool = pool;
  o.ns = "bench-source-" + std::to_string(getpid());
  o.max_in_flight = g_in_flight;
  auto src = pstore::RadosChunkSource::Open(o);
  if (!src.ok()) {
    std::fprintf(stderr, "%s\n", src.status().ToString().c_str());
    std::exit(1);
  }
  std::vector<pstore::ChunkKey> keys;
  std::vector<std::string> frames;
  std::vector<uint64_t> raw_lens;
  pstore::ChunkEncoder enc{pstore::EncodeOptions{}};
  size_t stored = 0;
  for (size_t off = 0; off < data.size(); off += kChunk) {
    size_t len = std::min(kChunk, data.size() - off);
    auto raw = std::span(reinterpret_cast<const uint8_t*>(data.data() + off), len);
    keys.push_back(pstore::HashBytes(raw.data(), len));
    frames.emplace_back();
    enc.Encode(raw, pstore::DType::kBF16, &frames.back());
    raw_lens.push_back(len);
    stored += frames.back().size();
  }
  // Repeated input repeats keys: write and read each key once.
  std::map<pstore::ChunkKey, size_t> first;
  for (size_t i = 0; i < keys.size(); ++i) first.emplace(keys[i], i);
  std::vector<size_t> uniq;
  size_t uniq_raw = 0, uniq_stored = 0;
  for (auto& [k, i] : first) {
    uniq.push_back(i);
    uniq_raw += raw_lens[i];
    uniq_stored += frames[i].size();
  }
  std::printf("# source: %zu chunks (%zu distinct), %.1f MB raw and %.1f MB stored distinct\n",
              keys.size(), uniq.size(), uniq_raw / 1e6, uniq_stored / 1e6);
  double t0 = Now();
  for (size_t b = 0; b < uniq.size(); b += kBatch) {
    std::vector<pstore::ChunkFrameRef> refs;
    for (size_t j = b; j < std::min(uniq.size(), b + kBatch); ++j) {
      size_t i = uniq[j];
      refs.push_back({keys[i], frames[i], raw_lens[i]});
    }
    pstore::Status st = (*src)->Write(refs);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      std::exit(1);
    }
  }
  double secs = Now() - t0;
  Report("source", "write (raw MB/s)", uniq_raw, uniq.size(), secs);
  Report("source", "write (stored MB/s)", uniq_stored, uniq.size(), secs);
  t0 = Now();
  size_t got_bytes = 0;
  for (size_t b = 0; b < uniq.size(); b += kBatch) {
    std::vector<pstore::ChunkKey> ks;
    for (size_t j = b; j < std::min(uniq.size(), b + kBatch); ++j) ks.push_back(keys[uniq[j]]);
    auto got = (*src)->Read(ks);
    if (!got.ok()) {
      std::fprintf(stderr, "%s\n", got.status().ToString().c_str());
      std::exit(1);
    }
    for (auto& f : *got) got_bytes += f ? f->size() : 0;
  }
  secs = Now() - t0;
  if (got_bytes != uniq_stored) {
    std::fprintf(stderr, "read %zu bytes, expected %zu\n", got_bytes, uniq_stored);
    std::exit(1);
  }
  Report("source", "read (raw MB/s)", uniq_raw, uniq.size(), secs);
  Report("source", "read (stored MB/s)", uniq_stored, uniq.size(), secs);
}

}  // namespace

int main(int argc, char** argv) {
  std::string conf, pool = "pstore", file = "/work/corpus/combined.safetensors";
  std::string layouts = "file64m,chunk256k,chunk1m,pack16m,pack64m";
  size_t bytes = size_t(512) << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--conf")
      conf = v;
    else if (a == "--pool")
      pool = v;
    else if (a == "--file")
      file = v;
    else if (a == "--bytes")
      bytes = std::stoull(v);
    else if (a == "--in-flight")
      g_in_flight = std::stoi(v);
    else if (a == "--layouts")
      layouts = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::ifstream in(file, std::ios::binary);
  std::string src((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (src.empty()) {
    std::fprintf(stderr, "cannot read %s\n", file.c_str());
    return 1;
  }
  std::string data;
  data.reserve(bytes);
  while (data.size() < bytes) data.append(src, 0, std::min(src.size(), bytes - data.size()));

  librados::Rados rados;
  librados::IoCtx io;
  pstore::bench::ConnectPool(conf, pool, &rados, &io);
  io.set_namespace("bench");
  std::printf("# %zu bytes from %s, %d operations in flight\n", data.size(), file.c_str(),
              g_in_flight);
  for (const std::string& l : pstore::bench::SplitList(layouts)) {
    if (l == "file64m")
      ObjectPerPiece(io, data, size_t(64) << 20, "file64m");
    else if (l == "chunk256k")
      ObjectPerPiece(io, data, size_t(256) << 10, "chunk256k");
    else if (l == "chunk1m")
      ObjectPerPiece(io, data, size_t(1) << 20, "chunk1m");
    else if (l == "pack16m")
      Packs(io, data, size_t(256) << 10, size_t(16) << 20, "pack16m");
    else if (l == "source")
      Source(conf, pool, data);
    else if (l == "pack64m")
      Packs(io, data, size_t(256) << 10, size_t(64) << 20, "pack64m");
    else {
      std::fprintf(stderr, "unknown layout %s\n", l.c_str());
      return 2;
    }
  }
  io.close();
  rados.shutdown();
  return 0;
}
