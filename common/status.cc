#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace pstore {

Status Status::FromErrno(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return NoSpace(msg);
  if (err == ENOENT) return NotFound(msg);
  if (err == EWOULDBLOCK || err == EBUSY) return Busy(msg);
  if (err == EINVAL) return InvalidArgument(msg);
  return IOError(msg);
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->msg : kEmpty;
}

const char* Status::CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kNotFound:
      return "not found";
    case Code::kCorruption:
      return "corruption";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kIOError:
      return "I/O error";
    case Code::kBusy:
      return "busy";
    case Code::kNoSpace:
      return "no space";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kExists:
      return "already exists";
    case Code::kInternal:
      return "internal error";
    case Code::kAborted:
      return "aborted";
    case Code::kNoMemory:
      return "out of memory";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code());
  s += ": ";
  s += rep_->msg;
  return s;
}

Status Status::WithContext(std::string_view prefix) const {
  if (ok()) return *this;
  std::string msg(prefix);
  msg += ": ";
  msg += rep_->msg;
  return Status(rep_->code, msg, rep_->remote);
}

Status Status::MarkedRemote() const {
  if (ok() || rep_->remote) return *this;
  return Status(rep_->code, rep_->msg, true);
}

}  // namespace pstore
