#include "parallel.h"

#include <atomic>

namespace vi {
namespace {

std::atomic<int>& threads() {
  static std::atomic<int> n{std::max(1, int(std::thread::hardware_concurrency()))};
  return n;
}

thread_local int limit = 0;  // 0: none on this thread

}  // namespace

int num_threads() { return limit > 0 ? limit : threads().load(std::memory_order_relaxed); }

ThreadLimit::ThreadLimit(int n) : previous_(limit) { limit = n < 1 ? 0 : n; }

ThreadLimit::~ThreadLimit() { limit = previous_; }

void set_num_threads(int n) { threads().store(n < 1 ? 1 : n, std::memory_order_relaxed); }

}  // namespace vi
