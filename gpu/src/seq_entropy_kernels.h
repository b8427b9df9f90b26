// Private to gpu/: the seq group-stream decode kernels' launch interface.
// Included by the host code (g++, C++20) and by the .cu (nvcc, C++17), so it
// uses plain types only. Launchers return cudaError_t and take the stream last.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqkv::gpu::internal {

// Per-item device status codes (0 = OK), merged by CollectStatuses; every
// non-zero code is DATA_LOSS, each with SeqDecodeGroup's message.
enum SeDeviceStatus : int32_t {
  kSeOk = 0,
  kSeTruncatedHeader = 1,  // shorter than bitmap + lane byte
  kSeBadBitmap = 2,        // a bit set past dim
  kSeBadLanes = 3,         // lanes != min(8, coded components)
  kSeTrailingBytes = 4,    // bytes after the stream's end
  kSeBadState = 5,         // an initial state missing or below 2^16
  kSeOddWords = 6,         // odd number of word bytes
  kSeCorrupt = 7,          // words ran out, escape too long or too large
  kSeEmptyComponent = 8,   // a coded component without a non-zero symbol
  kSeFinalState = 9,       // a lane did not end at 2^16
};

// Model storage per component (both kernels): the three contexts' adaptive
// models as 16 uint16 frequencies (2 x uint4 each), then one uint2 of
// metadata. Per group: dim * kSeModelBytes + dim * kSeMetaBytes.
inline constexpr uint32_t kSeModelBytes = 3 * 32;
inline constexpr uint32_t kSeMetaBytes = 8;
inline constexpr uint32_t kSeGroupBytesPerDim = kSeModelBytes + kSeMetaBytes;

// One group stream of a batch, as the kernels see it. Built on the host.
struct SeDesc {
  const uint8_t* stream;
  uint64_t stream_bytes;
  int32_t* q;
  uint64_t models_offset;  // kGlobalModels: byte offset of this group's models in the model area
  uint32_t tokens, dim;
  uint32_t status_index;
  uint32_t pad;
};

#ifdef __CUDACC__
#define SEQKV_SE_HD __host__ __device__
#else
#define SEQKV_SE_HD
#endif

// Shared memory per thread of the shared-model kernel: the models of max_dim
// components, padded to an odd number of 16-byte units so that the threads of
// a warp, which walk the components in step, hit different banks.
SEQKV_SE_HD inline constexpr uint32_t SeSharedStride(uint32_t max_dim) {
  return ((max_dim * kSeGroupBytesPerDim + 15) / 16) % 2 == 1
             ? (max_dim * kSeGroupBytesPerDim + 15) / 16 * 16
             : (max_dim * kSeGroupBytesPerDim + 15) / 16 * 16 + 16;
}

struct SeLaunch {
  const SeDesc* descs;  // device
  uint32_t count;
  uint8_t* models;   // kGlobalModels: the model area (16-byte aligned)
  uint32_t threads;  // per block
  uint32_t max_dim;  // kSharedModels: shared memory per thread = SeSharedStride(max_dim)
};

cudaError_t LaunchSeDecodeGlobal(const SeLaunch& launch, int32_t* statuses, cudaStream_t stream);
cudaError_t LaunchSeDecodeShared(const SeLaunch& launch, int32_t* statuses, cudaStream_t stream);
// Dynamic shared memory the shared-model kernel may use per block (after
// raising its limit), for the host's choice of threads per block.
cudaError_t SeSharedMemoryPerBlock(int* bytes);
// Multiprocessors of the current device (probed once; 132, an H200's, if the
// probe fails). Host code; the launchers and the kernel choice both use it.
int SeSmCount();

}  // namespace seqkv::gpu::internal
