// Exact search: the database is scanned in tiles that stay in cache while a block of queries
// is multiplied against them (the GEMM shape), so memory is read once for all queries.
#pragma once

#include "index.h"

namespace vi {

class FlatIndex : public Index {
 public:
  using Index::Index;

 protected:
  void search_prepared(const float* q, const float* qnorms, size_t nq, size_t kk, Filter* filter,
                       const SearchArgs& args,
                       std::vector<std::vector<Hit>>& out) const override;
  void add_prepared(const float* x, const float* norms, size_t n, const int64_t* ids) override;
  void after_remove() override;
  void compact_locked() override { store_.compact(); }
  uint32_t kind() const override { return 0; }
  void write_extra(FileWriter&, Header&) const override {}

 private:
  template <bool kCodes, bool kL2>
  void scan_range(const float* q, const float* qnorms, size_t nq, size_t lo, size_t hi,
                  const uint8_t* skip, std::vector<TopK>& tops) const;
};

}  // namespace vi
