// The seq codec's dense decode stage (CUDA C++17, sm_90): per layer, per
// group (layer, kv, head), per tile of tokens, every thread owns one channel j:
//
//   pred[t][j] = sum_f features[t][f] * W[g][f][j]      (f ascending from 0.0f)
//   xhat[t][j] = pred[t][j] + sum_{i ascending, q != 0} (float(q[t][i]) * step[i]) * U[g][i][j]
//
// then the keys get RoPE (x * cos + rotate(x) * sin) and both tensors are
// rounded to bf16 and written to the engine's layout. These are the CPU
// reference's operations in its order (codec/src/seq_lossy_core.cc Predict,
// Reconstruct; engine_rope.cc Rotate; dtype.h FloatToBf16), each a separate
// round-to-nearest float operation (__fmul_rn / __fadd_rn, --fmad=false), so
// the bytes are the CPU decoder's exactly.
//
// Work: the features of a tile are staged in shared memory kSdFeatureChunk
// columns at a time and shared by the tile's kSdTileTokens tokens, so each
// predictor weight and each basis row is read once per tile (the launch is
// per layer: that layer's weights stay in L2); the symbols of the tile are
// staged too, as float(q) * step. Loops are
// reordered only across tokens; every token's sums keep the CPU's order.
#include <cuda_runtime.h>

#include <cstdint>

#include "seq_decode_kernels.h"
#include "seq_dense_device.cuh"

namespace seqkv::gpu::internal {

namespace {

constexpr uint32_t TT = kSdTileTokens;
using dense::FC;

__global__ void SdLayerKernel(SdLaunch L, uint32_t layer) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t d = L.head_dim, H = L.heads, F = L.features;
  float* feat_s = reinterpret_cast<float*>(smem);  // [TT][FC]
  float* y_s = feat_s + TT * FC;                    // [TT][d]: float(q) * step
  float* row_s = y_s + TT * d;                      // [TT][d]
  float* step_s = row_s + TT * d;                   // [d]

  const uint32_t cta = blockIdx.x;
  const SdDesc& desc = L.descs[dense::FindItem(L.descs, L.count, cta, &SdDesc::first_cta)];
  const uint32_t T = desc.tokens;
  const dense::Tile tl = dense::TileOf<TT>(cta - desc.first_cta, T, H, layer);
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t j = threadIdx.x;
  const bool active = j < d;

  const float* W = L.predictor + uint64_t{g} * F * d;
  const float* U = L.basis + uint64_t{g} * d * d;
  const float* prev = desc.xhat[(layer + 1) % 2];  // layer - 1's reconstruction
  float* cur = desc.xhat[layer % 2];

  for (uint32_t i = j; i < d; i += blockDim.x) {
    step_s[i] = __double2float_rn(__dmul_rn(desc.step_base[g], static_cast<double>(L.step_scale[uint64_t{g} * d + i])));
  }
  __syncthreads();
  // y = float(q) * step, the reference's first product, once per tile.
  for (uint32_t idx = j; idx < TT * d; idx += blockDim.x) {
    const uint32_t k = idx / d, i = idx % d;
    const int32_t qv = k < nt ? desc.q[(uint64_t{g} * T + t0 + k) * d + i] : 0;
    y_s[idx] = __fmul_rn(static_cast<float>(qv), step_s[i]);
  }

  // Prediction.
  float acc[TT];
  const dense::PredictArgs pa{W, prev, F, d, H, T, L.inputs, h, t0, nt, layer > 0 && L.inputs != 0};
  dense::PredictTile(pa, feat_s, j, active, acc);
  __syncthreads();  // y_s ready (and the last feature chunk consumed)

  // Reconstruction: each basis row is read once per tile; each token's sum
  // runs over ascending i. The reference skips zero symbols; adding their
  // term here gives the same float: y = +0 then, y * u = +-0 (u is finite),
  // and the running sum, which starts at +0 and cannot become -0 in
  // round-to-nearest, is unchanged by adding +-0. So no branch per symbol.
  if (active) {
    float rec[TT];
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) rec[k] = 0.0f;
    dense::AccumulateTile(y_s, d, d, U + j, d, rec);
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) {
      if (k < nt) {
        const float x = __fadd_rn(acc[k], rec[k]);
        cur[((uint64_t{kv} * H + h) * T + t0 + k) * d + j] = x;
        row_s[k * d + j] = x;
      }
    }
  }
  __syncthreads();

  // Output: RoPE on the keys, bf16, the destination layout.
  if (!active) return;
  const uint32_t rd = L.rotary_dim;
  const bool rotate = kv == 0 && desc.rotate_keys && rd > 0 && j < rd;
  for (uint32_t k = 0; k < nt; ++k) {
    const float* row = row_s + k * d;
    float val = row[j];
    if (rotate) {
      const uint64_t pos = desc.first_position + t0 + k;
      const float c = L.rope_cos[pos * rd + j], s = L.rope_sin[pos * rd + j];
      val = dense::RopeChannel(row, j, rd, L.rope_style, c, s, false);
    }
    const uint16_t bits = dense::ToBf16(val);
    const uint64_t token = desc.token_offset + t0 + k;
    if (L.paged) {
      const int32_t blk = desc.block_table[token / L.block_size];
      if (blk < 0 || static_cast<uint32_t>(blk) >= L.num_blocks) {
        atomicCAS(&L.statuses[desc.status_index], 0, kSdBlockOutOfRange);
        continue;
      }
      uint16_t* cache = static_cast<uint16_t*>(desc.layer_caches[layer]);
      cache[(((uint64_t(blk) * 2 + kv) * L.block_size + token % L.block_size) * H + h) * d + j] = bits;
    } else {
      uint16_t* out = static_cast<uint16_t*>(desc.out[kv]);
      out[((uint64_t{layer} * H + h) * desc.outer_tokens + token) * d + j] = bits;
    }
  }
}

}  // namespace

cudaError_t LaunchSdLayer(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  if (launch.total_ctas == 0) return cudaSuccess;
  const uint32_t threads = (launch.head_dim + 31) / 32 * 32;
  const size_t smem = sizeof(float) * TT * FC + sizeof(float) * TT * launch.head_dim +
                      sizeof(float) * TT * launch.head_dim + sizeof(float) * launch.head_dim;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(SdLayerKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  SdLayerKernel<<<launch.total_ctas, threads, smem, stream>>>(launch, layer);
  return cudaGetLastError();
}

}  // namespace seqkv::gpu::internal
