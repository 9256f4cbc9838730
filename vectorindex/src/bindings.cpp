// Python bindings: input checks (every bad input is a ValueError naming the shapes), GIL
// release around the C++ work, and numpy outputs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <string>
#include <system_error>

#include "flat.h"
#include "hnsw.h"
#include "parallel.h"

namespace py = pybind11;
using namespace vi;

namespace {

constexpr size_t kMaxDim = 1 << 20;

Metric parse_metric(const std::string& m) {
  if (m == "l2") return Metric::L2;
  if (m == "ip") return Metric::IP;
  if (m == "cosine") return Metric::Cosine;
  throw py::value_error("metric must be 'l2', 'ip' or 'cosine', got '" + m + "'");
}

const char* metric_name(Metric m) {
  return m == Metric::L2 ? "l2" : (m == Metric::IP ? "ip" : "cosine");
}

Quant parse_quant(const py::object& q) {
  if (q.is_none()) return Quant::None;
  if (py::isinstance<py::str>(q) && q.cast<std::string>() == "int8") return Quant::Int8;
  throw py::value_error("quantize must be None or 'int8', got " + py::repr(q).cast<std::string>());
}

size_t check_dim(long long d) {
  if (d < 1 || size_t(d) > kMaxDim) {
    throw py::value_error("d must be between 1 and " + std::to_string(kMaxDim) + ", got " +
                          std::to_string(d));
  }
  return size_t(d);
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A C-contiguous float32 (n, d) array of finite values, or ValueError.
py::array as_matrix(py::handle obj, size_t d, const char* name) {
  const std::string want = std::string(name) + " must be a float32 numpy array of shape (n, " +
                           std::to_string(d) + ")";
  if (!py::isinstance<py::array>(obj)) {
    throw py::value_error(want + ", got " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 2 || size_t(a.shape(1)) != d) {
    throw py::value_error(want + ", got shape " + shape_of(a) + " (index d=" + std::to_string(d) +
                          ")");
  }
  if (!a.dtype().equal(py::dtype::of<float>())) {  // ==, not identity: unpickled dtypes are copies
    throw py::value_error(want + ", got dtype " + std::string(py::str(a.dtype())) +
                          " (use .astype(np.float32))");
  }
  if (!(a.flags() & py::array::c_style) || !a.attr("flags").attr("aligned").cast<bool>()) {
    throw py::value_error(want + ", got a non-contiguous array of shape " + shape_of(a) +
                          " (use np.ascontiguousarray)");
  }
  const float* p = static_cast<const float*>(a.data());
  const size_t n = size_t(a.shape(0));
  for (size_t i = 0; i < n * d; ++i) {
    if (!std::isfinite(p[i])) {
      throw py::value_error(std::string(name) + " of shape " + shape_of(a) +
                            " contains NaN or inf at row " + std::to_string(i / d));
    }
  }
  return a;
}

// A 1-D int64 array from any integer array or sequence, or ValueError.
py::array_t<int64_t> as_ids(py::handle obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::value_error(std::string(name) + " must be a 1-D array of integer ids");
  if (a.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-D, got shape " + shape_of(a));
  }
  const char kind = a.dtype().kind();
  if (a.size() && kind != 'i' && kind != 'u') {
    throw py::value_error(std::string(name) + " must hold integers, got dtype " +
                          std::string(py::str(a.dtype())));
  }
  if (kind == 'u' && a.dtype().itemsize() == 8 && a.size() &&
      a.attr("max")().cast<uint64_t>() > uint64_t(INT64_MAX)) {
    throw py::value_error(std::string(name) + " has ids beyond the int64 range");
  }
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

py::array_t<int64_t> to_array(const std::vector<int64_t>& v) {
  py::array_t<int64_t> out(py::ssize_t(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

size_t check_positive(const py::object& v, const char* name) {
  if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v)) {
    throw py::value_error(std::string(name) + " must be a positive int, got " +
                          py::repr(v).cast<std::string>());
  }
  const long long x = v.cast<long long>();
  if (x <= 0) throw py::value_error(std::string(name) + " must be positive, got " + std::to_string(x));
  return size_t(x);
}

// allowed_ids: ids, or a callable that maps the array of live ids to a boolean mask.
py::array_t<int64_t> allowed_array(Index& idx, const py::object& allowed) {
  if (!PyCallable_Check(allowed.ptr())) return as_ids(allowed, "allowed_ids");
  std::vector<int64_t> live;
  {
    py::gil_scoped_release nogil;
    live = idx.ids();
  }
  py::array_t<int64_t> ids = to_array(live);
  py::array mask = py::array::ensure(allowed(ids));
  if (!mask || mask.dtype().kind() != 'b' || mask.ndim() != 1 || mask.size() != ids.size()) {
    throw py::value_error("an allowed_ids callable must return a boolean array of shape (" +
                          std::to_string(ids.size()) + ",)");
  }
  return as_ids(ids.attr("__getitem__")(mask), "allowed_ids");
}

py::tuple search(Index& idx, py::handle xq, const py::object& k, const py::object& allowed,
                 size_t ef, size_t rerank, const py::object& threads) {
  const int n_threads =
      threads.is_none() ? 0 : int(std::min<size_t>(check_positive(threads, "threads"), 1024));
  SearchArgs args;
  args.k = check_positive(k, "k");
  args.ef = ef;
  args.rerank = rerank;
  py::array q = as_matrix(xq, idx.d(), "xq");
  py::array_t<int64_t> allow;
  if (!allowed.is_none()) {
    allow = allowed_array(idx, allowed);
    args.filtered = true;
    args.allowed = allow.data();
    args.n_allowed = size_t(allow.size());
  }
  const size_t nq = size_t(q.shape(0));
  if (args.k > (size_t(1) << 40) / (nq ? nq : 1)) throw py::value_error("k is too large");
  py::array_t<float> D({py::ssize_t(nq), py::ssize_t(args.k)});
  py::array_t<int64_t> I({py::ssize_t(nq), py::ssize_t(args.k)});
  const float* qp = static_cast<const float*>(q.data());
  float* dp = D.mutable_data();
  int64_t* ip = I.mutable_data();
  {
    py::gil_scoped_release nogil;
    ThreadLimit limit(n_threads);
    idx.search(qp, nq, args, dp, ip);
  }
  return py::make_tuple(D, I);
}

void add(Index& idx, py::handle xb, const py::object& ids) {
  py::array x = as_matrix(xb, idx.d(), "xb");
  const size_t n = size_t(x.shape(0));
  py::array_t<int64_t> id_arr;
  if (!ids.is_none()) {
    id_arr = as_ids(ids, "ids");
    if (size_t(id_arr.size()) != n) {
      throw py::value_error("ids has shape (" + std::to_string(id_arr.size()) +
                            ",) but xb has shape " + shape_of(x));
    }
  }
  const float* xp = static_cast<const float*>(x.data());
  const int64_t* idp = ids.is_none() ? nullptr : id_arr.data();
  py::gil_scoped_release nogil;
  idx.add(xp, n, idp);
}

std::string describe(const Index& idx, const char* kind) {
  return std::string("<vectorindex.") + kind + " d=" + std::to_string(idx.d()) + " metric=" +
         metric_name(idx.metric()) + (idx.quant() == Quant::Int8 ? " int8" : "") +
         " ntotal=" + std::to_string(idx.ntotal()) + ">";
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "vectorindex native core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::system_error& e) {
      PyErr_SetString(e.code().value() == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError,
                      e.what());
    }
  });

  py::class_<Index>(m, "Index", "Common interface of all indexes.")
      .def_property_readonly("d", &Index::d)
      .def_property_readonly("ntotal", &Index::ntotal, "Number of live vectors.")
      .def_property_readonly("metric", [](const Index& i) { return metric_name(i.metric()); })
      .def_property_readonly("quantize",
                             [](const Index& i) -> py::object {
                               if (i.quant() == Quant::Int8) return py::str("int8");
                               return py::none();
                             })
      .def_property_readonly("keep_float", &Index::keep_float)
      .def("__len__", &Index::ntotal)
      .def("add", [](Index& i, py::handle xb) { add(i, xb, py::none()); }, py::arg("xb"),
           "Adds rows of xb (float32, (n, d)) with the next sequential ids.")
      .def("add_with_ids", [](Index& i, py::handle xb, const py::object& ids) { add(i, xb, ids); },
           py::arg("xb"), py::arg("ids"), "Adds rows of xb under the given unique int64 ids.")
      .def(
          "upsert",
          [](Index& i, py::handle xb, const py::object& ids) {
            py::array x = as_matrix(xb, i.d(), "xb");
            py::array_t<int64_t> id_arr = as_ids(ids, "ids");
            if (id_arr.size() != x.shape(0)) {
              throw py::value_error("ids has shape (" + std::to_string(id_arr.size()) +
                                    ",) but xb has shape " + shape_of(x));
            }
            const float* xp = static_cast<const float*>(x.data());
            const int64_t* idp = id_arr.data();
            const size_t n = size_t(x.shape(0));
            py::gil_scoped_release nogil;
            i.upsert(xp, n, idp);
          },
          py::arg("xb"), py::arg("ids"),
          "Adds rows of xb under ids, replacing the vectors of ids already present, as one "
          "change: a concurrent search sees each id's old vector or its new one.")
      .def_property_readonly("mapped", &Index::mapped,
                             "True while the vectors are read from the mapped file (no copy).")
      .def(
          "remove_ids",
          [](Index& i, const py::object& ids) {
            py::array_t<int64_t> a = as_ids(ids, "ids");
            const int64_t* p = a.data();
            const size_t n = size_t(a.size());
            py::gil_scoped_release nogil;
            return i.remove(p, n);
          },
          py::arg("ids"), "Marks ids deleted at once; returns how many were present.")
      .def(
          "ids",
          [](const Index& i) {
            std::vector<int64_t> v;
            {
              py::gil_scoped_release nogil;
              v = i.ids();
            }
            return to_array(v);
          },
          "The live ids in slot order.")
      .def("compact", &Index::compact, py::call_guard<py::gil_scoped_release>(),
           "Reclaims the space of deleted vectors now.")
      .def("memory_usage", &Index::memory_bytes, "Bytes held in memory (mapped files excluded).")
      .def(
          "save", [](const Index& i, const py::object& path) {
            const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
            py::gil_scoped_release nogil;
            i.save(p);
          },
          py::arg("path"), "Writes a temporary file, fsyncs it and renames it over path.");

  py::class_<FlatIndex, Index>(m, "IndexFlat", "Exact search.")
      .def(py::init([](long long d, const std::string& metric, const py::object& quantize,
                       bool keep_float) {
             return new FlatIndex(check_dim(d), parse_metric(metric), parse_quant(quantize),
                                  keep_float);
           }),
           py::arg("d"), py::arg("metric") = "l2", py::arg("quantize") = py::none(),
           py::arg("keep_float") = true)
      .def(
          "search",
          [](FlatIndex& i, py::handle xq, const py::object& k, const py::object& allowed_ids,
             size_t rerank, const py::object& threads) {
            return search(i, xq, k, allowed_ids, 0, rerank, threads);
          },
          py::arg("xq"), py::arg("k"), py::kw_only(), py::arg("allowed_ids") = py::none(),
          py::arg("rerank") = 4, py::arg("threads") = py::none(),
          "Returns (D float32 (nq, k), I int64 (nq, k)); id -1 where fewer than k exist.")
      .def("__repr__", [](const FlatIndex& i) { return describe(i, "IndexFlat"); });

  py::class_<HNSWIndex, Index>(m, "IndexHNSW", "Approximate search on an HNSW graph.")
      .def(py::init([](long long d, const std::string& metric, long long M,
                       long long ef_construction, long long ef_search,
                       const py::object& quantize, bool keep_float, uint64_t seed) {
             if (M < 2 || M > 255) {
               throw py::value_error("M must be between 2 and 255, got " + std::to_string(M));
             }
             if (ef_construction < 1 || ef_search < 1) {
               throw py::value_error("ef_construction and ef_search must be positive");
             }
             return new HNSWIndex(check_dim(d), parse_metric(metric), parse_quant(quantize),
                                  keep_float, size_t(M), size_t(ef_construction),
                                  size_t(ef_search), seed);
           }),
           py::arg("d"), py::arg("metric") = "l2", py::arg("M") = 16,
           py::arg("ef_construction") = 200, py::arg("ef_search") = 64,
           py::arg("quantize") = py::none(), py::arg("keep_float") = true, py::arg("seed") = 0)
      .def_property_readonly("M", &HNSWIndex::M)
      .def_property_readonly("ef_construction", &HNSWIndex::ef_construction)
      .def_property(
          "ef_search", &HNSWIndex::ef_search,
          [](HNSWIndex& i, const py::object& ef) { i.set_ef_search(check_positive(ef, "ef_search")); })
      .def(
          "search",
          [](HNSWIndex& i, py::handle xq, const py::object& k, const py::object& allowed_ids,
             const py::object& ef_search, size_t rerank, const py::object& threads) {
            const size_t ef = ef_search.is_none() ? 0 : check_positive(ef_search, "ef_search");
            return search(i, xq, k, allowed_ids, ef, rerank, threads);
          },
          py::arg("xq"), py::arg("k"), py::kw_only(), py::arg("allowed_ids") = py::none(),
          py::arg("ef_search") = py::none(), py::arg("rerank") = 4,
          py::arg("threads") = py::none(),
          "Returns (D float32 (nq, k), I int64 (nq, k)); id -1 where fewer than k exist.")
      .def("__repr__", [](const HNSWIndex& i) { return describe(i, "IndexHNSW"); });

  m.def(
      "load",
      [](const py::object& path, bool mmap) {
        const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
        py::gil_scoped_release nogil;
        return load_index(p, mmap);
      },
      py::arg("path"), py::arg("mmap") = false,
      "Reads an index written by save(); ValueError for a truncated or corrupt file.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Threads each search may use (a search's threads= overrides it for that call).");
  m.def("get_num_threads", &num_threads);
  m.def("simd_level", [] { return kernels().name; }, "The SIMD kernels in use.");
  m.def(
      "set_simd_level",
      [](const std::string& name) {
        if (!set_simd_level(name.c_str())) {
          throw py::value_error("this CPU cannot run SIMD level '" + name + "'");
        }
      },
      py::arg("name"), "Forces 'avx512', 'avx2' or 'base' kernels (for testing).");
}
