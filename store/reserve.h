// STORE/RESERVE: disk space set aside so that a store whose disk is full can
// still be rescued with pstore's own commands.
//
// Opening RocksDB as the writer must write (a new MANIFEST, an OPTIONS file,
// the WAL), and so must rm and compact; on a disk with no byte free they
// could never run, and compact is the command that frees space. The writer
// keeps kReserveBytes allocated in RESERVE while the disk has room for it;
// rm and compact release it first when the disk is nearly full (tag, which
// frees nothing, does not), an import that runs out of space releases it to
// take its chunks out again, and imports and compact allocate it again once
// there is room. Imports never use it: an import or pull that does not fit
// fails with "no space" and leaves the reserve, and one that finds the
// reserve gone and no room to allocate it again fails before writing a
// chunk (StoreWriter::CheckReserve).
//
// Limit: compact's forced compaction of the chunk family writes new SST
// files before it deletes the old ones; with the reserve alone free, that
// fits while the chunk family's SST files are smaller than the reserve
// (about 40 bytes a chunk: some 100,000 chunks).
//
// Thread-safety: reentrant; called by the one writer.
#pragma once

#include <cstdint>
#include <string>

#include "store/store_dir.h"

namespace pstore {

constexpr uint64_t kReserveBytes = 4ull << 20;

std::string ReservePath(const StorePaths& p);
// Bytes free for unprivileged use on the file system holding path.
uint64_t FreeDiskBytes(const std::string& path);
// Allocates the reserve unless it exists or the disk lacks room for it and
// as much again. Best effort: returns whether the reserve exists afterwards.
bool RestoreReserve(const StorePaths& p);
// Deletes the reserve, returning its space to the disk. Returns whether there
// was one.
bool ReleaseReserve(const StorePaths& p);
// DiskUsage of the store's folder without the reserve: what its data takes.
uint64_t StoreDiskUsage(const StorePaths& p);
// Removes RocksDB's OPTIONS-*.dbtmp files from db/ (an options file that a
// full disk kept from being completed).
void RemoveDbTempFiles(const StorePaths& p);

}  // namespace pstore
