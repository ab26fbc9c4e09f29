// Unit tests of the GGUF reader (store/formats/gguf) and of GGUF manifests
// (version 2). The malformed-file cases run as real imports in
// tests/acceptance/gguf_bad_input_test.py; byte-identical round trips in
// gguf_roundtrip_test.py.
#include <gtest/gtest.h>
#include <rocksdb/slice.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "store/formats/gguf.h"
#include "store/manifest.h"
#include "store/store.h"
#include "tests/quant_blocks.h"
#include "tests/test_files.h"

using namespace pstore;

namespace {

struct G {
  std::string b;
  template <typename T>
  G& Put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  G& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  G& Pad(size_t a, char c = 0) {
    while (b.size() % a) b.push_back(c);
    return *this;
  }
};

// Two tensors: a Q8_0 row of 64 (2 blocks, 68 bytes) at 0, padded with 0x5a
// to 96, then a tensor of unknown type 777 at 96 whose payload runs to the
// end of the file (100 bytes).
std::string TwoTensorFile() {
  G g;
  g.b = "GGUF";
  g.Put<uint32_t>(3).Put<uint64_t>(2).Put<uint64_t>(1);
  g.Str("general.architecture").Put<uint32_t>(8).Str("llama");
  g.Str("blk.0.w").Put<uint32_t>(1).Put<uint64_t>(64).Put<uint32_t>(8).Put<uint64_t>(0);
  g.Str("new.type").Put<uint32_t>(1).Put<uint64_t>(5).Put<uint32_t>(777).Put<uint64_t>(96);
  g.Pad(32);
  for (int i = 0; i < 68; i++) g.b.push_back(char(i));
  g.Pad(32, 0x5a);
  for (int i = 0; i < 100; i++) g.b.push_back(char(200 - i));
  return g.b;
}

}  // namespace

TEST(GgufReader, KnownTypeIsExactAndItsPaddingIsFiller) {
  std::string f = TwoTensorFile();
  auto h = gguf::ParseHeader(f, f.size(), "t.gguf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].size, 68u);
  EXPECT_EQ(h->filler, std::string(28, '\x5a'));
  EXPECT_EQ(h->alignment, 32u);
  EXPECT_EQ(h->metadata_json, "{\"general.architecture\":\"llama\"}");
}

TEST(GgufReader, NameWithANulIsRefused) {
  G g;
  g.b = "GGUF";
  g.Put<uint32_t>(3).Put<uint64_t>(2).Put<uint64_t>(0);
  g.Str("c").Put<uint32_t>(1).Put<uint64_t>(4).Put<uint32_t>(0).Put<uint64_t>(0);
  g.Str(std::string("a\0b", 3))
      .Put<uint32_t>(1)
      .Put<uint64_t>(4)
      .Put<uint32_t>(0)
      .Put<uint64_t>(32);
  g.Pad(32);
  g.b.append(64, '\1');
  auto h = gguf::ParseHeader(g.b, g.b.size(), "t.gguf");
  ASSERT_FALSE(h.ok());
  EXPECT_TRUE(h.status().IsInvalidArgument()) << h.status().ToString();
  EXPECT_NE(h.status().message().find("t.gguf"), std::string::npos) << h.status().ToString();
  EXPECT_NE(h.status().message().find("tensor 1's name"), std::string::npos)
      << h.status().ToString();
  EXPECT_NE(h.status().message().find("NUL"), std::string::npos) << h.status().ToString();
}

TEST(GgufReader, VersionTwoIsReadVersionOneIsNot) {
  std::string f = TwoTensorFile();
  f[4] = 2;
  auto h = gguf::ParseHeader(f, f.size(), "t.gguf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version, 2u);
  f[4] = 1;
  EXPECT_FALSE(gguf::ParseHeader(f, f.size(), "t.gguf").ok());
}

TEST(GgufReader, UnknownTypeExtendsToTheEndOfTheFile) {
  std::string f = TwoTensorFile();
  auto h = gguf::ParseHeader(f, f.size(), "t.gguf");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->tensors[1].ggml_type, 777u);
  EXPECT_EQ(h->tensors[1].size, 100u);
  EXPECT_EQ(gguf::GgmlTypeName(777), "type 777");
  EXPECT_EQ(gguf::GgmlDType(777), DType::kU8);
}

TEST(GgufReader, ShortPrefixAsksForMoreAndNeverSucceedsWrongly) {
  std::string f = TwoTensorFile();
  for (size_t n = 0; n < f.size(); n++) {
    bool truncated = false;
    auto h = gguf::ParseHeader(std::string_view(f).substr(0, n), f.size(), "t.gguf", &truncated);
    if (h.ok()) {
      EXPECT_EQ(h->tensors.size(), 2u) << "prefix " << n;
      EXPECT_TRUE(h->filler.empty()) << "filler from a prefix " << n;
    } else {
      EXPECT_TRUE(truncated || n < 4) << "prefix " << n << ": " << h.status().ToString();
    }
  }
}

TEST(GgufReader, FileCutShortIsRefusedNotTruncated) {
  std::string f = TwoTensorFile();
  for (size_t n = 0; n + 100 < f.size(); n++) {
    bool truncated = true;
    auto h = gguf::ParseHeader(std::string_view(f).substr(0, n), n, "t.gguf", &truncated);
    EXPECT_FALSE(h.ok()) << "a file cut to " << n << " bytes was accepted";
    EXPECT_FALSE(truncated);
  }
}

TEST(GgufReader, ReadFileMatchesParseOfTheWholeFile) {
  std::string f = TwoTensorFile();
  std::string path = ::testing::TempDir() + "/gguf_test_read.gguf";
  std::ofstream(path, std::ios::binary) << f;
  auto a = gguf::ReadFile(path);
  auto b = gguf::ParseHeader(f, f.size(), path);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->header_bytes, b->header_bytes);
  EXPECT_EQ(a->filler, b->filler);
  EXPECT_TRUE(gguf::HasMagic(path));
  std::filesystem::remove(path);
}

TEST(GgufReader, SplitSiblingsFollowTheNamingScheme) {
  std::string dir = ::testing::TempDir() + "/gguf_split";
  auto s = gguf::SplitSiblings(dir + "/llama-7b-q8_0-00002-of-00003.gguf");
  ASSERT_TRUE(s.has_value());
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0], dir + "/llama-7b-q8_0-00001-of-00003.gguf");
  EXPECT_EQ((*s)[2], dir + "/llama-7b-q8_0-00003-of-00003.gguf");
  EXPECT_FALSE(gguf::SplitSiblings(dir + "/model.gguf").has_value());
  EXPECT_FALSE(gguf::SplitSiblings(dir + "/m-00001-of-00000.gguf").has_value());
}

TEST(GgufReader, KnownBlockLayouts) {
  EXPECT_EQ(gguf::GgmlType(8)->block_bytes, 34u);    // Q8_0
  EXPECT_EQ(gguf::GgmlType(2)->block_bytes, 18u);    // Q4_0
  EXPECT_EQ(gguf::GgmlType(12)->block_bytes, 144u);  // Q4_K
  EXPECT_EQ(gguf::GgmlType(14)->block_elems, 256u);  // Q6_K
  EXPECT_FALSE(gguf::GgmlType(4).has_value());       // removed from ggml
  EXPECT_EQ(gguf::GgmlDType(30), DType::kBF16);
}

TEST(GgufReader, BlockLayoutsForTheCodec) {
  auto same = [](BlockLayout a, BlockLayout b) {
    return a.bytes == b.bytes && a.scale_offset == b.scale_offset && a.scales == b.scales;
  };
  EXPECT_TRUE(same(gguf::GgmlBlockLayout(8), {34, 0, 1}));      // Q8_0: d, qs
  EXPECT_TRUE(same(gguf::GgmlBlockLayout(2), {18, 0, 1}));      // Q4_0: d, qs
  EXPECT_TRUE(same(gguf::GgmlBlockLayout(12), {144, 0, 2}));    // Q4_K: d, dmin, ...
  EXPECT_TRUE(same(gguf::GgmlBlockLayout(14), {210, 208, 1}));  // Q6_K: ..., d
  EXPECT_EQ(gguf::GgmlBlockLayout(15).bytes, 0u);               // Q8_K: an F32 scale
  EXPECT_EQ(gguf::GgmlBlockLayout(1).bytes, 0u);                // F16: elements
  EXPECT_EQ(gguf::GgmlBlockLayout(777).bytes, 0u);              // unknown
}

TEST(GgufReader, ChunkLengthsFollowBlocksAndPages) {
  constexpr uint32_t k256 = 256u << 10;
  EXPECT_EQ(gguf::GgmlChunkLength(8, k256), 208896u);   // Q8_0: 3 x lcm(34, 4096)
  EXPECT_EQ(gguf::GgmlChunkLength(2, k256), 258048u);   // Q4_0: 7 x lcm(18, 4096)
  EXPECT_EQ(gguf::GgmlChunkLength(14, k256), 430080u);  // Q6_K: lcm(210, 4096), over 256 KiB
  EXPECT_EQ(gguf::GgmlChunkLength(8, 64u << 10), 69632u);
  EXPECT_EQ(gguf::GgmlChunkLength(8, 4u << 20), 60u * 69632u);
  EXPECT_EQ(gguf::GgmlChunkLength(20, k256), 258048u);  // IQ4_NL, no F16 scale split
  EXPECT_EQ(gguf::GgmlChunkLength(1, k256), 0u);        // F16: the chunk size
  EXPECT_EQ(gguf::GgmlChunkLength(0, k256), 0u);        // F32
  EXPECT_EQ(gguf::GgmlChunkLength(777, k256), 0u);      // unknown
  for (uint32_t type = 0; type < 64; type++) {
    const uint32_t len = gguf::GgmlChunkLength(type, k256);
    if (len == 0) continue;
    EXPECT_EQ(len % 4096, 0u) << type;
    EXPECT_EQ(len % gguf::GgmlType(type)->block_bytes, 0u) << type;
    EXPECT_LE(len, 1u << 20) << type;
  }
}

// A Q8_0 tensor of 9000 blocks (306000 bytes: two chunks, the first of 6144
// blocks, 208896 bytes, the second the rest) and an F16 tensor, imported:
// every chunk of the Q8_0 tensor starts on a block and is coded with the
// block transform (the importer told the codec the layout, phase 0), the F16
// one with the f16 transform, and every chunk reads back as the file's
// bytes.
TEST(GgufImport, QuantizedChunksAreCodedByBlock) {
  testing_util::TempDir dir("pstore-gguf-import");
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> x(32 * 9000);
  for (float& f : x) f = nd(rng);
  const std::vector<uint8_t> q8 = quant::QuantQ8_0(x);
  ASSERT_EQ(q8.size(), 306000u);
  G g;
  g.b = "GGUF";
  g.Put<uint32_t>(3).Put<uint64_t>(2).Put<uint64_t>(0);
  g.Str("q").Put<uint32_t>(1).Put<uint64_t>(x.size()).Put<uint32_t>(8).Put<uint64_t>(0);
  g.Str("h").Put<uint32_t>(1).Put<uint64_t>(4096).Put<uint32_t>(1).Put<uint64_t>(306016);
  g.Pad(32);
  const size_t data = g.b.size();
  g.b.append(q8.begin(), q8.end());
  g.Pad(32);
  for (int i = 0; i < 4096; i++) g.Put<uint16_t>(quant::ToHalf(x[size_t(i)]));
  const std::string path = dir.path() + "/m.gguf";
  std::ofstream(path, std::ios::binary) << g.b;
  {
    auto w = StoreWriter::Open(dir.path() + "/s", false);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    auto r = (*w)->Import(path, {"m", "1"}, ImportOptions{});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  auto r = StoreReader::Open(dir.path() + "/s");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto d = (*r)->view().Resolve("m:1");
  ASSERT_TRUE(d.ok());
  auto m = (*r)->view().LoadManifest(*d);
  ASSERT_TRUE(m.ok());
  ChunkDecoder dec;
  for (const ManifestTensor& t : (*m)->tensors) {
    const bool quantized = t.name == "q";
    EXPECT_EQ((*m)->ChunkCount(t), quantized ? 2u : 1u);
    EXPECT_EQ((*m)->ChunkLen(t), quantized ? 208896u : (*m)->chunk_size);
    for (uint64_t j = 0; j < (*m)->ChunkCount(t); j++) {
      const ChunkKey& key = (*m)->chunks[t.first_chunk + j];
      auto rec = (*r)->view().GetChunkRecord(key);
      ASSERT_TRUE(rec.ok() && rec->has_value());
      EXPECT_EQ((*rec)->transform, uint8_t(quantized ? Transform::kBlockScales : Transform::kF16))
          << t.name << " chunk " << j;
      std::vector<uint8_t> out(size_t((*m)->ChunkBytes(t, j)));
      if (quantized) {
        // The frame's layout is Q8_0's, and its phase 0: the chunk starts
        // on a block.
        rocksdb::PinnableSlice frame;
        ASSERT_TRUE((*r)->view().ReadFrame(key, &frame).ok());
        auto info = InspectFrame(std::string_view(frame.data(), frame.size()), out.size());
        ASSERT_TRUE(info.ok()) << info.status().ToString();
        EXPECT_EQ(info->block.layout.bytes, 34u);
        EXPECT_EQ(info->block.layout.scale_offset, 0u);
        EXPECT_EQ(info->block.layout.scales, 1u);
        EXPECT_EQ((*m)->ChunkStart(t, j) % 34, 0u) << "chunk " << j;
        EXPECT_EQ(info->block.phase, 0u) << "chunk " << j;
      }
      ASSERT_TRUE((*r)->view().ReadChunk(key, &dec, out).ok());
      const size_t at = data + size_t(t.offset + (*m)->ChunkStart(t, j));
      EXPECT_EQ(std::string(out.begin(), out.end()), g.b.substr(at, out.size()));
    }
  }
}

// --- GGUF manifests -----------------------------------------------------------

Manifest GgufManifest() {
  Manifest m;
  m.format = SourceFormat::kGgufSplit;
  m.chunk_size = 1 << 16;
  m.alignment = 64;
  m.metadata_json = "{\"general.architecture\":\"llama\"}";
  for (uint32_t f = 0; f < 2; f++) {
    ManifestFile mf;
    mf.name = f ? "m-00002-of-00002.gguf" : "m-00001-of-00002.gguf";
    mf.header_bytes = std::string("GGUF\3\0\0\0", 8) + std::string(56, 'h');
    mf.data_size = 70000 + 64;
    mf.filler = std::string(64 - 70000 % 64, '\0') + (f ? "" : "x");
    m.files.push_back(mf);
  }
  for (uint32_t i = 0; i < 2; i++) {
    ManifestTensor t;
    t.name.assign(1, 't');
    t.name.push_back(char('0' + i));
    t.dtype = DType::kU8;
    t.ggml_type = i ? 8 : 999;
    t.shape = {2, 35000};
    t.file = i;
    t.size = 70000;
    t.first_chunk = m.chunks.size();
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
      std::string raw = t.name + std::to_string(j);
      m.chunks.push_back(HashBytes(raw.data(), raw.size()));
    }
    m.files[i].tensors.push_back(i);
    m.tensors.push_back(t);
  }
  return m;
}

// Gives tensor t of m its own chunk length, and new chunk keys to match.
void SetChunkLen(Manifest* m, size_t t, uint32_t len) {
  m->tensors[t].chunk_len = len;
  m->chunks.clear();
  for (ManifestTensor& mt : m->tensors) {
    mt.first_chunk = m->chunks.size();
    for (uint64_t j = 0; j < m->ChunkCount(mt); j++) {
      std::string raw = mt.name + std::to_string(j) + "/" + std::to_string(m->ChunkLen(mt));
      m->chunks.push_back(HashBytes(raw.data(), raw.size()));
    }
  }
}

TEST(Manifest, GgufSerializeParseRoundTrip) {
  Manifest m = GgufManifest();
  std::string bytes = m.Serialize();
  // No tensor of its own chunk length: version 2, as before version 3.
  EXPECT_EQ(bytes[4], char(Manifest::kVersionGguf));
  auto p = Manifest::Parse(bytes);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Serialize(), bytes);
  EXPECT_EQ(p->alignment, 64u);
  EXPECT_EQ(p->files[0].filler, m.files[0].filler);
  EXPECT_EQ(p->tensors[0].ggml_type, 999u);
  EXPECT_EQ(p->tensors[1].ggml_type, 8u);
  auto lite = Manifest::Parse(bytes, /*with_headers=*/false);
  ASSERT_TRUE(lite.ok());
  EXPECT_TRUE(lite->files[0].filler.empty());
  EXPECT_EQ(lite->tensors[0].ggml_type, 999u);
  for (size_t n = 0; n < bytes.size(); n++)
    EXPECT_FALSE(Manifest::Parse(std::string_view(bytes).substr(0, n)).ok()) << n;
}

TEST(Manifest, SafetensorsManifestsStayVersionOne) {
  Manifest m = GgufManifest();
  m.format = SourceFormat::kSafetensorsSharded;
  std::string bytes = m.Serialize();
  EXPECT_EQ(bytes[4], char(Manifest::kVersion));
  ASSERT_TRUE(Manifest::Parse(bytes).ok());
  // A GGUF format under version 1 (or safetensors under 2) is corrupt.
  std::string bad = bytes;
  bad[5] = char(SourceFormat::kGguf);
  EXPECT_FALSE(Manifest::Parse(bad).ok());
  bad = GgufManifest().Serialize();
  bad[4] = char(Manifest::kVersion);
  EXPECT_FALSE(Manifest::Parse(bad).ok());
}

TEST(Manifest, GgufTensorsKeepTheirChunkLengths) {
  Manifest m = GgufManifest();
  SetChunkLen(&m, 1, 69632);  // Q8_0 at 64 KiB chunks: lcm(34, 4096)
  std::string bytes = m.Serialize();
  EXPECT_EQ(bytes[4], char(Manifest::kVersionGgufChunks));
  auto p = Manifest::Parse(bytes);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Serialize(), bytes);
  EXPECT_EQ(p->ChunkLen(p->tensors[0]), 65536u);
  EXPECT_EQ(p->ChunkLen(p->tensors[1]), 69632u);
  EXPECT_EQ(p->ChunkCount(p->tensors[1]), 2u);
  EXPECT_EQ(p->ChunkStart(p->tensors[1], 1), 69632u);
  EXPECT_EQ(p->ChunkBytes(p->tensors[1], 1), 70000u - 69632u);
  EXPECT_EQ(p->MaxChunkLen(), 69632u);
  for (size_t n = 0; n < bytes.size(); n++)
    EXPECT_FALSE(Manifest::Parse(std::string_view(bytes).substr(0, n)).ok()) << n;
}

// Manifests of stores made before tensors had chunk lengths (version 2)
// parse, cut every tensor at the chunk size, and serialize as they were.
TEST(Manifest, GgufVersionTwoStillParses) {
  Manifest m = GgufManifest();
  m.version = Manifest::kVersionGguf;
  std::string bytes = m.Serialize();
  EXPECT_EQ(bytes[4], char(Manifest::kVersionGguf));
  auto p = Manifest::Parse(bytes);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->version, Manifest::kVersionGguf);
  EXPECT_EQ(p->Serialize(), bytes);
  EXPECT_EQ(Manifest::DigestOf(p->Serialize()), Manifest::DigestOf(bytes));
  for (const ManifestTensor& t : p->tensors) {
    EXPECT_EQ(p->ChunkLen(t), 65536u);
    EXPECT_EQ(p->ChunkCount(t), 2u);
  }
  // A version 2 manifest cannot hold a chunk length: it is written as 3.
  SetChunkLen(&m, 1, 69632);
  EXPECT_EQ(m.Serialize()[4], char(Manifest::kVersionGgufChunks));
}

// A GGUF manifest made here without tensors of their own chunk length (an
// F16 or F32 model) is written as version 2, byte for byte what a manifest
// parsed from version 2 gives, so importing such a file again is the same
// model and older pstores read it; one parsed from version 3 stays 3.
TEST(Manifest, GgufWithoutOwnChunkLengthsIsWrittenAsVersionTwo) {
  Manifest fresh = GgufManifest();
  ASSERT_EQ(fresh.version, 0);
  Manifest old = GgufManifest();
  old.version = Manifest::kVersionGguf;
  const std::string bytes = fresh.Serialize();
  EXPECT_EQ(bytes[4], char(Manifest::kVersionGguf));
  EXPECT_EQ(bytes, old.Serialize());
  // A length equal to the chunk size is no length of its own.
  fresh.tensors[1].chunk_len = 65536;
  EXPECT_EQ(fresh.Serialize(), bytes);
  // Written as version 3 (by a pstore that always did), it stays 3.
  Manifest v3 = GgufManifest();
  v3.version = Manifest::kVersionGgufChunks;
  const std::string b3 = v3.Serialize();
  EXPECT_EQ(b3[4], char(Manifest::kVersionGgufChunks));
  auto p = Manifest::Parse(b3);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->Serialize(), b3);
}

TEST(Manifest, BadChunkLengthIsCorruption) {
  for (uint32_t len : {5000u, 4095u, 2u << 20, 65536u + 100u}) {
    Manifest m = GgufManifest();
    SetChunkLen(&m, 1, len);
    auto p = Manifest::Parse(m.Serialize());
    ASSERT_FALSE(p.ok()) << len;
    EXPECT_TRUE(p.status().IsCorruption()) << len;
    EXPECT_NE(p.status().ToString().find("chunk length"), std::string::npos)
        << p.status().ToString();
  }
  // 0, written over a length's varint (258048: 3 bytes) as a 3-byte varint.
  Manifest m = GgufManifest();
  SetChunkLen(&m, 1, 258048);
  std::string bytes = m.Serialize();
  const std::string enc("\x80\xe0\x0f", 3);
  const size_t at = bytes.find(enc);
  ASSERT_NE(at, std::string::npos);
  ASSERT_TRUE(Manifest::Parse(bytes).ok());
  bytes.replace(at, 3, std::string("\x80\x80\x00", 3));
  EXPECT_TRUE(Manifest::Parse(bytes).status().IsCorruption());
}

TEST(Manifest, GgufAlignmentMustBeAPowerOfTwo) {
  Manifest m = GgufManifest();
  m.alignment = 48;
  EXPECT_FALSE(Manifest::Parse(m.Serialize()).ok());
}
