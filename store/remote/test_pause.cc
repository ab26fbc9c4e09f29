// Test pause points: see store/remote/test_pause.h.
#include "store/remote/test_pause.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <sys/stat.h>

namespace pstore {
namespace {

// The PATH that PSTORE_TEST_PAUSE gives point, if it names it.
std::optional<std::string> PausePath(const char* point) {
  const char* env = std::getenv("PSTORE_TEST_PAUSE");
  if (!env || !*env) return std::nullopt;
  std::string_view spec(env);
  const std::string prefix = std::string(point) + "=";
  while (!spec.empty()) {
    size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.starts_with(prefix)) return std::string(item.substr(prefix.size()));
  }
  return std::nullopt;
}

}  // namespace

bool TestPauseSet(const char* point) {
  return PausePath(point).has_value();
}

void TestPause(const char* point) {
  std::optional<std::string> path = PausePath(point);
  if (!path) return;
  std::ofstream(*path + ".paused") << point << "\n";
  const std::string go = *path + ".go";
  struct stat st;
  while (::stat(go.c_str(), &st) != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace pstore
