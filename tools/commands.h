// The pstore command's subcommands, split by layer: admin commands over the
// store (pstore.cc) and commands over the pager and shared memory
// (pager_commands.cc).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pstore::cli {

struct Globals {
  std::string store;
  bool json = false;
};

struct ConfigArgs {
  uint32_t chunk_size = 0;
  std::string profile;
  int zstd_level = 0;
  std::string budget;
  std::optional<std::string> group;
  bool wait = false;
};

// Prints the error (as JSON with --json) and returns its exit code.
int Fail(const Globals& g, const Status& s);
void PrintJson(const nlohmann::json& j);
std::string ShapeString(const std::vector<uint64_t>& shape);
// "4G", "512M", "1.5GiB", "100MB", "123" -> bytes.
Result<uint64_t> ParseSize(const std::string& s);

// warm, ps, bench.
void AddPagerCommands(CLI::App& app, Globals& g);
// Runs whichever of them was parsed.
int RunPagerCommand(CLI::App& app, const Globals& g);

// remote add|ls|rm, push, pull (tools/remote_commands.cc; only when built
// with RADOS, PSTORE_HAVE_RADOS).
void AddRemoteCommands(CLI::App& app, Globals& g);
// Runs whichever of them was parsed; nullopt when none was.
std::optional<int> RunRemoteCommand(const Globals& g);
// ls --remote NAME and rm --remote NAME REF...
int CmdRemoteLsNames(const Globals& g, const std::string& remote);
int CmdRemoteRmNames(const Globals& g, const std::string& remote,
                     const std::vector<std::string>& refs);

}  // namespace pstore::cli
