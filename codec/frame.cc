// Chunk frames' headers: writing version 4, parsing every version.
#include "codec/frame.h"

#include <algorithm>
#include <cstring>

#include "codec/bitpack.h"
#include "codec/coders/carry.h"
#include "codec/legacy/frame_legacy.h"

namespace pstore {

FrameDescription WriteFrame(Transform t, uint8_t bias, const BlockParams& block,
                            const Coder* coders, const std::string* payloads,
                            const uint8_t* const* raw, const uint64_t* lens, std::string* frame) {
  const int nstreams = GetTransformInfo(t)->nstreams;
  // Version and transform in one byte, the window's bias if the transform has
  // one; coder ids two to a byte; lengths only where they are not implied
  // (raw: m, const: 1, bits-tail: by the carry, the last other stream: the
  // rest of the frame).
  frame->clear();
  frame->push_back(char(kFrameVersion | uint8_t(t) << 4));
  if (HasWindowBias(t)) frame->push_back(char(bias));
  if (t == Transform::kBlockScales) {
    PutVarint(frame, block.layout.bytes);
    frame->push_back(char(block.layout.scale_offset));
    frame->push_back(char(block.layout.scales));
    PutVarint(frame, block.phase);
  }
  for (int j = 0; j < nstreams; j += 2) {
    uint8_t b = uint8_t(coders[j]);
    if (j + 1 < nstreams) b |= uint8_t(uint8_t(coders[j + 1]) << 4);
    frame->push_back(char(b));
  }
  auto written = [&](int j) { return CoderFor(coders[j]).implied() == ImpliedLength::kNone; };
  int last = -1;
  for (int j = 0; j < nstreams; j++)
    if (written(j)) last = j;
  for (int j = 0; j < last; j++)
    if (written(j)) PutVarint(frame, payloads[j].size());
  for (int j = 0; j < nstreams; j++) {
    if (coders[j] == Coder::kRaw)
      frame->append(reinterpret_cast<const char*>(raw[j]), size_t(lens[j]));
    else
      frame->append(payloads[j]);
  }
  return FrameDescription{kFrameVersion, t};
}

Status CheckCarryPair(const Frame& p) {
  for (int j = 0; j < p.nstreams; j++) {
    const bool c0 = p.coders[j] == Coder::kRans2Carry, c1 = p.coders[j] == Coder::kBitsTail;
    if ((c0 && j != 0) || (c1 && j != 1))
      return Status::Corruption("chunk frame has a carrying coder on the wrong stream");
  }
  const bool c0 = p.coders[0] == Coder::kRans2Carry;
  const bool c1 = p.nstreams >= 2 && p.coders[1] == Coder::kBitsTail;
  if (c0 != c1) return Status::Corruption("chunk frame has half a carrying pair");
  if (!c0) return Status::OK();
  if (CarryWidth(p.transform) == 0)
    return Status::Corruption("chunk frame carries values on a transform without a width");
  return Status::OK();
}

Status ParseCompactStreams(Reader* r, std::string_view frame, Frame* p) {
  p->nstreams = p->info.nstreams;
  for (int j = 0; j < p->nstreams; j += 2) {
    uint8_t b;
    if (!r->GetU8(&b)) return Status::Corruption("chunk frame header truncated");
    uint8_t c[2] = {uint8_t(b & 15), uint8_t(b >> 4)};
    for (int h = 0; h < 2; h++) {
      if (j + h >= p->nstreams) {
        if (c[h] != 0) return Status::Corruption("chunk frame has a stray coder");
        continue;
      }
      if (c[h] > kMaxCoderId)
        return Status::Corruption("chunk frame has unknown coder " + std::to_string(c[h]));
      p->coders[j + h] = Coder(c[h]);
    }
  }
  PSTORE_RETURN_IF_ERROR(CheckCarryPair(*p));
  ImpliedLength implied[kMaxStreams];
  int last = -1;
  for (int j = 0; j < p->nstreams; j++) {
    implied[j] = CoderFor(p->coders[j]).implied();
    if (implied[j] == ImpliedLength::kNone) last = j;
  }
  uint64_t lens[kMaxStreams];
  uint64_t sum = 0;
  for (int j = 0; j < p->nstreams; j++) {
    switch (implied[j]) {
      case ImpliedLength::kStream:
        lens[j] = p->stream_len[j];
        break;
      case ImpliedLength::kOneByte:
        lens[j] = 1;
        break;
      case ImpliedLength::kCarried:
        lens[j] = 0;
        break;  // below
      case ImpliedLength::kNone:
        if (j == last)
          lens[j] = 0;  // the rest, below
        else if (!r->GetVarint(&lens[j]))
          return Status::Corruption("chunk frame header truncated");
        break;
    }
    if (lens[j] > frame.size())
      return Status::Corruption("chunk frame stream lengths exceed the frame");
    sum += lens[j];
  }
  if (p->coders[0] == Coder::kRans2Carry) {
    // Stream 1's length is implied by the lanes of stream 0 (the low bits of
    // its first byte) and the transform's carry width.
    if (r->remaining() == 0) return Status::Corruption("chunk frame truncated");
    uint8_t hdr;
    std::memcpy(&hdr, r->pos(), 1);
    const int k = CarryWidth(p->transform);
    const uint64_t carried = CarriedValues(hdr & 7, k);
    const uint64_t m = p->stream_len[1];
    if (carried > m) return Status::Corruption("bits-tail stream is too short");
    lens[1] = PackedBytes(size_t(m - carried), k);
    sum += lens[1];
  }
  if (sum > r->remaining())
    return Status::Corruption("chunk frame stream lengths exceed the frame");
  if (last >= 0)
    lens[last] = r->remaining() - sum;
  else if (sum != r->remaining())
    return Status::Corruption("chunk frame stream lengths do not add up to its size");
  for (int j = 0; j < p->nstreams; j++) r->GetBytes(size_t(lens[j]), &p->payloads[j]);
  return Status::OK();
}

namespace {

// Reads a frame's version and transform from the start of r.
Status ParseHeader(Reader* r, uint8_t* version, Transform* transform, TransformInfo* info) {
  uint8_t t, b0;
  if (!r->GetU8(&b0)) return Status::Corruption("chunk frame is empty");
  *version = b0 & 15;
  if (*version == kFrameVersion) {
    t = b0 >> 4;
  } else {
    if (b0 >= 16 ||
        (*version != kFrameVersion1 && *version != kFrameVersion2 && *version != kFrameVersion3))
      return Status::Corruption("chunk frame has unknown version " + std::to_string(b0));
    if (!r->GetU8(&t)) return Status::Corruption("chunk frame truncated");
  }
  auto ti = GetTransformInfo(Transform(t));
  if (!ti)
    return Status::Corruption("chunk frame has unknown transform " + std::to_string(t) +
                              " (a frame written by a newer pstore, or damaged)");
  *transform = Transform(t);
  *info = *ti;
  return Status::OK();
}

}  // namespace

Result<FrameDescription> DescribeFrame(std::string_view frame) {
  Reader r(frame);
  FrameDescription d;
  TransformInfo info{};
  PSTORE_RETURN_IF_ERROR(ParseHeader(&r, &d.version, &d.transform, &info));
  return d;
}

Status ParseFrame(std::string_view frame, std::optional<uint64_t> raw_len, Frame* p) {
  Reader r(frame);
  PSTORE_RETURN_IF_ERROR(ParseHeader(&r, &p->version, &p->transform, &p->info));
  if (p->version != kFrameVersion) {
    if (HasWindowBias(p->transform) || p->transform == Transform::kBlockScales)
      return Status::Corruption("chunk frame of version " + std::to_string(p->version) +
                                " has a transform that only version 4 has");
    PSTORE_RETURN_IF_ERROR(ParseLegacyFrame(&r, frame, p));
    StreamLengths(p->transform, p->block, p->raw_len, p->stream_len);
  } else {
    if (HasWindowBias(p->transform) && (!r.GetU8(&p->bias) || p->bias > kMaxWindowBias))
      return Status::Corruption("chunk frame has a bad window bias");
    if (p->transform == Transform::kBlockScales) {
      uint64_t bytes, phase;
      uint8_t off, n;
      if (!r.GetVarint(&bytes) || !r.GetU8(&off) || !r.GetU8(&n) || !r.GetVarint(&phase))
        return Status::Corruption("chunk frame header truncated");
      p->block.layout = BlockLayout{uint32_t(std::min<uint64_t>(bytes, UINT32_MAX)), off, n};
      p->block.phase = uint32_t(std::min<uint64_t>(phase, UINT32_MAX));
      if (bytes > kMaxBlockBytes || !BlockParamsValid(p->block))
        return Status::Corruption("chunk frame has a bad block layout");
    }
    if (!raw_len) return Status::InvalidArgument("a version-4 frame needs its raw length");
    p->raw_len = *raw_len;
    if (p->raw_len % uint64_t(p->info.width))
      return Status::Corruption("chunk frame raw length is not a whole number of elements");
    StreamLengths(p->transform, p->block, p->raw_len, p->stream_len);
    PSTORE_RETURN_IF_ERROR(ParseCompactStreams(&r, frame, p));
  }
  if (p->raw_len % uint64_t(p->info.width))
    return Status::Corruption("chunk frame raw length is not a whole number of elements");
  return CheckCarryPair(*p);
}

}  // namespace pstore
