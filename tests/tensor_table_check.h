/* tensor_table_check.h: check_tensor_table, shared by the C API checks
 * (c_api_check.c on safetensors models, gguf_api_check.c on GGUF ones): the
 * tensor table against pstore_model_tensor_info tensor by tensor, and
 * pstore_tensor_acquire_many against the table's addresses. C99, header only
 * (static functions); not thread-safe beyond what the C API is. */
#ifndef PSTORE_TESTS_TENSOR_TABLE_CHECK_H_
#define PSTORE_TESTS_TENSOR_TABLE_CHECK_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstore.h"

static int table_fail(const char* what, pstore_status st) {
  fprintf(stderr, "%s: %s: %s\n", what, pstore_status_string(st), pstore_last_error());
  return 1;
}

/* pstore_model_tensor_table gives what pstore_model_tensor_info gives, tensor
 * by tensor, and the addresses pstore_tensor_acquire(_many) returns;
 * pstore_tensor_acquire_many acquires each tensor as often as listed, and
 * nothing when it fails. Returns the number of mismatches. */
static int check_tensor_table(pstore_model* model, size_t n) {
  int bad = 0;
  pstore_tensor_table t;
  t.struct_size = sizeof(t) - 1;
  if (pstore_model_tensor_table(model, &t) != PSTORE_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "pstore_model_tensor_table accepted a short struct_size\n");
    bad++;
  }
  t.struct_size = sizeof(t);
  pstore_status st = pstore_model_tensor_table(model, &t);
  if (st != PSTORE_OK) return table_fail("pstore_model_tensor_table", st) + bad;
  if (t.struct_size != sizeof(t) || t.count != n) {
    fprintf(stderr, "pstore_model_tensor_table: struct_size %zu, count %zu (want %zu, %zu)\n",
            t.struct_size, t.count, sizeof(t), n);
    return bad + 1;
  }
  const uint64_t* shape = t.shapes;
  size_t* all = malloc((n ? n : 1) * sizeof(size_t));
  const void** ptrs = malloc((n ? n : 1) * sizeof(void*));
  if (!all || !ptrs) return bad + 1;
  for (size_t i = 0; i < n; i++) {
    pstore_tensor_info info;
    info.struct_size = sizeof(info);
    st = pstore_model_tensor_info(model, i, &info);
    if (st != PSTORE_OK) return table_fail("pstore_model_tensor_info", st) + bad;
    const char* name = t.names + t.name_offsets[i];
    const size_t len = (size_t)(t.name_offsets[i + 1] - t.name_offsets[i]);
    if (len != strlen(info.name) + 1 || memcmp(name, info.name, len) != 0 ||
        t.dtypes[i] != (int32_t)info.dtype || t.ndims[i] != info.ndim ||
        memcmp(shape, info.shape, info.ndim * sizeof(uint64_t)) || t.nbytes[i] != info.nbytes ||
        t.ggml_types[i] != info.ggml_type || t.addresses[i] == NULL) {
      fprintf(stderr, "pstore_model_tensor_table: tensor %zu (%s) differs from its info\n", i,
              info.name);
      bad++;
    }
    shape += info.ndim;
    all[i] = i;
  }
  if (t.name_offsets[0] != 0 || t.name_offsets[n] != t.names_bytes) {
    fprintf(stderr, "pstore_model_tensor_table: names_bytes %zu, names from %llu to %llu\n",
            t.names_bytes, (unsigned long long)t.name_offsets[0],
            (unsigned long long)t.name_offsets[n]);
    bad++;
  }
  st = pstore_tensor_acquire_many(model, all, n, ptrs);
  if (st != PSTORE_OK) return table_fail("pstore_tensor_acquire_many", st) + bad;
  for (size_t i = 0; i < n; i++) {
    if (ptrs[i] != t.addresses[i]) {
      fprintf(stderr, "tensor %zu: acquired at %p, the table says %p\n", i, ptrs[i],
              t.addresses[i]);
      bad++;
    }
    st = pstore_tensor_release(model, i);
    if (st != PSTORE_OK) return table_fail("pstore_tensor_release", st) + bad;
  }
  if (n > 0) {
    /* Listed twice: acquired twice. Then one index out of range: nothing. */
    size_t twice[3] = {0, 0, n};
    st = pstore_tensor_acquire_many(model, twice, 2, ptrs);
    if (st != PSTORE_OK) return table_fail("pstore_tensor_acquire_many", st) + bad;
    if (pstore_tensor_release(model, 0) != PSTORE_OK ||
        pstore_tensor_release(model, 0) != PSTORE_OK) {
      fprintf(stderr, "pstore_tensor_acquire_many: a tensor listed twice was not held twice\n");
      bad++;
    }
    if (pstore_tensor_acquire_many(model, twice, 3, ptrs) != PSTORE_ERR_INVALID_ARGUMENT ||
        pstore_tensor_release(model, 0) != PSTORE_ERR_INVALID_ARGUMENT) {
      fprintf(stderr, "pstore_tensor_acquire_many: an index out of range left tensors held\n");
      bad++;
    }
  }
  if (pstore_tensor_acquire_many(model, NULL, 0, NULL) != PSTORE_OK ||
      pstore_tensor_acquire_many(model, NULL, 1, ptrs) != PSTORE_ERR_INVALID_ARGUMENT ||
      pstore_model_tensor_table(NULL, &t) != PSTORE_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "pstore_tensor_acquire_many or pstore_model_tensor_table: NULL arguments\n");
    bad++;
  }
  free(all);
  free(ptrs);
  return bad;
}

#endif /* PSTORE_TESTS_TENSOR_TABLE_CHECK_H_ */
