// A generation's NAMES file: every "name:tag" of the store and the digest of
// the model it points at, so that a reader resolves names without opening the
// generation's database. Readers trust it, so it carries a checksum:
//
//   "PSTNAMES 1 " <32 hex: XXH3-128 of every byte after this line> "\n"
//   "name:tag\t<32 hex digest>\n"   one line per name, sorted
//
// A file without the first line was written before the checksum existed: its
// lines cannot be told from damaged ones, so readers do not use it (they ask
// the database) and the next writing command publishes a checked one.
// docs/format.md, "Generations".
//
// Thread-safety: functions are reentrant.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

using NameMap = std::map<std::string, ChunkKey>;  // "name:tag" -> model digest

// The file's bytes for these names.
std::string EncodeNamesFile(const NameMap& names);

// Parses a NAMES file read from path (named in errors). nullopt for a file of
// the old form, without a checksum; Corruption naming path when the checksum
// does not match or a line is malformed.
Result<std::optional<NameMap>> ParseNamesFile(const std::string& path, std::string_view text);

// Reads and parses the file at path: NotFound when there is none.
Result<std::optional<NameMap>> ReadNamesFile(const std::string& path);

}  // namespace pstore
