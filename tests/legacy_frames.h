// Writers of frames pstore no longer writes, so that the tests (and the fuzz
// target's seeds) keep the readers of old frame versions exercised. The
// product only reads these versions (codec/legacy/).
//
// Thread-safety: pure functions.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "common/coding.h"

namespace pstore {

// A version-1 frame of raw (a piece of a tensor of dtype): one coder (raw,
// lz4 or zstd) over the transform's streams laid end to end; raw where the
// coder cannot take them.
inline std::string EncodeVersion1Frame(std::span<const uint8_t> raw, DType dtype, Coder coder) {
  const size_t n = raw.size();
  const Transform t = TransformFor(dtype, n);
  const TransformInfo info = *GetTransformInfo(t);
  const size_t m = n / size_t(info.width);
  std::vector<uint8_t> joined(n);
  uint8_t* w[kMaxStreams];
  for (int j = 0; j < info.nstreams; j++) w[j] = joined.data() + size_t(j) * m;
  SplitStreams(t, raw.data(), n, w);
  std::string frame;
  frame.push_back(char(kFrameVersion1));
  frame.push_back(char(t));
  frame.push_back(char(coder));
  PutVarint(&frame, n);
  CoderEncodeScratch scratch;
  std::string payload;
  if ((coder == Coder::kZstd || coder == Coder::kLz4) &&
      CoderFor(coder).TryEncode(joined.data(), n, StreamEncodeArgs{}, &scratch, &payload)) {
    frame.append(payload);
  } else {
    frame[2] = char(Coder::kRaw);
    frame.append(reinterpret_cast<const char*>(joined.data()), n);
  }
  return frame;
}

}  // namespace pstore
