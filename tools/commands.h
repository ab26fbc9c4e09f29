// The pstore command's subcommands and how they report.
//
// Each subcommand is registered by an Add*Commands function, which owns the
// subcommand's arguments in the closure it returns: there is no global
// argument state. Running a subcommand yields a result struct, which has one
// text renderer (`Text()`, lines on stdout) and one JSON renderer (`Json()`,
// printed with --json); `Emit` picks one, and reports a failure through
// `Fail` (stderr, or a JSON error object with --json) with its exit code.
//
// The subcommands, by layer: store commands that change the store
// (store_commands.cc), that read it (inspect_commands.cc), commands over the
// pager and shared memory (pager_commands.cc, bench_command.cc), and the
// remote tier (remote_commands.cc; built with RADOS, PSTORE_HAVE_RADOS, into
// the pstore-remote command, which pstore executes for them:
// PSTORE_REMOTE_BY_EXEC).
//
// Thread-safety: the CLI runs one command on the main thread.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/cli_util.h"

namespace pstore {
class Pager;
}

namespace pstore::cli {

// What every command runs against: the global options (--store, --json).
// Owned by Main and passed down; no command changes it.
struct Context {
  std::string store;
  bool json = false;
};

// A registered subcommand: its parser (true once it was parsed) and what
// runs it, with the arguments the parser filled in.
struct Command {
  CLI::App* sub = nullptr;
  std::function<int(const Context&)> run;
};

// The base of every result struct. A command that acts on several items in
// turn (rm of several names) may stop part-way: `stopped` then says why, and
// the text renderer shows what was done before it.
struct Output {
  Status stopped;
  int exit_code() const { return kExitOk; }
};

// Prints the error (as JSON with --json) and returns its exit code.
int Fail(const Context& c, const Status& s);
void PrintJson(const nlohmann::json& j);

// Renders a command's result as JSON (with --json) or text, or its failure.
// R derives from Output and has `void Text() const` and
// `nlohmann::json Json() const`.
template <class R>
int Emit(const Context& c, const Result<R>& r) {
  if (!r.ok()) return Fail(c, r.status());
  if (!r->stopped.ok()) {
    if (!c.json) r->Text();
    return Fail(c, r->stopped);
  }
  if (c.json)
    PrintJson(r->Json());
  else
    r->Text();
  return r->exit_code();
}

std::string ShapeString(const std::vector<uint64_t>& shape);
// "2026-12-06 07:45" in local time.
std::string TimeString(uint64_t unix_secs);
// "4G", "512M", "1.5GiB", "100MB", "123" -> bytes.
Result<uint64_t> ParseSize(const std::string& s);

// The subcommands, registered by Main in the order `pstore --help` lists
// them. Changing the store (store_commands.cc):
Command AddImportCommand(CLI::App& app);
Command AddExportCommand(CLI::App& app);
Command AddRmCommand(CLI::App& app);
Command AddTagCommand(CLI::App& app);
Command AddCompactCommand(CLI::App& app);
Command AddConfigCommand(CLI::App& app);
// Reading it (inspect_commands.cc):
Command AddLsCommand(CLI::App& app);
Command AddInfoCommand(CLI::App& app);
Command AddVerifyCommand(CLI::App& app);
Command AddStatCommand(CLI::App& app);
// Over the pager and the host's shared memory (pager_commands.cc,
// bench_command.cc):
Command AddWarmCommand(CLI::App& app);
Command AddPsCommand(CLI::App& app);
Command AddBenchCommand(CLI::App& app);

// The options of the commands that open the pager (warm, bench).
struct PagerArgs {
  std::string budget;  // "" for the store's
  int threads = 0;
  bool check = false;  // PagerOptions::check_shared
};
// Adds --budget and --threads to `sub`.
void AddPagerOptions(CLI::App* sub, PagerArgs& a, const char* budget_help);
Result<std::unique_ptr<Pager>> OpenPager(const Context& c, const PagerArgs& a);

// One-line help of the remote commands, for remote_commands.cc and for the
// stand-ins of the pstore command that runs them in pstore-remote.
inline constexpr char kRemoteHelp[] = "Add, list or remove the store's remotes";
inline constexpr char kPushHelp[] = "Upload a model to a remote: missing chunks, manifest, name";
inline constexpr char kPullHelp[] = "Fetch a model from a remote into the store";

// remote add|ls|rm, push, pull (remote_commands.cc; only when built with
// RADOS, PSTORE_HAVE_RADOS).
std::vector<Command> AddRemoteCommands(CLI::App& app);
// ls --remote NAME and rm --remote NAME REF... (remote_commands.cc; without
// RADOS they fail with a message saying how to get it).
int RunRemoteLsNames(const Context& c, const std::string& remote);
int RunRemoteRmNames(const Context& c, const std::string& remote,
                     const std::vector<std::string>& refs);

}  // namespace pstore::cli
