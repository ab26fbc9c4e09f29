// The store's budget object in shared memory, /dev/shm/pstore-<store id>-budget:
// one page that every process of the store maps.
//
//   bytes 0-3   the over-budget flag (an atomic uint32; pager/pager.cc)
//   bytes 64-   the owner record: "PSTOREOW", a uint32 folder length, the
//               store's id (32 hex digits), then the store's folder (an
//               absolute path), so that shared memory can be traced back to
//               its store without the store (`pstore ps --orphans`)
//
// OFD locks on its bytes: byte 0 is the budget lock (write-locked while
// memory is reserved or evicted); byte 1 is read-locked by every open Pager
// for its lifetime, so that a process that can write-lock it knows no one
// uses the object. A budget object written before the owner record existed
// holds zeros there: its folder reads as unknown.
//
// Thread-safety: functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/status.h"

namespace pstore {

constexpr off_t kBudgetLockByte = 0;
constexpr off_t kBudgetInUseByte = 1;

// "/pstore-<id>-budget"
std::string BudgetObjectName(const std::string& store_id);

// Opens (creating it if needed, with mode) the store's budget object, one
// page long, and read-locks its in-use byte. If the object was removed while
// the lock was awaited, opens the new one.
Result<UniqueFd> OpenBudgetObject(const std::string& store_id, int mode);

// Writes the owner record into the mapped page unless it already says so.
// REQUIRES: page is the budget object's first page, mapped read-write.
void WriteBudgetOwner(uint8_t* page, size_t page_len, const std::string& store_id,
                      const std::string& folder);

// The folder recorded in the store's budget object; nullopt when there is no
// object or it holds no record (written by an older pstore).
std::optional<std::string> ReadBudgetOwner(const std::string& store_id);

// Unlinks the budget object if no Pager has it open. Returns whether it did
// (false also when there is none).
bool RemoveBudgetObjectIfUnused(const std::string& store_id);

// Write-locks the store's budget object's in-use byte without waiting and
// returns the descriptor that holds the lock (a Pager opening the store
// meanwhile waits until it is closed). Busy when a process has the store open,
// NotFound when there is no budget object.
Result<UniqueFd> LockBudgetObjectUnused(const std::string& store_id);

// Unlinks the budget object. REQUIRES: locked holds its in-use byte
// (LockBudgetObjectUnused).
bool RemoveBudgetObjectLocked(const std::string& store_id, const UniqueFd& locked);

// The ids of stores with objects in /dev/shm ("pstore-<32 hex digits>-...").
std::vector<std::string> ListSharedMemoryStores();

}  // namespace pstore
