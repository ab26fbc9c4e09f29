/* c_api_contract: the C API's contract, checked from C99 against pstore.h as
 * its own test: versions, status strings, every error path a caller can
 * reach with bad arguments or bad files, struct_size in both directions, and
 * the import progress callback, including a stop mid-import that must leave
 * the store exactly as it was (checked with the pstore command: stat,
 * compact, verify).
 *
 *   c_api_contract PSTORE_BIN
 *
 * Works in a fresh folder under $TMPDIR (or /tmp) and removes it, and the
 * store's shared memory, at the end. Exit 0 when every check holds; each
 * failed check prints one line saying what differed. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pstore.h"

static int g_failed = 0;
static const char* g_pstore_bin;
static char g_dir[512];
static char g_store[600];

#define CHECK(cond, ...)                                           \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "FAILED line %d: ", __LINE__);               \
      fprintf(stderr, __VA_ARGS__);                                \
      fprintf(stderr, " (last error: %s)\n", pstore_last_error()); \
      g_failed++;                                                  \
    }                                                              \
  } while (0)

#define EXPECT_STATUS(call, want)                                                       \
  do {                                                                                  \
    pstore_status got_ = (call);                                                        \
    CHECK(got_ == (want), "%s returned %s, want %s", #call, pstore_status_string(got_), \
          pstore_status_string(want));                                                  \
  } while (0)

/* ---- files ---------------------------------------------------------------- */

static uint64_t g_rng;
static uint8_t next_byte(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint8_t)(g_rng >> 24);
}

/* Writes a safetensors file of `tensors` U8 tensors of `each` random bytes. */
static int write_model(const char* path, int tensors, size_t each, uint64_t seed) {
  char header[8192];
  size_t h = 0;
  int i;
  h += (size_t)snprintf(header + h, sizeof header - h, "{");
  for (i = 0; i < tensors; i++)
    h += (size_t)snprintf(header + h, sizeof header - h,
                          "%s\"t%d\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}",
                          i ? "," : "", i, each, (size_t)i * each, (size_t)(i + 1) * each);
  h += (size_t)snprintf(header + h, sizeof header - h, "}");
  while (h % 8) header[h++] = ' ';
  FILE* f = fopen(path, "wb");
  if (!f) return -1;
  uint64_t len = h;
  fwrite(&len, 8, 1, f);
  fwrite(header, 1, h, f);
  unsigned char* buf = malloc(each);
  g_rng = seed * 0x9E3779B97F4A7C15ull + 1;
  for (i = 0; i < tensors; i++) {
    size_t k;
    for (k = 0; k < each; k++) buf[k] = next_byte();
    fwrite(buf, 1, each, f);
  }
  free(buf);
  return fclose(f);
}

/* Runs `PSTORE_BIN --store STORE --json ARGS` and returns its output
 * (malloc'd) and exit code. */
static char* run_pstore(const char* args, int* rc) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' --store '%s' --json %s 2>&1", g_pstore_bin, g_store, args);
  FILE* p = popen(cmd, "r");
  if (!p) {
    *rc = -1;
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char* out = malloc(cap);
  size_t got;
  while ((got = fread(out + n, 1, cap - 1 - n, p)) > 0) {
    n += got;
    if (n + 1 >= cap) out = realloc(out, cap *= 2);
  }
  out[n] = 0;
  int st = pclose(p);
  *rc = (st >= 0 && (st & 0x7f) == 0) ? (st >> 8) & 0xff : -1;
  return out;
}

/* The number after "key": in a JSON text; UINT64_MAX when absent. */
static uint64_t json_u64(const char* json, const char* key) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char* p = json ? strstr(json, pat) : NULL;
  if (!p) return UINT64_MAX;
  p += strlen(pat);
  while (*p == ' ') p++;
  return strtoull(p, NULL, 10);
}

struct store_state {
  uint64_t chunks, stored_bytes, unique_bytes, names;
};

static struct store_state stat_store(void) {
  struct store_state s = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
  int rc;
  char* out = run_pstore("stat", &rc);
  CHECK(rc == 0, "pstore stat exited %d: %s", rc, out ? out : "");
  if (out) {
    s.chunks = json_u64(out, "chunks");
    s.stored_bytes = json_u64(out, "stored_bytes");
    s.unique_bytes = json_u64(out, "unique_bytes");
    s.names = json_u64(out, "names");
  }
  free(out);
  return s;
}

/* ---- progress callbacks ---------------------------------------------------- */

struct progress_log {
  int calls;
  uint64_t last_done, total;
  int went_back;    /* done decreased, or total changed */
  int stop_at_call; /* return 0 on this call (1-based); 0: never */
  int stop_at_end;  /* return 0 when done == total */
};

static int on_progress(uint64_t done, uint64_t total, void* user) {
  struct progress_log* l = user;
  if (l->calls > 0 && (done < l->last_done || total != l->total)) l->went_back = 1;
  l->calls++;
  l->last_done = done;
  l->total = total;
  if (l->stop_at_call && l->calls == l->stop_at_call) return 0;
  if (l->stop_at_end && done == total) return 0;
  return 1;
}

/* A callback an older caller's struct never reaches: calling it is a bug. */
static int must_not_run(uint64_t done, uint64_t total, void* user) {
  (void)done;
  (void)total;
  *(int*)user = 1;
  return 0;
}

struct listed {
  int count;
  int saw_big;
};
static void on_model(void* ctx, const char* ref, const char* digest) {
  struct listed* l = ctx;
  (void)digest;
  l->count++;
  if (strncmp(ref, "big:", 4) == 0 || strncmp(ref, "late:", 5) == 0) l->saw_big = 1;
}

/* ---- the checks ------------------------------------------------------------ */

static void check_versions_and_strings(void) {
  int s;
  CHECK(strcmp(pstore_version(), PSTORE_VERSION_STRING) == 0, "pstore_version() %s, header %s",
        pstore_version(), PSTORE_VERSION_STRING);
  CHECK(pstore_version_number() == PSTORE_VERSION_NUMBER, "pstore_version_number() %u, header %d",
        (unsigned)pstore_version_number(), PSTORE_VERSION_NUMBER);
  for (s = PSTORE_OK; s <= PSTORE_ERR_NO_MEMORY; s++)
    CHECK(strcmp(pstore_status_string((pstore_status)s), "unknown") != 0, "status %d has no string",
          s);
  CHECK(strcmp(pstore_status_string((pstore_status)(PSTORE_ERR_NO_MEMORY + 1)), "unknown") == 0,
        "a status past the last one is not \"unknown\"");
  CHECK(strcmp(pstore_dtype_name(PSTORE_DTYPE_BF16), "BF16") == 0, "dtype name of BF16");
  CHECK(strcmp(pstore_dtype_name((pstore_dtype)200), "?") == 0, "dtype name of 200");
}

static void check_store_open_errors(void) {
  pstore_store* s = (pstore_store*)1;
  pstore_store_options o;
  char missing[700];
  snprintf(missing, sizeof missing, "%s/no-store-here", g_dir);
  EXPECT_STATUS(pstore_store_open(missing, NULL, &s), PSTORE_ERR_NOT_FOUND);
  CHECK(s == NULL, "a failed pstore_store_open left *out set");
  CHECK(strstr(pstore_last_error(), "no-store-here") != NULL,
        "the error does not name the folder: %s", pstore_last_error());
  EXPECT_STATUS(pstore_store_open(missing, NULL, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  pstore_store_options_default(&o);
  o.struct_size = 0;
  EXPECT_STATUS(pstore_store_open(g_store, &o, &s), PSTORE_ERR_INVALID_ARGUMENT);
  pstore_store_options_default(&o);
  o.loader_threads = 100000;
  EXPECT_STATUS(pstore_store_open(g_store, &o, &s), PSTORE_ERR_INVALID_ARGUMENT);
  pstore_store_options_default(NULL); /* a no-op */
  pstore_store_close(NULL);
  pstore_model_close(NULL);
}

static void check_import_errors(const char* small) {
  char path[700];
  pstore_import_options o;
  pstore_import_options_default(&o);
  EXPECT_STATUS(pstore_import_file(g_store, NULL, "x:1", NULL, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_import_file(g_store, small, NULL, NULL, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_import_file(g_store, small, "Bad Name!", NULL, NULL),
                PSTORE_ERR_INVALID_ARGUMENT);
  snprintf(path, sizeof path, "%s/missing.safetensors", g_dir);
  EXPECT_STATUS(pstore_import_file(g_store, path, "x:1", NULL, NULL), PSTORE_ERR_NOT_FOUND);
  CHECK(strstr(pstore_last_error(), "missing.safetensors") != NULL,
        "the error does not name the file: %s", pstore_last_error());
  /* A malformed file: a header length past the file's end. */
  snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
  {
    FILE* f = fopen(path, "wb");
    uint64_t len = 1u << 20;
    fwrite(&len, 8, 1, f);
    fputs("{\"a\":", f);
    fclose(f);
  }
  EXPECT_STATUS(pstore_import_file(g_store, path, "x:1", NULL, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  CHECK(strstr(pstore_last_error(), "bad.safetensors") != NULL,
        "the error does not name the file: %s", pstore_last_error());
  o.profile = "no-such-profile";
  EXPECT_STATUS(pstore_import_file(g_store, small, "x:1", &o, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  pstore_import_options_default(&o);
  o.threads = 100000;
  EXPECT_STATUS(pstore_import_file(g_store, small, "x:1", &o, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  pstore_import_options_default(&o);
  o.struct_size = sizeof(size_t);
  EXPECT_STATUS(pstore_import_file(g_store, small, "x:1", &o, NULL), PSTORE_ERR_INVALID_ARGUMENT);
}

static void check_model_errors_and_info(void) {
  pstore_store* s = NULL;
  pstore_model* m = (pstore_model*)1;
  pstore_status st = pstore_store_open(g_store, NULL, &s);
  CHECK(st == PSTORE_OK, "pstore_store_open of the test store: %s", pstore_status_string(st));
  if (st != PSTORE_OK) return;
  EXPECT_STATUS(pstore_model_open(s, "nosuch:1", &m), PSTORE_ERR_NOT_FOUND);
  CHECK(m == NULL, "a failed pstore_model_open left *out set");
  EXPECT_STATUS(pstore_model_open(s, "Bad Name!", &m), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_model_open(NULL, "small:1", &m), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_model_open(s, NULL, &m), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_model_open(s, "small:1", NULL), PSTORE_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(pstore_store_stats_get(s, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  st = pstore_model_open(s, "small:1", &m);
  CHECK(st == PSTORE_OK, "pstore_model_open small:1: %s", pstore_status_string(st));
  if (st != PSTORE_OK) {
    pstore_store_close(s);
    return;
  }
  /* Closing the store first is allowed: the model stays usable. */
  pstore_store_close(s);
  size_t n = pstore_model_tensor_count(m);
  CHECK(n == 3, "small:1 has %zu tensors, want 3", n);

  /* pstore_tensor_info, struct_size both ways. */
  {
    pstore_tensor_info info;
    struct {
      pstore_tensor_info info;
      unsigned char later[16]; /* fields a newer header would have */
    } newer;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT_STATUS(pstore_model_tensor_info(m, 0, &info), PSTORE_OK);
    CHECK(info.struct_size == sizeof info && info.nbytes == 4096 && info.ndim == 1 &&
              info.dtype == PSTORE_DTYPE_U8 && info.ggml_type == -1 && strcmp(info.name, "t0") == 0,
          "tensor 0: struct_size %zu, nbytes %llu, ggml_type %d", info.struct_size,
          (unsigned long long)info.nbytes, (int)info.ggml_type);
    /* An older caller: its struct ends before ggml_type. */
    memset(&info, 0, sizeof info);
    info.struct_size = offsetof(pstore_tensor_info, ggml_type);
    info.ggml_type = 12345;
    EXPECT_STATUS(pstore_model_tensor_info(m, 1, &info), PSTORE_OK);
    CHECK(info.struct_size == offsetof(pstore_tensor_info, ggml_type) && info.ggml_type == 12345 &&
              info.nbytes == 4096,
          "an older caller's info: struct_size %zu, ggml_type %d (want %zu, untouched 12345)",
          info.struct_size, (int)info.ggml_type, offsetof(pstore_tensor_info, ggml_type));
    /* A newer caller: its struct is larger; the library fills what it knows. */
    memset(&newer, 0xAB, sizeof newer);
    newer.info.struct_size = sizeof newer;
    EXPECT_STATUS(pstore_model_tensor_info(m, 2, &newer.info), PSTORE_OK);
    CHECK(newer.info.struct_size == sizeof(pstore_tensor_info) && newer.later[0] == 0xAB &&
              newer.later[15] == 0xAB && newer.info.nbytes == 4096,
          "a newer caller's info: struct_size %zu (want %zu), later bytes %02x",
          newer.info.struct_size, sizeof(pstore_tensor_info), newer.later[0]);
    info.struct_size = offsetof(pstore_tensor_info, nbytes);
    EXPECT_STATUS(pstore_model_tensor_info(m, 0, &info), PSTORE_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info;
    EXPECT_STATUS(pstore_model_tensor_info(m, n, &info), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_tensor_info(NULL, 0, &info), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_tensor_info(m, 0, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  }
  /* pstore_tensor_table, struct_size both ways: a newer caller's larger
   * struct keeps its later bytes and learns the library's size; the first
   * version's struct (through addresses) is filled; one byte less is refused. */
  {
    struct {
      pstore_tensor_table t;
      unsigned char later[16]; /* fields a newer header would have */
    } newer;
    pstore_tensor_table t;
    const size_t v1 = offsetof(pstore_tensor_table, addresses) + sizeof(void*);
    memset(&newer, 0xAB, sizeof newer);
    newer.t.struct_size = sizeof newer;
    EXPECT_STATUS(pstore_model_tensor_table(m, &newer.t), PSTORE_OK);
    CHECK(newer.t.struct_size == sizeof(pstore_tensor_table) && newer.later[0] == 0xAB &&
              newer.later[15] == 0xAB && newer.t.count == n,
          "a newer caller's table: struct_size %zu (want %zu), later bytes %02x %02x",
          newer.t.struct_size, sizeof(pstore_tensor_table), newer.later[0], newer.later[15]);
    memset(&t, 0, sizeof t);
    t.struct_size = v1;
    EXPECT_STATUS(pstore_model_tensor_table(m, &t), PSTORE_OK);
    CHECK(t.struct_size == v1 && t.count == n && t.addresses != NULL && t.nbytes[0] == 4096,
          "the first version's table: struct_size %zu (want %zu), count %zu", t.struct_size, v1,
          t.count);
    t.struct_size = v1 - 1;
    EXPECT_STATUS(pstore_model_tensor_table(m, &t), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_tensor_table(m, NULL), PSTORE_ERR_INVALID_ARGUMENT);
  }
  {
    const void* p = NULL;
    const char* json = NULL;
    size_t idx = 0, matched = 0;
    unsigned char small_buf[16];
    pstore_model_stats ms;
    EXPECT_STATUS(pstore_tensor_acquire(m, n, &p), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_tensor_acquire(m, 0, NULL), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_tensor_release(m, 0), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_tensor_release(m, n), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_tensor_copy(m, 0, small_buf, sizeof small_buf),
                  PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_tensor_copy(m, n, small_buf, sizeof small_buf),
                  PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_find_tensor(m, "nosuch", &idx), PSTORE_ERR_NOT_FOUND);
    EXPECT_STATUS(pstore_model_find_tensor(m, NULL, &idx), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_metadata(m, NULL, NULL), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_metadata(NULL, &json, NULL), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_metadata_get(m, "nosuch", &json, NULL), PSTORE_ERR_NOT_FOUND);
    EXPECT_STATUS(pstore_model_prefetch(m, &n, 1), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_prefetch(m, NULL, 1), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_prefetch_prefix(m, NULL, &matched), PSTORE_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(pstore_model_prefetch_wait(NULL), PSTORE_ERR_INVALID_ARGUMENT);
    ms.struct_size = 0;
    EXPECT_STATUS(pstore_model_stats_get(m, &ms), PSTORE_ERR_INVALID_ARGUMENT);
    /* And the good path once, so the errors above did not break the handle. */
    EXPECT_STATUS(pstore_tensor_acquire(m, 0, &p), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 0), PSTORE_OK);
    EXPECT_STATUS(pstore_model_prefetch_prefix(m, "t", &matched), PSTORE_OK);
    EXPECT_STATUS(pstore_model_prefetch_wait(m), PSTORE_OK);
    CHECK(matched == n, "prefetch_prefix matched %zu of %zu", matched, n);
  }
  /* pstore_tensor_acquire_many with data overlapping indices (one slot
   * ahead, so each pointer lands on an index not yet read): the indices are
   * read before any pointer is written. On failure every data[i] is NULL. */
  {
    size_t* raw = malloc(4 * sizeof(size_t));
    const void** data = (const void**)(void*)(raw + 1);
    const void* first = NULL;
    const void* second = NULL;
    raw[0] = 2;
    raw[1] = 0;
    raw[2] = 1;
    raw[3] = 0;
    EXPECT_STATUS(pstore_tensor_acquire(m, 2, &first), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_acquire(m, 1, &second), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_acquire_many(m, raw, 3, data), PSTORE_OK);
    CHECK(data[0] == first && data[2] == second && data[1] != NULL,
          "overlapping acquire_many: data %p %p %p, want %p, tensor 0's, %p", data[0], data[1],
          data[2], first, second);
    EXPECT_STATUS(pstore_tensor_release(m, 0), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 1), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 1), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 2), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 2), PSTORE_OK);
    EXPECT_STATUS(pstore_tensor_release(m, 0), PSTORE_ERR_INVALID_ARGUMENT);
    raw[0] = 0;
    raw[1] = n;
    data = (const void**)(void*)raw;
    EXPECT_STATUS(pstore_tensor_acquire_many(m, raw, 2, data), PSTORE_ERR_INVALID_ARGUMENT);
    CHECK(data[0] == NULL && data[1] == NULL, "a failed acquire_many left data %p %p", data[0],
          data[1]);
    EXPECT_STATUS(pstore_tensor_release(m, 0), PSTORE_ERR_INVALID_ARGUMENT);
    free(raw);
  }
  pstore_model_close(m);
}

/* A model of no tensors (a safetensors file "{}"): its table is empty but
 * whole (name_offsets holds its one entry, 0), and acquiring no tensors
 * succeeds. */
static void check_model_without_tensors(const char* path) {
  pstore_store* s = NULL;
  pstore_model* m = NULL;
  pstore_tensor_table t;
  EXPECT_STATUS(pstore_import_file(g_store, path, "empty:1", NULL, NULL), PSTORE_OK);
  EXPECT_STATUS(pstore_store_open(g_store, NULL, &s), PSTORE_OK);
  if (!s) return;
  EXPECT_STATUS(pstore_model_open(s, "empty:1", &m), PSTORE_OK);
  pstore_store_close(s);
  if (!m) return;
  CHECK(pstore_model_tensor_count(m) == 0, "empty:1 has %zu tensors", pstore_model_tensor_count(m));
  memset(&t, 0xAB, sizeof t);
  t.struct_size = sizeof t;
  EXPECT_STATUS(pstore_model_tensor_table(m, &t), PSTORE_OK);
  CHECK(t.count == 0 && t.names_bytes == 0 && t.name_offsets != NULL && t.name_offsets[0] == 0,
        "the table of a model without tensors: count %zu, names_bytes %zu", t.count, t.names_bytes);
  EXPECT_STATUS(pstore_tensor_acquire_many(m, NULL, 0, NULL), PSTORE_OK);
  pstore_model_close(m);
}

/* Out of memory is PSTORE_ERR_NO_MEMORY, with a message, and no crash: a
 * child process limits its address space to a little more than it uses, then
 * asks to prefetch 64 Mi indices (the library's copy of them cannot be
 * allocated). */
static void check_no_memory(void) {
  pid_t pid = fork();
  if (pid == 0) {
    pstore_store* s = NULL;
    pstore_model* m = NULL;
    size_t count = (size_t)64 << 20;
    size_t* idx = calloc(count, sizeof(size_t)); /* zero pages: index 0 */
    unsigned long vm_pages = 0;
    FILE* f = fopen("/proc/self/statm", "r");
    struct rlimit rl;
    pstore_status st;
    if (!idx || !f || fscanf(f, "%lu", &vm_pages) != 1) _exit(3);
    fclose(f);
    if (pstore_store_open(g_store, NULL, &s) != PSTORE_OK ||
        pstore_model_open(s, "small:1", &m) != PSTORE_OK)
      _exit(4);
    rl.rlim_cur = rl.rlim_max = (rlim_t)vm_pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(5);
    st = pstore_model_prefetch(m, idx, count);
    if (st != PSTORE_ERR_NO_MEMORY || strstr(pstore_last_error(), "out of memory") == NULL) {
      fprintf(stderr, "prefetch under a memory limit: %s: %s\n", pstore_status_string(st),
              pstore_last_error());
      _exit(6);
    }
    _exit(0);
  }
  {
    int ws = 0;
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
          "the out-of-memory child failed (status %d): a bad_alloc must be PSTORE_ERR_NO_MEMORY",
          ws);
  }
}

/* The store holds exactly what it held before, and nothing is left over. */
static void check_store_unchanged(const struct store_state* before, const char* what) {
  struct store_state now;
  int rc;
  char* out;
  /* stat reads the newest generation; a tag change publishes a new one from
   * the live database, where an import's leftovers would be. */
  out = run_pstore("tag small:1 small:again", &rc);
  CHECK(rc == 0, "%s: pstore tag exited %d: %s", what, rc, out ? out : "");
  free(out);
  now = stat_store();
  CHECK(now.chunks == before->chunks && now.stored_bytes == before->stored_bytes &&
            now.unique_bytes == before->unique_bytes,
        "%s: the store changed: chunks %llu -> %llu, stored bytes %llu -> %llu", what,
        (unsigned long long)before->chunks, (unsigned long long)now.chunks,
        (unsigned long long)before->stored_bytes, (unsigned long long)now.stored_bytes);
  out = run_pstore("compact", &rc);
  CHECK(rc == 0 && json_u64(out, "chunks_removed") == 0,
        "%s: compact found chunks to remove (exit %d): %s", what, rc, out ? out : "");
  free(out);
  out = run_pstore("verify", &rc);
  CHECK(rc == 0, "%s: pstore verify exited %d: %s", what, rc, out ? out : "");
  free(out);
  out = run_pstore("rm small:again", &rc);
  free(out);
}

static void check_no_model(const char* ref) {
  pstore_store* s = NULL;
  pstore_model* m = NULL;
  struct listed l = {0, 0};
  if (pstore_store_open(g_store, NULL, &s) != PSTORE_OK) {
    CHECK(0, "pstore_store_open after an aborted import");
    return;
  }
  EXPECT_STATUS(pstore_model_open(s, ref, &m), PSTORE_ERR_NOT_FOUND);
  EXPECT_STATUS(pstore_store_list_models(s, on_model, &l), PSTORE_OK);
  CHECK(!l.saw_big, "%s is listed after its import was stopped", ref);
  pstore_model_close(m);
  pstore_store_close(s);
}

static void check_progress(const char* small, const char* big, const char* late) {
  pstore_import_options o;
  struct progress_log log;
  struct store_state before;
  char digest[33];
  int ran = 0;

  /* A callback that lets the import go on sees done rise to total. */
  memset(&log, 0, sizeof log);
  pstore_import_options_default(&o);
  o.progress = on_progress;
  o.progress_user_data = &log;
  EXPECT_STATUS(pstore_import_file(g_store, small, "small:2", &o, digest), PSTORE_OK);
  CHECK(log.calls >= 1 && log.last_done == log.total && log.total == 3 * 4096 && !log.went_back,
        "progress: %d calls, last %llu of %llu, went back %d", log.calls,
        (unsigned long long)log.last_done, (unsigned long long)log.total, log.went_back);

  /* A caller built before the callback existed: its struct ends at profile,
   * and whatever lies past it is not read. */
  pstore_import_options_default(&o);
  o.progress = must_not_run;
  o.progress_user_data = &ran;
  o.struct_size = offsetof(pstore_import_options, progress);
  EXPECT_STATUS(pstore_import_file(g_store, small, "small:3", &o, NULL), PSTORE_OK);
  CHECK(!ran, "the progress callback past an older caller's struct_size was called");

  /* Stopped mid-import: chunks were written, and must be taken out again. */
  before = stat_store();
  memset(&log, 0, sizeof log);
  log.stop_at_call = 1;
  pstore_import_options_default(&o);
  o.threads = 1;
  o.progress = on_progress;
  o.progress_user_data = &log;
  EXPECT_STATUS(pstore_import_file(g_store, big, "big:1", &o, NULL), PSTORE_ERR_ABORTED);
  CHECK(strstr(pstore_last_error(), "big:1") != NULL, "the abort message does not name big:1: %s",
        pstore_last_error());
  CHECK(log.calls == 1, "the callback was called %d times after it returned 0", log.calls);
  CHECK(log.last_done < log.total,
        "the first progress report came at the end (%llu of %llu bytes): the import was not "
        "stopped mid-way; make the big model larger",
        (unsigned long long)log.last_done, (unsigned long long)log.total);
  printf("stopped mid-import at %llu of %llu bytes\n", (unsigned long long)log.last_done,
         (unsigned long long)log.total);
  check_no_model("big:1");
  check_store_unchanged(&before, "after a stop mid-import");

  /* Stopped at the last report, after every chunk is written and before the
   * commit. */
  memset(&log, 0, sizeof log);
  log.stop_at_end = 1;
  pstore_import_options_default(&o);
  o.progress = on_progress;
  o.progress_user_data = &log;
  EXPECT_STATUS(pstore_import_file(g_store, late, "late:1", &o, NULL), PSTORE_ERR_ABORTED);
  CHECK(log.last_done == log.total && log.total > 0, "stopped at %llu of %llu",
        (unsigned long long)log.last_done, (unsigned long long)log.total);
  check_no_model("late:1");
  check_store_unchanged(&before, "after a stop at the last report");

  /* And the same file imports afterwards. */
  EXPECT_STATUS(pstore_import_file(g_store, late, "late:1", NULL, NULL), PSTORE_OK);
}

int main(int argc, char** argv) {
  const char* tmp = getenv("TMPDIR");
  char small[700], big[700], late[700];
  int rc;
  if (argc != 2) {
    fprintf(stderr, "usage: c_api_contract PSTORE_BIN\n");
    return 2;
  }
  g_pstore_bin = argv[1];
  snprintf(g_dir, sizeof g_dir, "%s/pstore-capi-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(g_store, sizeof g_store, "%s/store", g_dir);
  snprintf(small, sizeof small, "%s/small.safetensors", g_dir);
  snprintf(big, sizeof big, "%s/big.safetensors", g_dir);
  snprintf(late, sizeof late, "%s/late.safetensors", g_dir);
  if (write_model(small, 3, 4096, 1) || write_model(big, 24, 4u << 20, 2) ||
      write_model(late, 4, 1u << 20, 3)) {
    fprintf(stderr, "cannot write the test models in %s\n", g_dir);
    return 2;
  }

  check_versions_and_strings();
  check_store_open_errors();
  check_import_errors(small);
  /* A bad source does not create the store. */
  {
    FILE* f;
    char marker[700];
    snprintf(marker, sizeof marker, "%s/CURRENT", g_store);
    f = fopen(marker, "r");
    CHECK(f == NULL, "failed imports created the store at %s", g_store);
    if (f) fclose(f);
  }
  EXPECT_STATUS(pstore_import_file(g_store, small, "small:1", NULL, NULL), PSTORE_OK);
  EXPECT_STATUS(pstore_import_file(g_store, late, "small:1", NULL, NULL), PSTORE_ERR_EXISTS);
  CHECK(strstr(pstore_last_error(), "small:1") != NULL && strstr(pstore_last_error(), "force"),
        "the EXISTS message does not name small:1 and force: %s", pstore_last_error());
  check_model_errors_and_info();
  {
    char empty[700];
    snprintf(empty, sizeof empty, "%s/empty.safetensors", g_dir);
    CHECK(write_model(empty, 0, 1, 4) == 0, "cannot write %s", empty);
    check_model_without_tensors(empty);
  }
  check_no_memory();
  check_progress(small, big, late);

  free(run_pstore("ps --gc-all", &rc));
  {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  }
  if (g_failed)
    fprintf(stderr, "%d checks failed\n", g_failed);
  else
    printf("every check held\n");
  return g_failed ? 1 : 0;
}
