// old_gguf_model: test equipment that puts a GGUF model into a store as
// pstore wrote it before tensors had chunk lengths of their own (manifest
// version 2: every tensor cut every chunk_size bytes from its start, so a
// quantized tensor's chunks start mid-block, each chunk's frame telling the
// block transform where in a block it starts). Tests then check that such a
// store, as users have them, still opens, serves, verifies and exports.
//
//   old_gguf_model STORE FILE.gguf NAME:TAG
//
// Imports FILE (a single-file GGUF) as NAME:TAG, then writes the chunks of
// the old cuts and commits the version 2 manifest over the name. Prints the
// old manifest's digest.
#include <cstdio>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/hash.h"
#include "common/file_util.h"
#include "store/formats/gguf.h"
#include "store/manifest.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"

namespace {

using namespace pstore;

int Fail(const Status& s) {
  std::fprintf(stderr, "old_gguf_model: %s\n", s.ToString().c_str());
  return 1;
}

Status Run(const std::string& store, const std::string& path, const std::string& ref) {
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  PSTORE_ASSIGN_OR_RETURN(auto w, StoreWriter::Open(store, false));
  PSTORE_RETURN_IF_ERROR(w->Import(path, name, ImportOptions{}).status());
  PSTORE_ASSIGN_OR_RETURN(ModelDigest d, w->view().Resolve(name.Ref()));
  PSTORE_ASSIGN_OR_RETURN(auto now, w->view().LoadManifest(d));
  if (now->format != SourceFormat::kGguf || now->files.size() != 1)
    return Status::InvalidArgument(path + ": a single-file GGUF model is needed");
  Manifest m = *now;
  m.version = Manifest::kVersionGguf;
  m.chunks.clear();
  // The data section starts right after the header kept verbatim.
  const uint64_t data = m.files[0].header_bytes.size();
  PSTORE_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  ChunkEncoder encoder{EncodeOptions{}};
  std::vector<std::string> frames;
  std::vector<uint64_t> lens;
  for (ManifestTensor& t : m.tensors) {
    t.chunk_len = 0;
    t.first_chunk = m.chunks.size();
    const BlockLayout layout = gguf::GgmlBlockLayout(t.ggml_type);
    for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
      const uint64_t at = data + t.offset + m.ChunkStart(t, j), len = m.ChunkBytes(t, j);
      if (at + len > bytes.size()) return Status::Corruption(path + ": shorter than its tensors");
      std::span<const uint8_t> raw(reinterpret_cast<const uint8_t*>(bytes.data()) + at, len);
      ChunkType type{t.dtype, {layout, 0}};
      if (layout.bytes) type.block.phase = uint32_t(m.ChunkStart(t, j) % layout.bytes);
      frames.emplace_back();
      lens.push_back(len);
      encoder.Encode(raw, type, &frames.back());
      m.chunks.push_back(HashBytes(raw.data(), raw.size()));
    }
  }
  std::vector<ChunkFrameRef> refs;
  for (size_t i = 0; i < frames.size(); i++) refs.push_back({m.chunks[i], frames[i], lens[i]});
  RocksChunkSource chunks(w->view().db(), /*writable=*/true, "the store");
  PSTORE_RETURN_IF_ERROR(chunks.Write(refs));
  const std::string manifest = m.Serialize();
  if (manifest[4] != char(Manifest::kVersionGguf))
    return Status::Internal("the manifest was not written as version 2");
  StoreWriter::ModelCommit c;
  c.manifest = manifest;
  c.digest = Manifest::DigestOf(manifest);
  c.name = name;
  c.force = true;
  c.wrote_chunks = true;
  PSTORE_RETURN_IF_ERROR(w->CommitModel(Status::OK(), c).status());
  std::printf("%s\n", c.digest.Hex().c_str());
  return Status::OK();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: old_gguf_model STORE FILE.gguf NAME:TAG\n");
    return 2;
  }
  Status s = Run(argv[1], argv[2], argv[3]);
  return s.ok() ? 0 : Fail(s);
}
