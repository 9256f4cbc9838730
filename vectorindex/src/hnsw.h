// Hierarchical navigable small-world graph (Malkov & Yashunin). Level-0 links sit in one
// flat array (mappable); the few upper-level lists in another, found by a per-slot offset.
// Deleted nodes stay in the graph as routing points until an add reuses their slots.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "index.h"
#include "links.h"

namespace vi {

// Guards one stripe of link lists while an add runs. Held for a list copy or one neighbour
// selection: a pthread mutex cost 8% of a build's CPU (perf) in lock calls alone, uncontended.
// A holder descheduled on a busy machine is waited for by yielding, not by burning the core.
class SlotLock {
 public:
  void lock() {
    for (int spins = 0; flag_.exchange(true, std::memory_order_acquire);) {
      while (flag_.load(std::memory_order_relaxed)) {
        if (++spins < 64) {
          __builtin_ia32_pause();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void unlock() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

class HNSWIndex : public Index {
 public:
  HNSWIndex(size_t d, Metric metric, Quant quant, bool keep_float, size_t M,
            size_t ef_construction, size_t ef_search, uint64_t seed);
  size_t M() const { return M_; }
  size_t ef_construction() const { return efc_; }
  size_t ef_search() const { return ef_search_.load(std::memory_order_relaxed); }
  // Searches may be running: the default beam is atomic, not under the index lock.
  void set_ef_search(size_t ef) { ef_search_.store(ef, std::memory_order_relaxed); }
  void read_extra(FileReader& r);
  void own() override;

 protected:
  void search_prepared(const float* q, const float* qnorms, size_t nq, size_t kk, Filter* filter,
                       const SearchArgs& args,
                       std::vector<std::vector<Hit>>& out) const override;
  void add_prepared(const float* x, const float* norms, size_t n, const int64_t* ids) override;
  void compact_locked() override;
  void reserve_for(size_t n) override;
  uint32_t kind() const override { return 1; }
  // Float rows are scored with exact_dist's own kernels (store.h's Scorer).
  bool hits_exact() const override { return !store_.has_codes(); }
  size_t extra_bytes() const override;
  void write_extra(FileWriter& w, Header& h) const override;

 private:
  // Level >= 1 lists: count, then up to M ids.
  uint32_t* upper(uint32_t s, int level);
  const uint32_t* upper(uint32_t s, int level) const;
  // Copies s's list at level into out (room for capacity(level)); returns the count.
  size_t read_links(uint32_t s, int level, uint32_t* out) const;
  // The same without a copy where possible: only where no add can run meanwhile.
  const uint32_t* view_links(uint32_t s, int level, uint32_t* buf, size_t* n) const;
  void write_links(uint32_t s, int level, const uint32_t* ids, size_t n);
  void write_links(uint32_t s, int level, const std::vector<Hit>& hits);
  void prefetch_links(uint32_t s, int level) const;
  size_t capacity(int level) const { return level ? M_ : M0_; }
  SlotLock& lock_of(uint32_t s) const { return locks_[s % kStripes]; }

  std::vector<uint32_t> place(const float* x, size_t n, const int64_t* ids);
  void insert(uint32_t s, const float* q, float qn);
  std::vector<std::vector<uint32_t>> old_links(uint32_t s) const;
  void repair(uint32_t n, uint32_t s, int level, const std::vector<uint32_t>& old);
  void top_up(std::vector<Hit>& kept, std::vector<Hit> pool, size_t want) const;
  template <bool kLocked>
  uint32_t greedy(const float* q, float qn, uint32_t ep, int from, int to) const;
  template <bool kLocked>
  std::vector<Hit> search_layer(const float* q, float qn, uint32_t ep, size_t ef, int level,
                                const uint8_t* skip) const;
  std::vector<Hit> search_one(const float* q, float qn, size_t ef, size_t kk,
                              const uint8_t* skip) const;
  void select_neighbors(std::vector<Hit>& cands, size_t m, bool prune = false) const;
  void connect_back(uint32_t nb, uint32_t s, int level, float dist);
  float node_dist(uint32_t a, uint32_t b) const;
  void prefetch_row(uint32_t s) const;

  // One byte each: many stripes in little memory, so two threads rarely share a cache line.
  static constexpr size_t kStripes = 1 << 16;
  static constexpr int kMaxLevel = 30;
  size_t M_, M0_, efc_;
  std::atomic<size_t> ef_search_;
  double level_mult_;
  std::mt19937_64 rng_;
  Level0Links links0_;  // packed for int8 indexes (links.h)
  std::vector<uint8_t> levels_;
  std::vector<uint32_t> upper_at_;  // per slot: where its lists start in upper_
  std::vector<uint32_t> upper_;     // per slot: levels * (count, M neighbours)
  int32_t max_level_ = -1;
  uint32_t entry_ = kNoSlot;
  std::mutex entry_mu_;
  std::unique_ptr<SlotLock[]> locks_;
};

}  // namespace vi
