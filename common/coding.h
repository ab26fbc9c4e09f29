// Little-endian fixed-width integers and LEB128 varints, as pstore writes them
// to disk (frames, manifests, records). A Reader never reads past its end: each
// Get* returns false instead, so parsers of on-disk bytes fail cleanly on
// truncated or lying input.
//
// Thread-safety: free functions are pure; a Reader is a cursor owned by one thread.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace pstore {

inline void PutFixed16(std::string* dst, uint16_t v) {
  char b[2] = {char(v), char(v >> 8)};
  dst->append(b, 2);
}
inline void PutFixed32(std::string* dst, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; i++) b[i] = char(v >> (8 * i));
  dst->append(b, 4);
}
inline void PutFixed64(std::string* dst, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; i++) b[i] = char(v >> (8 * i));
  dst->append(b, 8);
}
inline void PutVarint(std::string* dst, uint64_t v) {
  while (v >= 0x80) {
    dst->push_back(char(v | 0x80));
    v >>= 7;
  }
  dst->push_back(char(v));
}
// A length-prefixed byte string: varint length, then the bytes.
inline void PutBytes(std::string* dst, std::string_view s) {
  PutVarint(dst, s.size());
  dst->append(s);
}

inline uint32_t LoadLE32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // pstore targets little-endian hosts only (checked in CMake)
}
inline uint64_t LoadLE64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// A bounds-checked cursor over bytes that came from disk.
class Reader {
 public:
  explicit Reader(std::string_view s)
      : p_(reinterpret_cast<const uint8_t*>(s.data())), end_(p_ + s.size()) {}
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}

  size_t remaining() const { return size_t(end_ - p_); }
  bool empty() const { return p_ == end_; }
  const uint8_t* pos() const { return p_; }

  bool GetU8(uint8_t* v) {
    if (p_ == end_) return false;
    *v = *p_++;
    return true;
  }
  bool GetFixed16(uint16_t* v) {
    if (remaining() < 2) return false;
    *v = uint16_t(p_[0] | (p_[1] << 8));
    p_ += 2;
    return true;
  }
  bool GetFixed32(uint32_t* v) {
    if (remaining() < 4) return false;
    *v = LoadLE32(p_);
    p_ += 4;
    return true;
  }
  bool GetFixed64(uint64_t* v) {
    if (remaining() < 8) return false;
    *v = LoadLE64(p_);
    p_ += 8;
    return true;
  }
  bool GetVarint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift <= 63 && p_ < end_; shift += 7) {
      uint64_t byte = *p_++;
      if (shift == 63 && byte > 1) return false;  // overflows 64 bits
      result |= (byte & 0x7f) << shift;
      if (!(byte & 0x80)) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool GetBytes(size_t n, std::string_view* out) {
    if (remaining() < n) return false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  // A varint length, then that many bytes.
  bool GetLengthPrefixed(std::string_view* out) {
    uint64_t n;
    return GetVarint(&n) && n <= remaining() && GetBytes(size_t(n), out);
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace pstore
