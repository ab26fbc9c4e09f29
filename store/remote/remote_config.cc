// Remotes in config.json: see store/remote/remote_config.h.
#include "store/remote/remote_config.h"

#include <nlohmann/json.hpp>

namespace pstore {
namespace {

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Result<nlohmann::json> Parse(const StoreConfig& c) {
  if (c.remotes_json.empty()) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(c.remotes_json);
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("config.json: \"remotes\" is not valid: ") + e.what());
  }
}

}  // namespace

RadosOptions RemoteSpec::ToRadosOptions() const {
  RadosOptions o;
  o.conf_path = conf;
  o.client_id = id;
  o.pool = url.substr(url.find(':') + 1);
  o.ns = ns;
  o.timeout_seconds = timeout_seconds;
  return o;
}

Status ValidateRemote(const RemoteSpec& r) {
  bool ok = !r.name.empty() && r.name.size() <= 64 && r.name[0] != '.' && r.name[0] != '-';
  for (char ch : r.name) ok = ok && NameChar(ch);
  if (!ok) {
    return Status::InvalidArgument("bad remote name '" + r.name +
                                   "': use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -");
  }
  if (r.url.rfind("rados:", 0) != 0 || r.url.size() == 6) {
    return Status::InvalidArgument("bad remote URL '" + r.url +
                                   "': the form is rados:POOL (a Ceph RADOS pool)");
  }
  for (char ch : r.url.substr(6)) {
    if (!NameChar(ch)) return Status::InvalidArgument("bad pool name in '" + r.url + "'");
  }
  if (r.id.empty() || r.id.rfind("client.", 0) == 0) {
    return Status::InvalidArgument("bad client id '" + r.id +
                                   "': give the id without \"client.\" (e.g. admin)");
  }
  if (r.timeout_seconds <= 0 || r.timeout_seconds > 3600) {
    return Status::InvalidArgument("the remote's timeout must be from 1 to 3600 seconds");
  }
  return Status::OK();
}

Result<std::vector<RemoteSpec>> ListRemotes(const StoreConfig& c) {
  PSTORE_ASSIGN_OR_RETURN(nlohmann::json j, Parse(c));
  std::vector<RemoteSpec> out;
  try {
    for (auto& [name, v] : j.items()) {
      RemoteSpec r;
      r.name = name;
      r.url = v.at("url").get<std::string>();
      r.conf = v.value("conf", std::string());
      r.id = v.value("id", std::string("admin"));
      r.ns = v.value("namespace", std::string());
      r.timeout_seconds = v.value("timeout_seconds", 30);
      Status st = ValidateRemote(r);
      if (!st.ok()) return st.WithContext("config.json, remote " + name);
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("config.json: a remote is not valid: ") + e.what());
  }
  return out;
}

Status AddRemote(StoreConfig* c, const RemoteSpec& r, bool replace) {
  PSTORE_RETURN_IF_ERROR(ValidateRemote(r));
  PSTORE_ASSIGN_OR_RETURN(nlohmann::json j, Parse(*c));
  if (j.contains(r.name) && !replace) {
    return Status::Exists("there is already a remote called " + r.name +
                          " (remove it with `pstore remote rm " + r.name +
                          "` or pass --force to replace it)");
  }
  j[r.name] = {{"url", r.url},
               {"conf", r.conf},
               {"id", r.id},
               {"namespace", r.ns},
               {"timeout_seconds", r.timeout_seconds}};
  c->remotes_json = j.dump();
  return Status::OK();
}

Status RemoveRemote(StoreConfig* c, std::string_view name) {
  PSTORE_ASSIGN_OR_RETURN(nlohmann::json j, Parse(*c));
  if (!j.contains(std::string(name))) {
    return Status::NotFound("there is no remote called " + std::string(name) +
                            " (`pstore remote ls` lists them)");
  }
  j.erase(std::string(name));
  c->remotes_json = j.empty() ? std::string() : j.dump();
  return Status::OK();
}

Result<RemoteSpec> FindRemote(const StoreConfig& c, std::string_view name) {
  PSTORE_ASSIGN_OR_RETURN(std::vector<RemoteSpec> all, ListRemotes(c));
  if (name.empty()) {
    if (all.size() == 1) return all[0];
    if (all.empty()) {
      return Status::NotFound(
          "the store has no remote (add one with `pstore remote add NAME rados:POOL`)");
    }
    std::string names;
    for (auto& r : all) names += (names.empty() ? "" : ", ") + r.name;
    return Status::InvalidArgument("the store has several remotes (" + names +
                                   "): choose one with --remote NAME");
  }
  for (auto& r : all) {
    if (r.name == name) return r;
  }
  return Status::NotFound("there is no remote called " + std::string(name) +
                          " (`pstore remote ls` lists them; `pstore remote add` adds one)");
}

}  // namespace pstore
