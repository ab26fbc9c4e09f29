// The allocator of the pstore command and of the benchmarks that stand for
// it: jemalloc, told to back its memory with transparent huge pages
// (docs/architecture.md, "The command's allocator").
//
// Import and pull copy every chunk into RocksDB's memtable, and export
// decodes into large buffers: a few hundred megabytes of fresh memory a run.
// With 4 KiB pages each page of it costs a page fault, and where faults are
// dear (a virtual machine's) those faults were 40% of import's CPU time.
// jemalloc reads this string when it starts; "thp:always" makes it advise
// huge pages (madvise MADV_HUGEPAGE) for the memory it maps, which the
// kernel honours when its transparent-huge-page setting is "always" or
// "madvise" and ignores when it is "never". $MALLOC_CONF, read after this
// string, overrides it (MALLOC_CONF=thp:never turns huge pages off).
//
// Only executables link this file: libpstore leaves the allocator to the
// application that loads it.

// jemalloc's documented hook for a program's compiled-in options.
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "thp:always";
}
