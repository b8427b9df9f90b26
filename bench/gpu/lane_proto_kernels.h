// Bench-only: the GPU decoder of the lane-format prototype (lane_proto.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqkv::bench::lane_proto {

struct Desc {
  const uint8_t* blob;  // a group's blob (lane_proto.h), 16-byte aligned
  int32_t* q;           // [tokens][dim]
};

// Decodes every group of the batch (dim 64 or 128), a thread per lane, 16
// lanes per group (threads per block: 512, 256, or 257 for 256 with 40
// registers per thread instead of 32); search is the signed model's search bytes
// (SeqSignedSearchBytes: rows, then buckets). *bad is or-ed with 1 when a
// lane's stream is not valid.
cudaError_t LaunchDecode(const Desc* descs, uint32_t count, uint32_t tokens, uint32_t dim, const void* search,
                         uint32_t* bad, cudaStream_t stream, uint32_t threads = 512);

}  // namespace seqkv::bench::lane_proto
