// RocksDB's CRC32C with the crc32 instruction: see rocks_crc32c.h.

#include "store/rocks_crc32c.h"

#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace rocksdb::crc32c {
// RocksDB's declaration (util/crc32c.h, not an installed header). Exported,
// so that the library's own calls bind to it.
__attribute__((visibility("default"))) uint32_t Extend(uint32_t crc, const char* buf, size_t size);
}  // namespace rocksdb::crc32c

namespace pstore {
namespace {

using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);

// The mangled names of rocksdb::crc32c::Extend(unsigned, const char*,
// size_t) and of std::string rocksdb::crc32c::IsFastCrc32Supported().
constexpr char kExtendSymbol[] = "_ZN7rocksdb6crc32c6ExtendEjPKcm";
constexpr char kIsFastSymbol[] = "_ZN7rocksdb6crc32c20IsFastCrc32SupportedB5cxx11Ev";

// CRC32C (Castagnoli), reflected: the polynomial 0x1EDC6F41 bit-reversed.
struct Table {
  uint32_t t[256];
  constexpr Table() : t() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
      t[i] = c;
    }
  }
};
constexpr Table kTable;

uint32_t Portable(uint32_t crc, const char* buf, size_t n) {
  const auto* p = reinterpret_cast<const uint8_t*>(buf);
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; i++) c = kTable.t[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Hardware(uint32_t crc, const char* buf, size_t n) {
  const char* p = buf;
  uint32_t c32 = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c32 = _mm_crc32_u8(c32, uint8_t(*p++));
    n--;
  }
  uint64_t c = c32;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  c32 = uint32_t(c);
  for (; n > 0; n--) c32 = _mm_crc32_u8(c32, uint8_t(*p++));
  return ~c32;
}
#endif

// Whether f computes what ref does (RocksDB's own, when found, else the
// portable loop): the standard check value, then every length up to 300 at
// every alignment up to 8, continued from a previous value.
bool Agrees(ExtendFn f, ExtendFn ref) {
  static const char kCheck[] = "123456789";
  if (f(0, kCheck, 9) != 0xE3069283u) return false;
  char buf[320];
  uint32_t x = 0x9E3779B9u;
  for (char& b : buf) {
    x = x * 1664525u + 1013904223u;
    b = char(x >> 24);
  }
  for (size_t off = 0; off < 8; off++)
    for (size_t len = 0; len + off <= 300; len++)
      if (f(uint32_t(len * 2654435761u), buf + off, len) !=
          ref(uint32_t(len * 2654435761u), buf + off, len))
        return false;
  return true;
}

struct Choice {
  ExtendFn fn;
  const char* name;
};

// RocksDB's own functions, looked up in the loaded librocksdb itself (not
// through the process's lookup order, where the first definition may be
// this one or another pstore object's).
struct RocksOwn {
  ExtendFn extend = nullptr;
  bool fast = false;  // built with the crc32 instruction (and 3-way)
};

RocksOwn FindRocksOwn() {
  std::string path;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        const char* n = info->dlpi_name;
        if (n == nullptr || std::strstr(n, "/librocksdb.so") == nullptr) return 0;
        *static_cast<std::string*>(out) = n;
        return 1;
      },
      &path);
  RocksOwn own;
  if (path.empty()) return own;  // linked statically, or not at all
  void* h = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (h == nullptr) {
    (void)dlerror();
    return own;
  }
  // Looked up from the library's own handle: its own definition first.
  own.extend = reinterpret_cast<ExtendFn>(dlsym(h, kExtendSymbol));
  auto is_fast = reinterpret_cast<std::string (*)()>(dlsym(h, kIsFastSymbol));
  if (is_fast != nullptr) own.fast = is_fast().starts_with("Supported");
  (void)dlerror();
  dlclose(h);  // only drops the reference dlopen added: the process links librocksdb
  return own;
}

Choice Choose() {
  // Each object has its own copy of the processor's features, filled in by
  // its constructor; a library's constructor could get here before ours ran.
  __builtin_cpu_init();
  const RocksOwn rocks = FindRocksOwn();
  // A RocksDB built with the instruction computes three streams at once.
  if (rocks.extend != nullptr && rocks.fast) return {rocks.extend, "RocksDB's own"};
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2")) {
    if (Agrees(&Hardware, rocks.extend != nullptr ? rocks.extend : &Portable))
      return {&Hardware, "crc32 instruction"};
    std::fprintf(stderr,
                 "pstore: CRC32C computed with the crc32 instruction differs from RocksDB's; "
                 "RocksDB's own function is used\n");
  }
#endif
  if (rocks.extend != nullptr) return {rocks.extend, "RocksDB's own"};
  return {&Portable, "portable"};
}

std::atomic<void (*)(size_t)> observer{nullptr};

const Choice& Chosen() {
  static const Choice c = Choose();
  return c;
}

}  // namespace

const char* RocksCrc32cImplementation() {
  return Chosen().name;
}

void SetRocksCrc32cObserverForTest(void (*o)(size_t)) {
  observer.store(o);
}

uint32_t PortableCrc32c(uint32_t crc, const void* data, size_t n) {
  return Portable(crc, static_cast<const char*>(data), n);
}

}  // namespace pstore

uint32_t rocksdb::crc32c::Extend(uint32_t crc, const char* buf, size_t size) {
  if (auto* o = pstore::observer.load(std::memory_order_relaxed)) o(size);
  return pstore::Chosen().fn(crc, buf, size);
}
