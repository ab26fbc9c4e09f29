// warm, ps and bench: commands over the pager (shared memory). Added with the pager.
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace pstore::cli {

void AddPagerCommands(CLI::App&, Globals&) {}

int RunPagerCommand(CLI::App& app, const Globals& g) {
  return Fail(g, Status::InvalidArgument("unknown command; see pstore --help"));
}

}  // namespace pstore::cli
