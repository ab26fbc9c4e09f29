// FrameBatch and ChunkSource's default batch reads: see store/chunk_source.h.
#include "store/chunk_source.h"

#include "store/chunk_read.h"

namespace pstore {

FrameBatch::FrameBatch() = default;
FrameBatch::~FrameBatch() = default;

void FrameBatch::Reset(size_t n) {
  frames_.assign(n, std::string_view());
  found_.assign(n, 0);
  statuses_.assign(n, Status::OK());
  owned_.clear();
}

void FrameBatch::SetOwned(size_t i, std::string bytes) {
  // Sized once per batch: moving the strings later would move small ones'
  // bytes out from under their views.
  if (owned_.size() != frames_.size()) owned_.resize(frames_.size());
  owned_[i] = std::move(bytes);
  frames_[i] = owned_[i];
  found_[i] = 1;
}

Status ChunkSource::ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) {
  batch->Reset(keys.size());
  PSTORE_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> frames, Read(keys));
  for (size_t i = 0; i < frames.size(); i++)
    if (frames[i]) batch->SetOwned(i, std::move(*frames[i]));
  return Status::OK();
}

Status ChunkSource::ReadDecoded(std::span<const ChunkKey> keys,
                                std::span<const std::span<uint8_t>> outs, ChunkDecoder* decoder,
                                FrameBatch* batch, DecodedChunks* result) {
  result->Reset(keys.size());
  Status st = ReadFrames(keys, batch);
  if (!st.ok()) return result->Fail(keys.size(), st);
  for (size_t i = 0; i < keys.size(); i++) {
    result->status[i] = DecodeFrame(*batch, i, keys[i], *this, decoder, outs[i]);
    if (result->status[i].ok()) result->frame_bytes[i] = batch->frame(i).size();
  }
  return Status::OK();
}

size_t DecodeRunEnd(std::span<const std::span<uint8_t>> outs, size_t begin) {
  size_t end = begin + 1;
  uint64_t bytes = outs[begin].size();
  while (end < outs.size() && bytes + outs[end].size() <= kDecodeRunBytes)
    bytes += outs[end++].size();
  return end;
}

Result<std::optional<ReadPlan>> ChunkSource::PlanSequentialRead(std::span<const ChunkKey>) {
  return std::optional<ReadPlan>();
}

}  // namespace pstore
