/*
 * pstore.h: the C API of pstore, a store for model weights.
 *
 * An inference process opens a store read-only, opens a model by "name:tag"
 * (or digest), and acquires tensors: zero-copy, read-only pointers into a
 * shared-memory mapping that every process on the host shares. Only the
 * chunks of the tensors a process touches are read from the store and
 * decoded, once per host, not once per process; a store-wide memory budget
 * bounds the whole, evicting what nobody pins.
 *
 * Conventions
 *   - Every call that can fail returns a pstore_status. On failure,
 *     pstore_last_error() gives a message for the calling thread.
 *   - Handles are opaque. pstore_*_close(NULL) does nothing.
 *   - Options and stats structs start with a struct_size field: fill options
 *     with their *_default() function, and set struct_size = sizeof(...)
 *     before passing a stats struct, so later versions can add fields
 *     without breaking callers compiled against this one.
 *   - Status values and dtype values are never renumbered.
 *
 * Thread-safety
 *   A pstore_store and a pstore_model may be used from any number of threads
 *   at once; every function here is thread-safe, except that a handle must
 *   not be closed while another thread still uses it. Handles are not
 *   fork-safe: a child process must open its own store and models.
 *
 * Lifetimes
 *   - A pstore_model must be closed before its pstore_store (closing the store
 *     first is allowed; the store then stays alive until its last model
 *     closes).
 *   - The pointer from pstore_tensor_acquire stays valid until the matching
 *     pstore_tensor_release of that tensor in this process, and at most
 *     until the model is closed. The memory is read-only: writing through it
 *     is undefined (the mapping is PROT_READ).
 *   - Strings and arrays in pstore_tensor_info stay valid while the model is
 *     open.
 *
 * Error strings, versions: pstore_status_string(), pstore_last_error(),
 * pstore_version(), PSTORE_VERSION_*.
 */
#ifndef PSTORE_H_
#define PSTORE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PSTORE_EXPORT __attribute__((visibility("default")))
#else
#define PSTORE_EXPORT
#endif

#define PSTORE_VERSION_MAJOR 0
#define PSTORE_VERSION_MINOR 1
#define PSTORE_VERSION_PATCH 0
#define PSTORE_VERSION_NUMBER \
  (PSTORE_VERSION_MAJOR * 10000 + PSTORE_VERSION_MINOR * 100 + PSTORE_VERSION_PATCH)

/* Results. */
typedef enum pstore_status {
  PSTORE_OK = 0,
  PSTORE_ERR_NOT_FOUND = 1,        /* no such store, model, tensor or file */
  PSTORE_ERR_CORRUPTION = 2,       /* stored bytes fail their checks; nothing wrong was returned */
  PSTORE_ERR_INVALID_ARGUMENT = 3, /* a bad argument or a malformed input file */
  PSTORE_ERR_IO = 4,               /* the operating system refused a read, write or map */
  PSTORE_ERR_BUSY = 5,             /* another process holds what is needed (e.g. the writer lock) */
  PSTORE_ERR_NO_SPACE = 6,         /* disk or shared memory (/dev/shm) is full */
  PSTORE_ERR_UNSUPPORTED = 7,
  PSTORE_ERR_EXISTS = 8,           /* the name is taken (import without force) */
  PSTORE_ERR_INTERNAL = 9,         /* a bug in pstore; please report it */
  PSTORE_ERR_ABORTED = 10,         /* stopped at the caller's request */
  PSTORE_ERR_NO_MEMORY = 11        /* an allocation failed */
} pstore_status;

/* "OK", "not found", ...: a static string for every status (and "unknown"). */
PSTORE_EXPORT const char* pstore_status_string(pstore_status status);

/* The message of the last call on this thread that failed. Valid until the
 * next pstore call on this thread; "" if none failed. */
PSTORE_EXPORT const char* pstore_last_error(void);

/* The library's version, e.g. "0.1.0", and PSTORE_VERSION_NUMBER's twin. */
PSTORE_EXPORT const char* pstore_version(void);
PSTORE_EXPORT uint32_t pstore_version_number(void);

/* Element types, numbered as pstore stores them. */
typedef enum pstore_dtype {
  PSTORE_DTYPE_BOOL = 1,
  PSTORE_DTYPE_U8 = 2,
  PSTORE_DTYPE_I8 = 3,
  PSTORE_DTYPE_F8_E5M2 = 4,
  PSTORE_DTYPE_F8_E4M3 = 5,
  PSTORE_DTYPE_I16 = 6,
  PSTORE_DTYPE_U16 = 7,
  PSTORE_DTYPE_F16 = 8,
  PSTORE_DTYPE_BF16 = 9,
  PSTORE_DTYPE_I32 = 10,
  PSTORE_DTYPE_U32 = 11,
  PSTORE_DTYPE_F32 = 12,
  PSTORE_DTYPE_F64 = 13,
  PSTORE_DTYPE_I64 = 14,
  PSTORE_DTYPE_U64 = 15
} pstore_dtype;

/* "F16", "BF16", ...; "?" for an unknown value. */
PSTORE_EXPORT const char* pstore_dtype_name(pstore_dtype dtype);

typedef struct pstore_store pstore_store;
typedef struct pstore_model pstore_model;

/* ------------------------------------------------------------------------ */
/* Stores                                                                    */

typedef struct pstore_store_options {
  size_t struct_size;    /* sizeof(pstore_store_options) */
  uint64_t budget_bytes; /* memory budget for this store's mapped models on
                            the host; 0: the store's setting (`pstore config
                            --budget`), whose default is half of RAM */
  int loader_threads;    /* threads that read and decode chunks; 0: automatic;
                            at most 256 (more, or a negative number, is
                            PSTORE_ERR_INVALID_ARGUMENT) */
  int check_shared;      /* nonzero: do not trust bytes other processes loaded.
                            Each chunk of a tensor in shared memory is checked
                            against its key when this process first acquires
                            the tensor (and again after an eviction in its
                            segment); pstore_tensor_copy checks the copy and
                            decodes from the store what fails. A mismatch is
                            PSTORE_ERR_CORRUPTION, never wrong bytes. It does
                            not cover bytes changed while this process holds
                            the tensor: see docs/operations.md, "Group mode
                            and trust". Cost: one XXH3-128 pass over each
                            tensor (docs/benchmarks.md, "Checking shared
                            memory"). Callers built before this field existed
                            pass a smaller struct_size and get 0. */
} pstore_store_options;

/* Fills opts with defaults. */
PSTORE_EXPORT void pstore_store_options_default(pstore_store_options* opts);

/* Opens the store at path read-only. path NULL: $PSTORE_DIR, else
 * $XDG_DATA_HOME/pstore, else ~/.local/share/pstore. opts may be NULL.
 * Models imported after this call can still be opened through the handle.
 * @return PSTORE_OK, PSTORE_ERR_NOT_FOUND (no store there),
 *   PSTORE_ERR_CORRUPTION, PSTORE_ERR_IO, PSTORE_ERR_INVALID_ARGUMENT. */
PSTORE_EXPORT pstore_status pstore_store_open(const char* path, const pstore_store_options* opts,
                                              pstore_store** out);

/* Closes the handle (the store lives on until its open models close). */
PSTORE_EXPORT void pstore_store_close(pstore_store* store);

/* Stats structs: set struct_size = sizeof(...) before the call; on return it
 * says how many bytes were filled (smaller when the library is older than
 * the caller's header). */
typedef struct pstore_store_stats {
  size_t struct_size;      /* set to sizeof(pstore_store_stats) before the call */
  uint64_t budget_bytes;   /* the budget in force for this process */
  uint64_t resident_bytes; /* shared memory the store's models hold on the host now */
  uint64_t mapped_models;  /* model segments of this store on the host */
} pstore_store_stats;

/* @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (NULL or bad struct_size). */
PSTORE_EXPORT pstore_status pstore_store_stats_get(pstore_store* store, pstore_store_stats* out);

/* Called once per name by pstore_store_list_models: ref is "name:tag",
 * digest the model's 32 lowercase hex digits; both valid during the call only. */
typedef void (*pstore_model_visitor)(void* ctx, const char* ref, const char* digest);

/* Calls fn(ctx, ...) for every name in the store's newest generation, sorted
 * by name. fn must not call back into pstore with this store.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (NULL store or fn),
 *   PSTORE_ERR_CORRUPTION, PSTORE_ERR_IO, PSTORE_ERR_NOT_FOUND (the store's
 *   files vanished). */
PSTORE_EXPORT pstore_status pstore_store_list_models(pstore_store* store, pstore_model_visitor fn,
                                                     void* ctx);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */

/* Opens a model by "name:tag" ("name" means "name:latest") or by digest (32
 * hex digits, or a unique prefix of at least 8). Reads one manifest and maps
 * the model's shared memory; loads no tensor.
 * @return PSTORE_OK, PSTORE_ERR_NOT_FOUND, PSTORE_ERR_INVALID_ARGUMENT (bad
 *   name), PSTORE_ERR_CORRUPTION, PSTORE_ERR_NO_SPACE (/dev/shm full),
 *   PSTORE_ERR_BUSY (too many processes attached), PSTORE_ERR_IO. */
PSTORE_EXPORT pstore_status pstore_model_open(pstore_store* store, const char* ref,
                                              pstore_model** out);

/* Releases every tensor this handle still holds and closes it. */
PSTORE_EXPORT void pstore_model_close(pstore_model* model);

/* The model's digest: 32 lowercase hex digits, valid while the model is open. */
PSTORE_EXPORT const char* pstore_model_digest(const pstore_model* model);

/* Number of tensors (0 for NULL). */
PSTORE_EXPORT size_t pstore_model_tensor_count(const pstore_model* model);

/* A tensor's description. Set struct_size = sizeof(pstore_tensor_info) before
 * the call; on return it says how many bytes were filled (smaller when the
 * library is older than the caller's header; fields past it are untouched). */
typedef struct pstore_tensor_info {
  size_t struct_size;    /* set to sizeof(pstore_tensor_info) before the call */
  const char* name;      /* NUL-terminated */
  pstore_dtype dtype;    /* a GGUF tensor of a quantized or unknown GGML type: U8 */
  uint32_t ndim;
  const uint64_t* shape; /* ndim entries, outermost first (a GGUF file's ne[]
                            reversed); elements, not blocks, for quantized types */
  uint64_t nbytes;
  int32_t ggml_type; /* a GGUF model's GGML type (ggml.h's enum ggml_type:
                        0 F32, 1 F16, 2 Q4_0, 8 Q8_0, ... and types newer
                        than pstore, stored as opaque blocks); -1 for a
                        model of another format */
} pstore_tensor_info;

/* @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (NULL, index out of range,
 *   or struct_size smaller than the fields up to nbytes). */
PSTORE_EXPORT pstore_status pstore_model_tensor_info(const pstore_model* model, size_t index,
                                                     pstore_tensor_info* out);

/* The format the model was imported from: "safetensors",
 * "safetensors-sharded", "gguf" or "gguf-split" (static strings; "" for NULL). */
PSTORE_EXPORT const char* pstore_model_format(const pstore_model* model);

/* The model's metadata as one JSON object (UTF-8, NUL-terminated): a GGUF
 * model's key-values in file order (numbers, strings, arrays as JSON arrays;
 * tokenizer vocabularies included), a safetensors model's __metadata__, "{}"
 * when it has none. *json and *len (which may be NULL) stay valid while the
 * model is open.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (NULL model or json). */
PSTORE_EXPORT pstore_status pstore_model_metadata(const pstore_model* model, const char** json,
                                                  size_t* len);

/* One metadata key's value as JSON text: "4096", "\"llama\"", "[...]".
 * *json and *len (which may be NULL) stay valid while the model is open.
 * @return PSTORE_OK, PSTORE_ERR_NOT_FOUND (no such key),
 *   PSTORE_ERR_INVALID_ARGUMENT (NULL argument). */
PSTORE_EXPORT pstore_status pstore_model_metadata_get(const pstore_model* model, const char* key,
                                                      const char** json, size_t* len);

/* Looks a tensor up by name.
 * @return PSTORE_OK, PSTORE_ERR_NOT_FOUND, PSTORE_ERR_INVALID_ARGUMENT. */
PSTORE_EXPORT pstore_status pstore_model_find_tensor(const pstore_model* model, const char* name,
                                                     size_t* index);

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */

/* Pages the tensor in (reading and decoding only its chunks, and only if no
 * process on the host has them resident), pins it so it cannot be evicted,
 * and returns a read-only pointer to its bytes, aligned to 64 bytes (to the
 * page for tensors of a page or more; for a GGUF model, also to its
 * general.alignment, up to 2 MiB). Every acquire needs one release. An
 * empty tensor gives a valid, non-NULL pointer to no bytes.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT, PSTORE_ERR_CORRUPTION (a
 *   chunk failed its checks or is missing; the message names model, tensor
 *   and chunk), PSTORE_ERR_NO_SPACE (/dev/shm full, or out of memory while
 *   loading), PSTORE_ERR_NOT_FOUND or PSTORE_ERR_BUSY (the store's files
 *   vanished or are locked by the system), PSTORE_ERR_IO, PSTORE_ERR_NO_MEMORY,
 *   PSTORE_ERR_INTERNAL. */
PSTORE_EXPORT pstore_status pstore_tensor_acquire(pstore_model* model, size_t index,
                                                  const void** data);

/* Unpins a tensor acquired before; its pointer must not be used afterwards.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (not acquired). */
PSTORE_EXPORT pstore_status pstore_tensor_release(pstore_model* model, size_t index);

/* Copies the tensor's bytes into dst (dst_size >= nbytes), e.g. to upload it
 * to a GPU. Copies from shared memory if the tensor is resident; otherwise
 * decodes the chunks straight into dst without mapping them.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (too small), and as acquire. */
PSTORE_EXPORT pstore_status pstore_tensor_copy(pstore_model* model, size_t index, void* dst,
                                               size_t dst_size);

/* Starts loading these tensors in the background and returns at once; they
 * are not pinned. Errors surface in pstore_model_prefetch_wait.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (an index out of range). */
PSTORE_EXPORT pstore_status pstore_model_prefetch(pstore_model* model, const size_t* indices,
                                                  size_t count);

/* Prefetches every tensor whose name starts with prefix (a layer, e.g.
 * "model.layers.7."); matched, if not NULL, receives how many matched.
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT. */
PSTORE_EXPORT pstore_status pstore_model_prefetch_prefix(pstore_model* model, const char* prefix,
                                                         size_t* matched);

/* Waits for this handle's prefetches so far.
 * @return PSTORE_OK or the first error a prefetch met. */
PSTORE_EXPORT pstore_status pstore_model_prefetch_wait(pstore_model* model);

typedef struct pstore_model_stats {
  size_t struct_size;      /* set to sizeof(pstore_model_stats) before the call */
  uint64_t acquires;       /* by this process */
  uint64_t hits;           /* acquires that found every chunk resident */
  uint64_t misses;         /* acquires that had to wait for a load */
  uint64_t chunk_loads;    /* slots this process loaded (read, decoded, checked) */
  uint64_t bytes_read;     /* stored bytes this process read from the store */
  uint64_t bytes_decoded;  /* raw bytes this process decoded */
  uint64_t load_ns;        /* time this process spent loading */
  uint64_t resident_bytes; /* the model's shared memory now (every process) */
  uint64_t pinned_bytes;   /* bytes of tensors this process pins now */
  uint64_t host_loads;     /* slot loads into the shared memory by every process */
  uint64_t host_bytes_decoded;
  uint64_t evictions;      /* slots evicted from the shared memory */
  uint64_t model_bytes;    /* the model's raw tensor bytes */
} pstore_model_stats;

/* @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT. */
PSTORE_EXPORT pstore_status pstore_model_stats_get(const pstore_model* model,
                                                   pstore_model_stats* out);

/* ------------------------------------------------------------------------ */
/* Publishing weights                                                        */

typedef struct pstore_import_options {
  size_t struct_size; /* sizeof(pstore_import_options) */
  int force;          /* nonzero: replace the name if it names another model */
  int wait;           /* nonzero: wait for another writer instead of PSTORE_ERR_BUSY */
  int threads;        /* 0: one per core; at most 256 */
  const char* profile;/* codec profile ("fast", "dense", ...); NULL: the store's */
} pstore_import_options;

PSTORE_EXPORT void pstore_import_options_default(pstore_import_options* opts);

/* Imports a safetensors file (or a sharded model's folder or index), or a GGUF
 * file (a split GGUF model by any of its files' names), into the
 * store at store_path (NULL: the default store, created if missing) under
 * ref, atomically: after a crash the model is wholly there or not at all.
 * digest_out, if not NULL, receives the model's digest (33 bytes with NUL).
 * @return PSTORE_OK, PSTORE_ERR_INVALID_ARGUMENT (malformed file, bad name),
 *   PSTORE_ERR_NOT_FOUND, PSTORE_ERR_EXISTS, PSTORE_ERR_BUSY,
 *   PSTORE_ERR_NO_SPACE (the model does not fit, or the space the store sets
 *   aside for a full disk is gone and cannot be set aside again: nothing is
 *   written; see docs/operations.md, "Full disk"), PSTORE_ERR_IO,
 *   PSTORE_ERR_CORRUPTION. */
PSTORE_EXPORT pstore_status pstore_import_file(const char* store_path, const char* source,
                                               const char* ref,
                                               const pstore_import_options* opts,
                                               char digest_out[33]);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PSTORE_H_ */
