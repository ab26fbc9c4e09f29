// Coder zstd (3): a Zstandard frame of the stream (level from the profile).
#include <zstd.h>
#include <zstd_errors.h>

#include <new>

#include "codec/coders/registry.h"

namespace pstore {
namespace {

class ZstdCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kZstd; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs&,
                CoderDecodeScratch* scratch) const override {
    size_t r = ZSTD_decompressDCtx(scratch->Zstd(), dst, m, in.data(), in.size());
    // Running out of memory says nothing about the bytes: it is not damage.
    if (ZSTD_isError(r) && ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
      throw std::bad_alloc();
    if (ZSTD_isError(r) || r != m)
      return Status::Corruption(std::string("zstd stream does not decode: ") +
                                (ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong length"));
    return Status::OK();
  }
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch* scratch,
                 std::string* out) const override {
    out->resize(ZSTD_compressBound(m));
    size_t r = ZSTD_compressCCtx(scratch->zc, out->data(), out->size(), s, m, a.zstd_level);
    if (ZSTD_isError(r)) return false;
    out->resize(r);
    return true;
  }
};

}  // namespace

const StreamCoder* ZstdStreamCoder() {
  static const ZstdCoder c;
  return &c;
}

}  // namespace pstore
