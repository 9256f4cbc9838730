#include "parallel.h"

#include <atomic>

namespace vi {
namespace {

std::atomic<int>& threads() {
  static std::atomic<int> n{std::max(1, int(std::thread::hardware_concurrency()))};
  return n;
}

}  // namespace

int num_threads() { return threads().load(std::memory_order_relaxed); }

void set_num_threads(int n) { threads().store(n < 1 ? 1 : n, std::memory_order_relaxed); }

}  // namespace vi
