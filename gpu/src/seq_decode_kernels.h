// Private to gpu/: launch interface of the seq codec's dense decode stage
// (prediction, KLT reconstruction, RoPE, bf16 output). Included by host code
// (g++, C++20) and the .cu (nvcc, C++17): plain types only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "seq_int12.h"

namespace seqkv::gpu::internal {

// Tokens one CTA reconstructs (each thread: one channel of SdTileTokens tokens).
inline constexpr uint32_t kSdTileTokens = 16;
// Feature columns staged in shared memory at a time.
inline constexpr uint32_t kSdFeatureChunk = 128;
// Tensor-core variant (SdLaunch::math != kSdMathExact): tokens per CTA (two
// rows of warps, a warp per 64 tokens x 32 channels).
inline constexpr uint32_t kSdTcTileTokens = 128;

// How the dense stage computes its sums (SeqDenseMath, seq_decode.h).
enum SdMath : uint32_t {
  kSdMathExact = 0,  // the CPU reference's float operations in its order
  kSdMathTf32 = 1,   // tensor cores, one TF32 product per term
  kSdMathF16 = 2,    // tensor cores, FP16 operands, float32 sums
  kSdMathTf32x3 = 3, // tensor cores, 3xTF32 (hi*hi + hi*lo + lo*hi)
  kSdMathInt12 = 4,  // arith=int12 chunks: exact integer sums on int8 tensor cores (the CPU's bytes)
};

enum SdDeviceStatus : int32_t {
  kSdOk = 0,
  kSdBlockOutOfRange = 2,  // OUT_OF_RANGE
  kSdHalfRange = 4,        // kSdMathF16: an operand outside FP16's range (FAILED_PRECONDITION; 3 is kSlCorrupt)
};

// One chunk of a batch. Built on the host.
struct SdDesc {
  const int32_t* q;         // [G][T][d] symbols (workspace); SdLaunch::half_symbols: FP16 operands (uint16)
  float* xhat[2];           // two layers of reconstruction, each [2][H][T][d] (workspace)
  const uint8_t* codes;     // [G] step-multiplier codes (workspace); a group's step base is
                            // double(delta0) * SdLaunch::multipliers[code] (SdStepBase)
  void* out[2];             // kContiguous: K, V [layers, H, outer_tokens, d] bf16
  void* const* layer_caches;  // kPaged
  const int32_t* block_table;
  uint64_t outer_tokens;
  uint64_t token_offset;
  uint64_t first_position;  // RoPE position of token 0
  uint32_t tokens;
  uint32_t rotate_keys;  // 1: apply RoPE to this chunk's keys on output
  uint32_t status_index;
  uint32_t first_cta;  // prefix over items of CTAs per layer launch
  float delta0;        // the chunk's global step
  // kSdMathInt12: per layer and block (kv, head), the largest finite |x| of
  // the layer's reconstruction as float bits, [layers][2][H], zeroed before
  // the launches (each layer's CTAs raise it; the next layer's exponents).
  uint32_t* max_bits;
};

struct SdLaunch {
  const SdDesc* descs;  // device
  uint32_t count;
  uint32_t total_ctas;
  uint32_t item_ctas;  // each item's CTAs when all items have the same (no search for a CTA's item), else 0
  uint32_t layers, heads, head_dim, features;
  uint32_t inputs;  // 0 mean, 1 same head, 2 all heads (SeqInputs)
  const float* predictor;   // device: the profile's arrays
  const float* basis;
  const float* step_scale;
  const double* multipliers;  // device: SeqMultiplier of every code, [256]
  // kSdMathF16: the predictor and basis rounded to FP16 (the same layout).
  const uint16_t* predictor_h;
  const uint16_t* basis_h;
  // kSdMathF16 at head size 128 with half_symbols, on a compute capability
  // 9.0 device: the FP16 predictor rows without the bias row and the basis,
  // transposed ([G][D][F - 1], [G][D][D]: wgmma's K-major operands). When
  // set, that decode's dense stage runs on wgmma (SdLayerWgKernel); null:
  // on mma.sync.
  const uint16_t* predictor_ht;
  const uint16_t* basis_ht;
  // RoPE for the keys' output (chunks with rotate_keys): cos/sin
  // [positions][rotary_dim], one set of RoPE parameters per launch.
  uint32_t rope_style;  // 1 rotate_half, 2 interleaved
  uint32_t rotary_dim;
  const float* rope_cos;
  const float* rope_sin;
  // cos/sin equal at channels j and j + rotary_dim / 2 for every position
  // (DeviceRope::mirrored: the usual rotate_half tables): the output stage
  // reads a unit's cos/sin from the first half, so the two halves' units of
  // a row share their loads' sectors.
  bool rope_mirrored;
  // The FP16 kernels' output stage (kSdMathF16): the angles as FP16 (cos, sin)
  // pairs [positions][rope_half_cols] (DeviceRope::cs_half); null: rope_cos
  // and rope_sin.
  const uint32_t* rope_cs_h;
  uint32_t rope_half_cols;
  bool paged;
  uint32_t block_size, num_blocks;
  int32_t* statuses;
  uint32_t math;  // SdMath; a tensor-core math needs SdTensorCoreFits
  // kSdMathInt12: the profile's fixed-point operands as int8 halves
  // (device_tables.h, Int12Tables: w, v, exps [G][3] = ew, ev, eu).
  const int8_t* w_i8;
  const int8_t* v_i8;
  const int32_t* fixed_exp;
  // kSdMathF16: every item's q holds FP16 operands q * step, not int32
  // symbols (the lane kernel's SlLaunch::half_symbols).
  bool half_symbols;
};

// The tensor-core kernel is built for these head sizes.
inline bool SdTensorCoreFits(uint32_t head_dim) { return head_dim == 64 || head_dim == 128; }

// Tokens per CTA of the launch's kernel.
inline uint32_t SdTileTokensOf(uint32_t math) {
  return math == kSdMathExact ? kSdTileTokens : math == kSdMathInt12 ? kInt12TileTokens : kSdTcTileTokens;
}

// CTAs per item and layer: one per (kv, head, tile of SdTileTokensOf tokens).
inline uint32_t SdCtasOf(uint32_t heads, uint32_t tokens, uint32_t math) {
  const uint32_t tile = SdTileTokensOf(math);
  return 2 * heads * ((tokens + tile - 1) / tile);
}

// Reconstructs layer `layer` of every chunk (reading layer - 1's
// reconstruction) and writes its bf16 K and V.
cudaError_t LaunchSdLayer(const SdLaunch& launch, uint32_t layer, cudaStream_t stream);

}  // namespace seqkv::gpu::internal
