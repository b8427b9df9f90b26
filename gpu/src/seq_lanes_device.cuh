// Private to gpu/: what the lane decode kernels share (seq_lanes_kernels.cu:
// lanes and lanes2; seq_split_lanes_kernels.cu: lanes3): the signed model's
// search tables as a block copies them into shared memory (lanes3 adds its
// identity table, and searches with its own SplitSearch), the search over
// them, and a 4-byte little-endian load at any alignment.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "seq_lanes.h"

namespace seqkv::gpu::internal {

// The signed model's search tables (SeqSignedSearchBytes): its cumulative
// rows (u16 [161][32]), then its buckets (u8 [161][128]).
inline constexpr uint32_t kSignedRowBytes =
    2u * seqkv::internal::kSeqStaticClasses * seqkv::internal::kSeqSignedRowStride;
inline constexpr uint32_t kSignedSearchBytes =
    kSignedRowBytes + seqkv::internal::kSeqStaticClasses * seqkv::internal::kSeqSignedBuckets;
static_assert(kSignedSearchBytes % 16 == 0, "copied in 16-byte units");

// The signed model's symbol search (SeqSignedFindBucket) over its tables at
// `smem` (rows, then buckets): search(table, slot, &start, &freq).
struct SignedSearch {
  const uint16_t* rows;
  const uint8_t* buckets;
  __device__ explicit SignedSearch(const unsigned char* smem)
      : rows(reinterpret_cast<const uint16_t*>(smem)), buckets(smem + kSignedRowBytes) {}
  __device__ __forceinline__ int operator()(uint32_t table, uint32_t slot, uint32_t* start, uint32_t* freq) const {
    return seqkv::internal::SeqSignedFindBucket(buckets + table * seqkv::internal::kSeqSignedBuckets,
                                                rows + table * seqkv::internal::kSeqSignedRowStride, slot, start,
                                                freq);
  }
};

// Bytes p[0..3] as a little-endian u32 (p at any alignment).
__device__ __forceinline__ uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t{__ldg(p)} | (uint32_t{__ldg(p + 1)} << 8) | (uint32_t{__ldg(p + 2)} << 16) |
         (uint32_t{__ldg(p + 3)} << 24);
}

}  // namespace seqkv::gpu::internal
