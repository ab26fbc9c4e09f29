#!/usr/bin/env python3
"""The pstore command's allocator (tools/allocator.cc).

Built with jemalloc (PSTORE_JEMALLOC=ON, the default when Debian's
libjemalloc-dev is installed):
  - jemalloc is the command's malloc, with the compiled-in "thp:always":
    MALLOC_CONF=stats_print:true makes it print its options at exit, and
    opt.thp is "always";
  - a user's MALLOC_CONF overrides it (thp:never gives "never");
  - where the kernel offers transparent huge pages ("always" or "madvise"),
    an import of a 64 MB model asks for them: /proc/vmstat's huge-page fault
    counters (allocated or fallen back) grow while it runs (they count the
    whole machine, so this part can be satisfied by another process's faults,
    never failed by them; the opt.thp checks are the exact ones);
  - a kernel without transparent huge pages makes jemalloc say "not
    supported", and the command works the same;
  - the model exports byte for byte.
Built without it: the command's malloc is glibc's (no jemalloc statistics
are printed), and the same import and export work.

Environment: PSTORE_BIN, MAKE_MODEL, PSTORE_JEMALLOC.
"""
import os
import re

from harness import Store, check, log, make_model, run_cmd, run_test, tree_sha256


def vmstat_thp_faults():
    with open("/proc/vmstat") as f:
        v = dict(line.split() for line in f)
    return int(v.get("thp_fault_alloc", 0)) + int(v.get("thp_fault_fallback", 0))


def thp_mode():
    """The kernel's transparent-huge-page setting, or None without THP."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            m = re.search(r"\[(\w+)\]", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def opt_thp(store, malloc_conf):
    """opt.thp as jemalloc prints it at the exit of `pstore ls`, or None when
    no jemalloc statistics were printed."""
    p = run_cmd(store.argv("ls"), timeout=120, env=dict(os.environ, MALLOC_CONF=malloc_conf))
    check(p.returncode == 0, f"pstore ls with MALLOC_CONF={malloc_conf} exited {p.returncode}: "
          f"{p.stderr[-800:]!r}")
    m = re.search(r'opt\.thp: "([^"]*)"', p.stderr)
    return m.group(1) if m else None


def body(work):
    jemalloc = os.environ.get("PSTORE_JEMALLOC", "OFF") == "ON"
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), 64, seed=7, tensors=24, dtype="mixed")
    mode = thp_mode()
    before = vmstat_thp_faults()
    store.ok("import", src, "m:v1")
    after = vmstat_thp_faults()
    log(f"kernel THP {mode!r}: huge-page faults during the import {after - before}")
    if jemalloc and mode in ("always", "madvise"):
        check(after > before, "an import by the jemalloc build made no huge-page fault "
              f"(the kernel's setting is {mode!r})")
    store.export_matches("m:v1", tree_sha256(src), work)
    store.verify_ok()

    if jemalloc:
        # Without THP in the kernel jemalloc reports that whatever it is told.
        want, override = ("always", "never") if mode else ("not supported", "not supported")
        got = opt_thp(store, "stats_print:true")
        check(got == want, f"the command's jemalloc has opt.thp {got!r}, not {want!r}")
        got = opt_thp(store, "thp:never,stats_print:true")
        check(got == override, f"MALLOC_CONF=thp:never gave opt.thp {got!r}, not {override!r}")
        log(f"jemalloc: opt.thp is {want!r}, and {override!r} with MALLOC_CONF=thp:never")
    else:
        got = opt_thp(store, "stats_print:true")
        check(got is None, "built without jemalloc, yet jemalloc printed its statistics")
        log("built without jemalloc: glibc's malloc")


if __name__ == "__main__":
    run_test("store_allocator", body)
