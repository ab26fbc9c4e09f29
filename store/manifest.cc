#include "store/manifest.h"

#include <algorithm>

#include "common/coding.h"

namespace pstore {
namespace {
constexpr char kMagic[4] = {'P', 'S', 'T', 'M'};
constexpr size_t kMaxRank = 64;
}  // namespace

uint64_t Manifest::TotalBytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.size;
  return n;
}

uint64_t Manifest::MaxChunkLen() const {
  uint64_t n = chunk_size;
  for (const auto& t : tensors) n = std::max<uint64_t>(n, ChunkLen(t));
  return n;
}

std::string Manifest::Serialize() const {
  const bool gguf = IsGguf(format);
  bool own_lengths = false;
  for (const auto& t : tensors) own_lengths |= t.chunk_len != 0 && t.chunk_len != chunk_size;
  // Version 3 only where it is needed: a GGUF model without tensors of
  // their own chunk length keeps the bytes (and the digest) pstore wrote
  // before version 3, which older pstores read. One parsed from version 3
  // stays version 3, so that its bytes do not change.
  const uint8_t v = !gguf                                          ? kVersion
                    : own_lengths || version == kVersionGgufChunks ? kVersionGgufChunks
                                                                   : kVersionGguf;
  std::string out(kMagic, 4);
  out.push_back(char(v));
  out.push_back(char(format));
  PutVarint(&out, chunk_size);
  if (gguf) PutVarint(&out, alignment);
  PutBytes(&out, index_name);
  PutBytes(&out, index_bytes);
  PutBytes(&out, metadata_json);
  PutVarint(&out, files.size());
  for (const auto& f : files) {
    PutBytes(&out, f.name);
    PutBytes(&out, f.header_bytes);
    PutVarint(&out, f.data_size);
    PutVarint(&out, f.tensors.size());
    for (uint32_t t : f.tensors) PutVarint(&out, t);
    if (gguf) PutBytes(&out, f.filler);
  }
  PutVarint(&out, tensors.size());
  for (const auto& t : tensors) {
    PutBytes(&out, t.name);
    out.push_back(char(t.dtype));
    PutVarint(&out, t.shape.size());
    for (uint64_t d : t.shape) PutVarint(&out, d);
    PutVarint(&out, t.file);
    PutVarint(&out, t.offset);
    PutVarint(&out, t.size);
    PutVarint(&out, t.first_chunk);
    if (gguf) PutVarint(&out, t.ggml_type);
    if (v >= kVersionGgufChunks) PutVarint(&out, ChunkLen(t));
  }
  PutVarint(&out, chunks.size());
  for (const auto& k : chunks) out.append(k.view());
  return out;
}

Result<Manifest> Manifest::Parse(std::string_view bytes, bool with_headers) {
  auto bad = [](const std::string& why) { return Status::Corruption("manifest: " + why); };
  Reader r(bytes);
  std::string_view magic;
  if (!r.GetBytes(4, &magic) || magic != std::string_view(kMagic, 4)) return bad("bad magic");
  uint8_t version = 0, format = 0;
  if (!r.GetU8(&version)) return bad("truncated before the version");
  if (version < kVersion || version > kVersionGgufChunks)
    return bad("unknown version " + std::to_string(version) +
               " (a newer pstore's? this one reads versions 1 to 3)");
  if (!r.GetU8(&format) || format < uint8_t(SourceFormat::kSafetensors) ||
      format > uint8_t(SourceFormat::kGgufSplit))
    return bad("unknown source format");
  Manifest m;
  m.format = SourceFormat(format);
  m.version = version;
  const bool gguf = IsGguf(m.format);
  if (gguf != (version != kVersion)) return bad("source format does not match the version");
  uint64_t v;
  std::string_view s;
  if (!r.GetVarint(&v) || v == 0 || v > (1ull << 31)) return bad("bad chunk size");
  m.chunk_size = uint32_t(v);
  if (gguf) {
    if (!r.GetVarint(&v) || v == 0 || v > (1ull << 31) || (v & (v - 1)) != 0)
      return bad("bad alignment");
    m.alignment = uint32_t(v);
  }
  if (!r.GetLengthPrefixed(&s)) return bad("truncated");
  m.index_name = std::string(s);
  if (!r.GetLengthPrefixed(&s)) return bad("truncated");
  if (with_headers) m.index_bytes = std::string(s);
  if (!r.GetLengthPrefixed(&s)) return bad("truncated");
  m.metadata_json = std::string(s);
  uint64_t nfiles;
  if (!r.GetVarint(&nfiles) || nfiles > r.remaining()) return bad("bad file count");
  m.files.resize(size_t(nfiles));
  for (auto& f : m.files) {
    uint64_t nt;
    if (!r.GetLengthPrefixed(&s)) return bad("truncated file name");
    f.name = std::string(s);
    if (!r.GetLengthPrefixed(&s)) return bad("truncated file header");
    if (with_headers) f.header_bytes = std::string(s);
    if (!r.GetVarint(&f.data_size) || !r.GetVarint(&nt) || nt > r.remaining())
      return bad("bad file entry");
    f.tensors.resize(size_t(nt));
    for (auto& t : f.tensors) {
      if (!r.GetVarint(&v) || v > UINT32_MAX) return bad("bad tensor index");
      t = uint32_t(v);
    }
    if (gguf) {
      if (!r.GetLengthPrefixed(&s)) return bad("truncated file padding");
      if (with_headers) f.filler = std::string(s);
    }
  }
  uint64_t ntensors;
  if (!r.GetVarint(&ntensors) || ntensors > r.remaining()) return bad("bad tensor count");
  m.tensors.resize(size_t(ntensors));
  uint64_t next_chunk = 0;
  for (auto& t : m.tensors) {
    uint8_t dt;
    uint64_t rank;
    if (!r.GetLengthPrefixed(&s)) return bad("truncated tensor name");
    t.name = std::string(s);
    if (!r.GetU8(&dt) || !DTypeIdValid(dt)) return bad("bad dtype in tensor " + t.name);
    t.dtype = DType(dt);
    if (!r.GetVarint(&rank) || rank > kMaxRank) return bad("bad rank in tensor " + t.name);
    t.shape.resize(size_t(rank));
    for (auto& d : t.shape)
      if (!r.GetVarint(&d)) return bad("truncated shape");
    if (!r.GetVarint(&v) || v >= nfiles) return bad("bad file index in tensor " + t.name);
    t.file = uint32_t(v);
    if (!r.GetVarint(&t.offset) || !r.GetVarint(&t.size) || !r.GetVarint(&t.first_chunk))
      return bad("truncated tensor " + t.name);
    if (gguf) {
      if (!r.GetVarint(&v) || v > UINT32_MAX) return bad("bad GGML type in tensor " + t.name);
      t.ggml_type = uint32_t(v);
    }
    if (version >= kVersionGgufChunks) {
      // A multiple of the page no longer than the chunk size or 1 MiB (the
      // pager places and evicts chunks by pages).
      const uint64_t most = std::max<uint64_t>(m.chunk_size, kMaxBlockChunkLen);
      if (!r.GetVarint(&v)) return bad("truncated tensor " + t.name);
      if (v == 0 || v % kChunkLenUnit != 0 || v > most)
        return bad("bad chunk length " + std::to_string(v) + " in tensor " + t.name +
                   " (a multiple of 4096 up to " + std::to_string(most) + " expected)");
      if (v != m.chunk_size) t.chunk_len = uint32_t(v);
    }
    if (t.first_chunk != next_chunk) return bad("chunk index out of order in tensor " + t.name);
    next_chunk += m.ChunkCount(t);
  }
  uint64_t nchunks;
  if (!r.GetVarint(&nchunks) || nchunks != next_chunk || nchunks > r.remaining() / 16)
    return bad("chunk count does not match the tensors");
  m.chunks.resize(size_t(nchunks));
  for (auto& k : m.chunks) {
    if (!r.GetBytes(16, &s)) return bad("truncated chunk keys");
    k = *ChunkKey::FromBytes(s);
  }
  if (!r.empty()) return bad("trailing bytes");
  for (const auto& f : m.files)
    for (uint32_t t : f.tensors)
      if (t >= m.tensors.size()) return bad("file lists a tensor that does not exist");
  return m;
}

}  // namespace pstore
