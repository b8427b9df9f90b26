// Private to gpu/: the seq codec's adaptive model (SeqAdaptiveModel,
// codec/src/seq_lossy_core.h) on the device, shared by the group-stream
// decoder (seq_entropy_kernels.cu) and the encoder (seq_encode_kernels.cu).
// The 16 frequencies p_0..p_15 travel packed two per 32-bit word, w[k / 2],
// low half first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace seqkv::gpu::internal::model {

// p_k of a packed model (k a compile-time constant after unrolling).
__device__ __forceinline__ uint32_t Half(const uint32_t (&w)[8], int k) {
  return (k & 1) ? (w[k >> 1] >> 16) : (w[k >> 1] & 0xFFFFu);
}

// The adaptation rate after `count` updates (SeqAdaptiveModel::Rate).
__device__ __forceinline__ uint32_t Rate(uint32_t count) {
  return count < 16 ? 2 : count < 64 ? 3 : count < 256 ? 4 : 5;
}

// SeqAdaptiveModel::Update on the packed words: every p_k gives p_k >> rate
// to p_sym. A shift and a mask per word, with no carry between halves since
// every p_k is below 2^15 and their sum below 2^15 + 16. p_sym += moved with
// compile-time indices only (a test on j == sym / 2 gets folded into a
// run-time w[sym / 2], which moves w[] to local memory): word j adds moved
// times its bits of the one-hot 1 << sym.
__device__ __forceinline__ void Update(uint32_t (&w)[8], uint32_t rate, uint32_t sym) {
  const uint32_t mask = (0xFFFFu >> rate) * 0x10001u;
  uint32_t moved2 = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t give = (w[j] >> rate) & mask;
    w[j] -= give;
    moved2 += give;
  }
  const uint32_t moved = (moved2 & 0xFFFFu) + (moved2 >> 16);
  const uint32_t one_hot = 1u << sym;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t pair = (one_hot >> (2 * j)) & 3u;  // bit 0: low half, bit 1: high half
    w[j] += moved * ((pair & 1u) | ((pair >> 1) << 16));
  }
}

}  // namespace seqkv::gpu::internal::model
