/* gguf_api_check: the C API on a GGUF model, from C99.
 *
 *   gguf_api_check STORE REF OUTDIR [check]
 *
 * Opens REF, checks pstore_model_format, the metadata calls (the whole JSON,
 * general.architecture by key, a missing key), pstore_tensor_info's
 * struct_size both ways (a caller compiled before ggml_type existed, a
 * struct_size too small), then acquires every tensor, checks that its pointer
 * is aligned to general.alignment (32 when absent), and writes its bytes to
 * OUTDIR/INDEX.bin; before each acquire it copies the tensor out
 * (pstore_tensor_copy: decoded from the store when not resident) into
 * OUTDIR/INDEX.copy.bin, and after the release copies it again (from shared
 * memory) and checks that copy against the acquired bytes. With "check", the
 * store is opened with check_shared on. Prints "INDEX<TAB>GGML_TYPE<TAB>NBYTES<TAB>NAME" per tensor
 * for the test to compare with the GGUF file; exits 1 with a message on any
 * failed check. The tensor table is checked against pstore_model_tensor_info
 * and pstore_tensor_acquire_many first (tests/tensor_table_check.h). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstore.h"
#include "tensor_table_check.h"

static int fail(const char* what, pstore_status st) {
  fprintf(stderr, "gguf_api_check: %s: %s: %s\n", what, pstore_status_string(st),
          pstore_last_error());
  return 1;
}

int main(int argc, char** argv) {
  pstore_store* store;
  pstore_model* model;
  pstore_status st;
  const char* json;
  size_t len, n, i;
  uint64_t align = 32;
  pstore_store_options opts;
  if (argc != 4 && !(argc == 5 && strcmp(argv[4], "check") == 0)) {
    fprintf(stderr, "usage: gguf_api_check STORE REF OUTDIR [check]\n");
    return 2;
  }
  memset(&opts, 0, sizeof(opts));
  opts.struct_size = sizeof(opts);
  opts.check_shared = argc == 5;
  st = pstore_store_open(argv[1], &opts, &store);
  if (st != PSTORE_OK) return fail("pstore_store_open", st);
  st = pstore_model_open(store, argv[2], &model);
  if (st != PSTORE_OK) return fail("pstore_model_open", st);
  if (strncmp(pstore_model_format(model), "gguf", 4) != 0) {
    fprintf(stderr, "gguf_api_check: format is %s\n", pstore_model_format(model));
    return 1;
  }
  st = pstore_model_metadata(model, &json, &len);
  if (st != PSTORE_OK || len != strlen(json) || json[0] != '{')
    return fail("pstore_model_metadata", st);
  st = pstore_model_metadata_get(model, "general.architecture", &json, &len);
  if (st != PSTORE_OK || strcmp(json, "\"pstoretest\"") != 0)
    return fail("pstore_model_metadata_get general.architecture", st);
  if (pstore_model_metadata_get(model, "no.such.key", &json, &len) != PSTORE_ERR_NOT_FOUND)
    return fail("pstore_model_metadata_get of a missing key", PSTORE_OK);
  if (pstore_model_metadata_get(model, "general.alignment", &json, &len) == PSTORE_OK)
    align = strtoull(json, NULL, 10);
  printf("alignment\t%llu\n", (unsigned long long)align);

  n = pstore_model_tensor_count(model);
  {
    /* A caller compiled before ggml_type: its struct ends at nbytes. */
    pstore_tensor_info info;
    memset(&info, 0xab, sizeof(info));
    info.struct_size = offsetof(pstore_tensor_info, nbytes) + sizeof(info.nbytes);
    st = pstore_model_tensor_info(model, 0, &info);
    if (st != PSTORE_OK || info.struct_size != offsetof(pstore_tensor_info, nbytes) + 8)
      return fail("pstore_model_tensor_info with an older struct", st);
    if (info.ggml_type != (int32_t)0xabababab) {
      fprintf(stderr, "gguf_api_check: a field past struct_size was written\n");
      return 1;
    }
    info.struct_size = sizeof(size_t);
    if (pstore_model_tensor_info(model, 0, &info) != PSTORE_ERR_INVALID_ARGUMENT)
      return fail("pstore_model_tensor_info with struct_size too small", PSTORE_OK);
  }
  /* The tensor table (GGML types, quantized sizes, addresses at the file's
   * alignment) against pstore_model_tensor_info and acquire_many. */
  if (check_tensor_table(model, n) != 0) {
    fprintf(stderr, "gguf_api_check: the tensor table differs from the tensors\n");
    return 1;
  }
  for (i = 0; i < n; i++) {
    pstore_tensor_info info;
    const void* p;
    unsigned char* copy;
    char path[4096];
    FILE* f;
    info.struct_size = sizeof(info);
    st = pstore_model_tensor_info(model, i, &info);
    if (st != PSTORE_OK || info.struct_size != sizeof(info) || info.ggml_type < 0)
      return fail("pstore_model_tensor_info", st);
    copy = malloc((size_t)info.nbytes + 1);
    if (!copy) return fail("malloc", PSTORE_OK);
    st = pstore_tensor_copy(model, i, copy, (size_t)info.nbytes);
    if (st != PSTORE_OK) return fail("pstore_tensor_copy", st);
    snprintf(path, sizeof(path), "%s/%zu.copy.bin", argv[3], i);
    f = fopen(path, "wb");
    if (!f || fwrite(copy, 1, (size_t)info.nbytes, f) != info.nbytes || fclose(f) != 0) {
      fprintf(stderr, "gguf_api_check: cannot write %s\n", path);
      return 1;
    }
    st = pstore_tensor_acquire(model, i, &p);
    if (st != PSTORE_OK) return fail("pstore_tensor_acquire", st);
    if (info.nbytes > 0 && (uintptr_t)p % align != 0) {
      fprintf(stderr, "gguf_api_check: tensor %s at %p is not aligned to %llu\n", info.name, p,
              (unsigned long long)align);
      return 1;
    }
    snprintf(path, sizeof(path), "%s/%zu.bin", argv[3], i);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, (size_t)info.nbytes, f) != info.nbytes || fclose(f) != 0) {
      fprintf(stderr, "gguf_api_check: cannot write %s\n", path);
      return 1;
    }
    memcpy(copy, p, (size_t)info.nbytes);
    pstore_tensor_release(model, i);
    {
      /* Copied again, now that the tensor is resident. */
      unsigned char* again = malloc((size_t)info.nbytes + 1);
      if (!again) return fail("malloc", PSTORE_OK);
      st = pstore_tensor_copy(model, i, again, (size_t)info.nbytes);
      if (st != PSTORE_OK) return fail("pstore_tensor_copy of a resident tensor", st);
      if (memcmp(again, copy, (size_t)info.nbytes) != 0) {
        fprintf(stderr, "gguf_api_check: tensor %s copied from shared memory differs\n", info.name);
        return 1;
      }
      free(again);
    }
    free(copy);
    printf("%zu\t%d\t%llu\t%s\n", i, (int)info.ggml_type, (unsigned long long)info.nbytes,
           info.name);
  }
  pstore_model_close(model);
  pstore_store_close(store);
  return 0;
}
