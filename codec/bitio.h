// Internal to codec/: a bit writer and a bounds-checked bit reader, least
// significant bit first, with Exp-Golomb codes. Used by the compact rANS
// tables (codec/rans2.h); the layout is in docs/codec.md.
//
// Thread-safety: values owned by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace pstore {

class BitWriter {
 public:
  explicit BitWriter(std::string* out) : out_(out) {}
  ~BitWriter() { Flush(); }

  // Appends the low n bits of v (n <= 32).
  void Put(uint32_t v, int n) {
    acc_ |= uint64_t(v & (n == 32 ? ~0u : ((1u << n) - 1))) << fill_;
    fill_ += n;
    while (fill_ >= 8) {
      out_->push_back(char(uint8_t(acc_)));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  // Exp-Golomb code of order k of v (v < 2^31).
  void PutExpGolomb(uint32_t v, int k) {
    uint32_t u = (v >> k) + 1;
    int nb = 31 - __builtin_clz(u);
    Put(0, nb);
    Put(1, 1);
    Put(u, nb);  // the low nb bits of u (its top bit is the 1 just written)
    Put(v, k);
  }
  void PutSigned(int32_t v, int k) { PutExpGolomb(uint32_t(v < 0 ? -2 * v - 1 : 2 * v), k); }
  // Pads to a whole byte with zero bits.
  void Flush() {
    if (fill_ > 0) out_->push_back(char(uint8_t(acc_)));
    acc_ = 0;
    fill_ = 0;
  }
  static int ExpGolombBits(uint32_t v, int k) {
    uint32_t u = (v >> k) + 1;
    return 2 * (31 - __builtin_clz(u)) + 1 + k;
  }
  static int SignedBits(int32_t v, int k) {
    return ExpGolombBits(uint32_t(v < 0 ? -2 * v - 1 : 2 * v), k);
  }

 private:
  std::string* out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// Reads what a BitWriter wrote. Every Get fails (returns false) rather than
// read past the end.
class BitReader {
 public:
  BitReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}

  bool Get(int nbits, uint32_t* v) {
    if (avail_ < nbits) {
      Refill();
      if (avail_ < nbits) return false;
    }
    *v = uint32_t(buf_ & ((uint64_t(1) << nbits) - 1));
    Consume(nbits);
    return true;
  }
  bool GetExpGolomb(int k, uint32_t* v) {
    if (avail_ < 40) Refill();
    // Fast path: the whole code is buffered.
    if (buf_ != 0) {
      const int nb = __builtin_ctzll(buf_);
      const int len = 2 * nb + 1 + k;
      if (len <= avail_ && len <= 40) {
        const uint64_t u = (uint64_t(1) << nb) | ((buf_ >> (nb + 1)) & ((uint64_t(1) << nb) - 1));
        const uint64_t tail = (buf_ >> (2 * nb + 1)) & ((uint64_t(1) << k) - 1);
        *v = uint32_t(((u - 1) << k) | tail);
        Consume(len);
        return true;
      }
    }
    // The zero prefix (at most 30 bits) and its terminating 1 must be buffered.
    const uint64_t window = avail_ >= 64 ? buf_ : buf_ & ((uint64_t(1) << avail_) - 1);
    if (window == 0) return false;
    const int nb = __builtin_ctzll(window);
    if (nb > 30) return false;
    Consume(nb + 1);
    uint32_t low, tail;
    if (!Get(nb, &low) || !Get(k, &tail)) return false;
    uint64_t u = (uint64_t(1) << nb) | low;
    uint64_t val = ((u - 1) << k) | tail;
    if (val > 0x7fffffffu) return false;
    *v = uint32_t(val);
    return true;
  }
  bool GetSigned(int k, int32_t* v) {
    uint32_t z;
    if (!GetExpGolomb(k, &z)) return false;
    *v = (z & 1) ? -int32_t((z + 1) >> 1) : int32_t(z >> 1);
    return true;
  }
  // Bytes consumed so far, counting a partly read byte as whole.
  size_t BytesUsed() const { return (8 * pos_ - size_t(avail_) + 7) >> 3; }

 private:
  // Tops the buffer up to at least 57 bits where the input allows.
  void Refill() {
    if (pos_ + 8 <= n_) {
      uint64_t w;
      std::memcpy(&w, p_ + pos_, 8);        // little-endian host
      const int take = (63 - avail_) >> 3;  // whole bytes that fit
      buf_ |= (w & ((uint64_t(1) << (8 * take)) - 1)) << avail_;
      pos_ += size_t(take);
      avail_ += 8 * take;
      return;
    }
    while (avail_ <= 56 && pos_ < n_) {
      buf_ |= uint64_t(p_[pos_++]) << avail_;
      avail_ += 8;
    }
  }
  void Consume(int nbits) {
    buf_ = nbits >= 64 ? 0 : buf_ >> nbits;
    avail_ -= nbits;
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;  // next byte to load into buf_
  uint64_t buf_ = 0;
  int avail_ = 0;  // bits in buf_
};

}  // namespace pstore
