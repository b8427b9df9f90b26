// Private to gpu/: what the lane decode kernels share (seq_lanes_kernels.cu:
// lanes and lanes2; seq_split_lanes_kernels.cu: lanes3): the signed model's
// search tables as a block copies them into shared memory (lanes3 adds its
// identity table, and searches with its own SplitSearch), the search over
// them, a group's descriptor from the launch's arrays, and a 4-byte
// little-endian load at any alignment.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "seq_lanes.h"
#include "seq_lanes_kernels.h"

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

// A group stream's descriptor as the kernels read it: its SlDesc and its
// chunk's SlItem together.
struct SlGroup {
  const uint8_t* stream;
  uint64_t stream_bytes;
  int32_t* q;  // the group's [tokens][dim]
  uint32_t tokens;
  uint32_t group;
  uint32_t status_index;
  int16_t step_class;
  uint8_t code;
  double step_base;  // double(delta0) * multiplier(code), the CPU's SeqStepBase
};

// Desc k (< L.count) of the launch: chunk k / G's group k % G.
__device__ __forceinline__ SlGroup LoadSlGroup(const SlLaunch& L, uint32_t k) {
  const SlDesc desc = L.descs[k];
  const uint32_t chunk = k / L.groups, g = k - chunk * L.groups;
  const SlItem item = L.items[chunk];
  SlGroup out;
  out.stream = desc.stream;
  out.stream_bytes = desc.stream_bytes;
  out.q = item.q + uint64_t{g} * item.tokens * L.dim;
  out.tokens = item.tokens;
  out.group = g;
  out.status_index = item.status_index;
  out.step_class = item.step_class;
  out.code = desc.code;
  out.step_base = static_cast<double>(item.delta0) * L.multipliers[desc.code];
  return out;
}

// Bytes p[0..3] as a little-endian u32 (p at any alignment).
__device__ __forceinline__ uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t{__ldg(p)} | (uint32_t{__ldg(p + 1)} << 8) | (uint32_t{__ldg(p + 2)} << 16) |
         (uint32_t{__ldg(p + 3)} << 24);
}

}  // namespace seqkv::gpu::internal
