#include "store/model_ref.h"

namespace pstore {
namespace {

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '/';
}

}  // namespace

Result<ModelName> ParseModelName(std::string_view ref) {
  ModelName m;
  size_t colon = ref.rfind(':');
  std::string_view name = colon == std::string_view::npos ? ref : ref.substr(0, colon);
  std::string_view tag = colon == std::string_view::npos ? "latest" : ref.substr(colon + 1);
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad model name '" + std::string(ref) + "': " + why +
                                   " (expected NAME:TAG, e.g. llama-7b:v1)");
  };
  if (name.empty()) return bad("the name is empty");
  if (name.size() > 128) return bad("the name is longer than 128 characters");
  if (name[0] == '.' || name[0] == '/' || name[0] == '-')
    return bad("the name starts with '.', '/' or '-'");
  for (char c : name)
    if (!NameChar(c)) return bad(std::string("the name contains '") + c + "'");
  if (name.find("..") != std::string_view::npos || name.find("//") != std::string_view::npos)
    return bad("the name contains '..' or '//'");
  if (tag.empty()) return bad("the tag is empty");
  if (tag.size() > 64) return bad("the tag is longer than 64 characters");
  if (tag[0] == '.' || tag[0] == '-') return bad("the tag starts with '.' or '-'");
  for (char c : tag)
    if (!NameChar(c) || c == '/') return bad(std::string("the tag contains '") + c + "'");
  m.name = std::string(name);
  m.tag = std::string(tag);
  return m;
}

bool LooksLikeDigest(std::string_view s) {
  if (s.size() < 8 || s.size() > 32) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace pstore
