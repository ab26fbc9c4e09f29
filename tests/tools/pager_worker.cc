// pager_worker: an inference-like process for the pager's multi-process
// tests. It uses only the public C API (api/pstore.h) and checks every byte it
// gets against the model's source safetensors file.
//
//   pager_worker STORE REF SOURCE MODE [ARG] [--budget BYTES] [--seconds S] [--check]
//                [--loader-threads N]
//
// --check opens the store with check_shared (a reader that does not trust
// what other processes put in shared memory).
//
// Modes (each prints JSON lines on stdout; the last has "done": true):
//   all           acquire every tensor and keep them; print "ready" with PSS
//                 figures, then wait for stdin to close before exiting
//   prefix P      the same for the tensors whose names start with P
//   one NAME      acquire one tensor, print stats, exit
//   walk          acquire, check and release every tensor in order (with
//                 --budget), checking after each acquire that the store's
//                 resident bytes stay within budget + pinned
//   pin NAME      acquire NAME, print "ready", then keep re-checking its bytes
//                 for --seconds while other processes evict around it
//   hammer        for --seconds: acquire random tensors, check, release
//   load          acquire every tensor in order, then exit (tests kill it
//                 part-way through)
//   scan          acquire, check and release every tensor, going on after a
//                 failed acquire; "errors" counts those, "mismatches" the
//                 tensors that were handed out with wrong bytes
//   copy          the same with pstore_tensor_copy into a buffer of its own
//   rounds same|new  scan as above (round 0), print the round's counts and
//                 "ready", then for each line on stdin scan again and print
//                 that round's counts: with the same model handle ("same"),
//                 or with another pstore_model_open of REF ("new", the
//                 handles before it stay open), each tensor acquired and
//                 then copied
//   later REF2    open the store, print "ready", wait for a line on stdin,
//                 then open REF2 (imported after the store was opened) and
//                 check it against SOURCE
// Exit status: 0 if every byte matched, 1 on a mismatch or error.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "pstore.h"
#include "store/formats/safetensors.h"

namespace {

struct Source {
  const uint8_t* data = nullptr;  // data section
  void* map = nullptr;
  size_t map_len = 0;
  std::unordered_map<std::string, std::pair<uint64_t, uint64_t>> where;  // name -> (begin, size)
};

bool LoadSource(const std::string& path, Source* s) {
  auto h = pstore::safetensors::ReadHeader(path);
  if (!h.ok()) {
    std::fprintf(stderr, "%s\n", h.status().ToString().c_str());
    return false;
  }
  int fd = ::open(path.c_str(), O_RDONLY);
  struct stat st;
  ::fstat(fd, &st);
  void* m = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return false;
  s->map = m;
  s->map_len = size_t(st.st_size);
  s->data = static_cast<const uint8_t*>(m) + h->data_offset;
  for (const auto& t : h->tensors) s->where[t.name] = {t.begin, t.size()};
  return true;
}

// Proportional set size of this process, in bytes.
uint64_t Pss() {
  FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "Pss: %lu kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

int Die(const char* what, pstore_status st) {
  std::printf("{\"done\": true, \"ok\": false, \"error\": \"%s: %s: %s\"}\n", what,
              pstore_status_string(st), pstore_last_error());
  return 1;
}

struct Worker {
  pstore_store* store = nullptr;
  pstore_model* model = nullptr;
  Source src;
  uint64_t mismatches = 0;
  uint64_t errors = 0;  // failed acquires or copies (scan, copy)
  std::string last_error;

  bool Check(size_t i, const void* p) {
    pstore_tensor_info info;
    info.struct_size = sizeof(info);
    pstore_model_tensor_info(model, i, &info);
    auto it = src.where.find(info.name);
    if (it == src.where.end() || it->second.second != info.nbytes ||
        std::memcmp(p, src.data + it->second.first, info.nbytes) != 0) {
      mismatches++;
      std::fprintf(stderr, "MISMATCH in tensor %s\n", info.name);
      return false;
    }
    return true;
  }

  std::string Stats() {
    pstore_model_stats m;
    m.struct_size = sizeof(m);
    pstore_model_stats_get(model, &m);
    pstore_store_stats s;
    s.struct_size = sizeof(s);
    pstore_store_stats_get(store, &s);
    char buf[1024];
    std::snprintf(buf, sizeof(buf),
                  "\"acquires\": %lu, \"hits\": %lu, \"misses\": %lu, \"chunk_loads\": %lu, "
                  "\"bytes_read\": %lu, \"bytes_decoded\": %lu, \"resident_bytes\": %lu, "
                  "\"pinned_bytes\": %lu, \"host_loads\": %lu, \"host_bytes_decoded\": %lu, "
                  "\"evictions\": %lu, \"model_bytes\": %lu, \"store_resident_bytes\": %lu, "
                  "\"budget_bytes\": %lu, \"mismatches\": %lu, \"errors\": %lu, \"pss\": %lu",
                  m.acquires, m.hits, m.misses, m.chunk_loads, m.bytes_read, m.bytes_decoded,
                  m.resident_bytes, m.pinned_bytes, m.host_loads, m.host_bytes_decoded, m.evictions,
                  m.model_bytes, s.resident_bytes, s.budget_bytes, mismatches, errors, Pss());
    return buf;
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: pager_worker STORE REF SOURCE MODE [ARG] [--budget B] [--seconds S] "
                 "[--check] [--pause] [--loader-threads N]\n");
    return 2;
  }
  std::string store_path = argv[1], ref = argv[2], source = argv[3], mode = argv[4], arg;
  uint64_t budget = 0;
  double seconds = 2;
  bool check_shared = false, pause = false;
  int loader_threads = 0;
  for (int i = 5; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--check")
      check_shared = true;
    else if (a == "--pause")
      pause = true;
    else if (a == "--budget" && i + 1 < argc)
      budget = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seconds" && i + 1 < argc)
      seconds = std::atof(argv[++i]);
    else if (a == "--loader-threads" && i + 1 < argc)
      loader_threads = std::atoi(argv[++i]);
    else
      arg = a;
  }
  Worker w;
  if (!LoadSource(source, &w.src)) return 1;
  pstore_store_options opts;
  pstore_store_options_default(&opts);
  opts.budget_bytes = budget;
  opts.check_shared = check_shared;
  opts.loader_threads = loader_threads;
  pstore_status st = pstore_store_open(store_path.c_str(), &opts, &w.store);
  if (st != PSTORE_OK) return Die("pstore_store_open", st);
  uint64_t pss_store = Pss();
  if (mode == "later") {
    std::printf("{\"ready\": true}\n");
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);
    ref = arg;
  }
  st = pstore_model_open(w.store, ref.c_str(), &w.model);
  if (st != PSTORE_OK) return Die("pstore_model_open", st);
  if (pause) {  // --pause: waits for a line on stdin once the model is open
    std::printf("{\"opened\": true}\n");
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);
  }
  size_t n = pstore_model_tensor_count(w.model);
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Finds the tensor named by arg and acquires it; non-zero: the exit code.
  auto acquire_named = [&](size_t* idx, const void** p) {
    pstore_status s = pstore_model_find_tensor(w.model, arg.c_str(), idx);
    if (s != PSTORE_OK) return Die("pstore_model_find_tensor", s);
    s = pstore_tensor_acquire(w.model, *idx, p);
    if (s != PSTORE_OK) return Die("pstore_tensor_acquire", s);
    return 0;
  };

  if (mode == "all" || mode == "prefix" || mode == "load" || mode == "later") {
    std::vector<size_t> held;
    for (size_t i = 0; i < n; i++) {
      pstore_tensor_info info;
      info.struct_size = sizeof(info);
      pstore_model_tensor_info(w.model, i, &info);
      if (mode == "prefix" && std::strncmp(info.name, arg.c_str(), arg.size()) != 0) continue;
      const void* p;
      st = pstore_tensor_acquire(w.model, i, &p);
      if (st != PSTORE_OK) return Die("pstore_tensor_acquire", st);
      w.Check(i, p);
      held.push_back(i);
    }
    if (mode == "load" || mode == "later") {
      std::printf("{\"done\": true, \"ok\": %s, \"seconds\": %.3f, %s}\n",
                  w.mismatches ? "false" : "true", elapsed(), w.Stats().c_str());
      pstore_model_close(w.model);  // releases what the handle still holds
      pstore_store_close(w.store);
      return w.mismatches ? 1 : 0;
    }
    // Unmap the source file so the PSS figures count pstore's memory only.
    ::munmap(w.src.map, w.src.map_len);
    std::printf("{\"ready\": true, \"pss_before_model\": %lu, \"tensors\": %zu, %s}\n", pss_store,
                held.size(), w.Stats().c_str());
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    for (size_t i : held) pstore_tensor_release(w.model, i);
  } else if (mode == "one") {
    size_t idx;
    const void* p;
    if (int rc = acquire_named(&idx, &p)) return rc;
    w.Check(idx, p);
  } else if (mode == "walk") {
    uint64_t worst_over = 0, max_resident = 0;
    for (size_t i = 0; i < n; i++) {
      const void* p;
      st = pstore_tensor_acquire(w.model, i, &p);
      if (st != PSTORE_OK) return Die("pstore_tensor_acquire", st);
      w.Check(i, p);
      pstore_store_stats s;
      s.struct_size = sizeof(s);
      pstore_store_stats_get(w.store, &s);
      pstore_model_stats m;
      m.struct_size = sizeof(m);
      pstore_model_stats_get(w.model, &m);
      max_resident = std::max(max_resident, s.resident_bytes);
      // Pinned: this tensor's slots, rounded to whole pages plus header pages.
      pstore_tensor_info info;
      info.struct_size = sizeof(info);
      pstore_model_tensor_info(w.model, i, &info);
      uint64_t allowed = s.budget_bytes + ((info.nbytes + 4095) / 4096) * 4096;
      if (s.resident_bytes > allowed) {
        worst_over = std::max(worst_over, s.resident_bytes - allowed);
        std::fprintf(stderr, "over: tensor %zu (%s, %lu bytes) resident %lu budget %lu\n", i,
                     info.name, info.nbytes, s.resident_bytes, s.budget_bytes);
      }
      pstore_tensor_release(w.model, i);
    }
    std::printf(
        "{\"walk\": true, \"max_store_resident\": %lu, \"worst_over_budget_plus_pinned\": %lu}\n",
        max_resident, worst_over);
  } else if (mode == "pin") {
    size_t idx;
    const void* p;
    if (int rc = acquire_named(&idx, &p)) return rc;
    std::printf("{\"ready\": true}\n");
    std::fflush(stdout);
    uint64_t checks = 0;
    while (elapsed() < seconds) {
      w.Check(idx, p);
      checks++;
    }
    std::printf("{\"checks\": %lu}\n", checks);
    pstore_tensor_release(w.model, idx);
  } else if (mode == "scan" || mode == "copy") {
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < n; i++) {
      pstore_tensor_info info;
      info.struct_size = sizeof(info);
      pstore_model_tensor_info(w.model, i, &info);
      const void* p = nullptr;
      if (mode == "scan") {
        st = pstore_tensor_acquire(w.model, i, &p);
      } else {
        buf.assign(info.nbytes, 0);
        st = pstore_tensor_copy(w.model, i, buf.data(), buf.size());
        p = buf.data();
      }
      if (st != PSTORE_OK) {
        w.errors++;
        w.last_error = std::string(pstore_status_string(st)) + ": " + pstore_last_error();
        std::fprintf(stderr, "ERROR %s\n", w.last_error.c_str());
        continue;
      }
      w.Check(i, p);
      if (mode == "scan") pstore_tensor_release(w.model, i);
    }
  } else if (mode == "rounds") {
    std::vector<pstore_model*> opened{w.model};
    std::vector<uint8_t> buf;
    for (int round = 0;; round++) {
      uint64_t mismatches0 = w.mismatches, errors0 = w.errors;
      for (size_t i = 0; i < n; i++) {
        pstore_tensor_info info;
        info.struct_size = sizeof(info);
        pstore_model_tensor_info(w.model, i, &info);
        const void* p = nullptr;
        st = pstore_tensor_acquire(w.model, i, &p);
        if (st == PSTORE_OK) {
          w.Check(i, p);
          pstore_tensor_release(w.model, i);
        } else {
          w.errors++;
          std::fprintf(stderr, "ERROR %s: %s\n", pstore_status_string(st), pstore_last_error());
        }
        buf.assign(info.nbytes, 0);
        st = pstore_tensor_copy(w.model, i, buf.data(), buf.size());
        if (st == PSTORE_OK) {
          w.Check(i, buf.data());
        } else {
          w.errors++;
          std::fprintf(stderr, "ERROR %s: %s\n", pstore_status_string(st), pstore_last_error());
        }
      }
      std::printf("{\"round\": %d, \"ready\": true, \"mismatches\": %lu, \"errors\": %lu}\n", round,
                  w.mismatches - mismatches0, w.errors - errors0);
      std::fflush(stdout);
      std::string line;
      if (!std::getline(std::cin, line)) break;
      if (arg == "new") {
        pstore_model* m2 = nullptr;
        st = pstore_model_open(w.store, ref.c_str(), &m2);
        if (st != PSTORE_OK) return Die("pstore_model_open", st);
        opened.push_back(m2);
        w.model = m2;
      }
    }
    for (size_t k = 1; k < opened.size(); k++) pstore_model_close(opened[k]);
    w.model = opened[0];
  } else if (mode == "hammer") {
    std::mt19937 rng(uint32_t(::getpid()));
    uint64_t rounds = 0;
    while (elapsed() < seconds && n > 0) {
      size_t i = rng() % n;
      const void* p;
      st = pstore_tensor_acquire(w.model, i, &p);
      if (st != PSTORE_OK) return Die("pstore_tensor_acquire", st);
      w.Check(i, p);
      pstore_tensor_release(w.model, i);
      rounds++;
    }
    std::printf("{\"rounds\": %lu}\n", rounds);
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  std::printf("{\"done\": true, \"ok\": %s, \"seconds\": %.3f, %s}\n",
              w.mismatches ? "false" : "true", elapsed(), w.Stats().c_str());
  pstore_model_close(w.model);
  pstore_store_close(w.store);
  return w.mismatches ? 1 : 0;
}
