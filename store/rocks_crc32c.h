// RocksDB's CRC32C, computed with the processor's crc32 instruction.
//
// RocksDB checksums every record it writes with CRC32C: each blob record
// (every chunk frame, so every byte a writer stores), WAL records, table
// blocks. Debian's librocksdb is built for any x86-64 processor, without
// SSE 4.2, so its rocksdb::crc32c::Extend is a table-driven loop of about
// 1 GB/s: a tenth of import's processor time and a fifth of pull's.
//
// store/rocks_crc32c.cc defines rocksdb::crc32c::Extend itself. The library
// calls that function through its procedure linkage table, so the dynamic
// linker binds those calls to the first definition in the process's lookup
// order: the executable's (the pstore tool, tests and benchmarks link it in
// through pstore_store) or libpstore's (which exports it). The definition
// uses the crc32 instruction when the processor has it and checks itself
// against RocksDB's own function once; otherwise, and if that check fails,
// it calls RocksDB's own (found with dlsym(RTLD_NEXT)), so the values are
// the same either way and stores stay readable by any build.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore {

// Which function computes RocksDB's checksums in this process:
// "crc32 instruction", "RocksDB's own" or "portable" (neither of the others
// was usable). Resolves the choice if no checksum has been computed yet.
const char* RocksCrc32cImplementation();

// CRC32C of [data, data + n) continued from crc (0 to start), the value
// rocksdb::crc32c::Extend returns, computed by the portable loop; for tests.
uint32_t PortableCrc32c(uint32_t crc, const void* data, size_t n);

// For tests: observer, if not null, is called with the length of every
// checksum computed through rocksdb::crc32c::Extend in this process (so a
// test can see that RocksDB's own calls reach this definition).
void SetRocksCrc32cObserverForTest(void (*observer)(size_t n));

}  // namespace pstore
