// Private to gpu/: where each rANS word of a lane stream goes (the GPU
// encoder's merge; codec/src/seq_lanes.h defines the order). The decoder reads
// words in steps, lanes ascending within a step, so the word a lane reads at
// its operation `op` sits after every word read at an earlier operation and
// after the words of lower lanes at the same operation. With a bitmask per
// (32 operations, lane) — bit op % 32 of mask[(op / 32) * 16 + lane] set when
// the lane reads a word at op — and the words of all lanes before each
// segment of 32 operations, a word's rank is one prefix and 16 population
// counts. Plain C++ (host and device), so a CPU test checks it against a sort.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SEQKV_MERGE_HD __host__ __device__
#else
#define SEQKV_MERGE_HD
#endif

namespace seqkv::gpu::internal {

inline constexpr uint32_t kSqMergeLanes = 16;  // mask words per segment

SEQKV_MERGE_HD inline uint32_t SqPopc(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint32_t>(__popc(x));
#else
  return static_cast<uint32_t>(__builtin_popcount(x));
#endif
}

// seg_before[s]: the words of every lane at operations below 32 s.
SEQKV_MERGE_HD inline uint32_t SqLaneWordRank(const uint32_t* mask, const uint32_t* seg_before, uint32_t lanes,
                                              uint32_t lane, uint32_t op) {
  const uint32_t s = op / 32, bit = 1u << (op % 32);
  const uint32_t* m = mask + s * kSqMergeLanes;
  uint32_t r = seg_before[s];
  for (uint32_t o = 0; o < lanes; ++o) r += SqPopc(m[o] & (o < lane ? (bit | (bit - 1)) : (bit - 1)));
  return r;
}

}  // namespace seqkv::gpu::internal
