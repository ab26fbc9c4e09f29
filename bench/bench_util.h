// What the benchmarks share: wall-clock time, medians, comma lists, and a
// corpus of safetensors files cut into chunks the way the store cuts them.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "codec/dtype.h"
#include "codec/hash.h"
#include "codec/profile.h"
#include "store/formats/safetensors.h"

namespace pstore::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// "a,b,c" -> {"a", "b", "c"}.
inline std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos <= s.size();) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    out.push_back(s.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

// The options the codec benchmarks share: --chunk KiB, --runs N, --profiles
// a,b. Every other argument goes to `other`, in order.
struct CodecArgs {
  size_t chunk;
  int runs;
  std::vector<std::string> profiles;
  std::vector<std::string> other;
};
// Parses argv into *a, whose fields hold the defaults.
inline void ParseCodecArgs(int argc, char** argv, CodecArgs* a) {
  for (int i = 1; i < argc; i++) {
    std::string s = argv[i];
    if (s == "--chunk" && i + 1 < argc)
      a->chunk = size_t(std::stoul(argv[++i])) * 1024;
    else if (s == "--runs" && i + 1 < argc)
      a->runs = std::stoi(argv[++i]);
    else if (s == "--profiles" && i + 1 < argc)
      a->profiles = SplitList(argv[++i]);
    else
      a->other.push_back(s);
  }
}

// The encoder options of profile `name`, or nullopt (and a message on stderr)
// for a name no profile has.
inline std::optional<EncodeOptions> ProfileOptions(const std::string& name) {
  auto prof = ProfileFromName(name);
  if (!prof) {
    std::fprintf(stderr, "unknown profile %s\n", name.c_str());
    return std::nullopt;
  }
  EncodeOptions opt;
  opt.profile = *prof;
  return opt;
}

// The .safetensors files of each input (a folder, or a file as it is), sorted.
inline std::vector<std::string> SafetensorsFiles(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (std::filesystem::is_directory(in, ec)) {
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.path().extension() == ".safetensors") files.push_back(e.path());
    } else {
      files.push_back(in);
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

struct CorpusChunk {
  const uint8_t* p;
  size_t n;
  DType dtype;
  ChunkKey key;
};

// Files read whole; each tensor cut into chunks of at most `chunk` bytes from
// its start (a smaller tensor is one chunk).
struct Corpus {
  std::vector<std::string> blobs;
  std::vector<CorpusChunk> chunks;
  size_t raw = 0;
  size_t max_chunk = 0;
};

// Loads files into c; a file that is not valid safetensors is skipped.
inline void LoadCorpus(const std::vector<std::string>& files, size_t chunk, Corpus* c) {
  c->blobs.reserve(c->blobs.size() + files.size());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    c->blobs.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string& d = c->blobs.back();
    auto h = safetensors::ParseHeader(d, d.size(), f);
    if (!h.ok()) continue;
    const uint8_t* base = reinterpret_cast<const uint8_t*>(d.data()) + h->data_offset;
    for (const auto& t : h->tensors)
      for (uint64_t off = t.begin; off < t.end; off += chunk) {
        size_t n = size_t(std::min<uint64_t>(chunk, t.end - off));
        c->chunks.push_back({base + off, n, t.dtype, HashBytes(base + off, n)});
        c->raw += n;
        c->max_chunk = std::max(c->max_chunk, n);
      }
  }
}

}  // namespace pstore::bench
