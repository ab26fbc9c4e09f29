// Reading a model's chunks with one error context: see store/chunk_read.h.
#include "store/chunk_read.h"

namespace pstore {

std::string DescribeChunkUse(const ChunkUse& use, const ChunkKey& key) {
  return "model " + std::string(use.model) + " tensor " + std::string(use.tensor) + " chunk " +
         std::to_string(use.chunk) + " (key " + key.Hex() + ")";
}

Status DecodeFrame(const FrameBatch& batch, size_t i, const ChunkKey& key,
                   const ChunkSource& source, ChunkDecoder* decoder, std::span<uint8_t> out) {
  if (i >= batch.size())  // a source that filled fewer entries than it was asked for
    return Status::Internal(source.Describe() + " returned no entry for chunk " + key.Hex());
  if (!batch.status(i).ok()) return batch.status(i);
  if (!batch.found(i))
    return Status::Corruption("chunk " + key.Hex() + " is missing from " + source.Describe());
  return decoder->Decode(batch.frame(i), key, out);
}

Status RemoteFrameMismatch(const ChunkSource& remote, std::string_view chunk, const ChunkKey& key,
                           const Status& why, std::string_view outcome) {
  const std::string object = remote.Locate(key);
  const std::string head = remote.Describe() + ": " + std::string(chunk) +
                           (object.empty() ? "" : " (object " + object + ")") +
                           " does not match its key: " + why.message() + "; " +
                           std::string(outcome) +
                           ". the remote's copy of this chunk is damaged (this host's store is "
                           "not): ";
  if (object.starts_with("k.")) {
    // A pack holds chunks of other models too: removing it alone loses them.
    const std::string pack = object.substr(0, object.find(' '));
    return Status::Corruption(head + "it is in pack " + pack +
                              ", which other models on the remote may share; do not remove the "
                              "pack alone: remove it (`rados rm " +
                              pack +
                              "`) only to push again, from hosts whose stores have them "
                              "(`pstore push`), every model that uses it (each push uploads its "
                              "chunks anew and rewrites its locations); a model not pushed again "
                              "loses the chunks the pack held")
        .MarkedRemote();
  }
  const std::string named = object.empty() ? std::string("damaged object") : "object " + object;
  return Status::Corruption(head + "remove the " + named + " from " + remote.Describe() +
                            " (`rados rm`) and push the model again from a host whose store has "
                            "it (`pstore push`)")
      .MarkedRemote();
}

Status RemoteFrameMissing(const ChunkSource& remote, std::string_view chunk, const ChunkKey& key) {
  const std::string object = remote.Locate(key);
  return Status::Corruption(remote.Describe() + " lacks " + std::string(chunk) +
                            (object.empty() ? "" : " (object " + object + ")") +
                            ": the remote's copy of this model is incomplete (this host's store "
                            "is not damaged): push the model again from a host whose store has "
                            "it (`pstore push`)")
      .MarkedRemote();
}

Status ChunkUseError(const Status& st, const ChunkUse& use, const ChunkKey& key) {
  Status named = st.WithContext(DescribeChunkUse(use, key));
  if (!st.IsCorruption() || st.IsRemote()) return named;
  return Status::Corruption(named.message() +
                            "; the store's copy of this chunk is damaged: `pstore verify` lists "
                            "every model that uses it, and importing this model's source again "
                            "repairs it (docs/operations.md, \"When verify reports damage\")");
}

Status DecodeChunk(const FrameBatch& batch, size_t i, const ChunkKey& key,
                   const ChunkSource& source, const ChunkUse& use, ChunkDecoder* decoder,
                   std::span<uint8_t> out) {
  Status st = DecodeFrame(batch, i, key, source, decoder, out);
  return st.ok() ? st : ChunkUseError(st, use, key);
}

Status ReadDecodedInRuns(ChunkSource& source, std::span<const ChunkKey> keys,
                         std::span<const std::span<uint8_t>> outs, ChunkDecoder* decoder,
                         FrameBatch* batch, DecodedChunks* result, std::vector<size_t>* missing) {
  for (size_t i = 0; i < keys.size();) {
    const size_t end = DecodeRunEnd(outs, i);
    PSTORE_RETURN_IF_ERROR(source.ReadFrames(keys.subspan(i, end - i), batch));
    for (size_t k = i; k < end; k++) {
      const size_t b = k - i;
      if (missing != nullptr && b < batch->size() && !batch->found(b) && batch->status(b).ok()) {
        missing->push_back(k);
        continue;
      }
      result->status[k] = DecodeFrame(*batch, b, keys[k], source, decoder, outs[k]);
      result->frame_bytes[k] = result->status[k].ok() ? batch->frame(b).size() : 0;
    }
    i = end;
  }
  return Status::OK();
}

Status ReadChunk(ChunkSource& source, const ChunkKey& key, const ChunkUse& use,
                 ChunkDecoder* decoder, FrameBatch* batch, std::span<uint8_t> out,
                 uint64_t* frame_bytes) {
  DecodedChunks got;
  Status st =
      source.ReadDecoded(std::span<const ChunkKey>(&key, 1),
                         std::span<const std::span<uint8_t>>(&out, 1), decoder, batch, &got);
  if (st.ok()) st = got.status[0];
  if (!st.ok()) return ChunkUseError(st, use, key);
  if (frame_bytes != nullptr) *frame_bytes = got.frame_bytes[0];
  return Status::OK();
}

}  // namespace pstore
