/* demo_reader: one inference-like process of the README's demo, written
 * against the C API as a user would. It opens a model, acquires its share of
 * the tensors (part i of n: a contiguous run of tensors, i.e. some layers),
 * checks each against the model's source safetensors file, and prints one
 * line of JSON with what it cost.
 *
 *   demo_reader STORE NAME:TAG SOURCE.safetensors I N
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pstore.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long pss_kb(void) {
  FILE* f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "Pss: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* Finds "name":{... "data_offsets":[a,b] ...} in the header. */
static int find_offsets(const char* header, const char* name, uint64_t* a, uint64_t* b) {
  size_t n = strlen(name);
  char* key = malloc(n + 4);
  const char *p, *d;
  char* after;
  sprintf(key, "\"%s\":", name);
  p = strstr(header, key);
  free(key);
  if (!p) return -1;
  d = strstr(p, "\"data_offsets\":[");
  if (!d) return -1;
  d += strlen("\"data_offsets\":[");
  *a = strtoull(d, &after, 10);
  if (*after != ',') return -1;
  *b = strtoull(after + 1, NULL, 10);
  return 0;
}

static int cmp_double(const void* x, const void* y) {
  double a = *(const double*)x, b = *(const double*)y;
  return a < b ? -1 : a > b;
}

int main(int argc, char** argv) {
  pstore_store* store = NULL;
  pstore_model* model = NULL;
  pstore_status st;
  int fd;
  struct stat sb;
  long pss_before;
  unsigned char* file;
  char* header;
  uint64_t hlen, bytes = 0;
  size_t n, first, last, i, checked = 0, bad = 0, k;
  int part, parts;
  double t0, t_open, t_load;
  double* lat;
  pstore_model_stats ms;

  if (argc != 6) {
    fprintf(stderr, "usage: demo_reader STORE NAME:TAG SOURCE.safetensors I N\n");
    return 2;
  }
  part = atoi(argv[4]);
  parts = atoi(argv[5]);
  /* The source file, to check bytes against: mapped, and unmapped before
   * memory is measured, so the figures count pstore's memory only. */
  fd = open(argv[3], O_RDONLY);
  if (fd < 0 || fstat(fd, &sb) != 0) {
    perror(argv[3]);
    return 2;
  }
  file = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (file == MAP_FAILED) {
    perror("mmap");
    return 2;
  }
  memcpy(&hlen, file, 8);
  header = malloc(hlen + 1);
  memcpy(header, file + 8, hlen);
  header[hlen] = 0;

  st = pstore_store_open(argv[1], NULL, &store);
  if (st != PSTORE_OK) {
    fprintf(stderr, "open store: %s\n", pstore_last_error());
    return 1;
  }
  pss_before = pss_kb();
  t0 = now_s();
  st = pstore_model_open(store, argv[2], &model);
  if (st != PSTORE_OK) {
    fprintf(stderr, "open model: %s\n", pstore_last_error());
    return 1;
  }
  t_open = now_s() - t0;
  n = pstore_model_tensor_count(model);
  first = n * (size_t)part / (size_t)parts;
  last = n * (size_t)(part + 1) / (size_t)parts;
  t0 = now_s();
  for (i = first; i < last; i++) {
    pstore_tensor_info info;
    info.struct_size = sizeof(info);
    const void* p;
    uint64_t a, b;
    pstore_model_tensor_info(model, i, &info);
    st = pstore_tensor_acquire(model, i, &p);
    if (st != PSTORE_OK) {
      fprintf(stderr, "acquire %s: %s\n", info.name, pstore_last_error());
      return 1;
    }
    if (find_offsets(header, info.name, &a, &b) != 0 || b - a != info.nbytes ||
        memcmp(p, file + 8 + hlen + a, (size_t)info.nbytes) != 0)
      bad++;
    checked++;
    bytes += info.nbytes;
  }
  t_load = now_s() - t0;
  munmap(file, (size_t)sb.st_size);
  file = NULL;
  /* Latency of acquiring a resident tensor (it is pinned already: this is
   * the cost a serving process pays per use). */
  lat = malloc(sizeof(double) * 20000);
  for (k = 0; k < 20000 && last > first; k++) {
    size_t t = first + k % (last - first);
    const void* p;
    double a = now_s();
    pstore_tensor_acquire(model, t, &p);
    lat[k] = (now_s() - a) * 1e9;
    pstore_tensor_release(model, t);
  }
  qsort(lat, k, sizeof(double), cmp_double);
  ms.struct_size = sizeof(ms);
  pstore_model_stats_get(model, &ms);
  printf(
      "{\"part\": %d, \"tensors\": %zu, \"bytes\": %llu, \"bad\": %zu, \"open_ms\": %.3f, "
      "\"load_ms\": %.3f, \"decoded_here\": %llu, \"read_here\": %llu, \"acquire_p50_ns\": %.0f, "
      "\"acquire_p99_ns\": %.0f, \"pss_kb\": %ld, \"pss_before_kb\": %ld, \"model_bytes\": %llu}\n",
      part, checked, (unsigned long long)bytes, bad, t_open * 1e3, t_load * 1e3,
      (unsigned long long)ms.bytes_decoded, (unsigned long long)ms.bytes_read, k ? lat[k / 2] : 0.0,
      k ? lat[(k * 99) / 100] : 0.0, pss_kb(), pss_before, (unsigned long long)ms.model_bytes);
  fflush(stdout);
  /* Stay attached until told to go, so that memory can be measured with
   * every reader alive. */
  {
    char buf[16];
    if (!fgets(buf, sizeof(buf), stdin)) buf[0] = 0;
  }
  pstore_model_close(model);
  pstore_store_close(store);
  free(lat);
  free(header);
  return bad ? 1 : 0;
}
