// A generation's NAMES file, checked (store/names_file.h).
#include "store/names_file.h"

#include "common/file_util.h"

namespace pstore {

namespace {
constexpr std::string_view kMagic = "PSTNAMES 1 ";
}  // namespace

std::string EncodeNamesFile(const NameMap& names) {
  std::string body;
  for (const auto& [ref, digest] : names) body += ref + "\t" + digest.Hex() + "\n";
  return std::string(kMagic) + HashBytes(body.data(), body.size()).Hex() + "\n" + body;
}

Result<std::optional<NameMap>> ParseNamesFile(const std::string& path, std::string_view text) {
  auto damaged = [&](const std::string& why) {
    return Status::Corruption("store file " + path + " is damaged (" + why +
                              "); run `pstore verify`, and any writing command (such as "
                              "`pstore compact`) publishes a new one from the database");
  };
  if (text.substr(0, kMagic.size()) != kMagic) {
    // The old form has no header: tab-separated lines only, or nothing.
    size_t nl = text.find('\n');
    std::string_view first = text.substr(0, nl);
    if (text.empty() || first.find('\t') != std::string_view::npos) return std::optional<NameMap>();
    return damaged("its first line is neither a checksum nor a name");
  }
  size_t nl = text.find('\n');
  if (nl == std::string_view::npos) return damaged("truncated");
  auto sum = ChunkKey::FromHex(text.substr(kMagic.size(), nl - kMagic.size()));
  // Exactly as written (lowercase), so that no changed byte goes unnoticed.
  if (!sum || sum->Hex() != text.substr(kMagic.size(), nl - kMagic.size()))
    return damaged("malformed checksum line");
  std::string_view body = text.substr(nl + 1);
  if (HashBytes(body.data(), body.size()) != *sum) return damaged("checksum mismatch");
  NameMap names;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string_view::npos) return damaged("last line not terminated");
    std::string_view line = body.substr(pos, end - pos);
    size_t tab = line.find('\t');
    auto d = tab == std::string_view::npos ? std::nullopt : ChunkKey::FromHex(line.substr(tab + 1));
    if (!d || tab == 0) return damaged("malformed line");
    if (!names.emplace(std::string(line.substr(0, tab)), *d).second)
      return damaged("a name appears twice");
    pos = end + 1;
  }
  return std::optional<NameMap>(std::move(names));
}

Result<std::optional<NameMap>> ReadNamesFile(const std::string& path) {
  PSTORE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseNamesFile(path, text);
}

}  // namespace pstore
