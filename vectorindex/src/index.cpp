#include "index.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "parallel.h"

namespace vi {
namespace {

constexpr size_t kAddChunk = 1 << 14;

}  // namespace

const uint8_t* Filter::mask(size_t n_slots) {
  if (skip.empty()) {
    skip.assign(n_slots, 1);
    for (uint32_t s : slots) skip[s] = 0;
  }
  return skip.data();
}

Index::Index(size_t d, Metric metric, Quant quant, bool keep_float)
    : store_(d, metric, quant, keep_float) {}

size_t Index::ntotal() const {
  std::shared_lock lock(mu_);
  return store_.live();
}

size_t Index::memory_bytes() const {
  std::shared_lock lock(mu_);
  return store_.memory_bytes() + extra_bytes();
}

std::vector<int64_t> Index::ids() const {
  std::shared_lock lock(mu_);
  return store_.live_labels();
}

void Index::add(const float* x, size_t n, const int64_t* ids) {
  if (!n) return;
  const size_t dp = store_.dp();
  std::vector<float> prepared(n * dp), norms(n);
  store_.prepare(x, n, prepared.data(), norms.data());
  {
    std::unique_lock lock(mu_);
    if (ids) store_.check_new_ids(ids, n);
    reserve_for(n);
  }
  // In chunks, so that searches get the lock between them during a long HNSW build.
  for (size_t i = 0; i < n; i += kAddChunk) {
    const size_t m = std::min(kAddChunk, n - i);
    std::unique_lock lock(mu_);
    // Another thread may have added one of these ids since the check above.
    if (ids) store_.check_new_ids(ids + i, m);
    add_prepared(prepared.data() + i * dp, norms.data() + i, m, ids ? ids + i : nullptr);
  }
}

size_t Index::remove(const int64_t* ids, size_t n) {
  std::unique_lock lock(mu_);
  const size_t removed = store_.remove(ids, n);
  if (removed) after_remove();
  return removed;
}

void Index::upsert(const float* x, size_t n, const int64_t* ids) {
  if (!n) return;
  std::unordered_set<int64_t> seen(n);
  for (size_t i = 0; i < n; ++i) {
    if (!seen.insert(ids[i]).second) {
      throw std::invalid_argument("id " + std::to_string(ids[i]) + " is repeated in ids");
    }
  }
  const size_t dp = store_.dp();
  std::vector<float> prepared(n * dp), norms(n);
  store_.prepare(x, n, prepared.data(), norms.data());
  // One lock for the whole batch (no chunks as in add): between a removal and its add a
  // search would find neither vector. Upserts are small; bulk loads go through add.
  std::unique_lock lock(mu_);
  const size_t removed = store_.remove(ids, n);
  reserve_for(n);
  add_prepared(prepared.data(), norms.data(), n, ids);
  if (removed) after_remove();
}

bool Index::mapped() const {
  std::shared_lock lock(mu_);
  return store_.is_view();
}

void Index::own() {
  store_.own();
  mapping_.reset();
}

void Index::compact() {
  std::unique_lock lock(mu_);
  compact_locked();
}

void Index::search(const float* xq, size_t nq, const SearchArgs& args, float* D,
                   int64_t* I) const {
  const size_t dp = store_.dp();
  std::vector<float> q(nq * dp), qn(nq);
  store_.prepare(xq, nq, q.data(), qn.data());
  std::shared_lock lock(mu_);
  if (store_.live() == 0) throw std::invalid_argument("the index is empty");
  const bool rerank = store_.has_codes() && store_.has_float();
  const size_t kk = std::min(rerank ? std::max(args.k, args.k * args.rerank) : args.k,
                             store_.slots());
  std::vector<std::vector<Hit>> hits(nq);
  Filter filter;
  if (args.filtered) {
    filter.slots.reserve(args.n_allowed);
    for (size_t i = 0; i < args.n_allowed; ++i) {
      const uint32_t s = store_.find(args.allowed[i]);
      if (s != kNoSlot) filter.slots.push_back(s);
    }
    std::sort(filter.slots.begin(), filter.slots.end());
    filter.slots.erase(std::unique(filter.slots.begin(), filter.slots.end()), filter.slots.end());
  }
  if (!args.filtered || !filter.slots.empty()) {
    search_prepared(q.data(), qn.data(), nq, kk, args.filtered ? &filter : nullptr, args, hits);
  }
  // Without re-scoring, finishing is a copy: not worth starting threads for.
  const int nt = hits_exact() ? 1 : threads_for(nq * kk * dp, 1 << 16);
  run_parallel(nt, [&](int t) {
    for (size_t i = t; i < nq; i += nt) {
      finish(q.data() + i * dp, hits[i], args.k, D + i * args.k, I + i * args.k);
    }
  });
}

std::vector<Hit> Index::scan_slots(const float* q, float qnorm,
                                   const std::vector<uint32_t>& slots, size_t kk) const {
  TopK top(kk);
  for (uint32_t s : slots) top.push(store_.dist(q, qnorm, s), s);
  return top.sorted();
}

// Re-ranks code-based hits with the floats, or makes float L2 distances exact (the norm
// expansion used while scanning loses digits for near-duplicates), then writes k results.
void Index::finish(const float* q, std::vector<Hit>& hits, size_t k, float* D,
                   int64_t* I) const {
  if (!hits_exact() && store_.has_float() &&
      (store_.has_codes() || store_.metric() == Metric::L2)) {
    for (Hit& h : hits) h.dist = store_.exact_dist(q, h.slot);
    std::sort(hits.begin(), hits.end());
  }
  const float none = store_.metric() == Metric::L2 ? std::numeric_limits<float>::infinity()
                                                   : -std::numeric_limits<float>::infinity();
  for (size_t j = 0; j < k; ++j) {
    if (j < hits.size()) {
      float s = store_.to_score(hits[j].dist);
      if (store_.metric() == Metric::L2 && s < 0) s = 0;
      D[j] = s;
      I[j] = store_.label(hits[j].slot);
    } else {
      D[j] = none;
      I[j] = -1;
    }
  }
}

void Index::save(const std::string& path) const {
  std::shared_lock lock(mu_);
  FileWriter w(path);
  Header h{};
  h.kind = kind();
  write_common(w, h);
  write_extra(w, h);
  w.commit(h);
}

void Index::write_common(FileWriter& w, Header& h) const {
  const size_t n = store_.slots(), dp = store_.dp();
  h.metric = uint32_t(store_.metric());
  h.quant = uint32_t(store_.quant());
  h.keep_float = store_.keep_float();
  h.d = store_.d();
  h.n = n;
  h.next_id = store_.next_id();
  if (store_.has_float()) w.section(store_.vecs(), n * dp * sizeof(float));
  if (store_.has_codes()) {
    w.section(store_.codes(), n * dp);
    w.section(store_.scales(), n * sizeof(float));
  }
  w.section(store_.norms(), n * sizeof(float));
  std::vector<int64_t> labels(n);
  std::vector<uint8_t> deleted(n);
  for (size_t s = 0; s < n; ++s) {
    labels[s] = store_.label(uint32_t(s));
    deleted[s] = store_.deleted(uint32_t(s));
  }
  w.section(labels.data(), n * sizeof(int64_t));
  w.section(deleted.data(), n);
}

void Index::read_common(FileReader& r) {
  const Header& h = r.header();
  const size_t n = h.n, dp = store_.dp();
  VectorStore::Parts p{};
  p.n = n;
  p.next_id = h.next_id;
  if (store_.has_float()) p.vecs = static_cast<const float*>(r.section(n * dp * sizeof(float)));
  if (store_.has_codes()) {
    p.codes = static_cast<const int8_t*>(r.section(n * dp));
    p.scales = static_cast<const float*>(r.section(n * sizeof(float)));
  }
  p.norms = static_cast<const float*>(r.section(n * sizeof(float)));
  p.labels = static_cast<const int64_t*>(r.section(n * sizeof(int64_t)));
  p.deleted = static_cast<const uint8_t*>(r.section(n));
  store_.restore(p);
}

}  // namespace vi
