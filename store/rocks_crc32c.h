// RocksDB's CRC32C, computed with the processor's crc32 instruction.
//
// RocksDB checksums with CRC32C every blob record (every chunk frame, so
// every byte a writer stores, and again when a verifying read checks it),
// and its WAL and MANIFEST records (table blocks use XXH3, RocksDB's
// default). Debian's librocksdb is built for any x86-64 processor, without
// SSE 4.2, so its rocksdb::crc32c::Extend is a table-driven loop of about
// 1 GB/s: a tenth of import's processor time and a fifth of pull's.
//
// store/rocks_crc32c.cc defines rocksdb::crc32c::Extend itself. The library
// calls that function through its procedure linkage table, so the dynamic
// linker binds those calls to the first definition in the process's lookup
// order: the executable's (the pstore tool, tests and benchmarks link it in
// through pstore_store) or libpstore's (which exports it, and comes before
// librocksdb, its dependency). On first use the definition looks up
// RocksDB's own function in the loaded librocksdb: if that library was built
// with the instruction, it is used; else the crc32 instruction, when the
// processor has it and its values agree with RocksDB's on a check set; else
// RocksDB's own. The values are the same either way (the standard CRC32C),
// so stores stay readable by any build of RocksDB.
//
// Where the binding does not happen, RocksDB keeps its own function and
// only the speed is lost: a librocksdb linked with -Bsymbolic or with the
// function inlined, a RocksDB linked statically, or a process that loaded
// librocksdb before libpstore (docs/architecture.md).
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore {

// Which function this definition uses: "crc32 instruction", "RocksDB's own"
// or "portable" (no librocksdb was found loaded and the processor lacks the
// instruction). Resolves the choice if no checksum has been computed yet.
// Says nothing of whether RocksDB's calls are bound to this definition.
const char* RocksCrc32cImplementation();

// CRC32C of [data, data + n) continued from crc (0 to start), the value
// rocksdb::crc32c::Extend returns, computed by the portable loop; for tests.
uint32_t PortableCrc32c(uint32_t crc, const void* data, size_t n);

// For tests: observer, if not null, is called with the length of every
// checksum computed through this definition of rocksdb::crc32c::Extend (so
// a test can see that RocksDB's own calls reach it).
void SetRocksCrc32cObserverForTest(void (*observer)(size_t n));

}  // namespace pstore
