#include "flat.h"

#include <algorithm>

#include "parallel.h"

namespace vi {
namespace {

// A tile of rows small enough to stay in L2 while every query block passes over it, in whole
// pairs of panels (the packed kernel's register block); query blocks are a multiple of its
// 12, 6 or 3 queries.
constexpr size_t kTileBytes = 256 * 1024;
constexpr size_t kQueryBlock = 96;
constexpr size_t kPackedMinQueries = 24;

size_t tile_rows(size_t row_bytes) {
  const size_t rows = kTileBytes / row_bytes / 32 * 32;
  return std::clamp<size_t>(rows, 32, 1024);
}

}  // namespace

void FlatIndex::add_prepared(const float* x, const float*, size_t n, const int64_t* ids) {
  store_.append(x, n, ids);
}

// Compacting once a quarter of the slots are dead keeps deletes O(1) amortised. Not while
// the rows view a mapped file: compacting would copy the whole file into this process, when
// the point of mapping it is that processes share its pages; deleted rows stay skipped.
void FlatIndex::after_remove() {
  if (!store_.is_view() && store_.n_deleted() * 4 > store_.slots()) store_.compact();
}

template <bool kCodes, bool kL2>
void FlatIndex::scan_range(const float* q, const float* qnorms, size_t nq, size_t lo, size_t hi,
                           const uint8_t* skip, std::vector<TopK>& tops) const {
  const Kernels& kern = kernels();
  const size_t dp = store_.dp();
  const size_t tile = tile_rows(dp * (kCodes ? 1 : sizeof(float)));
  const float* norms = store_.norms();
  const float* scales = store_.scales();
  std::vector<float> buf(std::min(nq, kQueryBlock) * tile);
  // Packing a tile costs about what kPackedMinQueries queries' worth of row-major dots do.
  const bool packed = nq >= kPackedMinQueries;
  std::vector<float> panels(packed ? padded_rows(tile) * dp : 0);
  for (size_t r0 = lo; r0 < hi; r0 += tile) {
    const size_t nb = std::min(tile, hi - r0);
    if (packed) {
      if constexpr (kCodes) {
        kern.pack_i8(store_.code(uint32_t(r0)), nb, dp, panels.data());
      } else {
        kern.pack_f32(store_.vec(uint32_t(r0)), nb, dp, panels.data());
      }
    }
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
      const size_t nqb = std::min(kQueryBlock, nq - q0);
      if (packed) {
        kern.dots_packed(q + q0 * dp, nqb, panels.data(), nb, dp, buf.data(), tile);
      } else if constexpr (kCodes) {
        kern.dots_i8(q + q0 * dp, nqb, store_.code(uint32_t(r0)), nb, dp, buf.data(), tile);
      } else {
        kern.dots_f32(q + q0 * dp, nqb, store_.vec(uint32_t(r0)), nb, dp, buf.data(), tile);
      }
      for (size_t i = 0; i < nqb; ++i) {
        TopK& top = tops[q0 + i];
        const float qn = qnorms[q0 + i];
        const float* row = buf.data() + i * tile;
        float worst = top.worst();
        for (size_t j = 0; j < nb; ++j) {
          const size_t s = r0 + j;
          const float dot = kCodes ? row[j] * scales[s] : row[j];
          const float dist = kL2 ? qn + norms[s] - 2.0f * dot : -dot;
          if (dist > worst || (skip && skip[s])) continue;
          top.push(dist, uint32_t(s));
          worst = top.worst();
        }
      }
    }
  }
}

void FlatIndex::search_prepared(const float* q, const float* qnorms, size_t nq, size_t kk,
                                Filter* filter, const SearchArgs&,
                                std::vector<std::vector<Hit>>& out) const {
  const size_t n = store_.slots(), dp = store_.dp();
  // A filter passing few rows is cheaper to scan row by row than to mask a full scan.
  if (filter && filter->slots.size() * 8 < n) {
    const int nt = threads_for(nq * filter->slots.size() * dp, 1 << 20);
    run_parallel(nt, [&](int t) {
      for (size_t i = t; i < nq; i += nt) {
        out[i] = scan_slots(q + i * dp, qnorms[i], filter->slots, kk);
      }
    });
    return;
  }
  const uint8_t* skip = filter ? filter->mask(n) : store_.deleted_mask();
  // Each thread scans its share of rows for all queries; memory is read once in total.
  const int nt = std::min(threads_for(nq * n * dp, 1 << 21), int(std::max<size_t>(1, n / 256)));
  std::vector<std::vector<TopK>> tops(nt, std::vector<TopK>(nq, TopK(kk)));
  const bool l2 = store_.metric() == Metric::L2;
  run_parallel(nt, [&](int t) {
    const size_t lo = n * t / nt, hi = n * (t + 1) / nt;
    if (store_.has_codes()) {
      l2 ? scan_range<true, true>(q, qnorms, nq, lo, hi, skip, tops[t])
         : scan_range<true, false>(q, qnorms, nq, lo, hi, skip, tops[t]);
    } else {
      l2 ? scan_range<false, true>(q, qnorms, nq, lo, hi, skip, tops[t])
         : scan_range<false, false>(q, qnorms, nq, lo, hi, skip, tops[t]);
    }
  });
  for (size_t i = 0; i < nq; ++i) {
    TopK merged(kk);
    for (int t = 0; t < nt; ++t) {
      for (const Hit& h : tops[t][i].sorted()) merged.push(h.dist, h.slot);
    }
    out[i] = merged.sorted();
  }
}

}  // namespace vi
