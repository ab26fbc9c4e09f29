// Profiles: what the encoder tries on a chunk. A profile picks the transform
// and, stream by stream, which coders (codec/coders/) to try and which result
// to keep; the coders themselves know nothing of profiles. The choices are
// part of what a profile means: the same bytes and profile always give the
// same frame (tests/codec_golden_test.cc).
//
// Thread-safety: a ProfilePolicy holds scratch buffers and must be used by one
// thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/block_transform.h"
#include "codec/coders/coder.h"
#include "codec/dtype.h"
#include "codec/transform.h"

namespace pstore {

enum class Profile : uint8_t {
  kRaw,    // no transform, stored as is
  kLz4,    // streams split by dtype, each LZ4 or raw
  kZstd,   // streams split by dtype, each Zstandard (zstd_level) or raw
  kFast,   // rANS on the exponent-bearing stream, the rest raw or bit-packed:
           // tuned for decode speed
  kDense,  // every coder on every stream, smallest wins: tuned for ratio
};
std::optional<Profile> ProfileFromName(std::string_view name);
std::string_view ProfileName(Profile p);

struct EncodeOptions {
  Profile profile = Profile::kDense;
  int zstd_level = 3;  // used by kZstd and kDense
  // As DecodeOptions::simd_level (codec/coders/coder.h): every level writes
  // the same bytes; tests compare them.
  int simd_level = 2;
};

// What the encoder knows of a chunk besides its bytes: its tensor's dtype
// and, for a quantized GGML type whose block layout is known, that layout and
// where the chunk starts within a block (block.layout.bytes == 0: none).
struct ChunkType {
  DType dtype = DType::kU8;
  BlockParams block;
};

class ProfilePolicy {
 public:
  explicit ProfilePolicy(const EncodeOptions& options) : opt_(options) {}

  // The transform for raw, a piece of a tensor of type.dtype (and
  // type.block); *bias is set for the windowed transforms.
  Transform ChooseTransform(std::span<const uint8_t> raw, const ChunkType& type,
                            uint8_t* bias) const;

  // Codes the streams s[0, nstreams of t) of lens[j] bytes each: coders[j],
  // and payloads[j] for every stream not stored raw.
  void CodeStreams(Transform t, const uint8_t* const* s, const uint64_t* lens, Coder* coders,
                   std::string* payloads);

 private:
  Coder CodeStream(Transform t, const TransformInfo& info, int j, const uint8_t* s, size_t m,
                   const uint8_t* const* all, std::string* out, const uint8_t* carry = nullptr,
                   int carry_k = 0);
  bool TryCoder(Coder c, const uint8_t* s, size_t m, const StreamEncodeArgs& a, std::string* out);
  StreamEncodeArgs Args(Transform t) const;
  bool WorthLz(const uint8_t* s, size_t m, size_t best);
  double PlanContext(Transform t, const uint8_t* s, const uint8_t* src, size_t m, int* best_k,
                     int* best_base);

  EncodeOptions opt_;
  CoderEncodeScratch scratch_;
  std::vector<uint32_t> joint_;  // [exponent][symbol] counts
  std::string trial_;
};

}  // namespace pstore
