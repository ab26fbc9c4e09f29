// Coder lz4 (2): an LZ4 block of the stream.
#include <lz4.h>

#include <cstdint>

#include "codec/coders/registry.h"

namespace pstore {
namespace {

class Lz4Coder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kLz4; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs&,
                CoderDecodeScratch*) const override {
    if (m > size_t(LZ4_MAX_INPUT_SIZE) || in.size() > size_t(INT32_MAX))
      return Status::Corruption("lz4 stream too large");
    int r = LZ4_decompress_safe(in.data(), reinterpret_cast<char*>(dst), int(in.size()), int(m));
    if (r < 0 || size_t(r) != m) return Status::Corruption("lz4 stream does not decode");
    return Status::OK();
  }
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs&, CoderEncodeScratch*,
                 std::string* out) const override {
    if (m > size_t(LZ4_MAX_INPUT_SIZE)) return false;
    out->resize(size_t(LZ4_compressBound(int(m))));
    int r = LZ4_compress_default(reinterpret_cast<const char*>(s), out->data(), int(m),
                                 int(out->size()));
    if (r <= 0) return false;
    out->resize(size_t(r));
    return true;
  }
};

}  // namespace

const StreamCoder* Lz4StreamCoder() {
  static const Lz4Coder c;
  return &c;
}

}  // namespace pstore
