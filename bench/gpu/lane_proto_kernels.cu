// Bench-only: the lane-format prototype's GPU decoder (lane_proto.h). The
// signed model's search tables in shared memory (as the lanes2 kernel), then
// every thread runs its lane's DecodeLane: no ballot, shuffle or barrier per
// step.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "lane_proto.h"
#include "lane_proto_kernels.h"
#include "seq_lanes.h"

namespace seqkv::bench::lane_proto {

namespace {

using seqkv::internal::kSeqSignedBuckets;
using seqkv::internal::kSeqSignedRowStride;
using seqkv::internal::kSeqStaticClasses;

constexpr uint32_t kRowBytes = 2u * kSeqStaticClasses * kSeqSignedRowStride;
constexpr uint32_t kSearchBytes = kRowBytes + kSeqStaticClasses * kSeqSignedBuckets;
static_assert(kSearchBytes % 16 == 0);

// kBlocks: blocks per SM for __launch_bounds__ (2048 / kThreads: 32
// registers per thread, every thread slot used).
template <uint32_t kPer, uint32_t kThreads, uint32_t kBlocks>
__global__ void __launch_bounds__(kThreads, kBlocks) Kernel(const Desc* descs, uint32_t count,
                                                                    uint32_t tokens, const void* search,
                                                                    uint32_t* bad) {
  __shared__ __align__(16) unsigned char smem[kSearchBytes];
  for (uint32_t i = threadIdx.x; i < kSearchBytes / 16; i += kThreads) {
    reinterpret_cast<uint4*>(smem)[i] = reinterpret_cast<const uint4*>(search)[i];
  }
  __syncthreads();
  const auto* rows = reinterpret_cast<const uint16_t*>(smem);
  const uint8_t* buckets = smem + kRowBytes;
  const uint32_t group = (blockIdx.x * kThreads + threadIdx.x) / kLanes, lane = threadIdx.x % kLanes;
  if (group >= count) return;
  const Desc d = descs[group];
  const auto& h = *reinterpret_cast<const Header*>(d.blob);
  const auto* escapes = reinterpret_cast<const uint32_t*>(d.blob + h.escapes_at[lane]);
  constexpr uint32_t dim = kPer * kLanes;
  const bool ok = DecodeLane<kPer>(
      h, d.blob, lane, tokens, escapes,
      [&](uint32_t table, uint32_t slot, uint32_t* start, uint32_t* freq) {
        return seqkv::internal::SeqSignedFindBucket(buckets + table * kSeqSignedBuckets,
                                                    rows + table * kSeqSignedRowStride, slot, start, freq);
      },
      [](const uint2* at, uint32_t i) {
        const uint2 v = __ldg(at + i);
        return uint64_t{v.x} | (uint64_t{v.y} << 32);
      },
      [&](uint32_t t, uint32_t c, int32_t v) { d.q[uint64_t{t} * dim + c] = v; });
  if (!ok) atomicOr(bad, 1u);
}

template <uint32_t kPer, uint32_t kThreads, uint32_t kBlocks>
cudaError_t Launch(const Desc* descs, uint32_t count, uint32_t tokens, const void* search, uint32_t* bad,
                   cudaStream_t stream) {
  const uint32_t blocks = (count * kLanes + kThreads - 1) / kThreads;
  Kernel<kPer, kThreads, kBlocks><<<blocks, kThreads, 0, stream>>>(descs, count, tokens, search, bad);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchDecode(const Desc* descs, uint32_t count, uint32_t tokens, uint32_t dim, const void* search,
                         uint32_t* bad, cudaStream_t stream, uint32_t threads) {
  if (count == 0) return cudaSuccess;
  // threads: 512 (32 registers), 256 (32 registers), 257 = 256 threads with 40 registers.
  auto launch = [&](auto per) -> cudaError_t {
    constexpr uint32_t kPer = decltype(per)::value;
    if (threads == 256) return Launch<kPer, 256, 8>(descs, count, tokens, search, bad, stream);
    if (threads == 257) return Launch<kPer, 256, 6>(descs, count, tokens, search, bad, stream);
    return Launch<kPer, 512, 4>(descs, count, tokens, search, bad, stream);
  };
  if (dim == 128) return launch(std::integral_constant<uint32_t, 8>{});
  if (dim == 64) return launch(std::integral_constant<uint32_t, 4>{});
  return cudaErrorInvalidValue;
}

}  // namespace seqkv::bench::lane_proto
