// Private to gpu/: the limits of arith=int12's int8 tensor-core kernels
// (seq_int12_device.cuh), shared by their launchers (seq_decode_kernels.cu,
// seq_encode_kernels.cu) and the host code that refuses what they do not take.
// Plain C++, for g++ and nvcc.
#pragma once

#include <cstdint>

namespace seqkv::gpu::internal {

// Tokens per CTA of the int12 kernels (two rows of warps, a warp per 32
// tokens x 32 columns).
inline constexpr uint32_t kInt12TileTokens = 64;
// The most feature blocks (of head_dim columns; 2 * kv_heads for all-heads
// predictors) a profile may have: their exponents sit in shared memory.
inline constexpr uint32_t kInt12MaxBlocks = 256;

// Whether the int12 kernels take a profile of this head size and predictor
// width (`features`, the bias column included: SeqProfile::features()).
inline bool Int12Fits(uint32_t head_dim, uint32_t features) {
  return (head_dim == 64 || head_dim == 128) && (features - 1) / head_dim <= kInt12MaxBlocks;
}

}  // namespace seqkv::gpu::internal
