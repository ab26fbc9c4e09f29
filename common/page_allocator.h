// PageAllocator: a standard allocator that takes each block straight from the
// kernel (an anonymous mmap, rounded up to whole pages) and gives it back on
// deallocation (munmap), never through malloc.
//
// For chunk-sized scratch that threads reuse and then drop, such as a
// decoder's plane buffers. Through malloc such buffers leave memory behind in
// a long-lived process: glibc raises its threshold for serving a block by
// mmap to the size of each mmapped block freed, so after the first one the
// same sizes come from the arena of the thread that asked, and an arena of a
// thread other than the main one keeps its top (up to twice that threshold)
// and every partly used page even after malloc_trim. A block of this
// allocator is mapped when a buffer grows and unmapped when it is freed, so
// nothing of it stays, and glibc's thresholds are left as the application had
// them. Each growth costs a system call and fresh (zeroed) pages: use it for
// buffers that grow a few times and are then reused, not for small objects.
//
// Built with AddressSanitizer, blocks come from operator new instead, so
// that the sanitizer (and the fuzzers that run under it) still sees every
// access past a buffer's end, which a page's slack would hide.
//
// Thread-safety: stateless; any thread may allocate and any free.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <vector>

namespace pstore {

namespace page_allocator_internal {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kThroughMalloc = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kThroughMalloc = true;
#else
inline constexpr bool kThroughMalloc = false;
#endif
#else
inline constexpr bool kThroughMalloc = false;
#endif

inline size_t RoundToPages(size_t bytes) {
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

}  // namespace page_allocator_internal

template <class T>
struct PageAllocator {
  using value_type = T;

  PageAllocator() = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if (n == 0) return nullptr;
    if (n > size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    if constexpr (page_allocator_internal::kThroughMalloc) return std::allocator<T>().allocate(n);
    const size_t bytes = page_allocator_internal::RoundToPages(n * sizeof(T));
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (p == nullptr) return;
    if constexpr (page_allocator_internal::kThroughMalloc)
      std::allocator<T>().deallocate(p, n);
    else
      ::munmap(p, page_allocator_internal::RoundToPages(n * sizeof(T)));
  }

  template <class U>
  bool operator==(const PageAllocator<U>&) const noexcept {
    return true;
  }
};

// A vector whose storage is PageAllocator's: for scratch buffers of a
// chunk's size. Its clear() keeps the pages; swap with an empty one (or
// destroy it) to give them back. resize() grows the capacity to at least
// twice what it was and to whole pages, all of which the mapping holds
// anyway, so that a buffer that grows a little at a time maps a new block
// only when it has outgrown its pages.
template <class T>
class PageVector : public std::vector<T, PageAllocator<T>> {
  using Base = std::vector<T, PageAllocator<T>>;

 public:
  using Base::Base;
  void resize(size_t n) {
    Grow(n);
    Base::resize(n);
  }
  void resize(size_t n, const T& value) {
    Grow(n);
    Base::resize(n, value);
  }

 private:
  void Grow(size_t n) {
    if (n <= this->capacity() || n > this->max_size()) return;  // max_size: resize throws
    const size_t paged = page_allocator_internal::RoundToPages(n * sizeof(T)) / sizeof(T);
    this->reserve(std::min(this->max_size(), std::max({n, paged, 2 * this->capacity()})));
  }
};

}  // namespace pstore
