// pstore: the admin command of a pstore store.
//
//   pstore [--store DIR] [--json] COMMAND ...
//
// Commands that change the store (import, rm, tag, compact, config) take the
// store's writer lock; the others read the newest published generation and run
// alongside a writer. Exit codes: see tools/cli_util.h and docs/cli.md.
//
// This file holds Main, which parses the global options into a Context and
// runs the one subcommand given, and the reporting helpers every command uses
// (tools/commands.h); the subcommands are in tools/*_command(s).cc.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "store/store.h"
#include "tools/commands.h"

namespace pstore::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void OnSignal(int) {
  g_interrupted = true;
}
}  // namespace

bool ProgressLine::Interrupted() {
  return g_interrupted.load();
}

int Fail(const Context& c, const Status& failed) {
  // Whatever failed after SIGINT or SIGTERM (a wait for the writer lock, a
  // read) failed because of it: report an interruption.
  Status s = failed;
  if (g_interrupted.load() && s.code() != Status::Code::kAborted)
    s = Status::Aborted("interrupted by a signal (" + failed.message() + ")");
  if (c.json) {
    nlohmann::json j;
    j["ok"] = false;
    j["error"] = s.message();
    j["code"] = Status::CodeName(s.code());
    std::cout << j.dump() << "\n";
  } else {
    std::fprintf(stderr, "pstore: %s\n", s.message().c_str());
  }
  return ExitCodeFor(s);
}

void PrintJson(const nlohmann::json& j) {
  std::cout << j.dump(2) << "\n";
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TimeString(uint64_t unix_secs) {
  time_t t = time_t(unix_secs);
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm);
  return buf;
}

Result<uint64_t> ParseSize(const std::string& s) {
  size_t pos = 0;
  double v;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return Status::InvalidArgument("bad size '" + s + "' (e.g. 512M, 4G, 1.5GiB)");
  }
  std::string unit = s.substr(pos);
  double mult = 1;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB" || unit == "kiB")
    mult = 1024.0;
  else if (unit == "M" || unit == "MiB")
    mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "kB" || unit == "KB")
    mult = 1e3;
  else if (unit == "MB")
    mult = 1e6;
  else if (unit == "GB")
    mult = 1e9;
  else
    return Status::InvalidArgument("bad size unit in '" + s + "' (use K, M, G, T or kB, MB, GB)");
  if (v < 0) return Status::InvalidArgument("size must not be negative");
  return uint64_t(v * mult);
}

namespace {
// The signals that stop a command (OnSignal), as a set.
sigset_t StopSignals() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  return stop;
}
}  // namespace

#if defined(PSTORE_REMOTE_BY_EXEC)
namespace {
char** g_argv = nullptr;

// Runs this invocation, as given, in pstore-remote beside this command: the
// same process (its pid and exit code are the command's), now with the
// remote tier and librados. SIGINT and SIGTERM are blocked across the exec:
// one that comes meanwhile stays pending until pstore-remote has its
// handlers (Main unblocks them), and one that came before is exit 9 here.
int RunInRemoteCommand(const Context& c) {
  const sigset_t stop = StopSignals();
  sigset_t old;
  ::sigprocmask(SIG_BLOCK, &stop, &old);
  Context report = c;
  for (char** a = g_argv + 1; *a; ++a) {
    const std::string arg = *a;
    if (arg == "--json" ||
        (arg.rfind("--json=", 0) == 0 && arg != "--json=false" && arg != "--json=0"))
      report.json = true;
  }
  if (g_interrupted.load()) {
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    return Fail(report, Status::Aborted("interrupted by a signal"));
  }
  auto dir = ExecutableDir();
  std::string why;
  if (dir.ok()) {
    const std::string helper = *dir + "pstore-remote";
    std::fflush(nullptr);
    ::execv(helper.c_str(), g_argv);
    const int e = errno;
    why = "the remote commands run in " + helper + ", which could not be started (" +
          std::strerror(e) + "); it is built and installed beside pstore when librados is found";
  } else {
    why = "the remote commands run in pstore-remote beside pstore, which could not be found: " +
          dir.status().message();
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  return Fail(report, Status::IOError(why));
}

// The remote commands as pstore --help lists them; whatever follows one goes
// to pstore-remote unparsed, which parses the whole command line again.
std::vector<Command> AddRemoteStandIns(CLI::App& app) {
  std::vector<Command> out;
  for (auto [name, help] : {std::pair{"remote", kRemoteHelp}, std::pair{"push", kPushHelp},
                            std::pair{"pull", kPullHelp}}) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->prefix_command();
    sub->allow_extras();
    sub->fallthrough(false);
    sub->set_help_flag();
    out.push_back({sub, RunInRemoteCommand});
  }
  return out;
}

// What a remote subcommand of a command without the remote tier does: runs
// in pstore-remote.
int RunWithoutRemoteTier(const Context& c) {
  return RunInRemoteCommand(c);
}
}  // namespace
#elif !defined(PSTORE_HAVE_RADOS)
namespace {
// What a remote subcommand of a command without the remote tier does: fails,
// as no command of this build has it.
int RunWithoutRemoteTier(const Context& c) {
  return Fail(c, Status::Unsupported("this pstore was built without librados (RADOS remotes); "
                                     "install librados-dev and libradospp-dev and rebuild"));
}
}  // namespace
#endif

int Main(int argc, char** argv) {
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // pstore hands its remote commands to pstore-remote with these blocked
  // (RunInRemoteCommand): one sent meanwhile is delivered now. (So a parent
  // that started pstore with them blocked has them handled too.)
  const sigset_t stop = StopSignals();
  ::sigprocmask(SIG_UNBLOCK, &stop, nullptr);

  CLI::App app{"pstore: a store for model weights"};
  app.require_subcommand(1);
  app.fallthrough();  // --store and --json may follow the subcommand too
  app.footer(
      "Exit codes: 0 ok, 1 error, 2 bad usage, 3 not found, 4 invalid input, 5 corruption, "
      "6 store busy, 7 no space, 8 name exists, 9 interrupted.\n"
      "The store is --store, else $PSTORE_DIR, else $XDG_DATA_HOME/pstore, else "
      "~/.local/share/pstore.");
  Context ctx;
  ctx.store = DefaultStorePath();
  app.add_option("--store", ctx.store, "The store's folder")->envname("PSTORE_DIR");
  app.add_flag("--json", ctx.json, "Print results as JSON");

  // In the order `pstore --help` lists them.
  std::vector<Command> commands = {
      AddImportCommand(app), AddExportCommand(app), AddLsCommand(app),     AddInfoCommand(app),
      AddRmCommand(app),     AddTagCommand(app),    AddVerifyCommand(app), AddCompactCommand(app),
      AddStatCommand(app),   AddConfigCommand(app), AddWarmCommand(app),   AddPsCommand(app),
      AddBenchCommand(app),
  };
#if defined(PSTORE_HAVE_RADOS)
  for (Command& c : AddRemoteCommands(app)) commands.push_back(std::move(c));
#elif defined(PSTORE_REMOTE_BY_EXEC)
  g_argv = argv;
  for (Command& c : AddRemoteStandIns(app)) commands.push_back(std::move(c));
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  for (const Command& c : commands)
    if (*c.sub) return c.run(ctx);
  return Fail(ctx, Status::InvalidArgument("unknown command; see pstore --help"));
}

#if !defined(PSTORE_HAVE_RADOS)
int RunRemoteLsNames(const Context& c, const std::string&) {
  return RunWithoutRemoteTier(c);
}
int RunRemoteRmNames(const Context& c, const std::string&, const std::vector<std::string>&) {
  return RunWithoutRemoteTier(c);
}
#endif

}  // namespace pstore::cli

int main(int argc, char** argv) {
  return pstore::cli::Main(argc, argv);
}
