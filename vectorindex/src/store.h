// The vectors of an index: float rows and/or int8 codes, their norms, the external ids and
// the deletion marks. Rows are padded to padded_dim(d) floats (see kernels.h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "array.h"
#include "kernels.h"

namespace vi {

// Room for n elements, growing by half again at least: an exact reserve before each small add
// would copy the whole array on every add.
template <class V>
void reserve_room(V& v, size_t n) {
  if (n > v.capacity()) v.reserve(std::max(n, v.capacity() + v.capacity() / 2));
}

enum class Metric : uint32_t { L2 = 0, IP = 1, Cosine = 2 };
enum class Quant : uint32_t { None = 0, Int8 = 1 };

class VectorStore {
 public:
  VectorStore(size_t d, Metric metric, Quant quant, bool keep_float);

  size_t d() const { return d_; }
  size_t dp() const { return dp_; }
  Metric metric() const { return metric_; }
  Quant quant() const { return quant_; }
  bool keep_float() const { return keep_float_; }
  bool has_float() const { return quant_ == Quant::None || keep_float_; }
  bool has_codes() const { return quant_ == Quant::Int8; }
  size_t slots() const { return labels_.size(); }
  size_t live() const { return labels_.size() - n_deleted_; }
  size_t n_deleted() const { return n_deleted_; }
  int64_t next_id() const { return next_id_; }
  void set_next_id(int64_t id) { next_id_ = id; }

  const float* vec(uint32_t s) const { return vecs_.data() + size_t(s) * dp_; }
  const int8_t* code(uint32_t s) const { return codes_.data() + size_t(s) * dp_; }
  const float* vecs() const { return vecs_.data(); }
  const int8_t* codes() const { return codes_.data(); }
  const float* norms() const { return norms_.data(); }
  const float* scales() const { return scales_.data(); }
  int64_t label(uint32_t s) const { return labels_[s]; }
  bool deleted(uint32_t s) const { return deleted_[s] != 0; }
  // The float row that slot s's int8 code stands for (dp floats).
  void decode(uint32_t s, float* out) const;
  // One byte a slot, nonzero when deleted; null when nothing is.
  const uint8_t* deleted_mask() const { return n_deleted_ ? deleted_.data() : nullptr; }

  // Pads n rows of d floats into out (n * dp) and, for cosine, normalises them. Returns the
  // squared norms of the prepared rows in norms_out (n).
  void prepare(const float* x, size_t n, float* out, float* norms_out) const;
  // Throws std::invalid_argument naming the first id already present or repeated.
  void check_new_ids(const int64_t* ids, size_t n) const;
  // Room for n slots in all, so chunked adds do not leave geometric-growth slack.
  void reserve(size_t n);
  // Appends prepared rows; ids null means the next sequential ids.
  void append(const float* prepared, size_t n, const int64_t* ids);
  // Deleted slots not yet reused.
  size_t n_free() const { return free_.size(); }
  // Writes one prepared row over the most recently deleted slot (needs n_free()) under id, or
  // the next sequential id when id is null; returns the slot.
  uint32_t reuse(const float* prepared, const int64_t* id);
  // Marks the ids deleted; returns how many were live.
  size_t remove(const int64_t* ids, size_t n);
  // Slot of a live id, or kNoSlot.
  uint32_t find(int64_t id) const;
  // Drops deleted slots, renumbering the rest in order.
  void compact();
  std::vector<int64_t> live_labels() const;
  size_t memory_bytes() const;

  // Smaller is better: squared L2 distance, or minus the inner product. Uses the int8 codes
  // when there are some (approximate), else the floats.
  float dist(const float* q, float qnorm, uint32_t s) const { return scorer(q, qnorm)(s); }

  // dist() for one query with the kernel and arrays looked up once (the HNSW inner loop).
  struct Scorer {
    const float* q;
    float qnorm;
    size_t dp;
    const Kernels* k;
    const float* vecs;
    const int8_t* codes;
    const float* scales;
    const float* norms;
    bool l2;
    float operator()(uint32_t s) const {
      if (codes) {
        const float dot = scales[s] * k->dot_i8(q, codes + size_t(s) * dp, dp);
        return l2 ? qnorm + norms[s] - 2.0f * dot : -dot;
      }
      // Float L2 straight from the difference: the norm would be one more random read per
      // distance (a cache miss of its own in a graph walk).
      const float* x = vecs + size_t(s) * dp;
      return l2 ? k->l2sqr_f32(q, x, dp) : -k->dot_f32(q, x, dp);
    }
  };
  Scorer scorer(const float* q, float qnorm) const {
    return {q,
            qnorm,
            dp_,
            &kernels(),
            vecs_.data(),
            has_codes() ? codes_.data() : nullptr,
            scales_.data(),
            norms_.data(),
            metric_ == Metric::L2};
  }
  // The same from the float rows (needs has_float()).
  float exact_dist(const float* q, uint32_t s) const;
  // What search returns for a distance: L2 as is, inner products with their sign back.
  float to_score(float dist) const { return metric_ == Metric::L2 ? dist : -dist; }

  // For load(): the arrays as read from a file.
  struct Parts {
    const float* vecs;
    const int8_t* codes;
    const float* scales;
    const float* norms;
    const int64_t* labels;
    const uint8_t* deleted;
    size_t n;
    int64_t next_id;
  };
  void restore(const Parts& p);
  // Copies arrays that still view a mapped file.
  void own();
  // Whether some rows are still read from a mapped file (any write to them copies it all).
  bool is_view() const { return vecs_.is_view() || codes_.is_view() || norms_.is_view(); }

 private:
  void put(uint32_t s, const float* prepared, const int64_t* id);

  size_t d_, dp_;
  Metric metric_;
  Quant quant_;
  bool keep_float_;
  Array<float> vecs_;
  Array<int8_t> codes_;
  Array<float> scales_;
  Array<float> norms_;
  std::vector<int64_t> labels_;
  std::vector<uint8_t> deleted_;
  std::unordered_map<int64_t, uint32_t> slot_of_;
  std::vector<uint32_t> free_;
  size_t n_deleted_ = 0;
  int64_t next_id_ = 0;
};

}  // namespace vi
