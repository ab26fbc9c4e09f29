// libFuzzer target over the GGUF header reader (built with
// PSTORE_BUILD_FUZZERS=ON and clang; run with tests/run_gguf_fuzz.sh).
//
// The input is a whole GGUF file. ParseHeader may refuse it (any error is
// fine) but must not crash, read out of bounds or allocate without bound;
// when it accepts it, what it returns must describe the file exactly: tensors
// in offset order inside the data section, not overlapping, at multiples of
// the alignment, and the header bytes, then the filler and payloads in
// offset order, must rebuild the input byte for byte (what export does).
// Also parsed from a prefix of the input, as ReadFile does before reading
// more: the result must be an error or the same header.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "store/formats/gguf.h"

using namespace pstore;

namespace {

void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "gguf_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto h = gguf::ParseHeader(in, size, "fuzz");
  if (!h.ok()) return 0;
  Require(h->alignment != 0 && (h->alignment & (h->alignment - 1)) == 0, "bad alignment");
  Require(h->data_offset == h->header_bytes.size(), "data offset is not the header's size");
  Require(h->data_offset + h->data_size == size, "data section does not end the file");
  std::string rebuilt = h->header_bytes;
  uint64_t at = 0, filler_at = 0;
  for (const auto& t : h->tensors) {
    Require(t.offset >= at, "tensors overlap or are out of order");
    Require(t.offset % h->alignment == 0, "offset not aligned");
    Require(t.offset <= h->data_size && t.size <= h->data_size - t.offset, "tensor past the end");
    Require(t.dims.size() <= gguf::kMaxDims, "too many dimensions");
    uint64_t gap = t.offset - at;
    Require(filler_at + gap <= h->filler.size(), "filler too short");
    rebuilt.append(h->filler, size_t(filler_at), size_t(gap));
    filler_at += gap;
    rebuilt.append(in.substr(size_t(h->data_offset + t.offset), size_t(t.size)));
    at = t.offset + t.size;
  }
  Require(h->filler.size() - filler_at == h->data_size - at, "filler does not end the file");
  rebuilt.append(h->filler, size_t(filler_at), std::string::npos);
  Require(rebuilt == in, "header, filler and payloads do not rebuild the file");

  if (size > 16) {
    bool truncated = false;
    auto p = gguf::ParseHeader(in.substr(0, size / 2), size, "fuzz", &truncated);
    if (p.ok()) {
      Require(p->header_bytes == h->header_bytes && p->tensors.size() == h->tensors.size(),
              "a prefix parsed differently");
    }
  }
  return 0;
}
