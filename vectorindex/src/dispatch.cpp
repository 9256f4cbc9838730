#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "kernels.h"

namespace vi {
namespace {

bool cpu_has(const char* name) {
  if (std::strcmp(name, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }
  if (std::strcmp(name, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return std::strcmp(name, "base") == 0;
}

const Kernels* table_for(const char* name) {
  if (std::strcmp(name, "avx512") == 0) return kernels_avx512();
  if (std::strcmp(name, "avx2") == 0) return kernels_avx2();
  return kernels_base();
}

const Kernels* best() {
  __builtin_cpu_init();
  for (const char* name : {"avx512", "avx2"}) {
    if (cpu_has(name)) return table_for(name);
  }
  return kernels_base();
}

std::atomic<const Kernels*>& current() {
  static std::atomic<const Kernels*> table{best()};
  return table;
}

}  // namespace

const Kernels& kernels() { return *current().load(std::memory_order_relaxed); }

bool set_simd_level(const char* name) {
  __builtin_cpu_init();
  if (!cpu_has(name)) return false;
  current().store(table_for(name), std::memory_order_relaxed);
  return true;
}

}  // namespace vi
