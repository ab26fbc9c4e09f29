// codec_micro: Google Benchmark micro-benchmarks of the chunk codec, single
// thread, per chunk, against Zstandard (levels 3 and -1) and LZ4 on the same
// chunks in the same run.
//
//   codec_micro [--corpus=DIR] [--chunk_kib=N] [benchmark flags...]
//
// The corpus (a directory of .safetensors files) comes from --corpus or the
// environment variable PSTORE_CODEC_CORPUS; without one (or if it holds no
// .safetensors file) the corpus benchmarks are not registered and only the
// synthetic component benchmarks run. Each corpus
// iteration codes every chunk of the corpus once; bytes/s are raw (tensor)
// bytes. Counters: ratio = stored / raw, vs_zstd3 = ratio / zstd -3's ratio.
// Decode includes the XXH3-128 check unless the name says Unchecked. Rates
// are of wall-clock time (UseRealTime): run it on a quiet machine.
#include <benchmark/benchmark.h>
#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "codec/chunk_codec.h"
#include "codec/rans2.h"
#include "codec/transform.h"

using namespace pstore;
namespace fs = std::filesystem;

namespace {

using Chunk = bench::CorpusChunk;

struct Corpus : bench::Corpus {
  double zstd3_ratio = 0;
};

Corpus* g_corpus = nullptr;

bool LoadCorpus(const std::string& dir, size_t chunk, Corpus* c) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  bench::LoadCorpus(bench::SafetensorsFiles({dir}), chunk, c);
  return !c->chunks.empty();
}

bool NeedCorpus(benchmark::State& state) {
  if (g_corpus) return true;
  state.SkipWithError("no corpus: pass --corpus=DIR or set PSTORE_CODEC_CORPUS");
  return false;
}

void Report(benchmark::State& state, size_t stored) {
  const Corpus& c = *g_corpus;
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(c.raw));
  double ratio = double(stored) / double(c.raw);
  state.counters["ratio"] = ratio;
  if (c.zstd3_ratio > 0) state.counters["vs_zstd3"] = ratio / c.zstd3_ratio;
}

// --- pstore profiles --------------------------------------------------------

void BM_Encode(benchmark::State& state, Profile p) {
  if (!NeedCorpus(state)) return;
  EncodeOptions opt;
  opt.profile = p;
  ChunkEncoder enc(opt);
  std::string frame;
  size_t stored = 0;
  for (auto _ : state) {
    stored = 0;
    for (const Chunk& ch : g_corpus->chunks) {
      enc.Encode({ch.p, ch.n}, ch.dtype, &frame);
      stored += frame.size();
    }
    benchmark::DoNotOptimize(frame.data());
  }
  Report(state, stored);
}

void BM_Decode(benchmark::State& state, Profile p, bool check) {
  if (!NeedCorpus(state)) return;
  EncodeOptions opt;
  opt.profile = p;
  ChunkEncoder enc(opt);
  std::vector<std::string> frames(g_corpus->chunks.size());
  size_t stored = 0;
  for (size_t i = 0; i < frames.size(); i++) {
    const Chunk& ch = g_corpus->chunks[i];
    enc.Encode({ch.p, ch.n}, ch.dtype, &frames[i]);
    stored += frames[i].size();
  }
  ChunkDecoder dec;
  std::vector<uint8_t> buf(g_corpus->max_chunk);
  for (auto _ : state) {
    for (size_t i = 0; i < frames.size(); i++) {
      const Chunk& ch = g_corpus->chunks[i];
      Status s = check ? dec.Decode(frames[i], ch.key, {buf.data(), ch.n})
                       : dec.DecodeUnchecked(frames[i], {buf.data(), ch.n});
      if (!s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(buf.data());
  }
  Report(state, stored);
}

// --- baselines: whole raw chunk, no transform ---------------------------------

void BM_ZstdCompress(benchmark::State& state) {
  if (!NeedCorpus(state)) return;
  const int level = int(state.range(0));
  ZSTD_CCtx* zc = ZSTD_createCCtx();
  std::string out(ZSTD_compressBound(g_corpus->max_chunk), '\0');
  size_t stored = 0;
  for (auto _ : state) {
    stored = 0;
    for (const Chunk& ch : g_corpus->chunks) {
      size_t r = ZSTD_compressCCtx(zc, out.data(), out.size(), ch.p, ch.n, level);
      stored += std::min(r, ch.n);
    }
  }
  ZSTD_freeCCtx(zc);
  Report(state, stored);
}

void BM_ZstdDecompress(benchmark::State& state, bool check) {
  if (!NeedCorpus(state)) return;
  const int level = int(state.range(0));
  ZSTD_CCtx* zc = ZSTD_createCCtx();
  ZSTD_DCtx* zd = ZSTD_createDCtx();
  std::vector<std::string> frames(g_corpus->chunks.size());
  size_t stored = 0;
  for (size_t i = 0; i < frames.size(); i++) {
    const Chunk& ch = g_corpus->chunks[i];
    frames[i].resize(ZSTD_compressBound(ch.n));
    frames[i].resize(ZSTD_compressCCtx(zc, frames[i].data(), frames[i].size(), ch.p, ch.n, level));
    stored += std::min(frames[i].size(), ch.n);
  }
  std::vector<uint8_t> buf(g_corpus->max_chunk);
  for (auto _ : state) {
    for (size_t i = 0; i < frames.size(); i++) {
      const Chunk& ch = g_corpus->chunks[i];
      size_t r = ZSTD_decompressDCtx(zd, buf.data(), ch.n, frames[i].data(), frames[i].size());
      if (r != ch.n || (check && HashBytes(buf.data(), ch.n) != ch.key)) {
        state.SkipWithError("zstd round trip failed");
        return;
      }
    }
  }
  ZSTD_freeCCtx(zc);
  ZSTD_freeDCtx(zd);
  Report(state, stored);
}

void BM_Lz4Compress(benchmark::State& state) {
  if (!NeedCorpus(state)) return;
  std::string out(size_t(LZ4_compressBound(int(g_corpus->max_chunk))), '\0');
  size_t stored = 0;
  for (auto _ : state) {
    stored = 0;
    for (const Chunk& ch : g_corpus->chunks) {
      int r = LZ4_compress_default(reinterpret_cast<const char*>(ch.p), out.data(), int(ch.n),
                                   int(out.size()));
      stored += std::min(size_t(r), ch.n);
    }
  }
  Report(state, stored);
}

void BM_Lz4Decompress(benchmark::State& state, bool check) {
  if (!NeedCorpus(state)) return;
  std::vector<std::string> frames(g_corpus->chunks.size());
  size_t stored = 0;
  for (size_t i = 0; i < frames.size(); i++) {
    const Chunk& ch = g_corpus->chunks[i];
    frames[i].resize(size_t(LZ4_compressBound(int(ch.n))));
    frames[i].resize(size_t(LZ4_compress_default(
        reinterpret_cast<const char*>(ch.p), frames[i].data(), int(ch.n), int(frames[i].size()))));
    stored += std::min(frames[i].size(), ch.n);
  }
  std::vector<uint8_t> buf(g_corpus->max_chunk);
  for (auto _ : state) {
    for (size_t i = 0; i < frames.size(); i++) {
      const Chunk& ch = g_corpus->chunks[i];
      int r = LZ4_decompress_safe(frames[i].data(), reinterpret_cast<char*>(buf.data()),
                                  int(frames[i].size()), int(ch.n));
      if (r != int(ch.n) || (check && HashBytes(buf.data(), ch.n) != ch.key)) {
        state.SkipWithError("lz4 round trip failed");
        return;
      }
    }
  }
  Report(state, stored);
}

// --- synthetic components (no corpus needed) -----------------------------------

std::vector<uint8_t> F16Weights(size_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<uint8_t> v(2 * n);
  for (size_t i = 0; i < n; i++) {
    _Float16 h = _Float16(nd(rng));
    std::memcpy(&v[2 * i], &h, 2);
  }
  return v;
}

// Order-0 rANS decode of the high bytes of 512 Ki F16 weights at 2^L lanes.
void BM_Rans2DecodeLanes(benchmark::State& state) {
  const int lanes_log2 = int(state.range(0));
  const int simd = int(state.range(1));  // 2 AVX-512, 1 AVX2, 0 portable
  auto w = F16Weights(1 << 19);
  std::vector<uint8_t> hi(w.size() / 2);
  for (size_t i = 0; i < hi.size(); i++) hi[i] = w[2 * i + 1];
  uint32_t h[256] = {};
  for (uint8_t b : hi) h[b]++;
  std::string enc;
  rans2::EncodeOrder0(hi.data(), hi.size(), h, lanes_log2, false, &enc);
  std::vector<uint8_t> out(hi.size());
  PageVector<uint32_t> scratch;
  rans2::DecodeArgs args;
  args.simd_level = simd;
  for (auto _ : state) {
    if (!rans2::DecodeOrder0(enc, hi.size(), out.data(), &scratch, args).ok())
      state.SkipWithError("bad");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(hi.size()));
  state.counters["bits_per_symbol"] = 8.0 * double(enc.size()) / double(hi.size());
}

void BM_Rans2Encode(benchmark::State& state) {
  auto w = F16Weights(1 << 19);
  std::vector<uint8_t> hi(w.size() / 2);
  for (size_t i = 0; i < hi.size(); i++) hi[i] = w[2 * i + 1];
  uint32_t h[256] = {};
  for (uint8_t b : hi) h[b]++;
  std::string enc;
  for (auto _ : state) {
    rans2::EncodeOrder0(hi.data(), hi.size(), h, int(state.range(0)), false, &enc);
    benchmark::DoNotOptimize(enc.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(hi.size()));
}

void BM_MergeF16(benchmark::State& state) {
  auto w = F16Weights(1 << 19);
  std::vector<uint8_t> a(w.size() / 2), b(w.size() / 2), out(w.size());
  uint8_t* s[2] = {a.data(), b.data()};
  SplitStreams(Transform::kF16, w.data(), w.size(), s);
  const uint8_t* cs[2] = {a.data(), b.data()};
  for (auto _ : state) {
    MergeStreams(Transform::kF16, cs, w.size(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.size()));
}

void BM_Hash(benchmark::State& state) {
  std::vector<uint8_t> v(size_t(state.range(0)), 3);
  for (auto _ : state) benchmark::DoNotOptimize(HashBytes(v.data(), v.size()));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(v.size()));
}

void RegisterSynthetic();

void RegisterAll() {
  if (!g_corpus) {
    RegisterSynthetic();
    return;
  }
  for (Profile p : {Profile::kFast, Profile::kDense}) {
    std::string name(ProfileName(p));
    benchmark::RegisterBenchmark(("Encode/" + name).c_str(), BM_Encode, p)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("Decode/" + name).c_str(), BM_Decode, p, true)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("DecodeUnchecked/" + name).c_str(), BM_Decode, p, false)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("ZSTD_compress", BM_ZstdCompress)
      ->Arg(3)
      ->Arg(-1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("ZSTD_decompress", BM_ZstdDecompress, true)
      ->Arg(3)
      ->Arg(-1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("ZSTD_decompressUnchecked", BM_ZstdDecompress, false)
      ->Arg(3)
      ->Arg(-1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("LZ4_compress_default", BM_Lz4Compress)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("LZ4_decompress_safe", BM_Lz4Decompress, true)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("LZ4_decompress_safeUnchecked", BM_Lz4Decompress, false)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  RegisterSynthetic();
}

void RegisterSynthetic() {
  benchmark::RegisterBenchmark("Rans2Decode", BM_Rans2DecodeLanes)
      ->ArgsProduct({{4, 5, 6, 7}, {2, 1, 0}})
      ->ArgNames({"lanes_log2", "simd"});
  benchmark::RegisterBenchmark("Rans2Encode", BM_Rans2Encode)->Arg(4)->Arg(6);
  benchmark::RegisterBenchmark("MergeF16", BM_MergeF16);
  benchmark::RegisterBenchmark("XXH3_128", BM_Hash)->Arg(256 << 10)->Arg(1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  size_t chunk_kib = 1024;
  if (const char* e = std::getenv("PSTORE_CODEC_CORPUS")) dir = e;
  std::vector<char*> rest;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if (a.rfind("--corpus=", 0) == 0)
      dir = a.substr(9);
    else if (a.rfind("--chunk_kib=", 0) == 0)
      chunk_kib = std::stoul(a.substr(12));
    else
      rest.push_back(argv[i]);
  }
  int rargc = int(rest.size());
  Corpus corpus;
  if (!dir.empty()) {
    if (LoadCorpus(dir, chunk_kib * 1024, &corpus)) {
      g_corpus = &corpus;
      // zstd -3's ratio, the yardstick of vs_zstd3.
      ZSTD_CCtx* zc = ZSTD_createCCtx();
      std::string out(ZSTD_compressBound(corpus.max_chunk), '\0');
      size_t stored = 0;
      for (const Chunk& ch : corpus.chunks)
        stored += std::min(ZSTD_compressCCtx(zc, out.data(), out.size(), ch.p, ch.n, 3), ch.n);
      ZSTD_freeCCtx(zc);
      corpus.zstd3_ratio = double(stored) / double(corpus.raw);
      std::fprintf(stderr, "corpus %s: %zu chunks of up to %zu KiB, %.1f MB\n", dir.c_str(),
                   corpus.chunks.size(), chunk_kib, double(corpus.raw) / 1e6);
    } else {
      std::fprintf(stderr, "corpus %s not found or empty: corpus benchmarks skipped\n",
                   dir.c_str());
    }
  }
  RegisterAll();
  benchmark::Initialize(&rargc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rargc, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
