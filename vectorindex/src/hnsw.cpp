#include "hnsw.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <stdexcept>

#include "parallel.h"

namespace vi {
namespace {

// Generation-stamped visit marks, so a search clears nothing.
class Visited {
 public:
  void reset(size_t n) {
    if (mark_.size() < n) mark_.assign(n + n / 4 + 1024, 0);
    if (++gen_ == 0) {
      std::fill(mark_.begin(), mark_.end(), 0);
      gen_ = 1;
    }
  }
  uint16_t* marks() { return mark_.data(); }
  uint16_t gen() const { return gen_; }

 private:
  std::vector<uint16_t> mark_;
  uint16_t gen_ = 0;
};

struct Farther {
  bool operator()(const Hit& a, const Hit& b) const { return b < a; }
};

// A binary heap in a caller's buffer, so a warm search allocates nothing for its queues.
template <class Less>
class Heap {
 public:
  explicit Heap(std::vector<Hit>& buf) : h_(buf) { h_.clear(); }
  bool empty() const { return h_.empty(); }
  size_t size() const { return h_.size(); }
  const Hit& top() const { return h_.front(); }
  void push(Hit x) {
    h_.push_back(x);
    std::push_heap(h_.begin(), h_.end(), Less());
  }
  void pop() {
    std::pop_heap(h_.begin(), h_.end(), Less());
    h_.pop_back();
  }

 private:
  std::vector<Hit>& h_;
};
using MaxHeap = Heap<std::less<Hit>>;
using MinHeap = Heap<Farther>;

// One thread's search state. Reached through a function the optimiser cannot see into: a
// thread_local of a shared library costs a __tls_get_addr call per access, and GCC re-derived
// the address at every heap operation of the inlined search loop (5% of a build in perf).
struct Scratch {
  Visited seen;
  std::vector<Hit> top, cand;
};

__attribute__((noinline)) Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Rows are fetched this many neighbours ahead of their distance computation: at d=384 a float
// row is 24 cache lines and the dot product is mostly waiting on them (perf); 3 beat 1 and 2
// against hnswlib on MiniLM vectors, if noisily on this shared machine.
constexpr size_t kPrefetchAhead = 3;

// Filtered and deletion-heavy searches need a wider beam to find k eligible results.
size_t widened_ef(size_t ef, size_t eligible, size_t slots) {
  if (!eligible || eligible >= slots) return ef;
  const double wider = double(ef) * double(slots) / double(eligible);
  return size_t(std::min(wider, double(std::max(ef, slots))));
}

}  // namespace

HNSWIndex::HNSWIndex(size_t d, Metric metric, Quant quant, bool keep_float, size_t M,
                     size_t ef_construction, size_t ef_search, uint64_t seed)
    : Index(d, metric, quant, keep_float),
      M_(M),
      M0_(2 * M),
      efc_(std::max(ef_construction, M)),
      ef_search_(ef_search),
      level_mult_(1.0 / std::log(double(M))),
      rng_(seed),
      links0_(M0_, quant == Quant::Int8),
      locks_(new SlotLock[kStripes]) {}

uint32_t* HNSWIndex::upper(uint32_t s, int level) {
  return upper_.data() + upper_at_[s] + size_t(level - 1) * (M_ + 1);
}

const uint32_t* HNSWIndex::upper(uint32_t s, int level) const {
  return upper_.data() + upper_at_[s] + size_t(level - 1) * (M_ + 1);
}

size_t HNSWIndex::read_links(uint32_t s, int level, uint32_t* out) const {
  if (level == 0) return links0_.get(s, out);
  const uint32_t* l = upper(s, level);
  std::copy(l + 1, l + 1 + l[0], out);
  return l[0];
}

const uint32_t* HNSWIndex::view_links(uint32_t s, int level, uint32_t* buf, size_t* n) const {
  if (level == 0) return links0_.view(s, buf, n);
  const uint32_t* l = upper(s, level);
  *n = l[0];
  return l + 1;
}

void HNSWIndex::write_links(uint32_t s, int level, const uint32_t* ids, size_t n) {
  if (level == 0) return links0_.set(s, ids, n);
  uint32_t* l = upper(s, level);
  l[0] = uint32_t(n);
  std::copy(ids, ids + n, l + 1);
}

void HNSWIndex::write_links(uint32_t s, int level, const std::vector<Hit>& hits) {
  uint32_t ids[Level0Links::kMaxCap];
  for (size_t i = 0; i < hits.size(); ++i) ids[i] = hits[i].slot;
  write_links(s, level, ids, hits.size());
}

void HNSWIndex::prefetch_links(uint32_t s, int level) const {
  if (level == 0) links0_.prefetch(s);
}

float HNSWIndex::node_dist(uint32_t a, uint32_t b) const {
  if (store_.has_float()) return store_.exact_dist(store_.vec(a), b);
  // Codes only: dequantise a and use the same distance as searches do.
  thread_local std::vector<float> buf;
  buf.resize(store_.dp());
  store_.decode(a, buf.data());
  return store_.dist(buf.data(), store_.norms()[a], b);
}

void HNSWIndex::prefetch_row(uint32_t s) const {
  const char* p = store_.has_codes() ? reinterpret_cast<const char*>(store_.code(s))
                                     : reinterpret_cast<const char*>(store_.vec(s));
  const size_t bytes = store_.dp() * (store_.has_codes() ? 1 : sizeof(float));
  for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

template <bool kLocked>
uint32_t HNSWIndex::greedy(const float* q, float qn, uint32_t ep, int from, int to) const {
  const VectorStore::Scorer dist = store_.scorer(q, qn);
  float best = dist(ep);
  uint32_t nbrs[Level0Links::kMaxCap];
  for (int level = from; level > to; --level) {
    for (bool moved = true; moved;) {
      moved = false;
      size_t cnt;
      {
        std::unique_lock<SlotLock> lk;
        if constexpr (kLocked) lk = std::unique_lock<SlotLock>(lock_of(ep));
        cnt = read_links(ep, level, nbrs);
      }
      for (size_t i = 0; i < cnt && i < kPrefetchAhead; ++i) prefetch_row(nbrs[i]);
      for (size_t i = 0; i < cnt; ++i) {
        if (i + kPrefetchAhead < cnt) prefetch_row(nbrs[i + kPrefetchAhead]);
        const float dd = dist(nbrs[i]);
        if (dd < best) {
          best = dd;
          ep = nbrs[i];
          moved = true;
        }
      }
    }
  }
  return ep;
}

template <bool kLocked>
std::vector<Hit> HNSWIndex::search_layer(const float* q, float qn, uint32_t ep, size_t ef,
                                         int level, const uint8_t* skip) const {
  Scratch& sc = scratch();
  sc.seen.reset(store_.slots());
  // Locals, not members: a store to a mark may alias anything reached through a pointer.
  uint16_t* const mark = sc.seen.marks();
  const uint16_t gen = sc.seen.gen();
  const VectorStore::Scorer dist = store_.scorer(q, qn);
  MaxHeap top(sc.top);
  MinHeap cand(sc.cand);
  const float d0 = dist(ep);
  mark[ep] = gen;
  if (!skip || !skip[ep]) top.push({d0, ep});
  cand.push({d0, ep});
  float bound = top.empty() ? INFINITY : d0;
  uint32_t list[Level0Links::kMaxCap], nbrs[Level0Links::kMaxCap];
  while (!cand.empty()) {
    const Hit c = cand.top();
    if (c.dist > bound && top.size() >= ef) break;
    cand.pop();
    // The list expanded next, most likely: it is one expansion's work away.
    if (!cand.empty()) prefetch_links(cand.top().slot, level);
    size_t n;
    const uint32_t* l = list;
    if constexpr (kLocked) {
      std::lock_guard<SlotLock> lk(lock_of(c.slot));
      n = read_links(c.slot, level, list);
    } else {
      l = view_links(c.slot, level, list, &n);
    }
    // Only unvisited neighbours go on; the rest cost nothing more.
    size_t cnt = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t nb = l[i];
      if (mark[nb] != gen) {
        mark[nb] = gen;
        nbrs[cnt++] = nb;
      }
    }
    constexpr size_t ahead = kPrefetchAhead;
    for (size_t i = 0; i < cnt && i < ahead; ++i) prefetch_row(nbrs[i]);
    for (size_t i = 0; i < cnt; ++i) {
      const uint32_t nb = nbrs[i];
      if (i + ahead < cnt) prefetch_row(nbrs[i + ahead]);
      const float dd = dist(nb);
      if (top.size() < ef || dd < bound) {
        cand.push({dd, nb});
        // A candidate is likely expanded soon: its list is then one miss fewer to wait for.
        prefetch_links(nb, level);
        if (!skip || !skip[nb]) {
          top.push({dd, nb});
          if (top.size() > ef) top.pop();
        }
        if (!top.empty()) bound = top.top().dist;
      }
    }
  }
  std::vector<Hit> out;
  out.reserve(top.size());
  for (; !top.empty(); top.pop()) out.push_back(top.top());
  std::reverse(out.begin(), out.end());
  return out;
}

// The heuristic of the HNSW paper: keep a candidate only if it is closer to the new node than
// to every neighbour already kept, which spreads links across directions. Without prune, up to
// m candidates are all kept (a list with room takes every link).
void HNSWIndex::select_neighbors(std::vector<Hit>& cands, size_t m, bool prune) const {
  if (cands.size() <= m && !prune) return;
  std::sort(cands.begin(), cands.end());
  std::vector<Hit> kept;
  kept.reserve(m);
  for (const Hit& c : cands) {
    bool good = true;
    for (const Hit& k : kept) {
      if (node_dist(c.slot, k.slot) < c.dist) {
        good = false;
        break;
      }
    }
    if (good) kept.push_back(c);
    if (kept.size() >= m) break;
  }
  cands.swap(kept);
}

void HNSWIndex::connect_back(uint32_t nb, uint32_t s, int level, float dist) {
  std::lock_guard<SlotLock> lk(lock_of(nb));
  uint32_t l[Level0Links::kMaxCap + 1];
  const size_t n = read_links(nb, level, l);
  const size_t cap = capacity(level);
  if (n < cap) {
    l[n] = s;
    write_links(nb, level, l, n + 1);
    return;
  }
  std::vector<Hit> cands{{dist, s}};
  for (size_t i = 0; i < n; ++i) cands.push_back({node_dist(nb, l[i]), l[i]});
  select_neighbors(cands, cap);
  write_links(nb, level, cands);
}

// A reused slot's lists still hold the deleted vector's neighbours (a fresh slot's are empty).
std::vector<std::vector<uint32_t>> HNSWIndex::old_links(uint32_t s) const {
  std::vector<std::vector<uint32_t>> old(levels_[s] + 1);
  std::lock_guard<SlotLock> lk(lock_of(s));
  uint32_t ids[Level0Links::kMaxCap];
  for (int l = 0; l <= levels_[s]; ++l) old[l].assign(ids, ids + read_links(s, l, ids));
  return old;
}

// Tops a heuristic selection up with the nearest candidates it left out: the heuristic alone
// would shrink a repaired list well below its degree, and those links are routes too.
void HNSWIndex::top_up(std::vector<Hit>& kept, std::vector<Hit> pool, size_t want) const {
  std::sort(pool.begin(), pool.end());
  for (size_t i = 0; i < pool.size() && kept.size() < want; ++i) {
    const uint32_t c = pool[i].slot;
    if (std::none_of(kept.begin(), kept.end(), [c](const Hit& k) { return k.slot == c; })) {
      kept.push_back(pool[i]);
    }
  }
}

// n was a neighbour of the vector that s held before reuse; a link from n to s is stale (it
// points at an unrelated vector) and s no longer routes n to s's old neighbours. As hnswlib does
// for updated points, n's list is re-selected from its links and those old neighbours. s itself
// goes: connect_back puts it back where the new vector really is close to n.
void HNSWIndex::repair(uint32_t n, uint32_t s, int level, const std::vector<uint32_t>& old) {
  // n's lock alone, for the whole re-selection, as in connect_back: no lock order to get wrong.
  std::lock_guard<SlotLock> lk(lock_of(n));
  uint32_t l[Level0Links::kMaxCap];
  const size_t count = read_links(n, level, l);
  const uint32_t *begin = l, *end = l + count;
  if (std::find(begin, end, s) == end) return;
  std::vector<Hit> cands;
  cands.reserve(count + old.size());
  for (const uint32_t* c = begin; c != end; ++c) {
    if (*c != s) cands.push_back({node_dist(n, *c), *c});
  }
  for (const uint32_t c : old) {
    if (c != n && c != s && std::find(begin, end, c) == end) {
      cands.push_back({node_dist(n, c), c});
    }
  }
  // Up to two links more than before (s's replacement among them): the old neighbourhood
  // lost its hub: recall after churn was 0.967 keeping the old count, 0.98 with the extra routes.
  const size_t want = std::min(capacity(level), count + 2);
  const std::vector<Hit> pool = cands;
  select_neighbors(cands, capacity(level), /*prune=*/true);
  top_up(cands, pool, want);
  write_links(n, level, cands);
}

void HNSWIndex::insert(uint32_t s, const float* q, float qn) {
  const int level = levels_[s];
  const std::vector<std::vector<uint32_t>> old = old_links(s);
  std::unique_lock<std::mutex> entry_lock(entry_mu_);
  const int top_level = max_level_;
  uint32_t ep = entry_;
  // A node that raises the top level keeps the entry lock until it is linked in.
  if (level <= top_level) entry_lock.unlock();
  if (ep == kNoSlot) {
    entry_ = s;
    max_level_ = level;
    return;
  }
  ep = greedy<true>(q, qn, ep, top_level, level);
  for (int l = std::min(level, top_level); l >= 0; --l) {
    std::vector<Hit> cands = search_layer<true>(q, qn, ep, efc_, l, nullptr);
    ep = cands.front().slot;
    // A concurrent insert may already link to s: never link s to itself.
    cands.erase(std::remove_if(cands.begin(), cands.end(), [s](const Hit& h) { return h.slot == s; }),
                cands.end());
    select_neighbors(cands, M_);
    {
      std::lock_guard<SlotLock> lk(lock_of(s));
      write_links(s, l, cands);
    }
    // Before connect_back, so that only the new vector's own closeness links n back to s.
    for (const uint32_t n : old[l]) {
      if (n != s) repair(n, s, l, old[l]);
    }
    for (const Hit& c : cands) connect_back(c.slot, s, l, c.dist);
  }
  if (level > top_level) {
    entry_ = s;
    max_level_ = level;
  }
}

// Rows go to deleted slots first, which keep their level and, until insert() replaces them,
// their links (routes for the inserts running meanwhile); the rest get new slots.
std::vector<uint32_t> HNSWIndex::place(const float* x, size_t n, const int64_t* ids) {
  const size_t dp = store_.dp(), old = store_.slots(), reused = std::min(n, store_.n_free());
  std::vector<uint32_t> slots(n);
  for (size_t i = 0; i < reused; ++i) slots[i] = store_.reuse(x + i * dp, ids ? ids + i : nullptr);
  store_.append(x + reused * dp, n - reused, ids ? ids + reused : nullptr);
  links0_.resize(store_.slots());
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  for (size_t i = reused; i < n; ++i) {
    slots[i] = uint32_t(old + i - reused);
    const double u = std::max(unif(rng_), 1e-300);
    const int level = std::min(int(-std::log(u) * level_mult_), kMaxLevel);
    if (upper_.size() + size_t(level) * (M_ + 1) > UINT32_MAX) {
      throw std::length_error("HNSW graph too large");
    }
    levels_.push_back(uint8_t(level));
    upper_at_.push_back(uint32_t(upper_.size()));
    upper_.resize(upper_.size() + size_t(level) * (M_ + 1), 0);
  }
  return slots;
}

void HNSWIndex::add_prepared(const float* x, const float* norms, size_t n, const int64_t* ids) {
  const size_t dp = store_.dp();
  const std::vector<uint32_t> slots = place(x, n, ids);
  // Codes only: searches see the codes, so insert with what they will see.
  std::vector<float> deq;
  if (!store_.has_float()) deq.resize(n * dp);
  std::atomic<size_t> next{0};
  run_parallel(threads_for(n, 256), [&](int) {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      const uint32_t s = slots[i];
      const float* q = x + i * dp;
      float qn = norms[i];
      if (!store_.has_float()) {
        float* b = deq.data() + i * dp;
        store_.decode(s, b);
        q = b;
        qn = store_.norms()[s];
      }
      insert(s, q, qn);
    }
  });
}

void HNSWIndex::reserve_for(size_t n) {
  const size_t slots = store_.slots() + n - std::min(n, store_.n_free());
  store_.reserve(slots);
  links0_.reserve(slots);
  reserve_room(levels_, slots);
  reserve_room(upper_at_, slots);
}

std::vector<Hit> HNSWIndex::search_one(const float* q, float qn, size_t ef, size_t kk,
                                       const uint8_t* skip) const {
  if (entry_ == kNoSlot) return {};
  const uint32_t ep = greedy<false>(q, qn, entry_, max_level_, 0);
  std::vector<Hit> hits = search_layer<false>(q, qn, ep, std::max(ef, kk), 0, skip);
  if (hits.size() > kk) hits.resize(kk);
  return hits;
}

void HNSWIndex::search_prepared(const float* q, const float* qnorms, size_t nq, size_t kk,
                                Filter* filter, const SearchArgs& args,
                                std::vector<std::vector<Hit>>& out) const {
  const size_t dp = store_.dp(), slots = store_.slots();
  size_t ef = args.ef ? args.ef : ef_search();
  const uint8_t* skip = store_.deleted_mask();
  // Few eligible ids: an exact scan of them beats a graph walk that must skip most nodes.
  const bool exact = filter && filter->slots.size() < std::max<size_t>(4 * ef, slots / 20);
  if (filter && !exact) {
    skip = filter->mask(slots);
    ef = widened_ef(ef, filter->slots.size(), slots);
  } else if (!filter) {
    ef = widened_ef(ef, store_.live(), slots);
  }
  // Queries are handed out one at a time, not dealt in advance: on a shared machine one
  // thread may be descheduled for a while, and the others then take over its share.
  std::atomic<size_t> next{0};
  run_parallel(threads_for(nq, 4), [&](int) {
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < nq;) {
      out[i] = exact ? scan_slots(q + i * dp, qnorms[i], filter->slots, kk)
                     : search_one(q + i * dp, qnorms[i], ef, kk, skip);
    }
  });
}

void HNSWIndex::own() {
  links0_.own();
  Index::own();
}

// Rebuilds the graph from the live rows: deleted nodes are routing points until then.
void HNSWIndex::compact_locked() {
  if (!store_.n_deleted()) return;
  const size_t dp = store_.dp();
  std::vector<float> rows;
  std::vector<int64_t> ids;
  for (uint32_t s = 0; s < store_.slots(); ++s) {
    if (store_.deleted(s)) continue;
    ids.push_back(store_.label(s));
    rows.resize(rows.size() + dp);
    float* row = rows.data() + rows.size() - dp;
    if (store_.has_float()) {
      std::copy(store_.vec(s), store_.vec(s) + dp, row);
    } else {
      store_.decode(s, row);
    }
  }
  const int64_t next_id = store_.next_id();
  store_ = VectorStore(store_.d(), store_.metric(), store_.quant(), store_.keep_float());
  links0_.clear();
  levels_.clear();
  upper_at_.clear();
  upper_.clear();
  max_level_ = -1;
  entry_ = kNoSlot;
  std::vector<float> norms(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    norms[i] = kernels().dot_f32(rows.data() + i * dp, rows.data() + i * dp, dp);
  }
  add_prepared(rows.data(), norms.data(), ids.size(), ids.data());
  store_.set_next_id(next_id);
}

size_t HNSWIndex::extra_bytes() const {
  return links0_.owned_bytes() + levels_.capacity() + upper_at_.capacity() * sizeof(uint32_t) +
         upper_.capacity() * sizeof(uint32_t);
}

// Upper lists lie in slot order (reused slots keep theirs), so the offsets are upper_at_.
void HNSWIndex::write_extra(FileWriter& w, Header& h) const {
  const size_t n = store_.slots();
  const std::vector<int32_t> levels(levels_.begin(), levels_.end());
  std::vector<uint64_t> offsets(upper_at_.begin(), upper_at_.end());
  offsets.push_back(upper_.size());
  h.aux[0] = M_;
  h.aux[1] = efc_;
  h.aux[2] = uint64_t(int64_t(max_level_));
  h.aux[3] = entry_;
  h.aux[4] = ef_search();
  w.section(levels.data(), n * sizeof(int32_t));
  // The file holds plain lists (mappable as they are); packed ones are decoded for it.
  if (links0_.plain_view()) {
    w.section(links0_.plain_view(), n * (M0_ + 1) * sizeof(uint32_t));
  } else {
    std::vector<uint32_t> plain(n * (M0_ + 1), 0);
    for (uint32_t s = 0; s < n; ++s) {
      uint32_t* rec = plain.data() + size_t(s) * (M0_ + 1);
      rec[0] = uint32_t(links0_.get(s, rec + 1));
    }
    w.section(plain.data(), plain.size() * sizeof(uint32_t));
  }
  w.section(offsets.data(), (n + 1) * sizeof(uint64_t));
  w.section(upper_.data(), upper_.size() * sizeof(uint32_t));
}

// Every link is checked: a file with a valid checksum may still have been written by a buggy
// or hostile writer, and a bad link would be an out-of-bounds read later.
void HNSWIndex::read_extra(FileReader& r) {
  const size_t n = store_.slots();
  const Header& h = r.header();
  max_level_ = int32_t(int64_t(h.aux[2]));
  entry_ = uint32_t(h.aux[3]);
  if (n && (entry_ >= n || max_level_ < 0 || max_level_ > kMaxLevel)) {
    r.fail("bad HNSW entry point");
  }
  if (!n && (entry_ != kNoSlot || max_level_ != -1)) r.fail("bad HNSW entry point");
  const auto* lv = static_cast<const int32_t*>(r.section(n * sizeof(int32_t)));
  const auto* l0 = static_cast<const uint32_t*>(r.section(n * (M0_ + 1) * sizeof(uint32_t)));
  if (!links0_.load_plain(l0, n)) r.fail("bad HNSW link");
  const auto* off = static_cast<const uint64_t*>(r.section((n + 1) * sizeof(uint64_t)));
  if (off[0] != 0 || off[n] > UINT32_MAX) r.fail("bad HNSW offsets");
  levels_.resize(n);
  upper_at_.resize(n);
  for (size_t s = 0; s < n; ++s) {
    if (lv[s] < 0 || lv[s] > max_level_ || off[s + 1] < off[s] ||
        off[s + 1] - off[s] != size_t(lv[s]) * (M_ + 1)) {
      r.fail("bad HNSW levels");
    }
    levels_[s] = uint8_t(lv[s]);
    upper_at_[s] = uint32_t(off[s]);
  }
  if (off[n] > r.header().payload_bytes / sizeof(uint32_t)) r.fail("bad HNSW offsets");
  const auto* up = static_cast<const uint32_t*>(r.section(off[n] * sizeof(uint32_t)));
  upper_.assign(up, up + off[n]);
  if (n && levels_[entry_] != max_level_) r.fail("bad HNSW entry level");
  uint32_t ids[Level0Links::kMaxCap];
  for (uint32_t s = 0; s < n; ++s) {
    for (int l = 0; l <= levels_[s]; ++l) {
      if (l > 0 && upper(s, l)[0] > capacity(l)) r.fail("bad HNSW link count");
      const size_t cnt = read_links(s, l, ids);
      for (size_t i = 0; i < cnt; ++i) {
        if (ids[i] >= n || levels_[ids[i]] < l) r.fail("bad HNSW link");
      }
    }
  }
}

}  // namespace vi
