#include <stdexcept>

#include "flat.h"
#include "hnsw.h"

namespace vi {
namespace {

constexpr uint64_t kMaxDim = 1 << 20;

void check_header(const FileReader& r, size_t file_size) {
  const Header& h = r.header();
  if (h.kind > 1 || h.metric > 2 || h.quant > 1 || h.keep_float > 1) r.fail("unknown index type");
  if (h.d == 0 || h.d > kMaxDim) r.fail("bad dimension " + std::to_string(h.d));
  if (h.n > file_size) r.fail("bad count " + std::to_string(h.n));
  if (h.kind == 1 && (h.aux[0] < 2 || h.aux[0] > 255 || h.aux[1] > kMaxDim ||
                      h.aux[4] == 0 || h.aux[4] > kMaxDim)) {
    r.fail("bad HNSW parameters");
  }
}

}  // namespace

std::unique_ptr<Index> load_index(const std::string& path, bool mmap) {
  auto map = std::make_shared<Mapping>(path);
  FileReader r(map, path);
  check_header(r, map->size());
  const Header& h = r.header();
  const auto metric = Metric(h.metric);
  const auto quant = Quant(h.quant);
  std::unique_ptr<Index> index;
  if (h.kind == 0) {
    auto flat = std::make_unique<FlatIndex>(h.d, metric, quant, h.keep_float != 0);
    flat->read_common(r);
    index = std::move(flat);
  } else {
    auto hnsw = std::make_unique<HNSWIndex>(h.d, metric, quant, h.keep_float != 0, h.aux[0],
                                            h.aux[1], h.aux[4], h.n);
    hnsw->read_common(r);
    hnsw->read_extra(r);
    index = std::move(hnsw);
  }
  r.expect_end();
  if (mmap) {
    index->keep_mapping(map);
  } else {
    index->own();
  }
  return index;
}

}  // namespace vi
