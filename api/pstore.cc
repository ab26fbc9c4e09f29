// The C API over the pager and the store: handles, statuses, no exceptions
// across the boundary. Every entry point that can fail runs its body inside
// Guard(), so an exception (std::bad_alloc included) becomes a status and a
// message for the calling thread; the message lives in a thread_local.
//
// Thread-safety: as api/pstore.h states; this file keeps no shared mutable
// state besides the handles themselves.
#include "api/pstore.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/lazy_module.h"
#include "codec/dtype.h"
#include "common/status.h"
#include "pager/pager.h"
#include "store/store.h"

struct pstore_store {
  std::shared_ptr<pstore::Pager> pager;
};

// pstore_tensor_table's arrays for one model handle.
struct TableArrays {
  std::string names;
  std::vector<uint64_t> name_offsets;  // count + 1: where each name starts, then the end
  std::vector<int32_t> dtypes;
  std::vector<uint32_t> ndims;
  std::vector<uint64_t> shapes;
  std::vector<uint64_t> nbytes;
  std::vector<int32_t> ggml_types;
  std::vector<const void*> addresses;
};

struct pstore_model {
  std::shared_ptr<pstore::Pager> pager;  // keeps the pager alive past pstore_store_close
  std::shared_ptr<pstore::Model> model;
  std::string digest_hex;
  std::unique_ptr<std::atomic<uint32_t>[]> held;  // acquires per tensor through this handle
  // The metadata's values as JSON text, by key: filled once, on first use.
  mutable std::once_flag meta_once;
  mutable std::unordered_map<std::string, std::string> meta_values;
  // The whole tensor table in the C API's arrays: filled once, on first use.
  mutable std::once_flag table_once;
  mutable TableArrays table;
};

// The C enums are the internal ones, value for value: a status or dtype
// crosses the boundary as a cast, and neither side may renumber.
#define PSTORE_SAME_STATUS(c, k) \
  static_assert(int(c) == int(pstore::Status::Code::k), #c " differs from Status::Code::" #k)
PSTORE_SAME_STATUS(PSTORE_OK, kOk);
PSTORE_SAME_STATUS(PSTORE_ERR_NOT_FOUND, kNotFound);
PSTORE_SAME_STATUS(PSTORE_ERR_CORRUPTION, kCorruption);
PSTORE_SAME_STATUS(PSTORE_ERR_INVALID_ARGUMENT, kInvalidArgument);
PSTORE_SAME_STATUS(PSTORE_ERR_IO, kIOError);
PSTORE_SAME_STATUS(PSTORE_ERR_BUSY, kBusy);
PSTORE_SAME_STATUS(PSTORE_ERR_NO_SPACE, kNoSpace);
PSTORE_SAME_STATUS(PSTORE_ERR_UNSUPPORTED, kUnsupported);
PSTORE_SAME_STATUS(PSTORE_ERR_EXISTS, kExists);
PSTORE_SAME_STATUS(PSTORE_ERR_INTERNAL, kInternal);
PSTORE_SAME_STATUS(PSTORE_ERR_ABORTED, kAborted);
PSTORE_SAME_STATUS(PSTORE_ERR_NO_MEMORY, kNoMemory);
#undef PSTORE_SAME_STATUS

#define PSTORE_SAME_DTYPE(c, k) \
  static_assert(int(c) == int(pstore::DType::k), #c " differs from DType::" #k)
PSTORE_SAME_DTYPE(PSTORE_DTYPE_BOOL, kBool);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_U8, kU8);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_I8, kI8);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_F8_E5M2, kF8_E5M2);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_F8_E4M3, kF8_E4M3);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_I16, kI16);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_U16, kU16);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_F16, kF16);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_BF16, kBF16);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_I32, kI32);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_U32, kU32);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_F32, kF32);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_F64, kF64);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_I64, kI64);
PSTORE_SAME_DTYPE(PSTORE_DTYPE_U64, kU64);
#undef PSTORE_SAME_DTYPE

namespace {

thread_local std::string g_last_error;

// Sets the calling thread's message where an exception was caught: if even
// that cannot allocate, the message is left empty rather than let a second
// exception out of a noexcept function.
void SetLastError(const char* prefix, const char* what) noexcept {
  try {
    g_last_error.assign(prefix);
    g_last_error.append(what);
  } catch (...) {
    g_last_error.clear();
  }
}

pstore_status ToC(const pstore::Status& s) {
  if (s.ok()) return PSTORE_OK;
  g_last_error = s.message();
  switch (s.code()) {
    case pstore::Status::Code::kNotFound:
      return PSTORE_ERR_NOT_FOUND;
    case pstore::Status::Code::kCorruption:
      return PSTORE_ERR_CORRUPTION;
    case pstore::Status::Code::kInvalidArgument:
      return PSTORE_ERR_INVALID_ARGUMENT;
    case pstore::Status::Code::kIOError:
      return PSTORE_ERR_IO;
    case pstore::Status::Code::kBusy:
      return PSTORE_ERR_BUSY;
    case pstore::Status::Code::kNoSpace:
      return PSTORE_ERR_NO_SPACE;
    case pstore::Status::Code::kUnsupported:
      return PSTORE_ERR_UNSUPPORTED;
    case pstore::Status::Code::kExists:
      return PSTORE_ERR_EXISTS;
    case pstore::Status::Code::kAborted:
      return PSTORE_ERR_ABORTED;
    case pstore::Status::Code::kNoMemory:
      return PSTORE_ERR_NO_MEMORY;
    default:
      return PSTORE_ERR_INTERNAL;
  }
}

pstore_status Invalid(const char* msg) {
  g_last_error = msg;
  return PSTORE_ERR_INVALID_ARGUMENT;
}

// Runs f, turning exceptions into statuses: none may cross into C.
template <typename F>
pstore_status Guard(F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    // The same status as a std::bad_alloc caught inside the library
    // (Status::NoMemory), which ToC maps to PSTORE_ERR_NO_MEMORY too.
    SetLastError("out of memory: ", "free memory on the host or lower the store's budget");
    return PSTORE_ERR_NO_MEMORY;
  } catch (const std::exception& e) {
    SetLastError("internal error (please report it): ", e.what());
    return PSTORE_ERR_INTERNAL;
  } catch (...) {
    SetLastError("internal error (please report it)", "");
    return PSTORE_ERR_INTERNAL;
  }
}

}  // namespace

extern "C" {

const char* pstore_status_string(pstore_status status) {
  switch (status) {
    case PSTORE_OK:
      return "OK";
    case PSTORE_ERR_NOT_FOUND:
      return "not found";
    case PSTORE_ERR_CORRUPTION:
      return "corruption";
    case PSTORE_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case PSTORE_ERR_IO:
      return "I/O error";
    case PSTORE_ERR_BUSY:
      return "busy";
    case PSTORE_ERR_NO_SPACE:
      return "no space";
    case PSTORE_ERR_UNSUPPORTED:
      return "unsupported";
    case PSTORE_ERR_EXISTS:
      return "already exists";
    case PSTORE_ERR_INTERNAL:
      return "internal error";
    case PSTORE_ERR_ABORTED:
      return "aborted";
    case PSTORE_ERR_NO_MEMORY:
      return "out of memory";
  }
  return "unknown";
}

const char* pstore_last_error(void) {
  return g_last_error.c_str();
}

const char* pstore_version(void) {
  return PSTORE_VERSION_STRING;
}

uint32_t pstore_version_number(void) {
  return PSTORE_VERSION_NUMBER;
}

const char* pstore_dtype_name(pstore_dtype dtype) {
  if (int(dtype) < 0 || int(dtype) > 255 || !pstore::DTypeIdValid(uint8_t(dtype))) return "?";
  return pstore::DTypeName(pstore::DType(dtype)).data();  // names are static, NUL-terminated
}

void pstore_store_options_default(pstore_store_options* opts) {
  if (!opts) return;
  std::memset(opts, 0, sizeof(*opts));
  opts->struct_size = sizeof(*opts);
}

pstore_status pstore_store_open(const char* path, const pstore_store_options* opts,
                                pstore_store** out) {
  return Guard([&]() -> pstore_status {
    if (!out) return Invalid("pstore_store_open: out is NULL");
    *out = nullptr;
    pstore::PagerOptions po;
    if (opts) {
      if (opts->struct_size < offsetof(pstore_store_options, loader_threads) + sizeof(int))
        return Invalid("pstore_store_open: options not filled by pstore_store_options_default");
      po.budget_bytes = opts->budget_bytes;
      po.loader_threads = opts->loader_threads;
      // Callers built before check_shared existed pass a smaller struct.
      if (opts->struct_size >= offsetof(pstore_store_options, check_shared) + sizeof(int))
        po.check_shared = opts->check_shared != 0;
    }
    std::string root = path && *path ? path : pstore::DefaultStorePath();
    // Models the store lacks open from its remote, if it has one.
    po.lazy = pstore::LoadLazyOpener(root);
    auto p = pstore::Pager::Open(root, po);
    if (!p.ok()) return ToC(p.status());
    auto* s = new pstore_store;
    s->pager = std::shared_ptr<pstore::Pager>(std::move(p).value());
    *out = s;
    return PSTORE_OK;
  });
}

void pstore_store_close(pstore_store* store) {
  delete store;
}

pstore_status pstore_store_stats_get(pstore_store* store, pstore_store_stats* out) {
  return Guard([&]() -> pstore_status {
    if (!store || !out || out->struct_size < sizeof(size_t))
      return Invalid("pstore_store_stats_get: NULL argument or struct_size not set");
    pstore_store_stats s = {};
    s.struct_size = std::min(out->struct_size, sizeof(s));  // what was filled
    pstore::StoreMemory m = store->pager->Memory();
    s.budget_bytes = m.budget_bytes;
    s.resident_bytes = m.resident_bytes;
    s.mapped_models = m.segments;
    std::memcpy(out, &s, std::min(out->struct_size, sizeof(s)));
    return PSTORE_OK;
  });
}

pstore_status pstore_store_list_models(pstore_store* store, pstore_model_visitor fn, void* ctx) {
  return Guard([&]() -> pstore_status {
    if (!store || !fn) return Invalid("pstore_store_list_models: NULL store or fn");
    auto reader = store->pager->CurrentReader();
    if (!reader.ok()) return ToC(reader.status());
    if (pstore::Status s = (*reader)->EnsureDb(); !s.ok()) return ToC(s);
    auto names = (*reader)->view().ListNames();
    if (!names.ok()) return ToC(names.status());
    for (const pstore::NameEntry& e : *names) fn(ctx, e.ref.c_str(), e.digest.Hex().c_str());
    return PSTORE_OK;
  });
}

pstore_status pstore_model_open(pstore_store* store, const char* ref, pstore_model** out) {
  return Guard([&]() -> pstore_status {
    if (!out) return Invalid("pstore_model_open: out is NULL");
    *out = nullptr;
    if (!store || !ref) return Invalid("pstore_model_open: NULL store or ref");
    auto m = store->pager->OpenModel(ref);
    if (!m.ok()) return ToC(m.status());
    auto* h = new pstore_model;
    h->pager = store->pager;
    h->model = std::move(m).value();
    h->digest_hex = h->model->digest().Hex();
    size_t n = h->model->tensor_count();
    h->held.reset(new std::atomic<uint32_t>[n ? n : 1]);
    for (size_t i = 0; i < n; i++) h->held[i].store(0);
    *out = h;
    return PSTORE_OK;
  });
}

void pstore_model_close(pstore_model* model) {
  if (!model) return;
  (void)Guard([&]() -> pstore_status {
    (void)model->model->WaitPrefetch();
    for (uint32_t t = 0; t < model->model->tensor_count(); t++) {
      uint32_t n = model->held[t].exchange(0);
      for (uint32_t k = 0; k < n; k++) (void)model->model->Release(t);
    }
    return PSTORE_OK;
  });
  delete model;
}

const char* pstore_model_digest(const pstore_model* model) {
  return model ? model->digest_hex.c_str() : "";
}

size_t pstore_model_tensor_count(const pstore_model* model) {
  return model ? model->model->tensor_count() : 0;
}

pstore_status pstore_model_tensor_info(const pstore_model* model, size_t index,
                                       pstore_tensor_info* out) {
  return Guard([&]() -> pstore_status {
    if (!model || !out) return Invalid("pstore_model_tensor_info: NULL argument");
    // A caller built against an older header passes a smaller struct (down to
    // the fields up to nbytes); a newer one a larger struct. Either way only
    // min(its size, ours) bytes are written, and struct_size says how many.
    if (out->struct_size < offsetof(pstore_tensor_info, nbytes) + sizeof(out->nbytes))
      return Invalid(
          "pstore_model_tensor_info: set struct_size = sizeof(pstore_tensor_info) before the "
          "call");
    if (index >= model->model->tensor_count())
      return Invalid("pstore_model_tensor_info: index out of range");
    const pstore::TensorTable& m = model->model->tables();
    const uint32_t t = uint32_t(index);
    pstore_tensor_info info;
    info.struct_size = std::min(out->struct_size, sizeof(info));  // what is filled
    info.name = m.name_cstr(t);
    info.dtype = pstore_dtype(m.dtype(t));
    info.ndim = uint32_t(m.shape(t).size());
    info.shape = m.shape(t).data();
    info.nbytes = m.size(t);
    info.ggml_type = pstore::IsGguf(m.format()) ? int32_t(m.ggml_type(t)) : -1;
    std::memcpy(out, &info, info.struct_size);
    return PSTORE_OK;
  });
}

pstore_status pstore_model_tensor_table(const pstore_model* model, pstore_tensor_table* out) {
  return Guard([&]() -> pstore_status {
    if (!model || !out) return Invalid("pstore_model_tensor_table: NULL argument");
    // The first version of the struct ends with addresses: a caller built
    // against it (or a later header) passes at least that much. Only
    // min(its size, ours) bytes are written, and struct_size says how many.
    constexpr size_t kTableV1 =
        offsetof(pstore_tensor_table, addresses) + sizeof(pstore_tensor_table::addresses);
    if (out->struct_size < kTableV1)
      return Invalid(
          "pstore_model_tensor_table: set struct_size = sizeof(pstore_tensor_table) before the "
          "call");
    const pstore::TensorTable& m = model->model->tables();
    const uint32_t n = m.count();
    std::call_once(model->table_once, [&] {
      TableArrays a;
      a.dtypes.resize(n);
      a.ndims.resize(n);
      a.nbytes.resize(n);
      a.ggml_types.resize(n);
      a.addresses.resize(n);
      const bool gguf = pstore::IsGguf(m.format());
      a.name_offsets.resize(size_t(n) + 1);
      for (uint32_t t = 0; t < n; t++) {
        a.name_offsets[t] = a.names.size();
        a.names.append(m.name(t));
        a.names.push_back('\0');
        a.dtypes[t] = int32_t(pstore_dtype(m.dtype(t)));
        a.ndims[t] = uint32_t(m.shape(t).size());
        a.shapes.insert(a.shapes.end(), m.shape(t).begin(), m.shape(t).end());
        a.nbytes[t] = m.size(t);
        a.ggml_types[t] = gguf ? int32_t(m.ggml_type(t)) : -1;
        a.addresses[t] = model->model->Address(t);
      }
      a.name_offsets[n] = a.names.size();
      model->table = std::move(a);
    });
    const TableArrays& a = model->table;
    pstore_tensor_table table;
    table.struct_size = std::min(out->struct_size, sizeof(table));  // what is filled
    table.count = n;
    table.names = a.names.data();
    table.names_bytes = a.names.size();
    table.name_offsets = a.name_offsets.data();
    table.dtypes = a.dtypes.data();
    table.ndims = a.ndims.data();
    table.shapes = a.shapes.data();
    table.nbytes = a.nbytes.data();
    table.ggml_types = a.ggml_types.data();
    table.addresses = a.addresses.data();
    std::memcpy(out, &table, table.struct_size);
    return PSTORE_OK;
  });
}

const char* pstore_model_format(const pstore_model* model) {
  return model ? pstore::SourceFormatName(model->model->tables().format()) : "";
}

pstore_status pstore_model_metadata(const pstore_model* model, const char** json, size_t* len) {
  return Guard([&]() -> pstore_status {
    if (!model || !json) return Invalid("pstore_model_metadata: NULL argument");
    const pstore::TensorTable& m = model->model->tables();
    std::string_view meta = m.metadata();
    *json = meta.empty() ? "{}" : m.metadata_cstr();
    if (len) *len = meta.empty() ? 2 : meta.size();
    return PSTORE_OK;
  });
}

pstore_status pstore_model_metadata_get(const pstore_model* model, const char* key,
                                        const char** json, size_t* len) {
  return Guard([&]() -> pstore_status {
    if (!model || !key || !json) return Invalid("pstore_model_metadata_get: NULL argument");
    std::call_once(model->meta_once, [&] {
      auto j = nlohmann::ordered_json::parse(model->model->tables().metadata(), nullptr, false);
      if (!j.is_object()) return;
      for (const auto& [k, v] : j.items())
        model->meta_values.emplace(
            k, v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    });
    auto it = model->meta_values.find(key);
    if (it == model->meta_values.end()) {
      g_last_error = std::string("model ") + model->digest_hex + " has no metadata key '" + key +
                     "' (pstore_model_metadata lists them all)";
      return PSTORE_ERR_NOT_FOUND;
    }
    *json = it->second.c_str();
    if (len) *len = it->second.size();
    return PSTORE_OK;
  });
}

pstore_status pstore_model_find_tensor(const pstore_model* model, const char* name, size_t* index) {
  return Guard([&]() -> pstore_status {
    if (!model || !name || !index) return Invalid("pstore_model_find_tensor: NULL argument");
    int64_t i = model->model->Find(name);
    if (i < 0) {
      g_last_error = std::string("no tensor named '") + name + "' in model " + model->digest_hex;
      return PSTORE_ERR_NOT_FOUND;
    }
    *index = size_t(i);
    return PSTORE_OK;
  });
}

namespace {

// One acquire through the handle, counted in held. REQUIRES: index in range.
pstore_status AcquireHeld(pstore_model* model, size_t index, const void** data) {
  auto p = model->model->Acquire(uint32_t(index));
  if (!p.ok()) return ToC(p.status());
  model->held[index].fetch_add(1, std::memory_order_relaxed);
  *data = *p;
  return PSTORE_OK;
}

}  // namespace

pstore_status pstore_tensor_acquire(pstore_model* model, size_t index, const void** data) {
  return Guard([&]() -> pstore_status {
    if (!model || !data) return Invalid("pstore_tensor_acquire: NULL argument");
    if (index >= model->model->tensor_count())
      return Invalid("pstore_tensor_acquire: index out of range");
    return AcquireHeld(model, index, data);
  });
}

pstore_status pstore_tensor_acquire_many(pstore_model* model, const size_t* indices, size_t count,
                                         const void** data) {
  return Guard([&]() -> pstore_status {
    if (!model || (count && (!indices || !data)))
      return Invalid("pstore_tensor_acquire_many: NULL argument");
    // On any failure below (an exception included) data[0..count) ends NULL.
    // data may overlap indices: the indices are copied before data is written.
    struct ClearOnFailure {
      const void** data;
      size_t count;
      bool ok = false;
      ~ClearOnFailure() {
        if (!ok)
          for (size_t i = 0; i < count; i++) data[i] = nullptr;
      }
    } clear{data, count};
    const size_t n = model->model->tensor_count();
    std::vector<uint32_t> list(count);
    for (size_t i = 0; i < count; i++) {
      if (indices[i] >= n) return Invalid("pstore_tensor_acquire_many: index out of range");
      list[i] = uint32_t(indices[i]);
    }
    // What this call acquired is released again if a later tensor fails
    // (or an exception leaves): all or nothing.
    struct Undo {
      pstore_model* model;
      const std::vector<uint32_t>& list;
      size_t done = 0;
      ~Undo() {
        for (size_t i = 0; i < done; i++) {
          model->held[list[i]].fetch_sub(1, std::memory_order_relaxed);
          (void)model->model->Release(list[i]);
        }
      }
    } undo{model, list};
    std::vector<const void*> got(count);
    for (; undo.done < count; undo.done++) {
      const uint32_t t = list[undo.done];
      // Guard here too, so an exception's message also gets the prefix.
      pstore_status st = Guard([&] { return AcquireHeld(model, t, &got[undo.done]); });
      if (st != PSTORE_OK) {
        g_last_error = "tensor '" + std::string(model->model->tables().name(t)) + "' (index " +
                       std::to_string(t) + "): " + g_last_error;
        return st;
      }
    }
    undo.done = 0;
    std::copy(got.begin(), got.end(), data);
    clear.ok = true;
    return PSTORE_OK;
  });
}

pstore_status pstore_tensor_release(pstore_model* model, size_t index) {
  return Guard([&]() -> pstore_status {
    if (!model) return Invalid("pstore_tensor_release: NULL model");
    if (index >= model->model->tensor_count())
      return Invalid("pstore_tensor_release: index out of range");
    uint32_t v = model->held[index].load();
    do {
      if (v == 0) return Invalid("pstore_tensor_release: tensor not acquired through this handle");
    } while (!model->held[index].compare_exchange_weak(v, v - 1));
    return ToC(model->model->Release(uint32_t(index)));
  });
}

pstore_status pstore_tensor_copy(pstore_model* model, size_t index, void* dst, size_t dst_size) {
  return Guard([&]() -> pstore_status {
    if (!model || (!dst && dst_size)) return Invalid("pstore_tensor_copy: NULL argument");
    if (index >= model->model->tensor_count())
      return Invalid("pstore_tensor_copy: index out of range");
    return ToC(model->model->Copy(uint32_t(index), dst, dst_size));
  });
}

pstore_status pstore_model_prefetch(pstore_model* model, const size_t* indices, size_t count) {
  return Guard([&]() -> pstore_status {
    if (!model || (!indices && count)) return Invalid("pstore_model_prefetch: NULL argument");
    std::vector<uint32_t> ts;
    for (size_t i = 0; i < count; i++) {
      if (indices[i] >= model->model->tensor_count())
        return Invalid("pstore_model_prefetch: index out of range");
      ts.push_back(uint32_t(indices[i]));
    }
    model->model->Prefetch(ts);
    return PSTORE_OK;
  });
}

pstore_status pstore_model_prefetch_prefix(pstore_model* model, const char* prefix,
                                           size_t* matched) {
  return Guard([&]() -> pstore_status {
    if (!model || !prefix) return Invalid("pstore_model_prefetch_prefix: NULL argument");
    std::vector<uint32_t> ts;
    size_t plen = std::strlen(prefix);
    const pstore::TensorTable& m = model->model->tables();
    for (uint32_t i = 0; i < m.count(); i++)
      if (m.name(i).substr(0, plen) == std::string_view(prefix, plen)) ts.push_back(i);
    if (matched) *matched = ts.size();
    model->model->Prefetch(ts);
    return PSTORE_OK;
  });
}

pstore_status pstore_model_prefetch_wait(pstore_model* model) {
  return Guard([&]() -> pstore_status {
    if (!model) return Invalid("pstore_model_prefetch_wait: NULL model");
    return ToC(model->model->WaitPrefetch());
  });
}

pstore_status pstore_model_stats_get(const pstore_model* model, pstore_model_stats* out) {
  return Guard([&]() -> pstore_status {
    if (!model || !out || out->struct_size < sizeof(size_t))
      return Invalid("pstore_model_stats_get: NULL argument or struct_size not set");
    pstore::ModelStats m = model->model->Stats();
    pstore_model_stats s = {};
    s.struct_size = std::min(out->struct_size, sizeof(s));  // what was filled
    s.acquires = m.acquires;
    s.hits = m.hits;
    s.misses = m.misses;
    s.chunk_loads = m.slots_loaded;
    s.bytes_read = m.bytes_read;
    s.bytes_decoded = m.bytes_decoded;
    s.load_ns = m.load_ns;
    s.resident_bytes = m.resident_bytes;
    s.pinned_bytes = m.pinned_bytes;
    s.host_loads = m.segment_loads;
    s.host_bytes_decoded = m.segment_bytes;
    s.evictions = m.evictions;
    s.model_bytes = model->model->tables().total_bytes();
    std::memcpy(out, &s, std::min(out->struct_size, sizeof(s)));
    return PSTORE_OK;
  });
}

void pstore_import_options_default(pstore_import_options* opts) {
  if (!opts) return;
  std::memset(opts, 0, sizeof(*opts));
  opts->struct_size = sizeof(*opts);
}

pstore_status pstore_import_file(const char* store_path, const char* source, const char* ref,
                                 const pstore_import_options* opts, char digest_out[33]) {
  return Guard([&]() -> pstore_status {
    if (!source || !ref) return Invalid("pstore_import_file: NULL source or ref");
    auto name = pstore::ParseModelName(ref);
    if (!name.ok()) return ToC(name.status());
    pstore::ImportOptions io;
    bool wait = false;
    if (opts) {
      if (opts->struct_size < offsetof(pstore_import_options, profile) + sizeof(opts->profile))
        return Invalid("pstore_import_file: options not filled by pstore_import_options_default");
      io.force = opts->force != 0;
      io.threads = opts->threads;
      wait = opts->wait != 0;
      if (opts->profile) {
        auto p = pstore::ProfileFromName(opts->profile);
        if (!p)
          return Invalid(
              "pstore_import_file: unknown codec profile (`pstore config --help` lists them)");
        io.profile = *p;
      }
      // Callers built before the progress callback existed pass a smaller
      // struct and get none.
      if (opts->struct_size >= offsetof(pstore_import_options, progress_user_data) +
                                   sizeof(opts->progress_user_data) &&
          opts->progress) {
        pstore_progress_fn fn = opts->progress;
        void* user = opts->progress_user_data;
        io.progress = [fn, user](uint64_t done, uint64_t total) {
          return fn(done, total, user) != 0;
        };
      }
    }
    if (io.threads < 0 || io.threads > pstore::kMaxThreads)
      return ToC(pstore::CheckThreads(io.threads, "pstore_import_file: threads"));
    // A bad source must not leave a new, empty store behind.
    pstore::Status checked = pstore::StoreWriter::CheckImportSource(source);
    if (!checked.ok()) return ToC(checked);
    std::string root = store_path && *store_path ? store_path : pstore::DefaultStorePath();
    auto w = pstore::StoreWriter::Open(root, wait);
    if (!w.ok()) return ToC(w.status());
    auto r = (*w)->Import(source, *name, io);
    if (!r.ok() && r.status().code() == pstore::Status::Code::kAborted)
      return ToC(pstore::Status::Aborted("the progress callback stopped the import of " +
                                         std::string(source) + " as " + name->Ref() +
                                         ": nothing of it was committed, and the chunks it had "
                                         "written are taken out again (should that fail, the "
                                         "next `pstore compact` removes them)"));
    if (!r.ok()) return ToC(r.status());
    if (digest_out) std::memcpy(digest_out, r->digest.Hex().c_str(), 33);
    return PSTORE_OK;
  });
}

}  // extern "C"
