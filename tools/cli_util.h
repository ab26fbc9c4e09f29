// Shared pieces of the pstore command: exit codes, sizes for humans, the
// progress line, and reporting errors.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/status.h"

namespace pstore::cli {

// Exit codes (documented in docs/cli.md and `pstore --help`).
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // I/O or internal error
  kExitUsage = 2,        // bad command line
  kExitNotFound = 3,     // no such model, store or file
  kExitInvalid = 4,      // malformed input file or bad name
  kExitCorrupt = 5,      // corruption found (verify, export)
  kExitBusy = 6,         // another process holds the writer lock
  kExitNoSpace = 7,      // disk or shared memory full
  kExitExists = 8,       // the name is taken (use --force)
  kExitInterrupted = 9,  // stopped by a signal
};

inline int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kNotFound:
      return kExitNotFound;
    case Status::Code::kInvalidArgument:
      return kExitInvalid;
    case Status::Code::kCorruption:
      return kExitCorrupt;
    case Status::Code::kBusy:
      return kExitBusy;
    case Status::Code::kNoSpace:
      return kExitNoSpace;
    case Status::Code::kExists:
      return kExitExists;
    case Status::Code::kAborted:
      return kExitInterrupted;
    default:
      return kExitError;
  }
}

// "1.50 GB", "12.0 MB", "512 B" (decimal units, as disk sizes are quoted).
inline std::string HumanBytes(double b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, u++;
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof(buf), "%.0f B", b);
  else
    std::snprintf(buf, sizeof(buf), "%.*f %s", b < 10 ? 2 : b < 100 ? 1 : 0, b, units[u]);
  return buf;
}

// A one-line progress display on a terminal (stderr); silent otherwise.
class ProgressLine {
 public:
  ProgressLine(const char* verb, bool enabled)
      : verb_(verb), enabled_(enabled && ::isatty(2)), start_(std::chrono::steady_clock::now()) {}
  ~ProgressLine() { Finish(); }
  // Returns false when the user interrupted (SIGINT/SIGTERM).
  bool Update(uint64_t done, uint64_t total) {
    if (enabled_) {
      double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::fprintf(stderr, "\r%s %s / %s (%3.0f%%) %s/s   ", verb_,
                   HumanBytes(double(done)).c_str(), HumanBytes(double(total)).c_str(),
                   total ? 100.0 * double(done) / double(total) : 100.0,
                   HumanBytes(secs > 0 ? double(done) / secs : 0).c_str());
      shown_ = true;
    }
    return !Interrupted();
  }
  void Finish() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }
  static bool Interrupted();

 private:
  const char* verb_;
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace pstore::cli
