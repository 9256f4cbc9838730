#include "store.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "topk.h"

namespace vi {
namespace {

// Symmetric per-row scale: needs no training pass and keeps the relative error of every row
// near 1/254 of its largest component.
float quantize(const float* x, size_t dp, int8_t* code) {
  float m = 0;
  for (size_t k = 0; k < dp; ++k) m = std::fmax(m, std::fabs(x[k]));
  const double inv = m > 0 ? 127.0 / m : 0.0;
  for (size_t k = 0; k < dp; ++k) {
    const long v = std::lrint(double(x[k]) * inv);
    code[k] = int8_t(v > 127 ? 127 : (v < -127 ? -127 : v));
  }
  return float(m / 127.0);
}

float code_norm(const int8_t* code, size_t dp, float scale) {
  int64_t s = 0;
  for (size_t k = 0; k < dp; ++k) s += int32_t(code[k]) * code[k];
  return float(double(scale) * scale * double(s));
}

float sqnorm(const float* x, size_t dp) {
  double s = 0;
  for (size_t k = 0; k < dp; ++k) s += double(x[k]) * x[k];
  return float(s);
}

}  // namespace

VectorStore::VectorStore(size_t d, Metric metric, Quant quant, bool keep_float)
    : d_(d), dp_(padded_dim(d)), metric_(metric), quant_(quant), keep_float_(keep_float) {}

void VectorStore::prepare(const float* x, size_t n, float* out, float* norms_out) const {
  for (size_t i = 0; i < n; ++i) {
    float* o = out + i * dp_;
    const float* r = x + i * d_;
    std::copy(r, r + d_, o);
    std::fill(o + d_, o + dp_, 0.0f);
    float nrm = sqnorm(o, dp_);
    if (metric_ == Metric::Cosine && nrm > 0) {
      const double inv = 1.0 / std::sqrt(double(nrm));
      for (size_t k = 0; k < d_; ++k) o[k] = float(o[k] * inv);
      nrm = sqnorm(o, dp_);
    }
    norms_out[i] = nrm;
  }
}

void VectorStore::check_new_ids(const int64_t* ids, size_t n) const {
  std::unordered_map<int64_t, size_t> seen;
  seen.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (slot_of_.count(ids[i]) || !seen.emplace(ids[i], i).second) {
      throw std::invalid_argument("id " + std::to_string(ids[i]) +
                                  " is already in the index or repeated in ids");
    }
  }
}

void VectorStore::reserve(size_t n) {
  if (has_float()) reserve_room(vecs_.mut(), n * dp_);
  if (has_codes()) {
    reserve_room(codes_.mut(), n * dp_);
    reserve_room(scales_.mut(), n);
  }
  reserve_room(norms_.mut(), n);
  reserve_room(labels_, n);
  reserve_room(deleted_, n);
}

void VectorStore::append(const float* prepared, size_t n, const int64_t* ids) {
  const size_t old = slots();
  if (has_float()) vecs_.mut().resize((old + n) * dp_);
  if (has_codes()) {
    codes_.mut().resize((old + n) * dp_);
    scales_.mut().resize(old + n);
  }
  norms_.mut().resize(old + n);
  deleted_.resize(old + n, 0);
  labels_.resize(old + n);
  // Only when it must grow, and then by doubling: reserve() may rehash the whole map.
  if (old + n > slot_of_.bucket_count() * slot_of_.max_load_factor()) {
    slot_of_.reserve(std::max(old + n, 2 * slot_of_.size()));
  }
  for (size_t i = 0; i < n; ++i) put(uint32_t(old + i), prepared + i * dp_, ids ? ids + i : nullptr);
}

uint32_t VectorStore::reuse(const float* prepared, const int64_t* id) {
  const uint32_t s = free_.back();
  free_.pop_back();
  deleted_[s] = 0;
  --n_deleted_;
  put(s, prepared, id);
  return s;
}

// Writes row, norm, code and id of an allocated slot.
void VectorStore::put(uint32_t s, const float* prepared, const int64_t* id) {
  if (has_float()) std::copy(prepared, prepared + dp_, vecs_.mut().data() + size_t(s) * dp_);
  float& norm = norms_.mut()[s];
  if (has_codes()) {
    int8_t* code = codes_.mut().data() + size_t(s) * dp_;
    float& scale = scales_.mut()[s];
    scale = quantize(prepared, dp_, code);
    norm = code_norm(code, dp_, scale);
  } else {
    norm = sqnorm(prepared, dp_);
  }
  const int64_t label = id ? *id : next_id_;
  labels_[s] = label;
  slot_of_.emplace(label, s);
  if (label >= next_id_) next_id_ = label + 1;
}

size_t VectorStore::remove(const int64_t* ids, size_t n) {
  size_t removed = 0;
  for (size_t i = 0; i < n; ++i) {
    auto it = slot_of_.find(ids[i]);
    if (it == slot_of_.end()) continue;
    deleted_[it->second] = 1;
    free_.push_back(it->second);
    slot_of_.erase(it);
    ++removed;
  }
  n_deleted_ += removed;
  return removed;
}

uint32_t VectorStore::find(int64_t id) const {
  auto it = slot_of_.find(id);
  return it == slot_of_.end() ? kNoSlot : it->second;
}

void VectorStore::compact() {
  if (!n_deleted_) return;
  size_t w = 0;
  auto keep_rows = [&](auto& arr, size_t width) {
    auto& v = arr.mut();
    size_t out = 0;
    for (size_t s = 0; s < labels_.size(); ++s) {
      if (deleted_[s]) continue;
      std::copy(v.begin() + s * width, v.begin() + (s + 1) * width, v.begin() + out * width);
      ++out;
    }
    v.resize(out * width);
    v.shrink_to_fit();
  };
  if (has_float()) keep_rows(vecs_, dp_);
  if (has_codes()) {
    keep_rows(codes_, dp_);
    keep_rows(scales_, 1);
  }
  keep_rows(norms_, 1);
  for (size_t s = 0; s < labels_.size(); ++s) {
    if (!deleted_[s]) labels_[w++] = labels_[s];
  }
  labels_.resize(w);
  labels_.shrink_to_fit();
  deleted_.assign(w, 0);
  slot_of_.clear();
  for (size_t s = 0; s < w; ++s) slot_of_.emplace(labels_[s], uint32_t(s));
  free_.clear();
  n_deleted_ = 0;
}

std::vector<int64_t> VectorStore::live_labels() const {
  std::vector<int64_t> out;
  out.reserve(live());
  for (size_t s = 0; s < labels_.size(); ++s) {
    if (!deleted_[s]) out.push_back(labels_[s]);
  }
  return out;
}

size_t VectorStore::memory_bytes() const {
  // unordered_map: one bucket pointer plus a node (next, key, value) per entry.
  const size_t map_bytes = slot_of_.bucket_count() * sizeof(void*) +
                           slot_of_.size() * (sizeof(void*) + sizeof(int64_t) + 8);
  return vecs_.owned_bytes() + codes_.owned_bytes() + scales_.owned_bytes() +
         norms_.owned_bytes() + labels_.capacity() * sizeof(int64_t) + deleted_.capacity() +
         free_.capacity() * sizeof(uint32_t) + map_bytes;
}

void VectorStore::decode(uint32_t s, float* out) const {
  const int8_t* c = code(s);
  const float scale = scales_.data()[s];
  for (size_t k = 0; k < dp_; ++k) out[k] = c[k] * scale;
}

float VectorStore::exact_dist(const float* q, uint32_t s) const {
  const Kernels& k = kernels();
  if (metric_ == Metric::L2) return k.l2sqr_f32(q, vec(s), dp_);
  return -k.dot_f32(q, vec(s), dp_);
}

void VectorStore::restore(const Parts& p) {
  if (has_float()) vecs_.set_view(p.vecs, p.n * dp_);
  if (has_codes()) {
    codes_.set_view(p.codes, p.n * dp_);
    scales_.set_view(p.scales, p.n);
  }
  norms_.set_view(p.norms, p.n);
  labels_.assign(p.labels, p.labels + p.n);
  deleted_.assign(p.deleted, p.deleted + p.n);
  n_deleted_ = 0;
  free_.clear();
  slot_of_.clear();
  slot_of_.reserve(p.n);
  for (size_t s = 0; s < p.n; ++s) {
    if (deleted_[s]) {
      ++n_deleted_;
      free_.push_back(uint32_t(s));
    } else if (!slot_of_.emplace(labels_[s], uint32_t(s)).second) {
      throw std::invalid_argument("corrupt index file: id " + std::to_string(labels_[s]) +
                                  " appears twice");
    }
  }
  next_id_ = p.next_id;
}

void VectorStore::own() {
  vecs_.mut();
  codes_.mut();
  scales_.mut();
  norms_.mut();
}

}  // namespace vi
