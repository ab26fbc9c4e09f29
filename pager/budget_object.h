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

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "pager/segment.h"
#include "pager/shm_object.h"

namespace pstore {

constexpr off_t kBudgetLockByte = 0;
constexpr off_t kBudgetInUseByte = 1;

// "/pstore-<id>-budget"
std::string BudgetObjectName(const std::string& store_id);

// The store's budget object as an open store holds it: the object, whose
// in-use byte it read-locks for as long as it has it, and its page, mapped
// read-write. Both go with it (Boost's owners, pager/shm_object.h).
class BudgetObject {
 public:
  BudgetObject() = default;
  // The descriptor, for the budget lock (pager/budget_lock.h).
  int fd() const { return ShmFd(obj_); }
  uint8_t* page() const { return Bytes(page_); }
  size_t page_len() const { return page_.get_size(); }
  // Set while the store is over budget because of pins (bytes 0-3).
  std::atomic<uint32_t>* over_budget() const {
    return reinterpret_cast<std::atomic<uint32_t>*>(page_.get_address());
  }

 private:
  friend Result<BudgetObject> OpenBudgetObject(const std::string&, const Segment::Options&);
  bip::shared_memory_object obj_;
  bip::mapped_region page_;
};

// Opens (creating it if needed) the store's budget object and read-locks its
// in-use byte; if the object was removed while the lock was awaited, opens
// the new one. Gives it opt's mode and group, allocates its page and maps it.
Result<BudgetObject> OpenBudgetObject(const std::string& store_id, const Segment::Options& opt);

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
// returns the object that holds the lock (a Pager opening the store
// meanwhile waits until it is closed). Busy when a process has the store open,
// NotFound when there is no budget object.
Result<bip::shared_memory_object> LockBudgetObjectUnused(const std::string& store_id);

// Unlinks the budget object. REQUIRES: locked holds its in-use byte
// (LockBudgetObjectUnused).
bool RemoveBudgetObjectLocked(const std::string& store_id, const bip::shared_memory_object& locked);

// The ids of stores with objects in /dev/shm ("pstore-<32 hex digits>-...").
std::vector<std::string> ListSharedMemoryStores();

}  // namespace pstore
