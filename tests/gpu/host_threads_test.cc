// ForEachOnHostThreads (gpu/src/host_threads.h): every index once, in any
// thread count, and the calling thread doing the work that new threads
// decline. No GPU needed.
#include "../../gpu/src/host_threads.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace seqkv::gpu::internal {
namespace {

TEST(HostThreadsTest, EveryIndexOnceForAnyThreadCount) {
  for (uint32_t threads : {0u, 1u, 2u, 3u, 8u, 64u}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{5}, size_t{1000}}) {
      std::vector<std::atomic<int>> seen(n);
      ForEachOnHostThreads(n, threads, [&](size_t k) { seen[k].fetch_add(1); });
      for (size_t k = 0; k < n; ++k) EXPECT_EQ(seen[k].load(), 1) << "threads " << threads << " n " << n << " k " << k;
    }
  }
}

TEST(HostThreadsTest, TheCallingThreadTakesWhatNewThreadsDecline) {
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> by_caller{0}, by_others{0};
  ForEachOnHostThreads(
      100, 4,
      [&](size_t) { (std::this_thread::get_id() == caller ? by_caller : by_others).fetch_add(1); },
      [] { return false; });
  EXPECT_EQ(by_caller.load(), 100);
  EXPECT_EQ(by_others.load(), 0);
}

TEST(HostThreadsTest, TheDefaultIsOneToEight) {
  EXPECT_GE(DefaultHostThreads(), 1u);
  EXPECT_LE(DefaultHostThreads(), 8u);
}

}  // namespace
}  // namespace seqkv::gpu::internal
