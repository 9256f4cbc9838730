// Distance kernels, compiled once per SIMD level and picked at run time (dispatch.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace vi {

// Every row and query is padded with zeros to a multiple of kPad floats, so kernels never
// handle a tail.
constexpr size_t kPad = 16;

inline size_t padded_dim(size_t d) { return (d + kPad - 1) / kPad * kPad; }
inline size_t padded_rows(size_t n) { return (n + kPad - 1) / kPad * kPad; }

struct Kernels {
  const char* name;
  // out[i * ldo + j] = dot(Q_i, X_j) for i < nq, j < nb; rows are dp floats (or int8) apart.
  void (*dots_f32)(const float* q, size_t nq, const float* x, size_t nb, size_t dp, float* out,
                   size_t ldo);
  void (*dots_i8)(const float* q, size_t nq, const int8_t* x, size_t nb, size_t dp, float* out,
                  size_t ldo);
  // The GEMM path for many queries: pack_* transposes nb rows into panels of kPad rows
  // (dimension-major, zero rows past nb; panels holds padded_rows(nb) * dp floats), then
  // dots_packed fills out like dots_* without a horizontal sum per pair.
  void (*pack_f32)(const float* x, size_t nb, size_t dp, float* panels);
  void (*pack_i8)(const int8_t* x, size_t nb, size_t dp, float* panels);
  void (*dots_packed)(const float* q, size_t nq, const float* panels, size_t nb, size_t dp,
                      float* out, size_t ldo);
  float (*dot_f32)(const float* a, const float* b, size_t dp);
  float (*dot_i8)(const float* a, const int8_t* b, size_t dp);
  float (*l2sqr_f32)(const float* a, const float* b, size_t dp);
};

const Kernels* kernels_base();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();

// The kernels in use: the best the CPU supports unless set_simd_level chose another.
const Kernels& kernels();
// Returns false when the CPU lacks the level ("avx512", "avx2", "base").
bool set_simd_level(const char* name);

}  // namespace vi
