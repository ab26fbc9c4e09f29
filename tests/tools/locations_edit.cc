// locations_edit: rewrites a remote's locations object (l.<digest>,
// docs/format.md) for the remote tests: reads its bytes from stdin, sets one
// chunk's frame length, and writes the object with a matching check digest
// to stdout, as a buggy or hostile pusher could.
//
//   locations_edit KEY_HEX LENGTH < l.<digest> > edited
//
// Thread-safety: a single-threaded program.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

#include "store/remote/pack_layout.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: locations_edit KEY_HEX LENGTH < l.<digest> > edited\n");
    return 2;
  }
  const std::string in((std::istreambuf_iterator<char>(std::cin)), {});
  auto locs = pstore::Locations::Parse(in, "stdin");
  auto key = pstore::ChunkKey::FromHex(argv[1]);
  if (!locs.ok() || !key || !locs->Find(*key)) {
    std::fprintf(stderr, "locations_edit: %s\n",
                 locs.ok() ? "no such key in the locations" : locs.status().ToString().c_str());
    return 1;
  }
  pstore::ChunkLocation loc = *locs->Find(*key);
  loc.length = uint32_t(std::strtoul(argv[2], nullptr, 10));
  locs->Set(*key, loc);
  const std::string out = locs->Serialize();
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
