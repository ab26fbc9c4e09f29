// gguf_codec: per GGML type of a GGUF file, the codec's stored/raw ratio and
// single-thread decode speed (decode + the XXH3-128 key check, as the pager
// does) of the tensors' chunks, cut as `pstore import` cuts them (quantized
// tensors on block boundaries, docs/format.md), against
// reading the same bytes: pread of the file's data section from the OS cache
// into a buffer already faulted in and into fresh memory, timed in the same
// run.
//
//   gguf_codec [--chunk KiB] [--runs N] [--profiles a,b] [--no-blocks] [--uniform]
//              FILE.gguf
//
// --no-blocks encodes without the block layout (the quantized blocks as opaque
// bytes), --uniform cuts every tensor every --chunk bytes (mid-block, as
// stores made before block-aligned chunks hold them), for comparison.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "codec/chunk_codec.h"
#include "store/formats/gguf.h"

using namespace pstore;

using bench::Median;
using bench::Now;

namespace {

struct Chunk {
  const uint8_t* p;
  size_t n;
  ChunkType type;
  ChunkKey key;
};

// Median seconds of `runs` preads of [off, off + n) of fd into memory that is
// reused (fresh == false) or newly mapped for each run.
double PreadSeconds(int fd, uint64_t off, size_t n, int runs, bool fresh) {
  std::vector<double> t;
  std::vector<uint8_t> reused(fresh ? 0 : n, 1);
  for (int r = 0; r < runs; r++) {
    uint8_t* buf = reused.data();
    if (fresh)
      buf = static_cast<uint8_t*>(
          mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    double t0 = Now();
    size_t done = 0;
    while (done < n) {
      ssize_t got = pread(fd, buf + done, n - done, off_t(off + done));
      if (got <= 0) std::abort();
      done += size_t(got);
    }
    t.push_back(Now() - t0);
    if (fresh) munmap(buf, n);
  }
  return Median(t);
}

}  // namespace

int main(int argc, char** argv) {
  bench::CodecArgs args{256 << 10, 5, {"dense", "fast"}, {}};
  bench::ParseCodecArgs(argc, argv, &args);
  const size_t chunk = args.chunk;
  const int runs = args.runs;
  bool blocks = true, uniform = false;
  std::string path;
  for (const std::string& a : args.other) {
    if (a == "--no-blocks")
      blocks = false;
    else if (a == "--uniform")
      uniform = true;
    else
      path = a;
  }
  if (path.empty()) {
    std::fprintf(stderr,
                 "usage: gguf_codec [--chunk KiB] [--runs N] [--profiles a,b] [--no-blocks] "
                 "[--uniform] FILE.gguf\n");
    return 2;
  }
  auto h = gguf::ReadFile(path);
  if (!h.ok()) {
    std::fprintf(stderr, "%s\n", h.status().ToString().c_str());
    return 1;
  }
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const uint8_t* data = reinterpret_cast<const uint8_t*>(file.data()) + h->data_offset;

  // Chunks per type, cut from each tensor's start at its chunk length (block
  // types: on blocks and pages, gguf::GgmlChunkLength).
  std::map<std::string, std::vector<Chunk>> by_type;
  std::map<std::string, size_t> raw_of;
  size_t longest = chunk;
  for (const auto& t : h->tensors) {
    const BlockLayout layout = blocks ? gguf::GgmlBlockLayout(t.ggml_type) : BlockLayout{};
    const std::string name = gguf::GgmlTypeName(t.ggml_type);
    const uint32_t own = uniform ? 0 : gguf::GgmlChunkLength(t.ggml_type, uint32_t(chunk));
    const size_t len = own ? own : chunk;
    longest = std::max(longest, len);
    for (uint64_t at = 0; at < t.size; at += len) {
      Chunk c;
      c.p = data + t.offset + at;
      c.n = size_t(std::min<uint64_t>(len, t.size - at));
      c.type = ChunkType{gguf::GgmlDType(t.ggml_type), {layout, 0}};
      if (layout.bytes) c.type.block.phase = uint32_t(at % layout.bytes);
      c.key = HashBytes(c.p, c.n);
      by_type[name].push_back(c);
      raw_of[name] += c.n;
    }
  }

  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return 1;
  const size_t data_bytes = size_t(h->data_size);
  PreadSeconds(fd, h->data_offset, data_bytes, 1, false);  // into the OS cache
  const double warm = PreadSeconds(fd, h->data_offset, data_bytes, runs, false);
  const double fresh = PreadSeconds(fd, h->data_offset, data_bytes, runs, true);
  close(fd);
  std::printf("%s: data section %.1f MB, chunks of %zu KiB%s, %s\n", path.c_str(), data_bytes / 1e6,
              chunk >> 10, uniform ? " (every tensor)" : " (block types on blocks)",
              blocks ? "block layouts given" : "no block layouts");
  std::printf(
      "pread of the data section: %.0f MB/s into a reused buffer, %.0f MB/s into fresh "
      "memory\n",
      data_bytes / warm / 1e6, data_bytes / fresh / 1e6);
  std::printf("%-8s %-8s %10s %8s %10s %10s   %s\n", "type", "profile", "raw MB", "stored",
              "dec MB/s", "vs pread", "transforms (chunks)");

  std::vector<uint8_t> buf(longest);
  for (const auto& pname : args.profiles) {
    auto opt = bench::ProfileOptions(pname);
    if (!opt) return 2;
    ChunkEncoder enc(*opt);
    ChunkDecoder dec;
    for (const auto& [name, chunks] : by_type) {
      std::vector<std::string> frames(chunks.size());
      size_t stored = 0;
      std::map<int, size_t> transforms;
      for (size_t i = 0; i < chunks.size(); i++) {
        FrameDescription d = enc.Encode({chunks[i].p, chunks[i].n}, chunks[i].type, &frames[i]);
        stored += frames[i].size();
        transforms[int(d.transform)]++;
      }
      std::vector<double> td;
      for (int r = 0; r < runs; r++) {
        double t0 = Now();
        for (size_t i = 0; i < chunks.size(); i++) {
          Status s = dec.Decode(frames[i], chunks[i].key, {buf.data(), chunks[i].n});
          if (!s.ok()) {
            std::fprintf(stderr, "%s chunk %zu: %s\n", name.c_str(), i, s.ToString().c_str());
            return 1;
          }
        }
        td.push_back(Now() - t0);
      }
      const double raw = double(raw_of[name]);
      const double mbs = raw / Median(td) / 1e6;
      std::string used;
      for (auto [t, n] : transforms) used += std::to_string(t) + ":" + std::to_string(n) + " ";
      std::printf("%-8s %-8s %10.1f %8.3f %10.0f %10.2f   %s\n", name.c_str(), pname.c_str(),
                  raw / 1e6, stored / raw, mbs, mbs / (data_bytes / warm / 1e6), used.c_str());
    }
  }
  return 0;
}
