// make_model: writes a synthetic safetensors model for tests: weight-like
// values (normal, a different scale per tensor) in a chosen dtype.
//
//   make_model OUT [--mb N] [--tensors N] [--dtype F16|BF16|F32|U8|mixed]
//              [--seed S] [--change FRACTION --change-seed S] [--shards N]
//
// With --change, a deterministic FRACTION of the tensors (chosen by
// change-seed) get new values; the rest are identical to the model made with
// the same seed. With --shards N > 1, OUT is a folder holding
// model.safetensors.index.json and N shards.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;
};

size_t DtypeSize(const std::string& d) {
  if (d == "F32") return 4;
  if (d == "F16" || d == "BF16") return 2;
  return 1;
}

uint16_t ToHalf(float f) {
  _Float16 h = _Float16(f);
  uint16_t v;
  std::memcpy(&v, &h, 2);
  return v;
}

void Fill(Tensor* t, uint64_t seed) {
  std::mt19937_64 rng(seed);
  float scale = 0.01f + 0.1f * float(rng() % 1000) / 1000.f;
  std::normal_distribution<float> nd(0.f, scale);
  uint64_t n = 1;
  for (auto d : t->shape) n *= d;
  size_t w = DtypeSize(t->dtype);
  t->data.resize(n * w);
  for (uint64_t i = 0; i < n; i++) {
    float f = nd(rng);
    uint8_t* p = &t->data[i * w];
    if (t->dtype == "F32") {
      std::memcpy(p, &f, 4);
    } else if (t->dtype == "F16") {
      uint16_t h = ToHalf(f);
      std::memcpy(p, &h, 2);
    } else if (t->dtype == "BF16") {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      uint16_t h = uint16_t((b + 0x7fff + ((b >> 16) & 1)) >> 16);
      std::memcpy(p, &h, 2);
    } else {
      *p = uint8_t(std::lround(std::clamp(f / scale * 32.f + 128.f, 0.f, 255.f)));
    }
  }
}

std::string HeaderJson(const std::vector<const Tensor*>& ts, uint64_t* data_size) {
  std::string j = "{\"__metadata__\":{\"generator\":\"pstore make_model\"}";
  uint64_t off = 0;
  for (const Tensor* t : ts) {
    j += ",\"" + t->name + "\":{\"dtype\":\"" + t->dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t->shape.size(); i++) {
      if (i) j += ",";  // not "," + to_string: GCC 12's -Wrestrict misfires on it
      j += std::to_string(t->shape[i]);
    }
    j += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + t->data.size()) +
         "]}";
    off += t->data.size();
  }
  j += "}";
  while (j.size() % 8) j += ' ';
  *data_size = off;
  return j;
}

bool WriteFile(const std::string& path, const std::vector<const Tensor*>& ts) {
  uint64_t data_size;
  std::string h = HeaderJson(ts, &data_size);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  uint64_t n = h.size();
  std::fwrite(&n, 8, 1, f);
  std::fwrite(h.data(), 1, h.size(), f);
  for (const Tensor* t : ts) std::fwrite(t->data.data(), 1, t->data.size(), f);
  return std::fclose(f) == 0;
}

}  // namespace

constexpr char kUsage[] =
    "usage: make_model OUT [--mb N] [--tensors N] [--dtype D] [--seed S] "
    "[--change F --change-seed S] [--shards N]\n";

int main(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (argv[1][0] == '-') {
    std::fprintf(stderr, "make_model: the output path comes first, not option %s\n%s", argv[1],
                 kUsage);
    return 2;
  }
  std::string out = argv[1], dtype = "F16";
  double mb = 16, change = 0;
  int tensors = 32, shards = 1;
  uint64_t seed = 1, change_seed = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--mb")
      mb = std::atof(v.c_str());
    else if (a == "--tensors")
      tensors = std::atoi(v.c_str());
    else if (a == "--dtype")
      dtype = v;
    else if (a == "--seed")
      seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--change")
      change = std::atof(v.c_str());
    else if (a == "--change-seed")
      change_seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--shards")
      shards = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const char* mixed[] = {"F16", "F32", "BF16", "U8"};
  std::vector<Tensor> ts;
  uint64_t budget = uint64_t(mb * 1e6);
  std::mt19937_64 layout(seed * 7919);
  for (int i = 0; i < tensors; i++) {
    Tensor t;
    t.dtype = dtype == "mixed" ? mixed[i % 4] : dtype;
    size_t w = DtypeSize(t.dtype);
    bool bias = i % 4 == 3;
    t.name = "layers." + std::to_string(i / 4) + (bias ? ".bias" : ".w" + std::to_string(i % 4));
    uint64_t elems =
        bias ? 64 + layout() % 512 : std::max<uint64_t>(1, budget / w / uint64_t(tensors) * 4 / 3);
    uint64_t cols = bias ? elems : 64 * (1 + layout() % 16);
    uint64_t rows = std::max<uint64_t>(1, elems / cols);
    t.shape = bias ? std::vector<uint64_t>{cols} : std::vector<uint64_t>{rows, cols};
    Fill(&t, seed * 1000003 + uint64_t(i));
    ts.push_back(std::move(t));
  }
  if (change > 0) {
    std::mt19937_64 pick(change_seed);
    int n = std::max(1, int(std::lround(change * tensors)));
    std::vector<int> idx(static_cast<size_t>(tensors));
    for (int i = 0; i < tensors; i++) idx[size_t(i)] = i;
    std::shuffle(idx.begin(), idx.end(), pick);
    for (int k = 0; k < n; k++)
      Fill(&ts[size_t(idx[size_t(k)])], change_seed * 7777 + uint64_t(k) + 1);
  }
  if (shards <= 1) {
    std::vector<const Tensor*> all;
    for (auto& t : ts) all.push_back(&t);
    return WriteFile(out, all) ? 0 : 1;
  }
  std::filesystem::create_directories(out);
  std::string index = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
  bool first = true;
  for (int s = 0; s < shards; s++) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<const Tensor*> part;
    for (size_t i = size_t(s); i < ts.size(); i += size_t(shards)) {
      part.push_back(&ts[i]);
      index += std::string(first ? "" : ",") + "\"" + ts[i].name + "\":\"" + name + "\"";
      first = false;
    }
    if (!WriteFile(out + "/" + name, part)) return 1;
  }
  index += "}}\n";
  FILE* f = std::fopen((out + "/model.safetensors.index.json").c_str(), "wb");
  if (!f) return 1;
  std::fwrite(index.data(), 1, index.size(), f);
  return std::fclose(f) == 0 ? 0 : 1;
}
