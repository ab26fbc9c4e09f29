/* c_api_check: compiled as C99 against api/pstore.h. Opens a model, acquires
 * every tensor and compares its bytes with the safetensors file it came from
 * (tensors located by scanning the file's JSON header for their offsets),
 * and the whole tensor table and batch acquires against those.
 *
 *   c_api_check STORE NAME:TAG FILE.safetensors
 *
 * Exit 0 when every tensor matches; prints what differs otherwise. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstore.h"
#include "tensor_table_check.h"

static int fail(const char* what, pstore_status st) {
  fprintf(stderr, "%s: %s: %s\n", what, pstore_status_string(st), pstore_last_error());
  return 1;
}

/* pstore_store_list_models visitor: finds want->ref and keeps its digest. */
struct listed {
  const char* ref;
  char digest[33];
  size_t count;
};
static void on_model(void* ctx, const char* ref, const char* digest) {
  struct listed* l = ctx;
  l->count++;
  if (strcmp(ref, l->ref) == 0) snprintf(l->digest, sizeof l->digest, "%s", digest);
}

/* Finds "name":{... "data_offsets":[a,b] ...} in the header; 0 on success. */
static int find_offsets(const char* header, const char* name, uint64_t* a, uint64_t* b) {
  size_t n = strlen(name);
  char* key = malloc(n + 4);
  sprintf(key, "\"%s\":", name);
  const char* p = strstr(header, key);
  free(key);
  if (!p) return -1;
  const char* end = strchr(p, '}');
  const char* d = strstr(p, "\"data_offsets\":[");
  if (!d || (end && d > end)) return -1;
  d += strlen("\"data_offsets\":[");
  char* after;
  *a = strtoull(d, &after, 10);
  if (*after != ',') return -1;
  *b = strtoull(after + 1, NULL, 10);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: c_api_check STORE NAME:TAG FILE.safetensors\n");
    return 2;
  }
  FILE* f = fopen(argv[3], "rb");
  if (!f) {
    perror(argv[3]);
    return 2;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* file = malloc((size_t)size + 1);
  if (fread(file, 1, (size_t)size, f) != (size_t)size) return 2;
  fclose(f);
  uint64_t hlen;
  memcpy(&hlen, file, 8);
  char* header = malloc(hlen + 1);
  memcpy(header, file + 8, hlen);
  header[hlen] = 0;
  const unsigned char* data = file + 8 + hlen;

  pstore_store_options opts;
  pstore_store_options_default(&opts);
  pstore_store* store = NULL;
  pstore_status st = pstore_store_open(argv[1], &opts, &store);
  if (st != PSTORE_OK) return fail("pstore_store_open", st);
  {
    /* A caller built before check_shared existed passes a smaller struct;
     * one asking for checking passes the whole. Both open. */
    pstore_store_options older = opts, checking = opts;
    older.struct_size = offsetof(pstore_store_options, check_shared);
    checking.check_shared = 1;
    pstore_store* s2 = NULL;
    st = pstore_store_open(argv[1], &older, &s2);
    if (st != PSTORE_OK) return fail("pstore_store_open (options without check_shared)", st);
    pstore_store_close(s2);
    st = pstore_store_open(argv[1], &checking, &s2);
    if (st != PSTORE_OK) return fail("pstore_store_open (check_shared)", st);
    pstore_store_close(s2);
  }
  pstore_model* model = NULL;
  st = pstore_model_open(store, argv[2], &model);
  if (st != PSTORE_OK) return fail("pstore_model_open", st);
  size_t n = pstore_model_tensor_count(model);
  int bad = 0;
  {
    const char* meta = NULL;
    size_t meta_len = 0;
    if (strncmp(pstore_model_format(model), "safetensors", 11) != 0) {
      fprintf(stderr, "pstore_model_format: %s\n", pstore_model_format(model));
      bad++;
    }
    st = pstore_model_metadata(model, &meta, &meta_len);
    if (st != PSTORE_OK || meta[0] != '{' || strlen(meta) != meta_len) {
      fprintf(stderr, "pstore_model_metadata: %s\n", st == PSTORE_OK ? meta : "failed");
      bad++;
    }
  }
  /* The store lists the model under its name with the digest it opened as. */
  struct listed l = {argv[2], "", 0};
  st = pstore_store_list_models(store, on_model, &l);
  if (st != PSTORE_OK) return fail("pstore_store_list_models", st);
  if (strchr(argv[2], ':') && strcmp(l.digest, pstore_model_digest(model)) != 0) {
    fprintf(stderr,
            "pstore_store_list_models: %s listed with digest '%s' among %zu names; open "
            "gave %s\n",
            argv[2], l.digest, l.count, pstore_model_digest(model));
    bad++;
  }
  if (pstore_store_list_models(NULL, on_model, &l) != PSTORE_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "pstore_store_list_models(NULL, ...) did not fail\n");
    bad++;
  }
  for (size_t i = 0; i < n; i++) {
    pstore_tensor_info info;
    info.struct_size = sizeof(info);
    st = pstore_model_tensor_info(model, i, &info);
    if (st != PSTORE_OK) return fail("pstore_model_tensor_info", st);
    if (info.struct_size != sizeof(info) || info.ggml_type != -1) {
      fprintf(stderr, "tensor %s: struct_size %zu, ggml_type %d (want %zu, -1)\n", info.name,
              info.struct_size, (int)info.ggml_type, sizeof(info));
      bad++;
    }
    uint64_t a, b;
    if (find_offsets(header, info.name, &a, &b) != 0 || b - a != info.nbytes) {
      fprintf(stderr, "tensor %s: not found in the file header or wrong size\n", info.name);
      bad++;
      continue;
    }
    const void* p = NULL;
    st = pstore_tensor_acquire(model, i, &p);
    if (st != PSTORE_OK) return fail("pstore_tensor_acquire", st);
    if (memcmp(p, data + a, (size_t)info.nbytes) != 0) {
      fprintf(stderr, "tensor %s: bytes differ from the file\n", info.name);
      bad++;
    }
    st = pstore_tensor_release(model, i);
    if (st != PSTORE_OK) return fail("pstore_tensor_release", st);
  }
  bad += check_tensor_table(model, n);
  size_t idx;
  if (n > 0) {
    pstore_tensor_info info;
    info.struct_size = sizeof(info);
    pstore_model_tensor_info(model, n - 1, &info);
    if (pstore_model_find_tensor(model, info.name, &idx) != PSTORE_OK || idx != n - 1) {
      fprintf(stderr, "pstore_model_find_tensor did not find %s\n", info.name);
      bad++;
    }
  }
  if (pstore_model_find_tensor(model, "no such tensor", &idx) != PSTORE_ERR_NOT_FOUND) {
    fprintf(stderr, "pstore_model_find_tensor found a tensor that does not exist\n");
    bad++;
  }
  if (pstore_tensor_release(model, 0) != PSTORE_ERR_INVALID_ARGUMENT && n > 0) {
    fprintf(stderr, "a release without acquire was accepted\n");
    bad++;
  }
  pstore_model_stats ms;
  ms.struct_size = sizeof(ms);
  pstore_model_stats_get(model, &ms);
  printf(
      "%zu tensors checked, %d bad; %llu acquires, %llu loads here, %llu bytes decoded here, "
      "resident %llu\n",
      n, bad, (unsigned long long)ms.acquires, (unsigned long long)ms.chunk_loads,
      (unsigned long long)ms.bytes_decoded, (unsigned long long)ms.resident_bytes);
  pstore_model_close(model);
  pstore_store_close(store);
  pstore_model_close(NULL);
  pstore_store_close(NULL);
  free(header);
  free(file);
  return bad ? 1 : 0;
}
