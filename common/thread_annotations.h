// Clang's thread-safety annotations (-Wthread-safety): which mutex guards a
// field, which a function needs held or takes. They are checked only when
// built with clang; with other compilers they expand to nothing.
//
// Thread-safety: macros only.
#pragma once

#if defined(__clang__)
#define PSTORE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PSTORE_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) PSTORE_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY PSTORE_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) PSTORE_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) PSTORE_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) PSTORE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) PSTORE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) PSTORE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) PSTORE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) PSTORE_THREAD_ANNOTATION(assert_capability(x))
