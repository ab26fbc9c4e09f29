// Coder rans2-carry (9), on stream 0 only: order-0 rANS of the second format
// with compact states, whose lanes start from states that carry the last
// values of stream 1 (codec/coders/carry.h). Decoding keeps the final states
// in the scratch for the bits-tail stream that follows.
#include "codec/bitpack.h"
#include "codec/coders/carry.h"
#include "codec/coders/registry.h"

namespace pstore {
namespace {

class Rans2CarryCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRans2Carry; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch* scratch) const override {
    scratch->carry_lanes_log2 = -1;
    rans2::DecodeArgs d;
    d.final = scratch->carry;
    d.lanes_log2 = &scratch->carry_lanes_log2;
    d.compact = true;
    d.simd_level = a.options.simd_level;
    return rans2::DecodeOrder0(in, m, dst, &scratch->dtab, d);
  }
  // a.plan: the stream's plan; a.carry: stream 1, whose values fit
  // a.carry_bits bits. False when stream 1 is too short to carry a whole lane.
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch* scratch,
                 std::string* out) const override {
    if (!a.plan || !a.carry || a.carry_bits < 1) return false;
    const size_t lanes = size_t(1) << a.plan->lanes_log2;
    const int per = CarryPerLane(a.carry_bits);
    if (lanes * size_t(per) > m) return false;
    // The next stream's last lanes * per values ride in the states.
    const uint8_t* tail = a.carry + (m - lanes * size_t(per));
    uint32_t init[1 << kMaxLanesLog2];
    for (size_t l = 0; l < lanes; l++) {
      uint32_t v = 0;
      for (int q = 0; q < per; q++) v |= uint32_t(tail[l * per + q]) << (q * a.carry_bits);
      init[l] = rans2::kStateLow + v;
    }
    rans2::EncodeArgs e;
    e.scratch = &scratch->rans;
    e.init = init;
    e.compact = true;
    e.simd_level = a.simd_level;
    rans2::EncodeOrder0(s, m, *a.plan, out, e);
    return true;
  }
};

}  // namespace

// What a rans2-carry stream of plan's lanes saves stream 1 (m values of k bits).
size_t CarryCredit(size_t m, int lanes_log2, int k) {
  const size_t carried = CarriedValues(lanes_log2, k);
  return PackedBytes(m, k) - PackedBytes(m - carried, k);
}

const StreamCoder* Rans2CarryStreamCoder() {
  static const Rans2CarryCoder c;
  return &c;
}

}  // namespace pstore
