// The frequency normalization of lossless:coder=rans, written once for both
// the CPU reference (lossless_rans.cc) and the GPU encoder
// (gpu/src/lossless_kernels.cu): integer steps only, so both write the same
// table. Plain C++ on the host; __host__ __device__ under nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SEQKV_RANS_HD __host__ __device__
#else
#define SEQKV_RANS_HD
#endif

namespace seqkv::internal {

// freq[s] (summing to `scale`, >= 1 exactly where counts[s] > 0) from the
// counts of 256 symbols over `total` > 0 symbols: the proportional share
// rounded down, at least 1; a shortfall goes to the largest frequency (lowest
// symbol on ties); an excess is taken from the largest, at most half of it at
// a time (a few rounds at most; never below 1).
template <typename Count>
SEQKV_RANS_HD inline void LrNormalizeCounts(const Count* counts, uint64_t total, uint32_t scale, uint32_t* freq) {
  int64_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] == 0) {
      freq[s] = 0;
      continue;
    }
    const uint64_t f = uint64_t{counts[s]} * scale / total;
    freq[s] = static_cast<uint32_t>(f > 1 ? f : 1);
    sum += freq[s];
  }
  auto largest = [&]() {
    int best = 0;
    for (int s = 1; s < 256; ++s) {
      if (freq[s] > freq[best]) best = s;
    }
    return best;
  };
  if (sum < static_cast<int64_t>(scale)) freq[largest()] += static_cast<uint32_t>(scale - sum);
  while (sum > static_cast<int64_t>(scale)) {
    const int s = largest();
    const int64_t over = sum - scale;
    const uint32_t take = static_cast<uint32_t>(over < freq[s] / 2 ? over : freq[s] / 2);
    freq[s] -= take;
    sum -= take;
  }
}

}  // namespace seqkv::internal
