// Work spread over host threads, for the GPU APIs' host-side loops (the
// encoder's Finish; the CPU backends' item loops). Plain C++.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace seqkv::gpu::internal {

// The default number of host threads of an API's host-side loops: the
// smaller of 8 and the machine's hardware threads.
inline uint32_t DefaultHostThreads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return std::clamp<uint32_t>(hw == 0 ? 1u : hw, 1u, 8u);
}
// An API's SetHostThreads argument as its setting: 0 is the default.
inline uint32_t HostThreadsSetting(uint32_t threads) { return threads == 0 ? DefaultHostThreads() : threads; }

// Calls fn(k) for every k in [0, n), each once, on up to `threads` threads:
// the calling thread and up to threads - 1 new ones, which claim the next k
// in ascending order. A new thread first calls start() and takes no k when it
// returns false; when a thread cannot be created, the ones that run take the
// rest. fn and start must not throw.
template <typename Fn, typename Start>
void ForEachOnHostThreads(size_t n, uint32_t threads, Fn&& fn, Start&& start) {
  std::atomic<size_t> next{0};
  auto work = [&](bool own_thread) {
    if (own_thread && !start()) return;
    for (size_t k = next.fetch_add(1); k < n; k = next.fetch_add(1)) fn(k);
  };
  const size_t count = std::min<size_t>(threads == 0 ? 1 : threads, n);
  std::vector<std::thread> pool;
  for (size_t t = 1; t < count; ++t) {
    try {
      pool.emplace_back(work, true);
    } catch (const std::system_error&) {
      break;
    }
  }
  work(false);
  for (std::thread& t : pool) t.join();
}

template <typename Fn>
void ForEachOnHostThreads(size_t n, uint32_t threads, Fn&& fn) {
  ForEachOnHostThreads(n, threads, std::forward<Fn>(fn), [] { return true; });
}

}  // namespace seqkv::gpu::internal
