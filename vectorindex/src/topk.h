// Fixed-size max-heap of (distance, slot) keeping the k smallest distances.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace vi {

constexpr uint32_t kNoSlot = 0xFFFFFFFFu;

struct Hit {
  float dist;
  uint32_t slot;
  bool operator<(const Hit& o) const { return dist < o.dist || (dist == o.dist && slot < o.slot); }
};

class TopK {
 public:
  explicit TopK(size_t k) : h_(k, Hit{std::numeric_limits<float>::infinity(), kNoSlot}) {}

  float worst() const { return h_.front().dist; }

  void push(float dist, uint32_t slot) {
    if (!(Hit{dist, slot} < h_.front())) return;
    std::pop_heap(h_.begin(), h_.end());
    h_.back() = Hit{dist, slot};
    std::push_heap(h_.begin(), h_.end());
  }

  // The hits found, best first (padding entries dropped).
  std::vector<Hit> sorted() const {
    std::vector<Hit> out;
    out.reserve(h_.size());
    for (const Hit& h : h_) {
      if (h.slot != kNoSlot) out.push_back(h);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::vector<Hit> h_;
};

}  // namespace vi
