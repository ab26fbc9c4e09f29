// RemoteTier: see store/remote/remote_tier.h.
#include "store/remote/remote_tier.h"

#include <cerrno>
#include <set>

#include "store/remote/rados_connection.h"
#include "store/remote/rados_io.h"

namespace pstore {

struct RemoteTier::Impl {
  // Chunks, names and manifests go through the chunk source's connection.
  std::unique_ptr<RadosChunkSource> chunks;

  RadosConnection& conn() { return chunks->connection(); }
  std::string Name() const { return chunks->Describe(); }
  Status Error(int r, const std::string& what) const { return chunks->connection().Error(r, what); }
};

RemoteTier::RemoteTier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RemoteTier::~RemoteTier() = default;

ChunkSource& RemoteTier::chunks() {
  return *impl_->chunks;
}
std::string RemoteTier::Describe() const {
  return impl_->Name();
}
RemoteIo RemoteTier::Io() {
  return impl_->conn().Io();
}

Result<std::unique_ptr<RemoteTier>> RemoteTier::Open(const RadosOptions& options) {
  auto impl = std::make_unique<Impl>();
  // The chunk source checks the options, connects and reports a missing pool.
  PSTORE_ASSIGN_OR_RETURN(impl->chunks, RadosChunkSource::Open(options));
  return std::unique_ptr<RemoteTier>(new RemoteTier(std::move(impl)));
}

Result<std::map<std::string, ModelDigest>> RemoteTier::ListNames() {
  // None when nothing was pushed yet.
  PSTORE_ASSIGN_OR_RETURN(auto vals, ReadAllOmap(Io(), kNamesObject, "the names"));
  std::map<std::string, ModelDigest> out;
  for (auto& [k, v] : vals) {
    auto d = ModelDigest::FromHex(v.to_str());
    if (!d) {
      return Status::Corruption(impl_->Name() + ": the names object's entry for " + k +
                                " is not a digest");
    }
    out.emplace(k, *d);
  }
  return out;
}

Result<std::optional<ModelDigest>> RemoteTier::GetName(const std::string& ref) {
  std::map<std::string, librados::bufferlist> vals;
  int rv = 0;
  librados::ObjectReadOperation op;
  op.omap_get_vals_by_keys(std::set<std::string>{ref}, &vals, &rv);
  int r = impl_->conn().ioctx().operate(kNamesObject, &op, nullptr);
  if (r == -ENOENT) return std::optional<ModelDigest>();
  if (r < 0) return impl_->Error(r, "looking up " + ref);
  auto it = vals.find(ref);
  if (it == vals.end()) return std::optional<ModelDigest>();
  auto d = ModelDigest::FromHex(it->second.to_str());
  if (!d) {
    return Status::Corruption(impl_->Name() + ": the names object's entry for " + ref +
                              " is not a digest");
  }
  return std::optional<ModelDigest>(*d);
}

Status RemoteTier::SetName(const std::string& ref, const std::optional<ModelDigest>& expected,
                           const ModelDigest& digest) {
  librados::bufferlist want, value;
  if (expected) want.append(expected->Hex());  // absent compares as empty
  value.append(digest.Hex());
  int cmp = 0;
  librados::ObjectWriteOperation op;
  op.create(false);
  op.omap_cmp({{ref, {want, LIBRADOS_CMPXATTR_OP_EQ}}}, &cmp);
  op.omap_set({{ref, value}});
  int r = impl_->conn().ioctx().operate(kNamesObject, &op);
  if (r == -ECANCELED) {
    return Status::Busy(impl_->Name() + ": " + ref +
                        " was changed on the remote by someone else at the same time; "
                        "run the command again");
  }
  if (r < 0) return impl_->Error(r, "publishing " + ref);
  return Status::OK();
}

Status RemoteTier::RemoveName(const std::string& ref, const ModelDigest& expected) {
  librados::bufferlist want;
  want.append(expected.Hex());
  int cmp = 0;
  librados::ObjectWriteOperation op;
  op.omap_cmp({{ref, {want, LIBRADOS_CMPXATTR_OP_EQ}}}, &cmp);
  op.omap_rm_keys(std::set<std::string>{ref});
  int r = impl_->conn().ioctx().operate(kNamesObject, &op);
  if (r == -ECANCELED) {
    return Status::Busy(impl_->Name() + ": " + ref +
                        " was changed on the remote by someone else at the same time; "
                        "run the command again");
  }
  if (r < 0) return impl_->Error(r, "removing " + ref);
  return Status::OK();
}

Status RemoteTier::PutManifest(const ModelDigest& digest, std::string_view bytes) {
  librados::bufferlist bl;
  bl.append(bytes.data(), bytes.size());
  librados::ObjectWriteOperation op;
  op.create(true);  // exclusive: a manifest is immutable, named by its digest
  op.write_full(bl);
  int r = impl_->conn().ioctx().operate(ManifestObject(digest), &op);
  if (r == -EEXIST) return Status::OK();
  if (r < 0) return impl_->Error(r, "writing manifest " + digest.Hex());
  return Status::OK();
}

Result<std::optional<std::string>> RemoteTier::GetManifest(const ModelDigest& digest) {
  librados::bufferlist bl;
  int rv = 0;
  librados::ObjectReadOperation op;
  op.read(0, 0, &bl, &rv);
  int r = impl_->conn().ioctx().operate(ManifestObject(digest), &op, nullptr);
  if (r == -ENOENT) return std::optional<std::string>();
  if (r < 0) return impl_->Error(r, "reading manifest " + digest.Hex());
  return std::optional<std::string>(bl.to_str());
}

}  // namespace pstore
