// Chunk frames: the header of a frame (format version, transform, window
// bias or block layout, per-stream coders and payload lengths) written and
// parsed, apart from the coding of the payloads (codec/coders/) and from the
// choice of coders (codec/profile.h). Version 4 is written; versions 1 to 3
// are still parsed (codec/legacy/frame_legacy.h). Byte layouts:
// docs/codec.md, "Frames".
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "codec/block_transform.h"
#include "codec/coders/coder.h"
#include "codec/transform.h"
#include "common/coding.h"
#include "common/status.h"

namespace pstore {

constexpr uint8_t kFrameVersion1 = 1;  // one coder over all streams
constexpr uint8_t kFrameVersion2 = 2;  // per-stream coders, every length written
constexpr uint8_t kFrameVersion3 = 3;  // v2 with a compact header
constexpr uint8_t kFrameVersion = 4;   // what the encoder writes: v3 without the raw length,
                                       // version and transform in one byte

// What a written frame's header says: its version and transform, the fields a
// chunk record keeps (docs/format.md).
struct FrameDescription {
  uint8_t version = 0;
  Transform transform = Transform::kNone;
};

// A parsed frame: its header, and each stream's payload (a view of the frame).
struct Frame {
  uint8_t version = 0;
  uint8_t bias = kXExponentBias;
  Transform transform = Transform::kNone;
  TransformInfo info{};
  BlockParams block{};  // kBlockScales only
  uint64_t raw_len = 0;
  int nstreams = 0;
  uint64_t stream_len[kMaxStreams]{};  // each stream's decoded length
  Coder coders[kMaxStreams]{};
  std::string_view payloads[kMaxStreams];
};

// Replaces *frame with a version-4 frame of transform t (bias: its window, if
// it has one; block: its layout and phase, for kBlockScales) whose streams of
// lens[j] bytes are coded by coders[j], with payloads[j] (raw streams: raw[j]
// itself).
FrameDescription WriteFrame(Transform t, uint8_t bias, const BlockParams& block,
                            const Coder* coders, const std::string* payloads,
                            const uint8_t* const* raw, const uint64_t* lens, std::string* frame);

// The version and transform of a frame (any version), from its header's
// first bytes alone: what a chunk record keeps of a frame another process or
// host encoded. Corruption for an empty frame or an unknown version or
// transform.
Result<FrameDescription> DescribeFrame(std::string_view frame);

// Parses frame (any version) into *p. raw_len: the caller's length, which a
// version-4 frame does not hold (older ones hold their own, returned in
// p->raw_len for the caller to compare). Checks the ids, the lengths against
// the frame's size and the carrying pair; not the payloads.
Status ParseFrame(std::string_view frame, std::optional<uint64_t> raw_len, Frame* p);

// Internal to codec/ (shared with the version-3 parser): from r, just after
// the raw length, the coder nibbles and payloads of a version-3/4 frame whose
// streams hold p->stream_len[j] bytes each (set by the caller).
Status ParseCompactStreams(Reader* r, std::string_view frame, Frame* p);
// The carrying pair (rans2-carry on stream 0 with bits-tail on stream 1) is
// whole, in place and on a transform with a carry width.
Status CheckCarryPair(const Frame& p);

}  // namespace pstore
