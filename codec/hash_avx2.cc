#define PSTORE_HASH_FN Hash128Avx2
#include "codec/hash_x86.inc"
