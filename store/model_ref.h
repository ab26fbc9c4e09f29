// Model references: "name:tag" (a tag defaults to "latest"), or a digest.
//
// Names are 1 to 128 characters of [A-Za-z0-9._/-], not starting with '.',
// '/' or '-'; tags are 1 to 64 characters of [A-Za-z0-9._-], not starting with
// '.' or '-'. A digest is written as 32 lowercase hex digits; a unique prefix
// of at least 8 may stand for it where the store can resolve it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pstore {

struct ModelName {
  std::string name;
  std::string tag;
  std::string Ref() const { return name + ":" + tag; }
};

// Parses "name[:tag]"; a clear InvalidArgument error names what is wrong.
Result<ModelName> ParseModelName(std::string_view ref);
// True when s could be (a prefix of) a digest: 8 to 32 lowercase hex digits.
bool LooksLikeDigest(std::string_view s);

}  // namespace pstore
