// gguf_writer: test equipment that writes GGUF files (version 3, after ggml's
// docs/gguf.md) from the tensors of safetensors files, so that the tests and
// benchmarks have GGUF models to import. Not a product feature.
//
//   gguf_writer OUT.gguf SRC.safetensors... [--type keep|f16|q8_0|q4_0]
//       [--alignment N] [--pad-byte B] [--split N] [--big-array N]
//       [--unknown-type T] [--max-tensors N] [--arch NAME] [--q6k-blocks N]
//
// --type: keep writes every tensor's bytes as they are (F32, F16, BF16, I8 ...
// map to their GGML types), so the GGUF holds the same tensor bytes as the
// safetensors file; f16, q8_0 and q4_0 convert the tensors of two or more
// dimensions (q8_0/q4_0: those whose last dimension is a multiple of 32; the
// rest become F16) and keep the others as they are, as llama.cpp's converter
// does with norms and biases. Q8_0 block: F16 scale d = max|x| / 127, then 32
// int8 x/d rounded. Q4_0 block: F16 scale d = (value of largest magnitude) /
// -8, then 16 bytes of 4-bit (x/d + 8.5) clamped to 15, element j in the low
// nibble of byte j and element j + 16 in its high nibble.
// --alignment writes general.alignment (u32); --pad-byte fills the padding
// with B instead of zeros; --split N writes OUT-0000i-of-0000N.gguf with
// split.no/split.count/split.tensors.count; --big-array N adds a string array
// of N tokens and an f32 array of N scores; --unknown-type T adds a tensor of
// GGML type T (not one pstore knows) holding 1000 + 17 bytes of payload;
// --q6k-blocks N adds a Q6_K tensor of N blocks laid out as ggml's (210
// bytes: 128 + 64 bytes of quants, 16 int8 sub-block scales, F16 scale d at
// byte 208) whose quants and scales are pseudo-random, not quantized weights.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "store/formats/safetensors.h"
#include "tests/quant_blocks.h"

namespace {

using pstore::DType;
using pstore::quant::PutHalf;
using pstore::quant::QuantQ4_0;
using pstore::quant::QuantQ8_0;

struct Tensor {
  std::string name;
  uint32_t type;
  std::vector<uint64_t> ne;  // ne[0] fastest
  std::vector<uint8_t> data;
};

float FromBf16(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float FromHalf(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return float(h);
}

std::vector<float> ToFloats(DType dt, const std::vector<uint8_t>& d) {
  std::vector<float> out;
  if (dt == DType::kF32) {
    out.resize(d.size() / 4);
    std::memcpy(out.data(), d.data(), out.size() * 4);
  } else {
    out.resize(d.size() / 2);
    for (size_t i = 0; i < out.size(); i++) {
      uint16_t v;
      std::memcpy(&v, d.data() + 2 * i, 2);
      out[i] = dt == DType::kBF16 ? FromBf16(v) : FromHalf(v);
    }
  }
  return out;
}

uint32_t GgmlOf(DType d) {
  switch (d) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kBF16:
      return 30;
    case DType::kI8:
      return 24;
    case DType::kI16:
      return 25;
    case DType::kI32:
      return 26;
    case DType::kI64:
      return 27;
    case DType::kF64:
      return 28;
    default:
      return 24;  // bytes as I8
  }
}

// Metadata writer.
struct Buf {
  std::vector<uint8_t> b;
  template <typename T>
  void Put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
  }
  void Str(const std::string& s) {
    Put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};
struct Meta {
  Buf kv;
  uint64_t n = 0;
  void Key(const std::string& k, uint32_t type) {
    kv.Str(k);
    kv.Put<uint32_t>(type);
    n++;
  }
  void Str(const std::string& k, const std::string& v) { Key(k, 8), kv.Str(v); }
  void U32(const std::string& k, uint32_t v) { Key(k, 4), kv.Put(v); }
  void U16(const std::string& k, uint16_t v) { Key(k, 2), kv.Put(v); }
  void I32(const std::string& k, int32_t v) { Key(k, 5), kv.Put(v); }
};

int Fail(const std::string& m) {
  std::fprintf(stderr, "gguf_writer: %s\n", m.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return Fail("usage: gguf_writer OUT.gguf SRC.safetensors... [options]");
  std::string out = argv[1], type = "keep", arch = "pstoretest";
  std::vector<std::string> srcs;
  uint32_t alignment = 0, split = 1, unknown_type = 0, q6k_blocks = 0;
  uint64_t big_array = 0, max_tensors = UINT64_MAX;
  int pad_byte = 0;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(Fail(a + " needs a value"));
      return argv[++i];
    };
    if (a == "--type")
      type = next();
    else if (a == "--alignment")
      alignment = uint32_t(std::stoul(next()));
    else if (a == "--pad-byte")
      pad_byte = std::stoi(next());
    else if (a == "--split")
      split = uint32_t(std::stoul(next()));
    else if (a == "--big-array")
      big_array = std::stoull(next());
    else if (a == "--unknown-type")
      unknown_type = uint32_t(std::stoul(next()));
    else if (a == "--max-tensors")
      max_tensors = std::stoull(next());
    else if (a == "--arch")
      arch = next();
    else if (a == "--q6k-blocks")
      q6k_blocks = uint32_t(std::stoul(next()));
    else if (a.rfind("--", 0) == 0)
      return Fail("unknown option " + a);
    else
      srcs.push_back(a);
  }
  if (type != "keep" && type != "f16" && type != "q8_0" && type != "q4_0")
    return Fail("--type must be keep, f16, q8_0 or q4_0");

  std::vector<Tensor> tensors;
  for (const auto& src : srcs) {
    auto h = pstore::safetensors::ReadHeader(src);
    if (!h.ok()) return Fail(h.status().ToString());
    pstore::UniqueFd fd(::open(src.c_str(), O_RDONLY));
    for (const auto& e : h->tensors) {
      if (tensors.size() >= max_tensors) break;
      Tensor t;
      t.name = e.name;
      t.ne.assign(e.shape.rbegin(), e.shape.rend());
      std::vector<uint8_t> raw(e.size());
      if (!pstore::PreadFull(fd.get(), raw.data(), raw.size(), h->data_offset + e.begin, src).ok())
        return Fail("cannot read " + src);
      bool is_float = e.dtype == DType::kF32 || e.dtype == DType::kF16 || e.dtype == DType::kBF16;
      bool convert = type != "keep" && is_float && e.shape.size() >= 2;
      if (!convert) {
        t.type = GgmlOf(e.dtype);
        t.data = std::move(raw);
      } else {
        std::vector<float> x = ToFloats(e.dtype, raw);
        bool blocks = !t.ne.empty() && t.ne[0] % 32 == 0;
        if (type == "q8_0" && blocks) {
          t.type = 8;
          t.data = QuantQ8_0(x);
        } else if (type == "q4_0" && blocks) {
          t.type = 2;
          t.data = QuantQ4_0(x);
        } else {
          t.type = 1;
          for (float f : x) PutHalf(&t.data, f);
        }
      }
      tensors.push_back(std::move(t));
    }
  }
  if (unknown_type) {
    Tensor t;
    t.name = "pstoretest.unknown_type";
    t.type = unknown_type;
    t.ne = {1017};
    for (int i = 0; i < 1017; i++) t.data.push_back(uint8_t(i * 37 + 11));
    tensors.push_back(std::move(t));
  }
  if (q6k_blocks) {
    Tensor t;
    t.name = "pstoretest.q6_k";
    t.type = 14;
    t.ne = {256ull * q6k_blocks};
    uint32_t x = 12345;
    for (uint32_t b = 0; b < q6k_blocks; b++) {
      for (int i = 0; i < 208; i++) {
        x = x * 1664525u + 1013904223u;
        t.data.push_back(uint8_t(x >> 24));
      }
      PutHalf(&t.data, 0.001f * float(1 + b % 97));
    }
    tensors.push_back(std::move(t));
  }
  if (split < 1 || split > tensors.size()) return Fail("--split must be 1 to the tensor count");

  uint32_t align = alignment ? alignment : 32;
  uint32_t file_type = type == "q8_0" ? 7 : type == "q4_0" ? 2 : type == "f16" ? 1 : 0;
  std::string stem =
      out.size() > 5 && out.substr(out.size() - 5) == ".gguf" ? out.substr(0, out.size() - 5) : out;
  size_t per = (tensors.size() + split - 1) / split;
  for (uint32_t s = 0; s < split; s++) {
    size_t first = s * per, last = std::min(tensors.size(), first + per);
    Meta m;
    if (s == 0) {
      m.Str("general.architecture", arch);
      m.Str("general.name", "pstore test model");
      m.U32(arch + ".context_length", 2048);
      m.U32("general.file_type", file_type);
      m.U32("general.quantization_version", 2);
      if (big_array) {
        m.Key("tokenizer.ggml.tokens", 9);
        m.kv.Put<uint32_t>(8);
        m.kv.Put<uint64_t>(big_array);
        for (uint64_t i = 0; i < big_array; i++) m.kv.Str("tok" + std::to_string(i));
        m.Key("tokenizer.ggml.scores", 9);
        m.kv.Put<uint32_t>(6);
        m.kv.Put<uint64_t>(big_array);
        for (uint64_t i = 0; i < big_array; i++) m.kv.Put<float>(-float(i));
      }
    }
    if (alignment) m.U32("general.alignment", alignment);
    if (split > 1) {
      m.U16("split.no", uint16_t(s));
      m.U16("split.count", uint16_t(split));
      m.I32("split.tensors.count", int32_t(tensors.size()));
    }
    Buf f;
    for (char c : {'G', 'G', 'U', 'F'}) f.b.push_back(uint8_t(c));
    f.Put<uint32_t>(3);
    f.Put<uint64_t>(last - first);
    f.Put<uint64_t>(m.n);
    f.b.insert(f.b.end(), m.kv.b.begin(), m.kv.b.end());
    uint64_t off = 0;
    for (size_t i = first; i < last; i++) {
      f.Str(tensors[i].name);
      f.Put<uint32_t>(uint32_t(tensors[i].ne.size()));
      for (uint64_t d : tensors[i].ne) f.Put<uint64_t>(d);
      f.Put<uint32_t>(tensors[i].type);
      f.Put<uint64_t>(off);
      off = (off + tensors[i].data.size() + align - 1) / align * align;
    }
    auto pad = [&]() {
      while (f.b.size() % align) f.b.push_back(uint8_t(pad_byte));
    };
    pad();
    for (size_t i = first; i < last; i++) {
      f.b.insert(f.b.end(), tensors[i].data.begin(), tensors[i].data.end());
      pad();
    }
    std::string path = out;
    if (split > 1) {
      char suffix[32];
      std::snprintf(suffix, sizeof(suffix), "-%05u-of-%05u.gguf", s + 1, split);
      path = stem + suffix;
    }
    FILE* fp = std::fopen(path.c_str(), "wb");
    if (!fp || std::fwrite(f.b.data(), 1, f.b.size(), fp) != f.b.size() || std::fclose(fp) != 0)
      return Fail("cannot write " + path);
    std::printf("%s\n", path.c_str());
  }
  return 0;
}
