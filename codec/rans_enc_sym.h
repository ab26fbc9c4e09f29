// Internal to codec/: the per-symbol constants both rANS encoders use, so
// that dividing a state by a frequency is a multiply by a reciprocal (exact
// for states below 2^31, which both formats keep to).
#pragma once

#include <cstdint>

namespace pstore::rans_internal {

struct EncSym {
  uint32_t x_max;  // renormalise (emit 16 bits) while the state is at least this
  uint32_t rcp_freq;
  uint32_t bias;
  uint16_t cmpl_freq;
  uint16_t rcp_shift;
};

// For a symbol with cumulative frequency start and frequency freq, at a
// precision of prob_bits (frequencies sum to 2^prob_bits).
inline void InitEncSym(EncSym* e, uint32_t start, uint32_t freq, int prob_bits) {
  const uint32_t scale = 1u << prob_bits;
  e->x_max = freq << (31 - prob_bits);
  e->cmpl_freq = uint16_t(scale - freq);
  if (freq < 2) {
    e->rcp_freq = ~0u;
    e->rcp_shift = 0;
    e->bias = start + scale - 1;
  } else {
    uint32_t shift = 0;
    while (freq > (1u << shift)) shift++;
    e->rcp_freq = uint32_t(((1ull << (shift + 31)) + freq - 1) / freq);
    e->rcp_shift = uint16_t(shift - 1);
    e->bias = start;
  }
}

}  // namespace pstore::rans_internal
