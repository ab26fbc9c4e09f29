// Coder bits-tail (10), on stream 1 only, after rans2-carry on stream 0: the
// stream's k-bit values but the last lanes * CarryPerLane(k), packed, the rest
// taken from the final states of stream 0 (codec/coders/carry.h). Its length
// is implied by them.
#include "codec/bitpack.h"
#include "codec/coders/carry.h"
#include "codec/coders/registry.h"

namespace pstore {
namespace {

class BitsTailCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kBitsTail; }
  ImpliedLength implied() const override { return ImpliedLength::kCarried; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch* scratch) const override {
    // The frame parser put the rans2-carry stream just before; decoding stops
    // at its first error, so its states are this frame's.
    if (scratch->carry_lanes_log2 < 0) return Status::Corruption("bits-tail stream without carry");
    const int k = CarryWidth(a.transform);
    const size_t lanes = size_t(1) << scratch->carry_lanes_log2;
    const int per = k ? CarryPerLane(k) : 0;
    if (k == 0 || lanes * size_t(per) > m)
      return Status::Corruption("bits-tail stream is too short");
    const size_t rest = m - lanes * size_t(per);
    if (in.size() != PackedBytes(rest, k))
      return Status::Corruption("bits-tail stream has the wrong length");
    UnpackBits(reinterpret_cast<const uint8_t*>(in.data()), rest, k, dst,
               a.options.simd_level == 0);
    const uint32_t kmask = (1u << k) - 1;
    for (size_t l = 0; l < lanes; l++) {
      // DecodeBody keeps states in [2^15, 2^31).
      const uint32_t v = scratch->carry[l] - rans2::kStateLow;
      if (v >> (per * k)) return Status::Corruption("rans2-carry stream: final state mismatch");
      for (int q = 0; q < per; q++) dst[rest + l * per + q] = uint8_t((v >> (q * k)) & kmask);
    }
    scratch->carry_lanes_log2 = -1;
    return Status::OK();
  }
  // a.carry_lanes_log2: the lanes of the rans2-carry stream 0; a.carry_bits: k.
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch*,
                 std::string* out) const override {
    const int k = a.carry_bits;
    if (a.carry_lanes_log2 < 0 || k < 1) return false;
    const size_t carried = CarriedValues(a.carry_lanes_log2, k);
    if (carried > m) return false;
    const size_t rest = m - carried;
    out->assign(PackedBytes(rest, k), '\0');
    PackBits(s, rest, k, reinterpret_cast<uint8_t*>(out->data()), a.simd_level == 0);
    return true;
  }
};

}  // namespace

const StreamCoder* BitsTailStreamCoder() {
  static const BitsTailCoder c;
  return &c;
}

}  // namespace pstore
