// codec_corpus: stored/raw ratio and single-thread encode/decode speed of each
// codec profile over the tensors of a set of safetensors files, with zstd and
// lz4 over the same chunks measured in the same run as baselines.
//
//   codec_corpus [--chunk KiB] [--runs N] [--profiles a,b] DIR|FILE...
//
// Decode speed includes the XXH3-128 check of every chunk, as on the read path.
#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "codec/chunk_codec.h"

using namespace pstore;

using bench::Median;
using bench::Now;

int main(int argc, char** argv) {
  bench::CodecArgs args{1 << 20, 3, {"raw", "lz4", "zstd", "fast", "dense"}, {}};
  bench::ParseCodecArgs(argc, argv, &args);
  const size_t chunk = args.chunk;
  const int runs = args.runs;
  const std::vector<std::string>& profiles = args.profiles;
  std::vector<std::string> files = bench::SafetensorsFiles(args.other);
  bench::Corpus corpus;
  bench::LoadCorpus(files, chunk, &corpus);
  const std::vector<bench::CorpusChunk>& chunks = corpus.chunks;
  const size_t raw_total = corpus.raw;
  std::printf("%zu files, %zu chunks of up to %zu KiB, %.1f MB of tensor bytes\n", files.size(),
              chunks.size(), chunk / 1024, raw_total / 1e6);
  std::printf("%-12s %8s %12s %12s   %s\n", "profile", "ratio", "enc MB/s", "dec MB/s",
              "coders used (streams)");

  auto report = [&](const std::string& name, size_t stored, const std::vector<double>& enc,
                    const std::vector<double>& dec, const std::string& extra) {
    std::printf("%-12s %8.5f %12.0f %12.0f   %s\n", name.c_str(), double(stored) / raw_total,
                raw_total / Median(enc) / 1e6, raw_total / Median(dec) / 1e6, extra.c_str());
  };

  // Baselines: zstd -3 and lz4 over each chunk's raw bytes, no transform.
  {
    ZSTD_CCtx* zc = ZSTD_createCCtx();
    ZSTD_DCtx* zd = ZSTD_createDCtx();
    std::vector<std::string> out(chunks.size());
    std::vector<uint8_t> buf(chunk);
    std::vector<double> enc, dec;
    size_t stored = 0;
    for (int r = 0; r < runs; r++) {
      double t0 = Now();
      stored = 0;
      for (size_t i = 0; i < chunks.size(); i++) {
        out[i].resize(ZSTD_compressBound(chunks[i].n));
        out[i].resize(
            ZSTD_compressCCtx(zc, out[i].data(), out[i].size(), chunks[i].p, chunks[i].n, 3));
        stored += std::min(out[i].size(), chunks[i].n);
      }
      double t1 = Now();
      for (size_t i = 0; i < chunks.size(); i++) {
        ZSTD_decompressDCtx(zd, buf.data(), chunks[i].n, out[i].data(), out[i].size());
        if (HashBytes(buf.data(), chunks[i].n) != chunks[i].key) std::abort();
      }
      double t2 = Now();
      enc.push_back(t1 - t0);
      dec.push_back(t2 - t1);
    }
    report("zstd-3 base", stored, enc, dec, "(whole chunk, no transform)");
    enc.clear(), dec.clear();
    for (int r = 0; r < runs; r++) {
      double t0 = Now();
      stored = 0;
      for (size_t i = 0; i < chunks.size(); i++) {
        out[i].resize(size_t(LZ4_compressBound(int(chunks[i].n))));
        out[i].resize(
            size_t(LZ4_compress_default(reinterpret_cast<const char*>(chunks[i].p), out[i].data(),
                                        int(chunks[i].n), int(out[i].size()))));
        stored += std::min(out[i].size(), chunks[i].n);
      }
      double t1 = Now();
      for (size_t i = 0; i < chunks.size(); i++) {
        LZ4_decompress_safe(out[i].data(), reinterpret_cast<char*>(buf.data()), int(out[i].size()),
                            int(chunks[i].n));
        if (HashBytes(buf.data(), chunks[i].n) != chunks[i].key) std::abort();
      }
      double t2 = Now();
      enc.push_back(t1 - t0);
      dec.push_back(t2 - t1);
    }
    report("lz4 base", stored, enc, dec, "(whole chunk, no transform)");
    ZSTD_freeCCtx(zc);
    ZSTD_freeDCtx(zd);
  }

  for (auto& pname : profiles) {
    auto opt = bench::ProfileOptions(pname);
    if (!opt) return 2;
    ChunkEncoder enc(*opt);
    ChunkDecoder dec;
    std::vector<std::string> frames(chunks.size());
    std::vector<uint8_t> buf(chunk);
    std::vector<double> te, td;
    size_t stored = 0;
    std::map<std::string, size_t> used;
    for (int r = 0; r < runs; r++) {
      double t0 = Now();
      for (size_t i = 0; i < chunks.size(); i++)
        enc.Encode({chunks[i].p, chunks[i].n}, chunks[i].dtype, &frames[i]);
      double t1 = Now();
      for (size_t i = 0; i < chunks.size(); i++) {
        Status s = dec.Decode(frames[i], chunks[i].key, {buf.data(), chunks[i].n});
        if (!s.ok()) {
          std::fprintf(stderr, "decode failed: %s\n", s.ToString().c_str());
          return 1;
        }
      }
      double t2 = Now();
      te.push_back(t1 - t0);
      td.push_back(t2 - t1);
    }
    for (size_t i = 0; i < frames.size(); i++) {
      const std::string& f = frames[i];
      stored += f.size();
      auto info = InspectFrame(f, chunks[i].n);
      for (auto c : info->coders) used[std::string(CoderName(c))]++;
    }
    std::string extra;
    for (auto& [k, v] : used) extra += k + "=" + std::to_string(v) + " ";
    report(pname, stored, te, td, extra);
  }
  return 0;
}
