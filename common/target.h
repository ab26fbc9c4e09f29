// Function multiversioning.
//
// target_clones picks a version through an ifunc resolver, which the dynamic
// linker runs while relocating the program, before a thread sanitizer's
// runtime is set up; its instrumented entry hook then crashes. Thread
// sanitizer builds get the default version only.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define PSTORE_NO_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PSTORE_NO_CLONES 1
#endif
#endif

#ifdef PSTORE_NO_CLONES
#define PSTORE_TARGET_CLONES(...)
#else
#define PSTORE_TARGET_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#endif
