// Parsing of frame versions 1, 2 and 3 (read only).
#include "codec/legacy/frame_legacy.h"

namespace pstore {
namespace {

// Version 1: one coder (raw, LZ4 or Zstandard) over the streams end to end.
Status ParseV1(Reader* r, Frame* p) {
  uint8_t c;
  if (!r->GetU8(&c) || !r->GetVarint(&p->raw_len))
    return Status::Corruption("chunk frame header truncated");
  if (c != uint8_t(Coder::kRaw) && c != uint8_t(Coder::kLz4) && c != uint8_t(Coder::kZstd))
    return Status::Corruption("v1 chunk frame has unknown codec " + std::to_string(c));
  p->nstreams = 1;
  p->coders[0] = Coder(c);
  r->GetBytes(r->remaining(), &p->payloads[0]);
  return Status::OK();
}

// Version 2: per stream a coder byte and a written length.
Status ParseV2(Reader* r, std::string_view frame, Frame* p) {
  if (!r->GetVarint(&p->raw_len)) return Status::Corruption("chunk frame header truncated");
  p->nstreams = p->info.nstreams;
  uint64_t lens[kMaxStreams];
  uint64_t sum = 0;
  for (int j = 0; j < p->nstreams; j++) {
    uint8_t c;
    if (!r->GetU8(&c) || !r->GetVarint(&lens[j]))
      return Status::Corruption("chunk frame header truncated");
    if (c > kMaxCoderId)
      return Status::Corruption("chunk frame has unknown coder " + std::to_string(c));
    p->coders[j] = Coder(c);
    sum += lens[j];
    if (lens[j] > frame.size() || sum > frame.size())
      return Status::Corruption("chunk frame stream lengths exceed the frame");
  }
  if (sum != r->remaining())
    return Status::Corruption("chunk frame stream lengths do not add up to its size");
  for (int j = 0; j < p->nstreams; j++) r->GetBytes(size_t(lens[j]), &p->payloads[j]);
  return Status::OK();
}

// Version 3: version 4's streams after a written raw length.
Status ParseV3(Reader* r, std::string_view frame, Frame* p) {
  if (!r->GetVarint(&p->raw_len)) return Status::Corruption("chunk frame header truncated");
  if (p->raw_len % uint64_t(p->info.width))
    return Status::Corruption("chunk frame raw length is not a whole number of elements");
  for (int j = 0; j < p->info.nstreams; j++)
    p->stream_len[j] = p->raw_len / uint64_t(p->info.width);
  return ParseCompactStreams(r, frame, p);
}

}  // namespace

Status ParseLegacyFrame(Reader* r, std::string_view frame, Frame* p) {
  switch (p->version) {
    case kFrameVersion1:
      return ParseV1(r, p);
    case kFrameVersion2:
      return ParseV2(r, frame, p);
    case kFrameVersion3:
      return ParseV3(r, frame, p);
  }
  return Status::Corruption("chunk frame has unknown version " + std::to_string(p->version));
}

}  // namespace pstore
