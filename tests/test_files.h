// Files for tests: a temporary folder removed with everything in it when the
// test ends, and whole-file reads and writes.
//
// Thread-safety: plain functions; a TempDir belongs to one test.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pstore {
namespace testing_util {

// A fresh folder under /tmp named after `prefix`; path() is "" if it could not
// be made.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "pstore-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (char* p = ::mkdtemp(tmpl.data())) path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The file's bytes ("" if it cannot be read).
inline std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

}  // namespace testing_util
}  // namespace pstore
