// RocksDB's CRC32C computed by store/rocks_crc32c.cc: the same values as
// RocksDB's own function, and RocksDB's own calls reach it.

#include "store/rocks_crc32c.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "store/rocks.h"
#include "tests/test_files.h"

namespace rocksdb::crc32c {
uint32_t Extend(uint32_t crc, const char* buf, size_t size);
}

namespace pstore {
namespace {

using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);
constexpr char kExtendSymbol[] = "_ZN7rocksdb6crc32c6ExtendEjPKcm";

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

TEST(RocksCrc32c, PortableLoopGivesTheStandardCheckValue) {
  EXPECT_EQ(PortableCrc32c(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(PortableCrc32c(0, "", 0), 0u);
  // 32 bytes of zeros: a value from RFC 3720 (iSCSI), appendix B.4.
  const std::string zeros(32, '\0');
  EXPECT_EQ(PortableCrc32c(0, zeros.data(), zeros.size()), 0x8A9136AAu);
}

// RocksDB's own functions, from the loaded librocksdb's handle.
struct RocksOwn {
  ExtendFn extend = nullptr;
  std::string is_fast;
};
RocksOwn FindRocksOwn() {
  RocksOwn own;
  void* ours = dlsym(RTLD_DEFAULT, kExtendSymbol);
  Dl_info info{};
  if (ours == nullptr) return own;
  // Any RocksDB function the test links; its object is librocksdb.
  auto* probe = dlsym(RTLD_DEFAULT, "_ZN7rocksdb6crc32c20IsFastCrc32SupportedB5cxx11Ev");
  if (probe == nullptr || dladdr(probe, &info) == 0) return own;
  void* h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (h == nullptr) return own;
  own.extend = reinterpret_cast<ExtendFn>(dlsym(h, kExtendSymbol));
  own.is_fast = reinterpret_cast<std::string (*)()>(probe)();
  dlclose(h);
  return own;
}

TEST(RocksCrc32c, ThisProcessBindsRocksDbsFunctionToOurs) {
  // The executable exports its definition, so the dynamic linker binds
  // every caller of the symbol, librocksdb's own calls included, to it.
  EXPECT_EQ(dlsym(RTLD_DEFAULT, kExtendSymbol), reinterpret_cast<void*>(&rocksdb::crc32c::Extend));
  const RocksOwn own = FindRocksOwn();
  ASSERT_NE(own.extend, nullptr);
  ASSERT_NE(own.extend, &rocksdb::crc32c::Extend);
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(own.extend), &info), 0);
  EXPECT_NE(std::string(info.dli_fname).find("librocksdb"), std::string::npos) << info.dli_fname;
#if defined(__x86_64__)
  if (own.is_fast.starts_with("Supported")) {
    EXPECT_STREQ(RocksCrc32cImplementation(), "RocksDB's own") << own.is_fast;
  } else if (__builtin_cpu_supports("sse4.2")) {
    EXPECT_STREQ(RocksCrc32cImplementation(), "crc32 instruction") << own.is_fast;
  }
#endif
}

TEST(RocksCrc32c, SameValuesAsRocksDbsOwnFunction) {
  const ExtendFn rocks = FindRocksOwn().extend;
  ASSERT_NE(rocks, nullptr) << "librocksdb's own definition was not found";
  ASSERT_NE(rocks, &rocksdb::crc32c::Extend);
  const std::string data = RandomBytes((1 << 20) + 64, 7);
  std::mt19937 rng(11);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 64; n++) lengths.push_back(n);
  for (int i = 0; i < 200; i++) lengths.push_back(rng() % (1 << 20));
  lengths.push_back(1 << 20);
  for (size_t n : lengths) {
    const size_t off = rng() % 64;
    const uint32_t start = (n % 3 == 0) ? 0 : uint32_t(rng());
    const char* p = data.data() + off;
    const uint32_t want = rocks(start, p, n);
    ASSERT_EQ(rocksdb::crc32c::Extend(start, p, n), want) << "length " << n << " offset " << off;
    ASSERT_EQ(PortableCrc32c(start, p, n), want) << "length " << n << " offset " << off;
    // Continued in two pieces, as RocksDB extends a header's value over a blob.
    const size_t cut = n == 0 ? 0 : rng() % n;
    EXPECT_EQ(rocksdb::crc32c::Extend(rocksdb::crc32c::Extend(start, p, cut), p + cut, n - cut),
              want);
  }
}

std::mutex observed_mu;
std::vector<size_t> observed;
void Observe(size_t n) {
  std::lock_guard<std::mutex> l(observed_mu);
  observed.push_back(n);
}

TEST(RocksCrc32c, BlobFilesWrittenAndReadThroughIt) {
  testing_util::TempDir dir;
  const std::string value = RandomBytes(256 << 10, 3);
  SetRocksCrc32cObserverForTest(&Observe);
  {
    auto db = RocksDb::OpenPrimary(dir.path() + "/db", nullptr);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;
    ASSERT_TRUE((*db)->db()->Put(wo, (*db)->chunks(), "key-of-sixteen-b", value).ok());
    rocksdb::FlushOptions fo;
    ASSERT_TRUE((*db)->db()->Flush(fo, (*db)->chunks()).ok());
  }
  auto db = RocksDb::OpenReadOnly(dir.path() + "/db");
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string got;
  ASSERT_TRUE((*db)->db()->Get(ro, (*db)->chunks(), "key-of-sixteen-b", &got).ok());
  EXPECT_EQ(got, value);
  SetRocksCrc32cObserverForTest(nullptr);
  std::lock_guard<std::mutex> l(observed_mu);
  // The blob record's checksum covers the value (stored as it is: the chunks'
  // family keeps values of 4 KiB or more in blob files, uncompressed, in
  // store/rocks.cc): once when the flush wrote it, once when the read
  // checked it.
  EXPECT_GE(std::count(observed.begin(), observed.end(), value.size()), 2) << observed.size();
}

TEST(RocksCrc32c, LibpstoreExportsItsDefinition) {
  void* h = dlopen(PSTORE_LIB, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << dlerror();
  auto* f = reinterpret_cast<ExtendFn>(dlsym(h, kExtendSymbol));
  ASSERT_NE(f, nullptr);
  // Found in libpstore itself, ahead of librocksdb, its dependency.
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(f), &info), 0);
  EXPECT_NE(std::string(info.dli_fname).find("libpstore"), std::string::npos) << info.dli_fname;
  EXPECT_EQ(f(0, "123456789", 9), 0xE3069283u);
  // Left loaded: unloading a library with threads and static objects is not
  // what this test is about.
}

}  // namespace
}  // namespace pstore
