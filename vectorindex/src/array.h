// A growable array that either owns its elements or views a read-only mapped file; the first
// mutation of a view copies it (so an mmap-loaded index can still take adds).
#pragma once

#include <cstddef>
#include <vector>

namespace vi {

template <class T>
class Array {
 public:
  const T* data() const { return view_ ? view_ : owned_.data(); }
  size_t size() const { return view_ ? view_size_ : owned_.size(); }

  void set_view(const T* p, size_t n) {
    owned_.clear();
    owned_.shrink_to_fit();
    view_ = p;
    view_size_ = n;
  }

  std::vector<T>& mut() {
    if (view_) {
      owned_.assign(view_, view_ + view_size_);
      view_ = nullptr;
    }
    return owned_;
  }

  size_t owned_bytes() const { return owned_.capacity() * sizeof(T); }

 private:
  std::vector<T> owned_;
  const T* view_ = nullptr;
  size_t view_size_ = 0;
};

}  // namespace vi
