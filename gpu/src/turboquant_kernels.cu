// TurboQuant kernels' dispatch: a group's padded size d' to its launchers
// (turboquant_kernels_p<P>.cu; the kernels are in turboquant_device.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "turboquant_kernels.h"

namespace seqkv::gpu::internal {

// LaunchTqDecodeP / LaunchTqEncodeP are only declared here: each size's are
// instantiated in its own translation unit and found by the linker.

int TqVectorsPerTile(int elems_per_lane) {
  const int padded = 32 * elems_per_lane;
  const int e = padded < kTqLaneCoords ? padded : kTqLaneCoords;
  return kTqPasses * (kTqThreadsPerBlock / 32) * (32 / (padded / e));
}

// Runtime d' / 32 -> the size's launchers (which take the bits), in one place.
#define SEQKV_TQ_DISPATCH(GROUP, CALL)      \
  switch ((GROUP).elems_per_lane) {         \
    case 1: return CALL(32);                \
    case 2: return CALL(64);                \
    case 4: return CALL(128);               \
    case 8: return CALL(256);               \
    case 16: return CALL(512);              \
    case 32: return CALL(1024);             \
    default: return cudaErrorInvalidValue;  \
  }

cudaError_t LaunchTqDecodeContiguous(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(P) LaunchTqDecodeP<P>(group, false, 1, 0, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

cudaError_t LaunchTqDecodePaged(const TqLaunchGroup& group, uint32_t block_size, uint32_t num_blocks,
                                int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(P) LaunchTqDecodeP<P>(group, true, block_size, num_blocks, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

cudaError_t LaunchTqEncode(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(P) LaunchTqEncodeP<P>(group, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

}  // namespace seqkv::gpu::internal
