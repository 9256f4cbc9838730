// A growable array that either owns its elements or views a read-only mapped file; the first
// mutation of a view copies it (so an mmap-loaded index can still take adds).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace vi {

// Large blocks are 2 MiB-aligned and asked for transparent huge pages (Linux's default THP
// mode, "madvise", gives none otherwise). An HNSW search reads rows at random: with 4 KiB
// pages nearly every row costs a TLB miss and a page walk (60 MB of float rows at 40k x 384
// is 15k pages), which made the float build slower than hnswlib's and the int8 one (4x fewer
// bytes, so 4x fewer pages) much faster. Small blocks use the default allocator.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kPage = size_t(2) << 20;

  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}

  static bool huge(size_t n) { return n * sizeof(T) >= 2 * kPage; }

  T* allocate(size_t n) {
    if (!huge(n)) return std::allocator<T>().allocate(n);
    if (n > size_t(-1) / sizeof(T) - kPage) throw std::bad_alloc();
    const size_t bytes = (n * sizeof(T) + kPage - 1) / kPage * kPage;
    void* p = std::aligned_alloc(kPage, bytes);
    if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the pages stay 4 KiB
#endif
    return static_cast<T*>(p);
  }
  // The standard passes back the n given to allocate, so huge(n) picks the same path.
  void deallocate(T* p, size_t n) {
    if (!huge(n)) return std::allocator<T>().deallocate(p, n);
    std::free(p);
  }

  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }
};

template <class T>
class Array {
 public:
  using Vector = std::vector<T, HugePageAllocator<T>>;

  const T* data() const { return view_ ? view_ : owned_.data(); }
  size_t size() const { return view_ ? view_size_ : owned_.size(); }

  void set_view(const T* p, size_t n) {
    owned_.clear();
    owned_.shrink_to_fit();
    view_ = p;
    view_size_ = n;
  }

  Vector& mut() {
    if (view_) {
      owned_.assign(view_, view_ + view_size_);
      view_ = nullptr;
    }
    return owned_;
  }

  size_t owned_bytes() const { return owned_.capacity() * sizeof(T); }
  bool is_view() const { return view_ != nullptr; }

 private:
  Vector owned_;
  const T* view_ = nullptr;
  size_t view_size_ = 0;
};

}  // namespace vi
