/* crc32c_binding_check: a C program linked with libpstore alone, as an
 * inference process is. Exit 0 if the process's lookup of RocksDB's CRC32C
 * function (what the dynamic linker binds librocksdb's own calls to) finds
 * libpstore's definition (store/rocks_crc32c.h), 1 otherwise. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "pstore.h"

int main(void) {
  const char* sym = "_ZN7rocksdb6crc32c6ExtendEjPKcm";
  Dl_info info;
  void* f = dlsym(RTLD_DEFAULT, sym);
  if (f == NULL || dladdr(f, &info) == 0 || info.dli_fname == NULL) {
    fprintf(stderr, "crc32c_binding_check: %s not found\n", sym);
    return 1;
  }
  if (strstr(info.dli_fname, "libpstore.so") == NULL) {
    fprintf(stderr, "crc32c_binding_check: %s is bound to %s, not libpstore\n", sym,
            info.dli_fname);
    return 1;
  }
  /* Uses the library, so that the link keeps it. */
  printf("bound to %s (pstore %s)\n", info.dli_fname, pstore_version());
  return 0;
}
