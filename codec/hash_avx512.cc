#define PSTORE_HASH_FN Hash128Avx512
#include "codec/hash_x86.inc"
