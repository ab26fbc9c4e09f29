// The chunk codec's two ends: ChunkEncoder (transform, profile, frame) and
// ChunkDecoder (frame, coders, merge, key check).
#include "codec/chunk_codec.h"

#include <cstring>
#include <new>
#include <string>

#include "codec/coders/registry.h"

namespace pstore {

// ---------------------------------------------------------------------------
// Encoder

struct ChunkEncoder::Impl {
  explicit Impl(const EncodeOptions& o) : policy(o) {}
  ProfilePolicy policy;
  std::vector<uint8_t> streams[kMaxStreams];
  std::string payload[kMaxStreams];
};

ChunkEncoder::ChunkEncoder(const EncodeOptions& options) : impl_(new Impl(options)) {}
ChunkEncoder::~ChunkEncoder() = default;

FrameDescription ChunkEncoder::Encode(std::span<const uint8_t> raw, const ChunkType& type,
                                      std::string* frame) {
  Impl& I = *impl_;
  const size_t n = raw.size();
  uint8_t bias;
  const Transform t = I.policy.ChooseTransform(raw, type, &bias);
  const TransformInfo info = *GetTransformInfo(t);
  uint64_t lens[kMaxStreams];
  StreamLengths(t, type.block, n, lens);
  const uint8_t* s[kMaxStreams];
  if (t == Transform::kNone) {
    s[0] = raw.data();
  } else {
    uint8_t* w[kMaxStreams];
    for (int j = 0; j < info.nstreams; j++) {
      I.streams[j].resize(size_t(lens[j]));
      w[j] = I.streams[j].data();
      s[j] = w[j];
    }
    if (t == Transform::kBlockScales)
      SplitBlocks(type.block, raw.data(), n, w);
    else
      SplitStreams(t, raw.data(), n, w, bias);
  }
  Coder coders[kMaxStreams];
  I.policy.CodeStreams(t, s, lens, coders, I.payload);
  return WriteFrame(t, bias, type.block, coders, I.payload, s, lens, frame);
}

// ---------------------------------------------------------------------------
// Decoder

Result<FrameInfo> InspectFrame(std::string_view frame, std::optional<uint64_t> raw_len) {
  Frame p;
  PSTORE_RETURN_IF_ERROR(ParseFrame(frame, raw_len, &p));
  if (raw_len && p.raw_len != *raw_len)
    return Status::Corruption("chunk frame holds " + std::to_string(p.raw_len) + " bytes where " +
                              std::to_string(*raw_len) + " were expected");
  FrameInfo fi;
  fi.version = p.version;
  fi.window_bias = HasWindowBias(p.transform) ? p.bias : 0;
  fi.block = p.block;
  fi.transform = p.transform;
  fi.raw_len = p.raw_len;
  for (int j = 0; j < p.nstreams; j++) {
    fi.coders.push_back(p.coders[j]);
    fi.stream_bytes.push_back(p.payloads[j].size());
  }
  return fi;
}

struct ChunkDecoder::Impl {
  explicit Impl(const DecodeOptions& o) : options(o) {}
  DecodeOptions options;
  CoderDecodeScratch scratch;
  // Chunk-sized, so mapped apart from malloc's arenas (common/page_allocator.h).
  PageVector<uint8_t> streams[kMaxStreams];
  PageVector<uint8_t> input;  // input_buffer()

  Status DecodeStream(const Frame& p, int j, size_t m, uint8_t* dst,
                      const uint8_t* const* decoded) {
    StreamDecodeArgs a;
    a.transform = p.transform;
    a.info = &p.info;
    a.stream = j;
    a.one_coder_frame = p.version == kFrameVersion1;
    a.decoded = decoded;
    a.options = options;
    return CoderFor(p.coders[j]).Decode(p.payloads[j], m, dst, a, &scratch);
  }

  Status Decode(std::string_view frame, std::span<uint8_t> out) {
    Frame p;
    PSTORE_RETURN_IF_ERROR(ParseFrame(frame, out.size(), &p));
    if (p.raw_len != out.size())
      return Status::Corruption("chunk frame holds " + std::to_string(p.raw_len) + " bytes where " +
                                std::to_string(out.size()) + " were expected");
    const size_t n = out.size();
    const size_t m = n / size_t(p.info.width);
    const uint8_t* none[1] = {nullptr};
    if (p.version == kFrameVersion1) {
      // One coder over the streams laid end to end.
      uint8_t* joined = out.data();
      if (p.transform != Transform::kNone) {
        streams[0].resize(n);
        joined = streams[0].data();
      }
      PSTORE_RETURN_IF_ERROR(DecodeStream(p, 0, n, joined, none));
      if (p.transform != Transform::kNone) {
        const uint8_t* s[kMaxStreams];
        for (int j = 0; j < p.info.nstreams; j++) s[j] = joined + size_t(j) * m;
        MergeStreams(p.transform, s, n, out.data());
      }
      return Status::OK();
    }
    if (p.transform == Transform::kNone) return DecodeStream(p, 0, n, out.data(), none);
    if (p.transform == Transform::kF16 && p.coders[0] == Coder::kRans2 &&
        p.coders[1] == Coder::kRaw) {
      // The fast profile's F16 frame: decode the high bytes straight into
      // place beside the low bytes, read from the frame.
      if (p.payloads[1].size() != m) return Status::Corruption("raw stream has the wrong length");
      rans2::DecodeArgs d;
      d.lo = reinterpret_cast<const uint8_t*>(p.payloads[1].data());
      d.byte_scratch = &streams[0];
      d.simd_level = options.simd_level;
      return rans2::DecodeOrder0(p.payloads[0], m, out.data(), &scratch.dtab, d);
    }
    const uint8_t* s[kMaxStreams];
    for (int j = 0; j < p.nstreams; j++) {
      const size_t mj = size_t(p.stream_len[j]);
      if (p.coders[j] == Coder::kRaw) {
        // Merge straight from the frame: no copy.
        if (p.payloads[j].size() != mj)
          return Status::Corruption("raw stream has the wrong length");
        s[j] = reinterpret_cast<const uint8_t*>(p.payloads[j].data());
        continue;
      }
      streams[j].resize(mj);
      PSTORE_RETURN_IF_ERROR(DecodeStream(p, j, mj, streams[j].data(), s));
      s[j] = streams[j].data();
    }
    if (p.transform == Transform::kBlockScales)
      MergeBlocks(p.block, s, n, out.data());
    else
      MergeStreams(p.transform, s, n, out.data(), p.bias);
    return Status::OK();
  }
};

ChunkDecoder::ChunkDecoder(const DecodeOptions& options) : impl_(new Impl(options)) {}
ChunkDecoder::~ChunkDecoder() = default;

void ChunkDecoder::ReleaseMemory() {
  for (auto& v : impl_->streams) PageVector<uint8_t>().swap(v);
  PageVector<uint8_t>().swap(impl_->input);
  impl_->scratch.Release();
}

PageVector<uint8_t>& ChunkDecoder::input_buffer() {
  return impl_->input;
}

Status ChunkDecoder::DecodeUnchecked(std::string_view frame, std::span<uint8_t> out) {
  // The one place where the decoder's allocations (its buffers, tables and
  // Zstandard context, which throw std::bad_alloc) become a status.
  try {
    return impl_->Decode(frame, out);
  } catch (const std::bad_alloc&) {
    // Made once, so that returning it allocates nothing (copying a Status
    // copies a shared pointer); the callers name the chunk.
    static const Status kNoMemory = Status::NoMemory(
        "out of memory for the decoder's scratch; the chunk may be sound: free memory on the "
        "host and retry");
    return kNoMemory;
  }
}

Status ChunkDecoder::Decode(std::string_view frame, const ChunkKey& key, std::span<uint8_t> out) {
  PSTORE_RETURN_IF_ERROR(DecodeUnchecked(frame, out));
  if (HashBytes(out.data(), out.size()) != key)
    return Status::Corruption("chunk " + key.Hex() + " decodes to bytes whose hash is not its key");
  return Status::OK();
}

}  // namespace pstore
