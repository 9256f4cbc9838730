// What flat and HNSW indexes share: the store, the reader/writer lock, input preparation,
// filters, re-ranking and the file format's common part.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "io.h"
#include "store.h"
#include "topk.h"

namespace vi {

struct SearchArgs {
  size_t k = 10;
  size_t ef = 0;      // HNSW beam width; 0 means the index's default
  size_t rerank = 4;  // with int8 codes and floats kept: candidates per result re-ranked
  bool filtered = false;
  const int64_t* allowed = nullptr;
  size_t n_allowed = 0;
};

// The live slots a filtered search may return, and a per-slot skip mask built on demand.
struct Filter {
  std::vector<uint32_t> slots;
  std::vector<uint8_t> skip;  // empty until mask() is called
  const uint8_t* mask(size_t n_slots);
};

class Index {
 public:
  Index(size_t d, Metric metric, Quant quant, bool keep_float);
  virtual ~Index() = default;
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  size_t d() const { return store_.d(); }
  Metric metric() const { return store_.metric(); }
  Quant quant() const { return store_.quant(); }
  bool keep_float() const { return store_.keep_float(); }
  size_t ntotal() const;
  size_t memory_bytes() const;
  std::vector<int64_t> ids() const;

  // x holds n rows of d finite floats (checked by the caller). Throws std::invalid_argument
  // for an id already present.
  void add(const float* x, size_t n, const int64_t* ids);
  size_t remove(const int64_t* ids, size_t n);
  // Adds rows under ids, first removing the ids already present, as one change: a concurrent
  // search sees each id's old vector or its new one, never neither. Throws
  // std::invalid_argument for an id repeated in ids.
  void upsert(const float* x, size_t n, const int64_t* ids);
  // Whether rows are still read from a mapped file (load with mmap, no add since).
  bool mapped() const;
  // D and I hold nq * k; missing results get id -1.
  void search(const float* xq, size_t nq, const SearchArgs& args, float* D, int64_t* I) const;
  void compact();
  void save(const std::string& path) const;
  // Copies everything that views a mapped file and drops the mapping.
  virtual void own();
  void keep_mapping(std::shared_ptr<Mapping> m) { mapping_ = std::move(m); }
  // For load_index: the store's sections of a file.
  void read_common(FileReader& r);

 protected:
  // Hits of nq prepared queries, best first, at most kk each; called under the shared lock.
  virtual void search_prepared(const float* q, const float* qnorms, size_t nq, size_t kk,
                               Filter* filter, const SearchArgs& args,
                               std::vector<std::vector<Hit>>& out) const = 0;
  virtual void add_prepared(const float* x, const float* norms, size_t n, const int64_t* ids) = 0;
  // Room for n more rows, so chunked adds do not leave geometric-growth slack.
  virtual void reserve_for(size_t n) { store_.reserve(store_.slots() + n); }
  virtual void after_remove() {}
  virtual void compact_locked() = 0;
  virtual uint32_t kind() const = 0;
  // Bytes held beyond the store (the HNSW graph).
  virtual size_t extra_bytes() const { return 0; }
  virtual void write_extra(FileWriter& w, Header& h) const = 0;

  // Whether search_prepared's distances are already what exact_dist gives (no re-scoring).
  virtual bool hits_exact() const { return false; }
  // Exact search over the given slots.
  std::vector<Hit> scan_slots(const float* q, float qnorm, const std::vector<uint32_t>& slots,
                              size_t kk) const;
  void write_common(FileWriter& w, Header& h) const;

  VectorStore store_;
  mutable std::shared_mutex mu_;
  // Keeps a mapped file alive while arrays view it.
  std::shared_ptr<Mapping> mapping_;

 private:
  void finish(const float* q, std::vector<Hit>& hits, size_t k, float* D, int64_t* I) const;
};

// Reads an index written by save(); with mmap the vectors stay in the mapped file until the
// first add. Throws std::invalid_argument for a bad file.
std::unique_ptr<Index> load_index(const std::string& path, bool mmap);

}  // namespace vi
