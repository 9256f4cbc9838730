// Thread count shared by all indexes and a fork-join helper over std::thread (no OpenMP:
// faiss ships its own OpenMP runtime and two in one process fight over threads).
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace vi {

int num_threads();
void set_num_threads(int n);

// While alive, num_threads() on this thread is n (n < 1: the process-wide count), so one
// search can use fewer threads than the others without changing them.
class ThreadLimit {
 public:
  explicit ThreadLimit(int n);
  ~ThreadLimit();
  ThreadLimit(const ThreadLimit&) = delete;
  ThreadLimit& operator=(const ThreadLimit&) = delete;

 private:
  int previous_;
};

// Runs fn(t) for t < n on n threads (the caller's included); rethrows the first exception.
inline void run_parallel(int n, const std::function<void(int)>& fn) {
  if (n <= 1) {
    fn(0);
    return;
  }
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (int t = 1; t < n; ++t) {
    threads.emplace_back([&, t] {
      try {
        fn(t);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  try {
    fn(0);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : threads) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Threads worth using for `work` units when one thread should get at least `grain` of them.
inline int threads_for(size_t work, size_t grain) {
  const size_t n = work / (grain ? grain : 1);
  const int max = num_threads();
  return n < size_t(max) ? (n ? int(n) : 1) : max;
}

}  // namespace vi
