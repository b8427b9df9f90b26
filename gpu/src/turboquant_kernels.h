// Private to gpu/: the TurboQuant kernels' launch interface. Included by the
// host code (g++, C++20) and by the .cu (nvcc, C++17), so it uses plain types
// only. Launchers return cudaError_t and take the stream last.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqkv::gpu::internal {

inline constexpr int kTqMaxPadded = 1024;
inline constexpr int kTqMaxSignWords = kTqMaxPadded / 64;
inline constexpr int kTqThreadsPerBlock = 128;
// Passes (of 32 / G vectors) per warp per tile: amortizes the block's set-up
// (item search, codebook) over enough work.
inline constexpr int kTqPasses = 8;
// Coordinates of one vector that one lane holds (d' <= this: one lane per
// vector, no shuffles). Overridable at build time for experiments
// (-DSEQKV_TQ_LANE_COORDS=64); 128 is what docs/gpu.md measured.
#ifndef SEQKV_TQ_LANE_COORDS
#define SEQKV_TQ_LANE_COORDS 128
#endif
inline constexpr int kTqLaneCoords = SEQKV_TQ_LANE_COORDS;
static_assert(kTqLaneCoords == 32 || kTqLaneCoords == 64 || kTqLaneCoords == 128, "lane coordinates");

// Per-item device status codes (0 = OK), merged by CollectStatuses.
enum TqDeviceStatus : int32_t {
  kTqOk = 0,
  kTqBadStoredNorm = 1,    // DATA_LOSS
  kTqNonFiniteInput = 3,   // INVALID_ARGUMENT
  kTqNormOverflow = 4,     // INVALID_ARGUMENT
  // OUT_OF_RANGE. The highest (the kernels keep the largest code): an encode
  // that could not read a row may find garbage in what it did not read.
  kTqBlockOutOfRange = 5,
};

// One chunk of a batch, as the kernels see it. Built on the host.
struct TqDesc {
  // [0] = K, [1] = V.
  const uint8_t* norms[2];
  const uint8_t* codes[2];
  // Decode: bf16 destinations; encode: bf16 sources (both contiguous layout).
  void* tensors[2];
  uint8_t* out_norms[2];  // encode
  uint8_t* out_codes[2];  // encode
  void* const* layer_caches;  // paged: decode's destination, or encode's source (only read)
  const int32_t* block_table; // paged
  uint64_t outer_tokens;      // token dimension of the contiguous tensors
  uint64_t token_offset;
  uint32_t layers, heads, tokens, head_dim;
  uint32_t status_index;
  uint32_t first_tile;  // prefix sum of tiles within the launch group
  uint32_t block_size, num_blocks;  // encode from a paged source (decode: launch arguments)
  // Group key (the kernels read these from TqGroupConsts instead).
  uint32_t padded, bits, seed;
};

// What every chunk of one launch shares: (d', bits, seed). Passed by value as
// a kernel parameter, so the per-coordinate tables below become constant-bank
// operands of the instructions that use them (no register, no load).
struct TqGroupConsts {
  uint32_t padded;        // d' = 32 .. 1024
  uint32_t bits;          // 1..4
  float inv_sqrt_padded;  // float(1 / sqrt(d'))
  float sqrt_padded;      // float(sqrt(d'))
  float centroids[16];
  float thresholds[16];
  uint64_t sign_words[kTqMaxSignWords];  // bit i set: coordinate i gets -1
  // For d' <= kTqLaneCoords (one lane per vector), per coordinate i:
  float signed_inv_sqrt[kTqLaneCoords];  // decode: -inv_sqrt_padded where the sign is -1, else +
  uint32_t sign_masks[kTqLaneCoords];    // encode: 0x80000000 where the sign is -1, else 0
};

struct TqLaunchGroup {
  const TqDesc* descs;   // device
  uint32_t count;
  uint32_t total_tiles;
  int elems_per_lane;    // d' / 32
  int bits;              // all items of a group share d', bits and seed
  TqGroupConsts consts;
};

// Vectors per tile (one block of kTqThreadsPerBlock threads) for d' = 32 * elems_per_lane.
int TqVectorsPerTile(int elems_per_lane);

cudaError_t LaunchTqDecodeContiguous(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream);
cudaError_t LaunchTqDecodePaged(const TqLaunchGroup& group, uint32_t block_size, uint32_t num_blocks,
                                int32_t* statuses, cudaStream_t stream);
cudaError_t LaunchTqEncode(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream);

// The launchers of one padded size d' = P, bits 1..4 (turboquant_device.cuh),
// each size in its own translation unit (turboquant_kernels_p<P>.cu) so that
// they compile in parallel; the three above dispatch to them.
template <int P>
cudaError_t LaunchTqDecodeP(const TqLaunchGroup& group, bool paged, uint32_t block_size, uint32_t num_blocks,
                            int32_t* statuses, cudaStream_t stream);
template <int P>
cudaError_t LaunchTqEncodeP(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream);

}  // namespace seqkv::gpu::internal
