// The table of stream coders by id, their names, and the scratch they share.
#include "codec/coders/registry.h"

#include <zstd.h>

namespace pstore {

CoderDecodeScratch::CoderDecodeScratch() = default;
CoderDecodeScratch::~CoderDecodeScratch() {
  ZSTD_freeDCtx(zd);
}
ZSTD_DCtx_s* CoderDecodeScratch::Zstd() {
  if (zd == nullptr) zd = ZSTD_createDCtx();
  return zd;
}
void CoderDecodeScratch::Release() {
  PageVector<uint8_t>().swap(ctx);
  PageVector<uint32_t>().swap(dtab);
  ZSTD_freeDCtx(zd);
  zd = nullptr;
}
CoderEncodeScratch::CoderEncodeScratch() : zc(ZSTD_createCCtx()) {}
CoderEncodeScratch::~CoderEncodeScratch() {
  ZSTD_freeCCtx(zc);
}

std::string_view CoderName(Coder c) {
  switch (c) {
    case Coder::kRaw:
      return "raw";
    case Coder::kConst:
      return "const";
    case Coder::kLz4:
      return "lz4";
    case Coder::kZstd:
      return "zstd";
    case Coder::kRans:
      return "rans";
    case Coder::kRansCtx:
      return "rans-ctx";
    case Coder::kRans2:
      return "rans2";
    case Coder::kRans2Ctx:
      return "rans2-ctx";
    case Coder::kBits:
      return "bits";
    case Coder::kRans2Carry:
      return "rans2-carry";
    case Coder::kBitsTail:
      return "bits-tail";
  }
  return "?";
}

const StreamCoder* CoderFor(uint8_t id) {
  static const StreamCoder* const kCoders[kMaxCoderId + 1] = {
      RawStreamCoder(),  ConstStreamCoder(),      Lz4StreamCoder(),      ZstdStreamCoder(),
      RansStreamCoder(), RansCtxStreamCoder(),    Rans2StreamCoder(),    Rans2CtxStreamCoder(),
      BitsStreamCoder(), Rans2CarryStreamCoder(), BitsTailStreamCoder(),
  };
  return id <= kMaxCoderId ? kCoders[id] : nullptr;
}

}  // namespace pstore
