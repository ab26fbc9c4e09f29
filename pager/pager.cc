// Pager: opening a store's pager, its models and their segments, the
// decoder pool.
#include "pager/pager.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <thread>

#include "pager/budget_lock.h"
#include "pager/budget_object.h"
#include "pager/shm_access.h"
#include "pager/shm_object.h"
#include "store/rocks_chunk_source.h"

namespace pstore {

Pager::~Pager() {
  // Finish background loads before segments go. The pool stays reachable
  // while it stops: queued tasks still use it.
  if (pool_) pool_->Stop();
  pool_.reset();
}

Result<std::unique_ptr<Pager>> Pager::Open(const std::string& root, const PagerOptions& opt) {
  PSTORE_RETURN_IF_ERROR(CheckThreads(opt.loader_threads, "loader_threads"));
  std::unique_ptr<Pager> p(new Pager);
  p->root_ = root;
  StorePaths paths{root};
  PSTORE_ASSIGN_OR_RETURN(p->store_id_, ReadStoreId(paths));
  PSTORE_ASSIGN_OR_RETURN(p->config_, ReadStoreConfig(paths));
  p->budget_ = opt.budget_bytes ? opt.budget_bytes : p->config_.budget_bytes;
  p->check_shared_ = opt.check_shared;
  p->chunk_source_ = opt.chunk_source;
  p->lazy_ = opt.lazy;
  if (p->budget_ == 0) {
    uint64_t ram = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE));
    p->budget_ = ram / 2;
  }
  PSTORE_ASSIGN_OR_RETURN(p->seg_opt_, ShmAccessFor(p->config_));
  PSTORE_ASSIGN_OR_RETURN(p->budget_obj_, OpenBudgetObject(p->store_id_, p->seg_opt_));
  p->over_budget_ = p->budget_obj_.over_budget();
  {
    // Record the store's folder, so that its shared memory can be found
    // once the folder is gone (`pstore ps --orphans`).
    std::error_code ec;
    std::string folder = std::filesystem::absolute(root, ec).lexically_normal().string();
    if (char* real = ::realpath(root.c_str(), nullptr)) {
      folder = real;
      ::free(real);
    }
    while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
    // Written only when there is no record or the recorded folder does not
    // hold this store (gone, or another store's), and never from a read-only
    // store folder: a reader in another mount namespace (a container) or
    // through a bind mount sees the store at a path that is not the host's,
    // and must not make the host's store look orphaned.
    struct statvfs vfs;
    const bool read_only = ::statvfs(root.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0;
    bool write = false;
    if (!read_only) {
      std::optional<std::string> recorded = ReadBudgetOwner(p->store_id_);
      if (!recorded) {
        write = true;
      } else if (*recorded != folder) {
        auto id = ReadStoreId(StorePaths{*recorded});
        write = id.ok() ? *id != p->store_id_ : id.status().IsNotFound();
      }
    }
    BudgetGuard budget(&p->budget_mu_, p->budget_obj_.fd());
    if (write && budget.locked())
      WriteBudgetOwner(p->budget_obj_.page(), p->budget_obj_.page_len(), p->store_id_, folder);
  }
  int threads = opt.loader_threads > 0 ? opt.loader_threads
                                       : std::max(2, int(std::thread::hardware_concurrency()));
  Pager* raw = p.get();
  p->pool_ = std::make_unique<LoaderPool>(threads, [raw] { raw->Trim(); });
  PSTORE_RETURN_IF_ERROR(p->pool_->start_status());
  PSTORE_ASSIGN_OR_RETURN(auto reader, StoreReader::Open(root, /*lazy_db=*/true));
  {
    MutexLock l(&p->mu_);
    p->reader_ = std::move(reader);
  }
  return p;
}

Result<std::shared_ptr<StoreReader>> Pager::CurrentReader() {
  StorePaths paths{root_};
  PSTORE_ASSIGN_OR_RETURN(uint64_t current, ReadCurrentGeneration(paths));
  MutexLock l(&mu_);
  if (reader_ && reader_->generation() == current) return reader_;
  PSTORE_ASSIGN_OR_RETURN(auto r, StoreReader::Open(root_, /*lazy_db=*/true));
  reader_ = std::move(r);
  return reader_;
}

Result<std::shared_ptr<Segment>> Pager::GetSegment(const ModelDigest& d, const Layout& layout,
                                                   std::string_view manifest,
                                                   std::string_view tables) {
  std::string name = Segment::NameFor(store_id_, d);
  MutexLock l(&mu_);
  auto it = segments_.find(name);
  if (it != segments_.end())
    if (auto s = it->second.lock()) return s;
  PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Segment> seg,
                          Segment::Attach(name, layout, d, manifest, tables, store_id_, seg_opt_));
  std::shared_ptr<Segment> s(std::move(seg));
  segments_[name] = s;
  return s;
}

std::shared_ptr<Segment> Pager::FindResident(const ModelDigest& d) {
  std::string name = Segment::NameFor(store_id_, d);
  MutexLock l(&mu_);
  auto it = segments_.find(name);
  if (it != segments_.end())
    if (auto s = it->second.lock()) return s;
  auto seg = Segment::AttachResident(name, d);
  if (!seg.ok()) return nullptr;  // none, or unusable: the store's copy is used
  std::shared_ptr<Segment> s(std::move(seg).value());
  segments_[name] = s;
  return s;
}

Result<std::shared_ptr<Model>> Pager::OpenModel(std::string_view ref) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<StoreReader> reader, CurrentReader());
  // Name and manifest without the database when the generation's NAMES file
  // and a resident segment can answer; the database is opened otherwise, and
  // by the first load.
  auto named = reader->ResolveName(ref);
  if (!named.ok() && named.status().IsNotFound() && lazy_)
    return OpenLazy(ref, reader, named.status());
  PSTORE_RETURN_IF_ERROR(named.status());
  ModelDigest digest;
  if (*named) {
    digest = **named;
  } else {
    PSTORE_RETURN_IF_ERROR(reader->EnsureDb());
    auto resolved = reader->view().Resolve(ref);
    if (!resolved.ok() && resolved.status().IsNotFound() && lazy_)
      return OpenLazy(ref, reader, resolved.status());
    PSTORE_ASSIGN_OR_RETURN(digest, std::move(resolved));
  }
  ModelParts parts;
  parts.host = this;
  parts.source = chunk_source_ ? chunk_source_ : GenerationChunkSource(reader);
  parts.label = *named ? std::string(ref) : digest.Hex();
  parts.digest = digest;
  return AttachModel(std::move(parts), [&]() -> Result<std::string> {
    PSTORE_RETURN_IF_ERROR(reader->EnsureDb());
    return reader->view().LoadManifestBytes(digest);
  });
}

Result<std::shared_ptr<Model>> Pager::OpenLazy(std::string_view ref,
                                               std::shared_ptr<StoreReader> reader,
                                               const Status& not_here) {
  PSTORE_ASSIGN_OR_RETURN(std::optional<LazyModel> lm,
                          lazy_->Open(ref, GenerationChunkSource(reader)));
  if (!lm) return Status::NotFound(not_here.message() + ", nor on its remote");
  ModelParts parts;
  parts.host = this;
  parts.source = lm->source;
  parts.label = std::string(ref);
  parts.digest = lm->digest;
  return AttachModel(std::move(parts),
                     [&]() -> Result<std::string> { return std::move(lm->manifest_bytes); });
}

Result<std::shared_ptr<Model>> Pager::AttachModel(
    ModelParts parts, const std::function<Result<std::string>()>& manifest_bytes) {
  parts.check_shared = check_shared_;
  const ModelDigest digest = parts.digest;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  // A resident model's segment holds its tensor table and layout, which a
  // process opening it checks once and then reads in place: nothing from the
  // store, nothing parsed or copied. With check_shared the keys must be this
  // process's own: the manifest is the segment's copied once and checked
  // against the digest (never read there again), or the store's.
  std::shared_ptr<const Manifest> own;
  parts.segment = FindResident(digest);
  if (parts.segment && check_shared_) {
    std::string bytes = parts.segment->CopyManifest();
    if (Manifest::DigestOf(bytes) == digest) {
      auto m = Manifest::Parse(bytes, /*with_headers=*/false);
      if (m.ok()) own = std::make_shared<const Manifest>(std::move(m).value());
    }
  }
  if (!parts.segment || (check_shared_ && !own)) {
    PSTORE_ASSIGN_OR_RETURN(std::string bytes, manifest_bytes());
    auto parsed = Manifest::Parse(bytes, /*with_headers=*/false);
    if (!parsed.ok()) return parsed.status().WithContext("model " + digest.Hex());
    auto m = std::make_shared<const Manifest>(std::move(parsed).value());
    if (!parts.segment) {
      PSTORE_ASSIGN_OR_RETURN(parts.segment, GetSegment(digest, Layout::Build(*m, page), bytes,
                                                        TensorTable::Serialize(*m)));
    }
    if (check_shared_) own = std::move(m);
  }
  Status checked;
  if (own) {
    auto tables = TensorTable::FromManifest(*own);
    if (tables.ok()) {
      parts.tables = std::move(tables).value();
      parts.layout = LayoutView::Of(Layout::Build(*own, page));
      checked = parts.segment->CheckLayout(parts.layout, parts.tables);
    } else {
      checked = tables.status();
    }
  } else {
    auto tables = parts.segment->ReadTables();
    if (tables.ok()) {
      parts.tables = std::move(tables).value();
      auto layout = parts.segment->ReadLayout(parts.tables);
      if (layout.ok()) parts.layout = std::move(layout).value();
      checked = layout.status();
    } else {
      checked = tables.status();
    }
  }
  if (!checked.ok()) return checked.WithContext("model " + parts.label);
  std::shared_ptr<Model> model = Model::Open(std::move(parts));
  // Pins of processes that died are gone now; what they held may be over budget.
  EnforceBudget();
  return model;
}

StoreMemory Pager::Memory() {
  StoreMemory m;
  m.budget_bytes = budget_;
  for (const auto& name : ListSegments(store_id_)) {
    std::optional<uint64_t> bytes = ShmAllocatedBytes(name);
    if (!bytes) continue;
    m.resident_bytes += *bytes;
    m.segments++;
  }
  return m;
}

std::unique_ptr<ChunkDecoder> Pager::TakeDecoder() {
  {
    MutexLock l(&decoders_mu_);
    if (!decoders_.empty()) {
      auto d = std::move(decoders_.back());
      decoders_.pop_back();
      return d;
    }
  }
  return std::make_unique<ChunkDecoder>();
}

void Pager::GiveDecoder(std::unique_ptr<ChunkDecoder> d) {
  MutexLock l(&decoders_mu_);
  decoders_.push_back(std::move(d));
}

void Pager::Trim() {
  {
    MutexLock l(&decoders_mu_);
    for (auto& d : decoders_) d->ReleaseMemory();
  }
  // RocksDB's read buffers and our scratch are freed, but glibc keeps freed
  // memory in its arenas; a process that loaded a model should not keep
  // megabytes it no longer uses. (In a process whose malloc is another, such
  // as the pstore command's jemalloc, this finds glibc's heap empty and does
  // nothing; that allocator returns freed memory on its own schedule.)
  ::malloc_trim(0);
}

}  // namespace pstore
