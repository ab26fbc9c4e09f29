// Coder raw (0): the stream as it is; its payload length is the stream's.
#include <cstring>

#include "codec/coders/registry.h"

namespace pstore {
namespace {

class RawCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRaw; }
  ImpliedLength implied() const override { return ImpliedLength::kStream; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs&,
                CoderDecodeScratch*) const override {
    if (in.size() != m) return Status::Corruption("raw stream has the wrong length");
    if (m) std::memcpy(dst, in.data(), m);
    return Status::OK();
  }
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs&, CoderEncodeScratch*,
                 std::string* out) const override {
    out->assign(reinterpret_cast<const char*>(s), m);
    return true;
  }
};

}  // namespace

const StreamCoder* RawStreamCoder() {
  static const RawCoder c;
  return &c;
}

}  // namespace pstore
