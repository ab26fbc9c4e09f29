// The table of stream coders by id, their names, and the scratch they share.
#include "codec/coders/registry.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_createDCtx_advanced
#include <zstd.h>

#include <cstring>
#include <new>

namespace pstore {

CoderDecodeScratch::CoderDecodeScratch() = default;
CoderDecodeScratch::~CoderDecodeScratch() {
  ZSTD_freeDCtx(zd);
}
namespace {

// The Zstandard context's memory is mapped like the decoder's other scratch
// (common/page_allocator.h), so that freeing it leaves nothing in the
// thread's malloc arena. Each block starts with its size, which Zstandard
// does not pass back when it frees.
constexpr size_t kBlockHeader = 64;

void* ZstdAlloc(void*, size_t n) {
  try {
    uint8_t* p = PageAllocator<uint8_t>().allocate(n + kBlockHeader);
    std::memcpy(p, &n, sizeof(n));
    return p + kBlockHeader;
  } catch (const std::bad_alloc&) {
    return nullptr;  // Zstandard is C: it sees a null block
  }
}

void ZstdFree(void*, void* block) {
  if (block == nullptr) return;
  uint8_t* p = static_cast<uint8_t*>(block) - kBlockHeader;
  size_t n;
  std::memcpy(&n, p, sizeof(n));
  PageAllocator<uint8_t>().deallocate(p, n + kBlockHeader);
}

}  // namespace

ZSTD_DCtx_s* CoderDecodeScratch::Zstd() {
  if (zd == nullptr) zd = ZSTD_createDCtx_advanced(ZSTD_customMem{ZstdAlloc, ZstdFree, nullptr});
  if (zd == nullptr) throw std::bad_alloc();
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
