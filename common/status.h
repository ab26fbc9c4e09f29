// Status and Result<T>: how every layer of pstore reports failure.
//
// A Status is either OK (cheap: no allocation) or a code plus a message that
// says what went wrong and, where it can, what to do about it. Exceptions
// thrown by the standard library, RocksDB's C++ wrappers or Boost stop inside
// the layer that called them and come out as a Status.
//
// Thread-safety: a Status or Result is a value; distinct objects may be used
// from distinct threads without synchronisation.
#pragma once

#include <cassert>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pstore {

class Status {
 public:
  // Codes are stable: tools map them to exit codes and the C API to
  // pstore_status values.
  enum class Code : int {
    kOk = 0,
    kNotFound = 1,
    kCorruption = 2,
    kInvalidArgument = 3,
    kIOError = 4,
    kBusy = 5,     // another process holds what is needed (e.g. the writer lock)
    kNoSpace = 6,  // disk or shared memory full
    kUnsupported = 7,
    kExists = 8,
    kInternal = 9,
    kAborted = 10,   // the caller asked to stop (progress callback)
    kNoMemory = 11,  // an allocation failed (std::bad_alloc)
  };

  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status IOError(std::string_view msg) { return Status(Code::kIOError, msg); }
  // IOError from errno: "<context>: <strerror(err)>"; ENOSPC and EDQUOT map to kNoSpace.
  static Status FromErrno(std::string_view context, int err);
  static Status Busy(std::string_view msg) { return Status(Code::kBusy, msg); }
  static Status NoSpace(std::string_view msg) { return Status(Code::kNoSpace, msg); }
  static Status Unsupported(std::string_view msg) { return Status(Code::kUnsupported, msg); }
  static Status Exists(std::string_view msg) { return Status(Code::kExists, msg); }
  static Status Internal(std::string_view msg) { return Status(Code::kInternal, msg); }
  static Status Aborted(std::string_view msg) { return Status(Code::kAborted, msg); }
  // What a caught std::bad_alloc becomes, in every layer.
  static Status NoMemory(std::string_view msg) { return Status(Code::kNoMemory, msg); }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  bool IsNotFound() const { return code() == Code::kNotFound; }
  bool IsCorruption() const { return code() == Code::kCorruption; }
  bool IsInvalidArgument() const { return code() == Code::kInvalidArgument; }
  bool IsBusy() const { return code() == Code::kBusy; }
  bool IsNoSpace() const { return code() == Code::kNoSpace; }

  // The message alone, without the code's name ("" for OK).
  const std::string& message() const;
  // "<code name>: <message>", or "OK".
  std::string ToString() const;
  static const char* CodeName(Code code);

  // Returns a copy whose message is "<prefix>: <message>" (OK stays OK).
  // The copy keeps the remote mark.
  Status WithContext(std::string_view prefix) const;

  // A copy marked as being about a remote's copy of the data (its message
  // says what to do there), so that readers add no advice for this host's
  // store. The code is unchanged (OK stays OK).
  Status MarkedRemote() const;
  bool IsRemote() const { return rep_ != nullptr && rep_->remote; }

 private:
  struct Rep {
    Code code;
    std::string msg;
    bool remote = false;  // MarkedRemote
  };
  Status(Code code, std::string_view msg, bool remote = false)
      : rep_(std::make_shared<const Rep>(Rep{code, std::string(msg), remote})) {}
  std::shared_ptr<const Rep> rep_;  // null means OK
};

// A value or a non-OK Status.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result built from an OK status carries no value");
    if (status_.ok()) status_ = Status::Internal("Result built from OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok()
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace pstore

// Return early from the enclosing function when `expr` yields a non-OK Status.
#define PSTORE_RETURN_IF_ERROR(expr) \
  do {                               \
    ::pstore::Status _st = (expr);   \
    if (!_st.ok()) return _st;       \
  } while (0)

#define PSTORE_CONCAT_INNER(a, b) a##b
#define PSTORE_CONCAT(a, b) PSTORE_CONCAT_INNER(a, b)
// `PSTORE_ASSIGN_OR_RETURN(auto x, F())`: declares x from a Result, or returns its Status.
#define PSTORE_ASSIGN_OR_RETURN(lhs, expr)                                                  \
  auto PSTORE_CONCAT(_res_, __LINE__) = (expr);                                             \
  if (!PSTORE_CONCAT(_res_, __LINE__).ok()) return PSTORE_CONCAT(_res_, __LINE__).status(); \
  lhs = std::move(PSTORE_CONCAT(_res_, __LINE__)).value()
