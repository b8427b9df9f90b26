// The seq codec's GPU encoder (CUDA C++17, sm_90), the CPU reference's
// operations in its order (codec/src/seq_lossy_core.cc Loop with encode,
// SeqQuantize, SeqGroupSse, SeqEncodeGroup; engine_rope.cc UndoRope), each
// float operation a separate round-to-nearest intrinsic (--fmad=false):
//
//  * SqLayerKernel, per layer, per group (layer, kv, head), per tile of
//    kSqTileTokens tokens, one thread per channel: the bf16 input with RoPE
//    undone on the keys, the prediction from layer - 1's reconstruction, the
//    residual's KLT coefficients c[i] = sum_j r[j] * U[i][j] (j ascending),
//    the symbols floor(|c| / step + rho) with c's sign, then the decoder's
//    reconstruction (the closed loop) and the tile's partial squared errors.
//  * the entropy stage (below, "entropy coding"): one thread per component
//    runs the adaptive models, one thread per rANS lane codes the lane's
//    symbols backwards, and the lanes' words are merged into the stream;
//  * SqSectionKernel (one block per item) lays out the layer sections.
#include <cuda_runtime.h>

#include <cstdint>

#include "seq_dense_device.cuh"
#include "seq_encode_kernels.h"
#include "seq_int12_device.cuh"
#include "seq_lane_merge.h"
#include "seq_lanes.h"
#include "seq_model_device.cuh"

namespace seqkv::gpu::internal {

namespace {

using dense::FC;
constexpr uint32_t TT = kSqTileTokens;

constexpr uint32_t kScaleBits = 15;
constexpr uint32_t kTotal = 1u << kScaleBits;
constexpr uint32_t kHalf = kTotal / 2;
constexpr uint32_t kLow = 1u << 16;
constexpr uint32_t kSymbols = 16;
constexpr uint32_t kEscape = 15;
constexpr uint32_t kMaxLanes = 8;                       // adaptive streams
constexpr uint32_t kMaxLaneLanes = seqkv::internal::kSeqLaneMax;  // lane streams (16)
constexpr int kMaxShift = seqkv::internal::kSeqLaneMaxShift;
constexpr uint32_t kShifts = 2 * kMaxShift + 1;
static_assert(kMaxLaneLanes == kSqLaneSlots, "lane slots per group");
constexpr float kMaxMagnitude = 16777216.0f;  // kSeqMaxMagnitude = 2^24
constexpr int kCostFracBits = 20;             // kSeqCostFracBits

__global__ void SqLayerKernel(SqLaunch L, uint32_t layer) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t d = L.head_dim, H = L.heads, F = L.features;
  float* feat_s = reinterpret_cast<float*>(smem);  // [TT][FC]
  float* x_s = feat_s + TT * FC;                    // [TT][d] coding-domain input
  float* r_s = x_s + TT * d;                        // [TT][d] residual, then float(q) * step
  float* step_s = r_s + TT * d;                     // [d]

  dense::Tile tl;
  const SqDesc& desc = dense::TileItem<TT>(L.descs, L.count, L.item_ctas, H, layer, &tl);
  const uint32_t T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t j = threadIdx.x;
  const bool active = j < d;

  const float* W = L.predictor + uint64_t{g} * F * d;
  const float* U = L.basis + uint64_t{g} * d * d;
  const float* Ut = L.basis_t + uint64_t{g} * d * d;
  const float* prev = desc.xhat[(layer + 1) % 2];
  float* cur = desc.xhat[layer % 2];

  for (uint32_t i = j; i < d; i += blockDim.x) {
    step_s[i] = SeqStep(desc.step_base[g], L.step_scale[uint64_t{g} * d + i]);
  }
  // The input tile as float (bf16 widened: exact), from either layout.
  for (uint32_t idx = j; idx < TT * d; idx += blockDim.x) {
    const uint32_t k = idx / d, c = idx % d;
    float v = 0.0f;
    if (k < nt) {
      const uint64_t token = desc.token_offset + t0 + k;
      const uint16_t* row = nullptr;
      if (L.paged) {
        const int32_t blk = desc.block_table[token / L.block_size];
        if (blk >= 0 && static_cast<uint32_t>(blk) < L.num_blocks) {
          row = static_cast<const uint16_t*>(desc.layer_caches[layer]) +
                (((uint64_t(blk) * 2 + kv) * L.block_size + token % L.block_size) * H + h) * d;
        } else if (c == 0) {
          atomicCAS(&L.statuses[desc.status_index], 0, kSqBlockOutOfRange);
        }
      } else {
        row = desc.in[kv] + ((uint64_t{layer} * H + h) * desc.in_tokens + token) * d;
      }
      if (row != nullptr) v = __uint_as_float(static_cast<uint32_t>(row[c]) << 16);
    }
    x_s[idx] = v;
  }
  __syncthreads();
  // Keys coded before RoPE: undo the rotation (every pair read before any write).
  const uint32_t rd = L.rotary_dim;
  if (kv == 0 && desc.rotate_keys && rd > 0) {
    float rot[TT];
    if (j < rd) {
#pragma unroll
      for (uint32_t k = 0; k < TT; ++k) {
        rot[k] = 0.0f;
        if (k < nt) {
          const uint64_t pos = desc.first_position + t0 + k;
          rot[k] = dense::RopeChannel(x_s + k * d, j, rd, L.rope_style, L.rope_cos[pos * rd + j],
                                      L.rope_sin[pos * rd + j], true);
        }
      }
    }
    __syncthreads();
    if (j < rd) {
#pragma unroll
      for (uint32_t k = 0; k < TT; ++k) {
        if (k < nt) x_s[k * d + j] = rot[k];
      }
    }
  }

  // Prediction (synchronizes before it reads x_s's neighbours' writes).
  float pred[TT];
  const dense::PredictArgs pa{W, prev, F, d, H, T, L.inputs, h, t0, nt, layer > 0 && L.inputs != 0};
  dense::PredictTile(pa, feat_s, j, active, pred);
  __syncthreads();
  if (active) {
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) r_s[k * d + j] = k < nt ? __fsub_rn(x_s[k * d + j], pred[k]) : 0.0f;
  }
  __syncthreads();

  // Coefficients c[i] for the thread's component i = j, then the symbols.
  int32_t q[TT];
  if (active) {
    float c[TT];
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) c[k] = 0.0f;
    dense::AccumulateTile(r_s, d, d, Ut + j, d, c);
    const float st = step_s[j];
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) {
      const float a = __fadd_rn(__fdiv_rn(fabsf(c[k]), st), desc.rho);
      const float m = a < kMaxMagnitude ? floorf(a) : kMaxMagnitude;
      const int32_t v = static_cast<int32_t>(m);
      q[k] = c[k] < 0.0f ? -v : v;
      if (k < nt) desc.q[(uint64_t{g} * T + t0 + k) * d + j] = q[k];
    }
  }
  __syncthreads();  // r_s read by every thread
  if (active) {
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) r_s[k * d + j] = k < nt ? __fmul_rn(static_cast<float>(q[k]), step_s[j]) : 0.0f;
  }
  __syncthreads();

  // The decoder's reconstruction (see SdLayerKernel for the zero-symbol
  // terms) and the tile's squared error for channel j.
  if (!active) return;
  float rec[TT];
#pragma unroll
  for (uint32_t k = 0; k < TT; ++k) rec[k] = 0.0f;
  dense::AccumulateTile(r_s, d, d, U + j, d, rec);
  // Partial squared errors per kSqSseTile tokens (SeqGroupSse's tiles).
  const uint32_t sse_tiles = (T + kSqSseTile - 1) / kSqSseTile;
#pragma unroll
  for (uint32_t s0 = 0; s0 < TT; s0 += kSqSseTile) {
    double part = 0.0;
#pragma unroll
    for (uint32_t k = s0; k < s0 + kSqSseTile; ++k) {
      if (k < nt) {
        const float x = __fadd_rn(pred[k], rec[k]);
        cur[((uint64_t{kv} * H + h) * T + t0 + k) * d + j] = x;
        const double e = __dsub_rn(static_cast<double>(x_s[k * d + j]), static_cast<double>(x));
        part = __dadd_rn(part, __dmul_rn(e, e));
      }
    }
    if (s0 < nt) desc.sse_part[(uint64_t{g} * sse_tiles + (t0 + s0) / kSqSseTile) * d + j] = part;
  }
}

// ---- arith=int12 (SqLaunch::int12) -----------------------------------------
//
// The closed loop of arith=int12 (codec/src/seq_lossy_core.cc: PredictFixed,
// ForwardFixed, ReconstructInt) on int8 tensor cores, exactly
// (seq_int12_device.cuh). Two launches per layer, because a group's residual
// takes one exponent over all its tokens:
//   * SqI12PredictKernel: per CTA (group, 64 tokens) the coding-domain input
//     (bf16 widened, RoPE undone on the keys), the prediction as the
//     decoder's, and x and pred into the workspace, with the group's largest
//     finite |r|, r = x - pred (SqDesc::rmax);
//   * SqI12QuantKernel: the residual r = x - pred (formed again from the
//     staged x and pred) in int12 times the basis (exact int32 sums),
//     c = float(double(S) 2^(er + eu)), the symbols SeqQuantize(c, step,
//     rho) into q; then the symbols times the reconstruction weights
//     as the decoder, xhat = pred + float(double(A) 2^ev * base), the next
//     layer's rows with their blocks' largest |x|, and the partial squared
//     errors of SeqGroupSse's tiles.
using i12::TMI;
static_assert(TMI == kInt12TileTokens, "the int12 tile");
static_assert(TMI % kSqSseTile == 0, "whole squared-error tiles per CTA");

// The tile's input rows (layer, kv, head h; tokens t0 .. t0 + nt - 1) as
// floats (bf16 widened) into rows_s (row stride rs floats, 16-byte aligned),
// eight channels per 16-byte load where the rows allow it (d a multiple of 8,
// a 16-byte aligned source). A row whose block table entry is out of range
// is zeros (and the item's status set).
__device__ __forceinline__ void StageInputRows(const SqLaunch& L, const SqDesc& desc, uint32_t layer, uint32_t kv,
                                               uint32_t h, uint32_t t0, uint32_t nt, float* rows_s, uint32_t rs) {
  const uint32_t d = L.head_dim, H = L.heads, units = d / 8, tail = d % 8;
  auto widen = [](uint32_t b) { return __uint_as_float(b << 16); };
  // Token t0 + k's source row; nullptr (and the item's status) out of range.
  auto row_of = [&](uint32_t k) -> const uint16_t* {
    const uint64_t token = desc.token_offset + t0 + k;
    if (!L.paged) return desc.in[kv] + ((uint64_t{layer} * H + h) * desc.in_tokens + token) * d;
    const int32_t blk = desc.block_table[token / L.block_size];
    if (blk < 0 || static_cast<uint32_t>(blk) >= L.num_blocks) {
      atomicCAS(&L.statuses[desc.status_index], 0, kSqBlockOutOfRange);
      return nullptr;
    }
    return static_cast<const uint16_t*>(desc.layer_caches[layer]) +
           (((uint64_t(blk) * 2 + kv) * L.block_size + token % L.block_size) * H + h) * d;
  };
  // kSlots units per thread at a time: their loads first, then their stores.
  constexpr uint32_t kSlots = 4;
  for (uint32_t first = 0; first < nt * units; first += kSlots * blockDim.x) {
    const uint16_t* src[kSlots];
    uint4 v[kSlots];
#pragma unroll
    for (uint32_t s = 0; s < kSlots; ++s) {
      const uint32_t u = first + s * blockDim.x + threadIdx.x;
      src[s] = nullptr;
      if (u >= nt * units) continue;
      const uint16_t* row = row_of(u / units);
      src[s] = row == nullptr ? nullptr : row + (u % units) * 8;
      if (src[s] != nullptr && reinterpret_cast<uintptr_t>(src[s]) % 16 == 0) {
        v[s] = __ldg(reinterpret_cast<const uint4*>(src[s]));
      }
    }
#pragma unroll
    for (uint32_t s = 0; s < kSlots; ++s) {
      const uint32_t u = first + s * blockDim.x + threadIdx.x;
      if (u >= nt * units) continue;
      float* out = rows_s + (u / units) * rs + (u % units) * 8;
      if (src[s] == nullptr) {
        for (uint32_t e = 0; e < 8; ++e) out[e] = 0.0f;
      } else if (reinterpret_cast<uintptr_t>(src[s]) % 16 == 0) {
        *reinterpret_cast<float4*>(out) = make_float4(widen(v[s].x & 0xFFFFu), widen(v[s].x >> 16),
                                                      widen(v[s].y & 0xFFFFu), widen(v[s].y >> 16));
        *reinterpret_cast<float4*>(out + 4) = make_float4(widen(v[s].z & 0xFFFFu), widen(v[s].z >> 16),
                                                          widen(v[s].w & 0xFFFFu), widen(v[s].w >> 16));
      } else {
        for (uint32_t e = 0; e < 8; ++e) out[e] = widen(src[s][e]);
      }
    }
  }
  for (uint32_t u = threadIdx.x; u < nt * tail; u += blockDim.x) {  // a d that is not a multiple of 8
    const uint32_t k = u / tail, j = units * 8 + u % tail;
    const uint16_t* row = row_of(k);
    rows_s[k * rs + j] = row == nullptr ? 0.0f : widen(row[j]);
  }
}

// RoPE undone in place on the staged rows of pre-RoPE keys (InputOf's
// operations), a thread per unit of 8 channels and (rotate_half) its partner
// unit half a rotary size on: only that thread reads and writes them. When
// the rotary size is not a multiple of 16 the rows stay as they are and
// InputOf undoes RoPE per element; returns whether the rows were rotated.
__device__ __forceinline__ bool UndoRopeRows(const SqLaunch& L, const SqDesc& desc, uint32_t t0, uint32_t nt,
                                             float* rows_s, uint32_t rs) {
  const uint32_t rd = L.rotary_dim;
  if (rd % 16 != 0) return false;
  const bool half = L.rope_style == 1;
  const uint32_t hh = rd / 2, units = half ? hh / 8 : rd / 8;
  // The unit's cos and sin (and its partner's) with 16-byte loads, all issued
  // before the arithmetic; the tables are cudaMalloc'd, so rows of a multiple
  // of 16 floats are aligned.
  auto load8 = [](const float* p, float (&v)[8]) {
    const float4 lo = __ldg(reinterpret_cast<const float4*>(p)), hi = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
  };
  for (uint32_t u = threadIdx.x; u < nt * units; u += blockDim.x) {
    const uint32_t k = u / units, c = (u % units) * 8;
    float* row = rows_s + k * rs;
    const uint64_t at = (desc.first_position + t0 + k) * rd + c;
    float ca[8], sa[8];
    load8(L.rope_cos + at, ca);
    load8(L.rope_sin + at, sa);
    if (half) {
      float cb[8], sb[8];
      load8(L.rope_cos + at + hh, cb);
      load8(L.rope_sin + at + hh, sb);
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) {
        const float a = row[c + e], b = row[c + e + hh];
        row[c + e] = dense::RopePair(a, b, true, ca[e], sa[e], true);
        row[c + e + hh] = dense::RopePair(a, b, false, cb[e], sb[e], true);
      }
    } else {
#pragma unroll
      for (uint32_t e = 0; e < 8; e += 2) {
        const float a = row[c + e], b = row[c + e + 1];
        row[c + e] = dense::RopePair(a, b, true, ca[e], sa[e], true);
        row[c + e + 1] = dense::RopePair(a, b, false, ca[e + 1], sa[e + 1], true);
      }
    }
  }
  return true;
}

// Element j of the tile's token k in the coding domain, from the staged row:
// RoPE undone on pre-RoPE keys (SqLayerKernel's values).
__device__ __forceinline__ float InputOf(const SqLaunch& L, const SqDesc& desc, uint32_t kv, const float* row,
                                         uint64_t t, uint32_t j) {
  const uint32_t rd = L.rotary_dim;
  if (kv != 0 || !desc.rotate_keys || j >= rd) return row[j];
  uint32_t ia, ib;
  bool first;
  dense::RopePairOf(j, rd, L.rope_style, ia, ib, first);
  const uint64_t at = (desc.first_position + t) * rd + j;
  return dense::RopePair(row[ia], row[ib], first, L.rope_cos[at], L.rope_sin[at], true);
}

template <uint32_t D>
__global__ void __launch_bounds__(2 * D, 2) SqI12PredictKernel(SqLaunch L, uint32_t layer) {
  using Cta = i12::Cta<D>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int exp_s[kInt12MaxBlocks];  // the feature blocks' exponents
  Cta cta(smem);
  dense::Tile tl;
  const SqDesc& desc = dense::TileItem<TMI>(L.descs, L.count, L.item_ctas, L.heads, layer, &tl);
  const uint32_t H = L.heads, F = L.features, T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const bool feats = layer > 0 && L.inputs != 0;
  const uint32_t blocks = (F - 1) / D, nblk = feats ? blocks : 0;
  auto block_of = [&](uint32_t b) { return L.inputs == 1 ? b * H + h : b; };
  const uint32_t* prev_max = feats ? desc.max_bits + (layer - 1) * 2 * H : nullptr;
  cta.PredictBlocks(desc.xhat[(layer + 1) % 2], prev_max, block_of, nblk, T, t0, nt,
                    L.w_i8 + uint64_t{g} * blocks * 2 * D * D, L.fixed_exp[3 * g], exp_s);
  // The input rows, over the stages (free once the products are done).
  __syncthreads();
  float* const in_s = cta.Rows();
  StageInputRows(L, desc, layer, kv, h, t0, nt, in_s, Cta::kRowStride);
  __syncthreads();
  bool rotated = kv != 0 || !desc.rotate_keys;  // the rows are the coding-domain input
  if (!rotated) {
    rotated = UndoRopeRows(L, desc, t0, nt, in_s, Cta::kRowStride);
    __syncthreads();
  }
  // x and pred by rows: a thread per pair of channels (the same pair in
  // every row it takes, so its bias is loaded once), a warp's stores 256
  // contiguous bytes and its reads of the sums conflict-free (DsumAt keeps a
  // row's pairs within aligned groups of eight); the largest |r| too (the
  // quant kernel forms r again).
  constexpr uint32_t kPairs = D / 2, kRowsPer = Cta::NT / kPairs;
  const uint32_t j = 2 * (cta.tid % kPairs);
  const float* bias = L.predictor + (uint64_t{g} * F + (F - 1)) * D;
  const float2 b2 = __ldg(reinterpret_cast<const float2*>(bias + j));
  const uint64_t at0 = ((uint64_t{kv} * H + h) * T + t0) * D;
  uint32_t most = 0;
#pragma unroll 4
  for (uint32_t k = cta.tid / kPairs; k < nt; k += kRowsPer) {
    const float* row = in_s + k * Cta::kRowStride;
    float2 x;
    if (rotated) {
      x = *reinterpret_cast<const float2*>(row + j);
    } else {
      x = make_float2(InputOf(L, desc, kv, row, t0 + k, j), InputOf(L, desc, kv, row, t0 + k, j + 1));
    }
    const double2 s = feats ? *reinterpret_cast<const double2*>(cta.dsum + i12::DsumAt(D, k, j)) : double2{};
    const float2 p = make_float2(i12::PredOf(feats, s.x, b2.x), i12::PredOf(feats, s.y, b2.y));
    most = max(most, max(i12::FiniteAbsBits(__fsub_rn(x.x, p.x)), i12::FiniteAbsBits(__fsub_rn(x.y, p.y))));
    const uint64_t at = at0 + uint64_t{k} * D + j;
    *reinterpret_cast<float2*>(desc.xin + at) = x;
    *reinterpret_cast<float2*>(desc.pred + at) = p;
  }
  i12::WarpMaxInto(most, cta.lane, &desc.rmax[layer * 2 * H + kv * H + h]);
}

template <uint32_t D>
__global__ void __launch_bounds__(2 * D, 2) SqI12QuantKernel(SqLaunch L, uint32_t layer) {
  using Cta = i12::Cta<D>;
  constexpr uint32_t NT = Cta::NT, RS = Cta::kRowStride;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint32_t huge_s[TMI];  // row k has a symbol at or past 2^15 (Cta::Symbols)
  __shared__ float step_s[D];
  Cta cta(smem);
  dense::Tile tl;
  const SqDesc& desc = dense::TileItem<TMI>(L.descs, L.count, L.item_ctas, L.heads, layer, &tl);
  const uint32_t H = L.heads, T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t tid = cta.tid;
  for (uint32_t k = tid; k < TMI; k += NT) huge_s[k] = 0;
  for (uint32_t i = tid; i < D; i += NT) {
    step_s[i] = SeqStep(desc.step_base[g], L.step_scale[uint64_t{g} * D + i]);
  }
  const int ev = L.fixed_exp[3 * g + 1], eu = L.fixed_exp[3 * g + 2];
  const int er = i12::ExponentOfBits(desc.rmax[layer * 2 * H + kv * H + h]);
  const uint64_t at0 = ((uint64_t{kv} * H + h) * T + t0) * D;
  int32_t* qrows = desc.q + (uint64_t{g} * T + t0) * D;
  const int8_t* vrows = L.v_i8 + uint64_t{g} * 2 * D * D;
  // The tile's predictions into the double sums' area, which this kernel
  // uses only for Cta::Symbols' second pass: element (k, j)'s in the first 4
  // of its 8 bytes at DsumAt (where that pass keeps (pred, A_low), so it
  // overwrites nothing another element still needs). Each thread copies the
  // predictions of the elements whose x it copies and converts in the first
  // Run (Cta::CopySlot, every chunk), so its own wait covers them there; one
  // commit group ahead of the first chunk's.
  float* const pred_s = reinterpret_cast<float*>(cta.dsum);
  for (uint32_t ci = 0; ci < Cta::kChunksPer; ++ci) {
#pragma unroll
    for (uint32_t i = 0; i < Cta::kRawCopies; ++i) {
      uint32_t k, c;
      cta.CopySlot(i, k, c);
      if (k >= nt) continue;
#pragma unroll
      for (uint32_t e = 0; e < 4; ++e) {
        const uint32_t j = ci * i12::KCI + c + e;
        dense::CopyAsync4(pred_s + 2 * i12::DsumAt(D, k, j), desc.pred + at0 + uint64_t{k} * D + j);
      }
    }
  }
  dense::CopyCommit();

  // c = U r: the residual (one exponent for the group) times the basis rows;
  // r = x - pred as the predict kernel formed it, from the x chunk and the
  // predictions in shared memory. Then the symbols (SeqQuantize), component
  // i = the column.
  const double cscale = ldexp(1.0, er + eu);  // S * cscale is exact (a power of two)
  auto symbol_of = [&](uint32_t i, int32_t sum) {
    const float c = __double2float_rn(__dmul_rn(static_cast<double>(sum), cscale));
    const float a = __fadd_rn(__fdiv_rn(fabsf(c), step_s[i]), desc.rho);
    const int32_t v = static_cast<int32_t>(a < kMaxMagnitude ? floorf(a) : kMaxMagnitude);
    return c < 0.0f ? -v : v;
  };
#if SEQKV_WGMMA
  if constexpr (D == 128) {
    __shared__ int er_s;
    if (tid == 0) er_s = er;
    dense::CopyWait<0>();  // this thread's prediction copies (the barrier in ValuesWg publishes them)
    cta.ValuesWg(
        1, nt, &er_s, [&](uint32_t) { return desc.xin + at0; },
        [&](uint32_t) { return L.u_i8 + uint64_t{g} * 2 * D * D; },
        [&](uint32_t k, uint32_t j, float x) { return __fsub_rn(x, pred_s[2 * i12::DsumAt(D, k, j)]); },
        [&](uint32_t) {
          return [&](uint32_t k, uint32_t i, int32_t s0, int32_t s1) {
            if (k < nt)
              *reinterpret_cast<int2*>(qrows + uint64_t{k} * D + i) =
                  make_int2(symbol_of(i, s0), symbol_of(i + 1, s1));
          };
        });
  } else
#endif
  {
    // The copies above are complete at the first chunk's wait and barrier.
    cta.Run(
        Cta::kChunksPer,
        [&](uint32_t ci, uint32_t s) {
          cta.Issue(reinterpret_cast<const uint32_t*>(desc.xin + at0), L.u_i8 + uint64_t{g} * 2 * D * D,
                    ci * i12::KCI, nt, s);
        },
        [&](uint32_t ci, uint32_t s) {
          cta.ConvertValues(s, nt, er, i12::FixedScale(er), [&](uint32_t k, uint32_t c, float x) {
            return __fsub_rn(x, pred_s[2 * i12::DsumAt(D, k, ci * i12::KCI + c)]);
          });
          return true;
        },
        [](uint32_t) {});
    cta.ForEach([&](uint32_t m, uint32_t n, uint32_t r) {
      const uint32_t k = cta.RowOf(m, r), i = cta.ColOf(n) + r % 2;
      if (k < nt) qrows[uint64_t{k} * D + i] = symbol_of(i, cta.Sum(m, n, r));
    });
  }
  cta.Zero();
  __syncthreads();  // every thread's symbols written before the copies below read them

  // The reconstruction, as the decoder's.
  float* const row_s = cta.Rows();
  const double base = desc.step_base[g];
  const double vscale = ldexp(1.0, ev);
  auto pred_of = [&](uint32_t k, uint32_t j) { return k < nt ? pred_s[2 * i12::DsumAt(D, k, j)] : 0.0f; };
  cta.template Symbols<true>(
      qrows, vrows, nt, huge_s, pred_of, [&](uint32_t k, uint32_t j, int64_t a, float pred) {
        if (k < nt) row_s[k * RS + j] = __fadd_rn(pred, i12::RecOf(static_cast<double>(a), vscale, base));
      });
  __syncthreads();  // row_s complete
  // The next layer's features and their blocks' largest |x|.
  if (layer + 1 < L.layers && L.inputs != 0) {
    cta.StoreRows(nt, desc.xhat[layer % 2] + at0, &desc.max_bits[layer * 2 * H + kv * H + h]);
  }
  // Partial squared errors per kSqSseTile tokens and channel (SeqGroupSse's tiles).
  const uint32_t sse_tiles = (T + kSqSseTile - 1) / kSqSseTile;
  for (uint32_t u = tid; u < (TMI / kSqSseTile) * D; u += NT) {
    const uint32_t s0 = (u / D) * kSqSseTile, j = u % D;
    if (s0 >= nt) continue;
    float x[kSqSseTile];  // loaded ahead of the chain of adds
#pragma unroll
    for (uint32_t e = 0; e < kSqSseTile; ++e) x[e] = s0 + e < nt ? desc.xin[at0 + uint64_t{s0 + e} * D + j] : 0.0f;
    double part = 0.0;
#pragma unroll
    for (uint32_t e = 0; e < kSqSseTile; ++e) {
      if (s0 + e >= nt) break;
      const double diff = __dsub_rn(static_cast<double>(x[e]), static_cast<double>(row_s[(s0 + e) * RS + j]));
      part = __dadd_rn(part, __dmul_rn(diff, diff));
    }
    desc.sse_part[(uint64_t{g} * sse_tiles + (t0 + s0) / kSqSseTile) * D + j] = part;
  }
}

template <uint32_t D>
cudaError_t LaunchSqI12Layer(const SqLaunch& launch, uint32_t layer, cudaStream_t stream) {
  const int smem = static_cast<int>(i12::SharedBytes(D));
  cudaError_t e = cudaFuncSetAttribute(SqI12PredictKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  e = cudaFuncSetAttribute(SqI12QuantKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  SqI12PredictKernel<D><<<launch.total_ctas, 2 * D, smem, stream>>>(launch, layer);
  SqI12QuantKernel<D><<<launch.total_ctas, 2 * D, smem, stream>>>(launch, layer);
  return cudaGetLastError();
}

// ---- entropy coding -------------------------------------------------------
//
// The encoder knows every symbol up front, and each component's adaptive
// models see only that component's symbols, so the models run one thread per
// component (SqModelKernel), not one per group. The rANS lanes are
// independent too: each lane's states and words depend only on its own
// symbols. Only the order of the words in the shared stream ties them
// together: the decoder reads a word when the symbol that made the encoder
// emit it is decoded, so the stream is every lane's words sorted by the
// position of that symbol (one key per rANS operation, below). So one thread
// per lane codes its symbols backwards, first counting its words
// (SqLaneKernel<false>), then, once the sections are laid out, writing them
// with their keys (SqLaneKernel<true>); SqMergeKernel places each word at
// its rank among all the group's keys. Lane streams know each lane's
// operations from the model kernel, so most groups take one pass instead
// (SqLaneWriteKernel: words at a place reserved per lane, a bit per
// operation instead of a key per word).
//
// Key of a rANS operation: (t * dim + i) * 64 + sub, sub the operation's
// index inside the element in coding order: 0 the magnitude symbol, then the
// escape's k zero bits (1..k), its one bit (k + 1) and k value bits (k + 2 ..
// 2k + 1, most significant first), then the sign (2k + 2, or 1 without an
// escape); k <= 24 so sub < 64. Ascending keys are SeqEncodeGroup's order.

using model::Half;

__device__ __forceinline__ uint32_t Context(int32_t prev) {
  return prev == 0 ? 0u : (prev == 1 || prev == -1) ? 1u : 2u;
}

__device__ __forceinline__ uint32_t Magnitude(int32_t v) {
  return v < 0 ? 0u - static_cast<uint32_t>(v) : static_cast<uint32_t>(v);
}

// A symbol's uniform (1-bit, frequency kHalf) rANS operations, which precede
// its own in coding order: with sign_op the sign of a non-zero symbol; for a
// magnitude at the escape the Exp-Golomb-0 code of mag - kEscape (k zero
// bits, a one bit, k value bits). UniformOps counts them; PutUniformOps
// calls put(start, sub) for each, sub its index in the symbol's key (above).
__device__ __forceinline__ uint32_t UniformOps(uint32_t mag, bool sign_op) {
  return (sign_op && mag != 0 ? 1u : 0u) + (mag >= kEscape ? 2u * (31 - __clz(mag - kEscape + 1)) + 1u : 0u);
}
template <typename Put>
__device__ __forceinline__ void PutUniformOps(int32_t v, bool sign_op, Put&& put) {
  const uint32_t mag = Magnitude(v);
  if (mag >= kEscape) {
    const uint32_t ev = mag - kEscape + 1;
    const uint32_t k = 31 - __clz(ev);
    if (sign_op) put(v < 0 ? kHalf : 0u, 2 * k + 2);
    for (uint32_t b = 0; b < k; ++b) put(((ev >> b) & 1u) ? kHalf : 0u, 2 * k + 1 - b);
    put(kHalf, k + 1);
    for (uint32_t b = k; b >= 1; --b) put(0u, b);
  } else if (mag != 0 && sign_op) {
    put(v < 0 ? kHalf : 0u, 1);
  }
}

// A group's lanes: adaptive streams and lane streams min(coded, slots);
// split lane streams (streams=lanes3) min(16, head_dim) once any component
// is coded (a lane may own none of them), else none.
__device__ __forceinline__ uint32_t GroupLanes(const SqLaunch& L, uint32_t coded, uint32_t slots) {
  if (L.split) return coded > 0 ? seqkv::internal::SeqSplitLanes(L.head_dim) : 0u;
  return coded < slots ? coded : slots;
}

// Thread 0 of a group's model kernel: each component's rank among the coded
// ones (-1: not coded) and the number of coded components.
__device__ uint32_t RankCoded(const uint32_t* coded_s, uint32_t d, int16_t* rank) {
  uint32_t r = 0;
  for (uint32_t c = 0; c < d; ++c) rank[c] = coded_s[c] ? static_cast<int16_t>(r++) : int16_t{-1};
  return r;
}

// The group's squared error in SeqGroupSse's order (tiles ascending, channels
// ascending) into D.sse[g]: the block loads the partial sums into shared
// memory kSseChunk at a time, coalesced, and thread 0 adds them in order (one
// dependent chain of double adds, without a global load in it). Called by
// every thread of the block.
constexpr uint32_t kSseChunk = 512;
__device__ void GroupSse(const SqDesc& D, uint32_t g, uint32_t T, uint32_t d) {
  __shared__ double part_s[kSseChunk];
  const uint32_t tiles = (T + kSqSseTile - 1) / kSqSseTile;
  const uint64_t n = uint64_t{tiles} * d;
  const double* part = D.sse_part + uint64_t{g} * n;
  double sse = 0.0;
  for (uint64_t at = 0; at < n; at += kSseChunk) {
    const uint32_t m = n - at < kSseChunk ? static_cast<uint32_t>(n - at) : kSseChunk;
    for (uint32_t k = threadIdx.x; k < m; k += blockDim.x) part_s[k] = part[at + k];
    __syncthreads();
    if (threadIdx.x == 0) {
      for (uint32_t k = 0; k < m; ++k) sse = __dadd_rn(sse, part_s[k]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) D.sse[g] = sse;
}

// One block per group, one thread per component: the component's three
// adaptive models (SeqAdaptiveModel, 16 frequencies packed two per word) over
// its symbols; each symbol's magnitude (start, freq) into ops. Then thread 0
// ranks the coded components and sums the group's squared error.
__global__ void SqModelKernel(SqLaunch L) {
  __shared__ uint32_t coded_s[1024];
  __shared__ uint64_t cost_s[1024];
  const uint32_t gid = blockIdx.x;
  const SqDesc& D = L.descs[dense::FindItem(L.descs, L.count, gid, &SqDesc::first_group)];
  const uint32_t g = gid - D.first_group;
  const uint32_t d = L.head_dim, T = D.tokens;
  const uint32_t i = threadIdx.x;
  if (i < d) {
    const int32_t* q = D.q + uint64_t{g} * T * d + i;
    uint32_t* ops = D.ops + uint64_t{g} * T * d + i;
    constexpr uint32_t kInitWord = (((1u << 15) - kSymbols) / kSymbols) * 0x10001u;
    uint32_t m0[8], m1[8], m2[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) m0[j] = m1[j] = m2[j] = kInitWord;
    uint32_t n0 = 0, n1 = 0, n2 = 0;
    int32_t prev = 0;
    bool any = false;
    uint64_t cost = 0;          // the table's cost of each magnitude symbol
    uint32_t uniform_bits = 0;  // escape and sign bits, 1 bit each
    for (uint32_t t = 0; t < T; ++t) {
      const int32_t v = q[uint64_t{t} * d];
      const uint32_t ctx = Context(prev);
      uint32_t w[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) w[j] = ctx == 0 ? m0[j] : ctx == 1 ? m1[j] : m2[j];
      const uint32_t n = ctx == 0 ? n0 : ctx == 1 ? n1 : n2;
      const uint32_t mag = Magnitude(v);
      const uint32_t sym = mag >= kEscape ? kEscape : mag;
      uint32_t start = 0, freq = 0;
#pragma unroll
      for (int k = 0; k < static_cast<int>(kSymbols); ++k) {
        const uint32_t f = Half(w, k) + 1;
        start += static_cast<uint32_t>(k) < sym ? f : 0u;
        freq += static_cast<uint32_t>(k) == sym ? f : 0u;
      }
      ops[uint64_t{t} * d] = start | (freq << 16);
      cost += L.cost_table[freq];
      uniform_bits += UniformOps(mag, true);
      model::Update(w, model::Rate(n), sym);
      const uint32_t next = n + 1 < 256 ? n + 1 : 256;  // the rate stops changing at 256
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        m0[j] = ctx == 0 ? w[j] : m0[j];
        m1[j] = ctx == 1 ? w[j] : m1[j];
        m2[j] = ctx == 2 ? w[j] : m2[j];
      }
      n0 = ctx == 0 ? next : n0;
      n1 = ctx == 1 ? next : n1;
      n2 = ctx == 2 ? next : n2;
      any |= v != 0;
      prev = v;
    }
    coded_s[i] = any ? 1u : 0u;
    cost_s[i] = any ? cost + (uint64_t{uniform_bits} << kCostFracBits) : 0;
  }
  __syncthreads();
  GroupSse(D, g, T, d);
  if (i != 0) return;
  const uint32_t r = RankCoded(coded_s, d, D.rank + uint64_t{g} * d);
  uint64_t cost = 0;  // integers: the same sum in any order (SeqEstimateGroupCost)
  for (uint32_t c = 0; c < d; ++c) cost += cost_s[c];
  D.coded[g] = r;
  const uint32_t lanes = r < kMaxLanes ? r : kMaxLanes;
  cost += (8ull * ((d + 7) / 8 + 1) + 32ull * lanes) << kCostFracBits;
  D.cost[g] = cost;
}

// Lane streams, one block per group, one thread per component: the counts of
// the component's (context, magnitude class) pairs (shared memory, bin-major),
// then their cost under each of the 17 class shifts (the static model's code
// lengths, integers: the block's sums are exact in any order); thread 0 keeps
// the cheapest shift as SeqEstimateLaneGroupCost does (0, -1, +1, -2, ...;
// strictly cheaper wins), ranks the coded components and sums the squared
// error. Then each lane's rANS operations: a component's are one per symbol
// plus its uniform bits (signs, escapes), and lane r % lanes codes the
// component of rank r. The symbols' intervals are the lane kernels' to look
// up (LaneEntry), from q and the group's shift.
// With the signed model (streams=lanes2) the bins are the 31 signed symbols
// (no context), the uniform bits only the escapes', and the rows are signed.
template <bool kSigned>
constexpr uint32_t kBins = kSigned ? seqkv::internal::kSeqSignedSymbols : 3 * kSymbols;  // (context, magnitude class)

template <bool kSigned>
__global__ void SqLaneModelKernel(SqLaunch L) {
  constexpr uint32_t kNumBins = kBins<kSigned>;
  extern __shared__ uint32_t counts_s[];  // [kNumBins][d]
  __shared__ uint32_t coded_s[1024];
  __shared__ unsigned long long shift_cost_s[kShifts];
  __shared__ unsigned long long uniform_s;
  __shared__ uint32_t lanes_s;
  __shared__ uint32_t lane_ops_s[kMaxLaneLanes];
  const uint32_t gid = blockIdx.x;
  const SqDesc& D = L.descs[dense::FindItem(L.descs, L.count, gid, &SqDesc::first_group)];
  const uint32_t g = gid - D.first_group;
  const uint32_t d = L.head_dim, T = D.tokens;
  const uint32_t i = threadIdx.x;
  if (i < kShifts) shift_cost_s[i] = 0;
  if (i < kMaxLaneLanes) lane_ops_s[i] = 0;
  if (i == 0) uniform_s = 0;
  __syncthreads();
  const int k = i < d ? seqkv::internal::SeqLaneClass(L.static_scale[uint64_t{g} * d + i], D.step_class, L.mult_code[g])
                      : 0;
  const int32_t* q = D.q + uint64_t{g} * T * d + i;
  uint32_t uniform_bits = 0;
  if (i < d) {
    for (uint32_t b = 0; b < kNumBins; ++b) counts_s[b * d + i] = 0;
    int32_t prev = 0;
    uint32_t any = 0;  // the OR of the component's symbols
    auto count = [&](int32_t v) {
      const uint32_t mag = Magnitude(v);
      const uint32_t bin = kSigned ? static_cast<uint32_t>(seqkv::internal::SeqSignedSymbol(v))
                                   : Context(prev) * kSymbols + (mag >= kEscape ? kEscape : mag);
      ++counts_s[bin * d + i];
      uniform_bits += UniformOps(mag, !kSigned);
      any |= static_cast<uint32_t>(v);
      prev = v;
    };
    // kBatch tokens' symbols loaded before any is counted: the counts' shared
    // stores would otherwise hold each load back until the last count is done.
    // Whole batches take 32-bit offsets from the batch's first row.
    constexpr uint32_t kBatch = 16;
    uint32_t t0 = 0;
    for (; t0 + kBatch <= T; t0 += kBatch) {
      const int32_t* rows = q + uint64_t{t0} * d;
      int32_t batch[kBatch];
#pragma unroll
      for (uint32_t u = 0; u < kBatch; ++u) batch[u] = __ldg(rows + u * d);
#pragma unroll
      for (uint32_t u = 0; u < kBatch; ++u) count(batch[u]);
    }
    for (; t0 < T; ++t0) count(__ldg(q + uint64_t{t0} * d));
    coded_s[i] = any != 0 ? 1u : 0u;
  }
  // Per shift the coded components' code length (SeqEstimateLaneGroupCost
  // counts only those): per thread, then summed over the warp by shuffles and
  // added once per warp (64-bit shared atomics are compare-and-swap loops).
  unsigned long long cost[kShifts];
#pragma unroll
  for (uint32_t s = 0; s < kShifts; ++s) cost[s] = 0;
  unsigned long long uniform = 0;
  if (i < d && coded_s[i]) {
    for (uint32_t b = 0; b < kNumBins; ++b) {
      const uint32_t n = counts_s[b * d + i];  // this thread's own counts: no barrier needed
      if (n == 0) continue;
#pragma unroll
      for (uint32_t s = 0; s < kShifts; ++s) {
        const uint32_t table = static_cast<uint32_t>(seqkv::internal::SeqLaneTable(k, static_cast<int>(s) - kMaxShift));
        cost[s] += static_cast<unsigned long long>(n) * __ldg(L.static_cost + table * kNumBins + b);
      }
    }
    uniform = uniform_bits;
  }
#pragma unroll
  for (uint32_t s = 0; s < kShifts; ++s) {
    for (int o = 16; o > 0; o /= 2) cost[s] += __shfl_down_sync(0xFFFFFFFFu, cost[s], o);
  }
  for (int o = 16; o > 0; o /= 2) uniform += __shfl_down_sync(0xFFFFFFFFu, uniform, o);
  if (i % 32 == 0) {
#pragma unroll
    for (uint32_t s = 0; s < kShifts; ++s) atomicAdd(&shift_cost_s[s], cost[s]);
    atomicAdd(&uniform_s, uniform);
  }
  __syncthreads();
  if (i == 0) {
    const uint32_t r = RankCoded(coded_s, d, D.rank + uint64_t{g} * d);
    D.coded[g] = r;
    // Split lane streams have no lane byte (SeqEstimateLaneGroupCost's header).
    uint64_t cost = (8ull * ((d + 7) / 8 + (L.split ? 0 : 1))) << kCostFracBits;
    int best_shift = 0;
    const uint32_t lanes = GroupLanes(L, r, kMaxLaneLanes);
    if (r > 0) {
      unsigned long long best = ~0ull;
      for (int step = 0; step <= 2 * kMaxShift; ++step) {
        const int sh = (step % 2 == 1) ? -(step + 1) / 2 : step / 2;
        const unsigned long long c = shift_cost_s[sh + kMaxShift];
        if (c < best) {
          best = c;
          best_shift = sh;
        }
      }
      cost += ((8ull + 32ull * lanes + uniform_s) << kCostFracBits) + best;
      if (L.split) {  // the word counts, as the CPU's estimate prices them
        cost += seqkv::internal::SeqSplitCountBits((best >> kCostFracBits) + uniform_s, lanes) << kCostFracBits;
      }
    }
    D.cost[g] = cost;
    D.shift[g] = static_cast<int8_t>(best_shift);
    lanes_s = lanes;
  }
  GroupSse(D, g, T, d);
  __syncthreads();  // thread 0's ranks (global memory) before the reads below
  if (i < d && coded_s[i]) {
    const uint32_t r = static_cast<uint32_t>(D.rank[uint64_t{g} * d + i]);
    atomicAdd(&lane_ops_s[L.split ? i % lanes_s : r % lanes_s], T + uniform_bits);
  }
  __syncthreads();
  if (i < kMaxLaneLanes) D.lane_ops[uint64_t{g} * kSqLaneSlots + i] = lane_ops_s[i];
}

// Lane streams: the entry (SqLaunch::static_entry: start | freq << 16, then
// the reciprocal of freq, low and high words) of symbol v of a component
// coded with static table `table` (prev: the component's previous symbol, the
// magnitude model's context), as the model kernel's shift chose.
template <bool kSigned>
__device__ __forceinline__ uint4 LaneEntry(const SqLaunch& L, uint32_t table, int32_t v, int32_t prev) {
  uint32_t at;
  if (kSigned) {
    at = table * seqkv::internal::kSeqSignedRowStride + static_cast<uint32_t>(seqkv::internal::SeqSignedSymbol(v));
  } else {
    const uint32_t mag = Magnitude(v);
    at = (table * 3 + Context(prev)) * seqkv::internal::kSeqLaneRowStride + (mag >= kEscape ? kEscape : mag);
  }
  return __ldg(reinterpret_cast<const uint4*>(L.static_entry) + at);
}
// The interval alone (start | freq << 16), the model chosen at run time.
__device__ __forceinline__ uint32_t LaneInterval(const SqLaunch& L, uint32_t table, int32_t v, int32_t prev) {
  return L.signed_lanes ? LaneEntry<true>(L, table, v, prev).x : LaneEntry<false>(L, table, v, prev).x;
}

// Lane streams: the static table of each of a group's components under the group's shift.
__device__ __forceinline__ uint32_t LaneTableOf(const SqLaunch& L, const SqDesc& D, uint32_t g, uint32_t i) {
  const int k = seqkv::internal::SeqLaneClass(L.static_scale[uint64_t{g} * L.head_dim + i], D.step_class,
                                              L.mult_code[g]);
  return static_cast<uint32_t>(seqkv::internal::SeqLaneTable(k, D.shift[g]));
}

// rANS encode step: a word (the state's low half) leaves first when the state
// would overflow; then the state takes the symbol's interval.
__device__ __forceinline__ bool RansEmits(uint32_t x, uint32_t freq) {
  return uint64_t{x} >= (uint64_t{freq} << (32 - kScaleBits));
}
__device__ __forceinline__ uint32_t RansPut(uint32_t x, uint32_t start, uint32_t freq) {
  return ((x / freq) << kScaleBits) + (x % freq) + start;
}

template <bool kWrite>
struct LaneCoder {
  uint32_t x = kLow;
  uint32_t words = 0;
  uint16_t* out_words;
  uint32_t* out_keys;
  __device__ __forceinline__ void Put(uint32_t start, uint32_t freq, uint32_t key) {
    if (RansEmits(x, freq)) {
      if (kWrite) {
        out_words[words] = static_cast<uint16_t>(x);
        out_keys[words] = key;
      }
      ++words;
      x >>= 16;
    }
    x = RansPut(x, start, freq);
  }
};

constexpr uint32_t kLaneThreads = 128;  // 16 groups x 8 lanes (lane streams: 8 x 16) per block

// Lane streams whose lanes take at most kMergeSegments * 32 operations are
// merged through bitmasks (seq_lane_merge.h): 16 KB of shared memory per block.
constexpr uint32_t kMergeThreads = 256;
constexpr uint32_t kMergeSegments = 256;
static_assert(kMergeSegments <= kMergeThreads, "a thread per segment");
static_assert(kSqMergeLanes == kMaxLaneLanes, "one mask word per lane and segment");

// Where a lane-stream group's lanes put their words and operation masks in
// one pass (SqLaneWriteKernel), when they fit: lane l's words end at
// `end[l]`, the sum of the lanes' operation counts up to l, each rounded up
// to 8 words (a word per operation at most), in the group's symbol-interval
// memory (D.ops: 4 bytes per element, unused by lane streams), written
// backwards from the end in 16-byte stores; the masks ([segment][16], one
// bit per operation that emits a word, seq_lane_merge.h) in its key arena.
// Groups that do not fit (lanes over kMergeSegments * 32 operations, or more
// operations than 2 words per element, as many escapes or signs may make)
// take the two passes below: count the words, then write them with their keys.
constexpr uint32_t kMaxFitDim = 256;  // SqLaneWriteKernel's instances: d / 16 + 1 <= 17 components per lane
struct LaneFit {
  bool fits;
  uint32_t segments;  // of 32 operations, for the longest lane
};
// A lane's part of the word memory: its operations rounded up to 8 words.
__device__ __forceinline__ uint32_t LaneSlotWords(uint32_t ops) { return (ops + 7u) & ~7u; }
// Where lane `lane`'s words end: the parts of lanes 0 .. lane.
__device__ __forceinline__ uint32_t LaneWordsEnd(const SqDesc& D, uint32_t g, uint32_t lane) {
  uint32_t end = 0;
  for (uint32_t l = 0; l <= lane; ++l) end += LaneSlotWords(D.lane_ops[uint64_t{g} * kSqLaneSlots + l]);
  return end;
}
__device__ __forceinline__ LaneFit LaneStreamFit(const SqDesc& D, uint32_t g, uint32_t d, uint32_t lanes) {
  const uint32_t* ops = D.lane_ops + uint64_t{g} * kSqLaneSlots;
  uint64_t total = 0;
  uint32_t longest = 0;
  for (uint32_t l = 0; l < lanes; ++l) {
    total += LaneSlotWords(ops[l]);
    longest = ops[l] > longest ? ops[l] : longest;
  }
  const uint32_t segments = (longest + 31) / 32;
  const bool fits = d % 4 == 0 && d <= kMaxFitDim && segments <= kMergeSegments &&
                    uint64_t{segments} * kSqMergeLanes <= D.arena_cap && total <= 2ull * D.tokens * d;
  return {fits, segments};
}

// The (group, lane) of a lane kernel's thread, `slots` threads per group:
// its item, the group within it, the group's lane count; false past the
// last group.
struct LaneThread {
  const SqDesc* D;
  uint32_t g, lane, lanes;
};
__device__ __forceinline__ bool LaneThreadOf(const SqLaunch& L, uint32_t slots, LaneThread* at) {
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t gid = tid / slots;
  at->lane = tid % slots;
  if (gid >= L.total_groups) return false;
  at->D = &L.descs[dense::FindItem(L.descs, L.count, gid, &SqDesc::first_group)];
  at->g = gid - at->D->first_group;
  at->lanes = GroupLanes(L, at->D->coded[at->g], slots);
  return true;
}

// The components lane `lane` of group g codes (rank % lanes == lane; split
// lane streams: i % lanes == lane), ascending, into list (i | table << 16,
// the table lane streams' only); returns how many.
__device__ __forceinline__ uint32_t LaneComponents(const SqLaunch& L, const SqDesc& D, uint32_t g, uint32_t d,
                                                   uint32_t lane, uint32_t lanes, bool lane_streams, uint32_t* list) {
  uint32_t n = 0;
  const int16_t* rank = D.rank + uint64_t{g} * d;
  for (uint32_t i = 0; i < d; ++i) {
    const int32_t r = rank[i];
    if (r >= 0 && (L.split ? i : static_cast<uint32_t>(r)) % lanes == lane) {
      list[n++] = i | (lane_streams ? LaneTableOf(L, D, g, i) << 16 : 0u);
    }
  }
  return n;
}

// One thread per (group, lane), lane-stream groups that LaneStreamFit: the
// lane's symbols backwards through the rANS coder, its words buffered eight
// at a time in registers and stored 16 bytes at a time at the end of its part
// of the group's word memory, its operation masks a word per 32 operations;
// then its word count and final state. (The decoder reads the lane's words in
// the reverse order of emission: they end up ascending in memory.) A lane
// codes at most kMaxN = d / 16 + 1 components; it loads the symbols of the
// two tokens before the one it codes ahead, into registers (the launch bounds
// keep that at 64 registers for d <= 64 and 72 for d <= 128: 8 and 7 blocks
// per SM), and divides by each interval's reciprocal (SqLaunch::static_entry).
template <bool kSigned, uint32_t kMaxN>
__global__ void __launch_bounds__(kLaneThreads, kMaxN <= 5 ? 8 : kMaxN <= 9 ? 7 : 1) SqLaneWriteKernel(SqLaunch L) {
  extern __shared__ uint32_t fit_list_s[];  // per thread: its components (i | table << 16), ascending rank
  LaneThread th;
  if (!LaneThreadOf(L, kMaxLaneLanes, &th)) return;
  const SqDesc& D = *th.D;
  const uint32_t g = th.g, lane = th.lane, lanes = th.lanes;
  const uint32_t d = L.head_dim, T = D.tokens;
  if (lane >= lanes) return;
  const LaneFit fit = LaneStreamFit(D, g, d, lanes);
  if (!fit.fits) return;
  uint32_t* list = fit_list_s + threadIdx.x * (d / kMaxLaneLanes + 1);
  const uint32_t n = LaneComponents(L, D, g, d, lane, lanes, true, list);
  if (n == 0) {  // a split stream's lane without coded components: no operations, no words
    D.lane_words[uint64_t{g} * kSqLaneSlots + lane] = 0;
    D.lane_states[uint64_t{g} * kSqLaneSlots + lane] = kLow;
    return;
  }
  const uint32_t end = LaneWordsEnd(D, g, lane);
  uint16_t* words = reinterpret_cast<uint16_t*>(D.ops + uint64_t{g} * T * d);
  uint32_t* masks = D.arena_keys + uint64_t{g} * D.arena_cap;
  uint32_t op = D.lane_ops[uint64_t{g} * kSqLaneSlots + lane];  // >= T: the lane codes at least one component
  for (uint32_t s = (op + 31) / 32; s < fit.segments; ++s) masks[s * kSqMergeLanes + lane] = 0;
  uint32_t seg = (op - 1) / 32, mask = 0;
  uint32_t x = kLow, emitted = 0, at = end;
  uint32_t b0 = 0, b1 = 0, b2 = 0, b3 = 0;  // the last words, the latest in b0's low half
  // An operation's mask bit and word, if the state must shed one first.
  auto emit = [&](uint32_t freq) {
    --op;
    if (op / 32 != seg) {
      masks[seg * kSqMergeLanes + lane] = mask;
      mask = 0;
      seg = op / 32;
    }
    if (RansEmits(x, freq)) {
      mask |= 1u << (op % 32);
      b3 = __funnelshift_l(b2, b3, 16);
      b2 = __funnelshift_l(b1, b2, 16);
      b1 = __funnelshift_l(b0, b1, 16);
      b0 = (b0 << 16) | (x & 0xFFFFu);
      if (++emitted % 8 == 0) {
        at -= 8;
        *reinterpret_cast<uint4*>(words + at) = make_uint4(b0, b1, b2, b3);
      }
      x >>= 16;
    }
  };
  auto put = [&](uint32_t start, uint32_t freq) {  // the uniform bits (freq kHalf: a shift)
    emit(freq);
    x = RansPut(x, start, freq);
  };
  // RansPut without its division: the quotient from the entry's reciprocal.
  auto put_entry = [&](const uint4 e) {
    const uint32_t start = e.x & 0xFFFFu, freq = e.x >> 16;
    emit(freq);
    x = seqkv::internal::SeqRansPutByReciprocal(x, start, freq, uint64_t{e.z} << 32 | e.y);
  };
  const int32_t* q = D.q + uint64_t{g} * T * d;
  int32_t cur[kMaxN], next[kMaxN], later[kMaxN];  // the symbols of tokens t, t - 1 (the context of t's), t - 2
  auto load = [&](uint32_t t, int32_t (&to)[kMaxN]) {
#pragma unroll
    for (uint32_t e = 0; e < kMaxN; ++e) to[e] = e < n ? __ldg(q + uint64_t{t} * d + (list[e] & 0xFFFFu)) : 0;
  };
  load(T - 1, cur);
  if (T > 1) load(T - 2, next);
  for (uint32_t t = T; t-- > 0;) {
    if (t > 1) load(t - 2, later);
#pragma unroll
    for (uint32_t e = kMaxN; e-- > 0;) {
      if (e >= n) continue;
      const int32_t v = cur[e];
      PutUniformOps(v, !kSigned, [&](uint32_t start, uint32_t) { put(start, kHalf); });
      put_entry(LaneEntry<kSigned>(L, list[e] >> 16, v, !kSigned && t > 0 ? next[e] : 0));
    }
#pragma unroll
    for (uint32_t e = 0; e < kMaxN; ++e) {
      cur[e] = next[e];
      next[e] = later[e];
    }
  }
  masks[seg * kSqMergeLanes + lane] = mask;
  // The last emitted % 8 words: offset o of the buffer goes to at - r + o.
  const uint32_t r = emitted % 8;
  for (uint32_t o = 0; o < r; ++o) {
    words[at - r + o] = static_cast<uint16_t>(b0);
    b0 = __funnelshift_r(b0, b1, 16);
    b1 = __funnelshift_r(b1, b2, 16);
    b2 = __funnelshift_r(b2, b3, 16);
    b3 >>= 16;
  }
  D.lane_words[uint64_t{g} * kSqLaneSlots + lane] = emitted;
  D.lane_states[uint64_t{g} * kSqLaneSlots + lane] = x;
}

// One thread per (group, lane): the lane's symbols backwards through the rANS
// coder. kWrite = false counts the words and keeps the final state; true
// writes the words and their keys to the lane's part of the group's arena. A
// word's key orders it in the stream: adaptive streams by the symbol that
// emitted it ((t * d + i) * 64 + operation), lane streams by the decoder's
// step and lane (operation index * 16 + lane). Lane-stream groups that
// LaneStreamFit are SqLaneWriteKernel's.
template <bool kWrite, bool kLanes>
__global__ void __launch_bounds__(kLaneThreads) SqLaneKernel(SqLaunch L) {
  constexpr uint32_t kSlots = kLanes ? kMaxLaneLanes : kMaxLanes;
  extern __shared__ uint32_t list_s[];  // per thread: its components (lane streams: i | table << 16), ascending rank
  LaneThread th;
  if (!LaneThreadOf(L, kSlots, &th)) return;
  const SqDesc& D = *th.D;
  const uint32_t g = th.g, lane = th.lane, lanes = th.lanes;
  const uint32_t d = L.head_dim, T = D.tokens;
  uint32_t* lane_words = D.lane_words + uint64_t{g} * kSqLaneSlots;
  if (lane >= lanes) {
    if (!kWrite) lane_words[lane] = 0;
    return;
  }
  if (kLanes && LaneStreamFit(D, g, d, lanes).fits) return;
  if (kWrite && L.statuses[D.status_index] != 0) return;
  uint32_t* list = list_s + threadIdx.x * (d / kSlots + 1);
  const uint32_t n = LaneComponents(L, D, g, d, lane, lanes, kLanes, list);
  LaneCoder<kWrite> coder;
  if (kWrite) {
    uint64_t at = uint64_t{g} * D.arena_cap;
    for (uint32_t l = 0; l < lane; ++l) at += lane_words[l];
    coder.out_words = D.arena_words + at;
    coder.out_keys = D.arena_keys + at;
  }
  // Lane streams: the operations left, counted down as they are coded.
  uint32_t op = kWrite && kLanes ? D.lane_ops[uint64_t{g} * kSqLaneSlots + lane] : 0;
  auto key_of = [&](uint32_t symbol_key) -> uint32_t {
    if (!kLanes) return symbol_key;
    if (kWrite) --op; else ++op;
    return op * kSlots + lane;
  };
  const int32_t* q = D.q + uint64_t{g} * T * d;
  const uint32_t* ops = D.ops + uint64_t{g} * T * d;
  const bool sign_op = !(kLanes && L.signed_lanes);  // the signed model has the sign in its symbols
  for (uint32_t t = T; t-- > 0;) {
    for (uint32_t e = n; e-- > 0;) {
      const uint32_t i = list[e] & 0xFFFFu;
      const uint64_t idx = uint64_t{t} * d + i;
      const int32_t v = q[idx];
      const uint32_t key = static_cast<uint32_t>(idx) << 6;
      PutUniformOps(v, sign_op, [&](uint32_t start, uint32_t sub) { coder.Put(start, kHalf, key_of(key + sub)); });
      const uint32_t sym_op = kLanes ? LaneInterval(L, list[e] >> 16, v, t > 0 ? q[idx - d] : 0) : ops[idx];
      coder.Put(sym_op & 0xFFFFu, sym_op >> 16, key_of(key));
    }
  }
  if (!kWrite) {
    lane_words[lane] = coder.words;
    D.lane_states[uint64_t{g} * kSqLaneSlots + lane] = coder.x;
  }
}

__device__ __forceinline__ void PutU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

// Bitmap, lane byte, (lane streams with lanes: the shift byte), the states.
__device__ __forceinline__ uint32_t StreamHeader(uint32_t d, uint32_t lanes, bool lane_streams) {
  return (d + 7) / 8 + 1 + (lane_streams && lanes > 0 ? 1 : 0) + 4 * lanes;
}

// Bytes of a LEB128 value.
__device__ __forceinline__ uint32_t Leb128Bytes(uint32_t v) {
  uint32_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}
// A split lane stream's header: bitmap, then with lanes the shift byte, the
// states and the word counts of every lane but the last.
__device__ __forceinline__ uint32_t SplitHeader(const SqDesc& D, uint32_t g, uint32_t d, uint32_t lanes) {
  uint32_t bytes = (d + 7) / 8;
  if (lanes == 0) return bytes;
  bytes += 1 + 4 * lanes;
  for (uint32_t l = 0; l + 1 < lanes; ++l) bytes += Leb128Bytes(D.lane_words[uint64_t{g} * kSqLaneSlots + l]);
  return bytes;
}

// One block per item: each group stream's size (an item with a stream over
// the limit fails: kSqOverflow), then section l = u32 n (2H), n x u32 stream
// length, the streams; where each stream goes. (Groups, then layers, a
// thread each; a layer's start sums the sizes of the layers before it.)
constexpr uint32_t kSectionThreads = 256;
__global__ void __launch_bounds__(kSectionThreads) SqSectionKernel(SqLaunch L) {
  __shared__ int over_s;
  const SqDesc& D = L.descs[blockIdx.x];
  const uint32_t d = L.head_dim, n = 2 * L.heads;
  const uint64_t limit =
      SqMaxHeaderBytes(d, L.split ? kSqSplitHeader : L.lanes ? kSqLaneHeader : kSqAdaptiveHeader) + 2ull * D.tokens * d;
  const uint32_t groups = L.layers * n;
  const uint32_t max_lanes = L.lanes ? kMaxLaneLanes : kMaxLanes;
  if (threadIdx.x == 0) over_s = 0;
  __syncthreads();
  for (uint32_t g = threadIdx.x; g < groups; g += blockDim.x) {
    const uint32_t lanes = GroupLanes(L, D.coded[g], max_lanes);
    uint64_t bytes = L.split ? SplitHeader(D, g, d, lanes) : StreamHeader(d, lanes, L.lanes);
    for (uint32_t l = 0; l < lanes; ++l) bytes += 2ull * D.lane_words[uint64_t{g} * kSqLaneSlots + l];
    if (bytes > limit) over_s = 1;
    D.stream_bytes[g] = static_cast<uint32_t>(bytes);
  }
  __syncthreads();
  if (over_s) {
    if (threadIdx.x == 0) atomicCAS(&L.statuses[D.status_index], 0, kSqOverflow);
    return;
  }
  for (uint32_t l = threadIdx.x; l < L.layers; l += blockDim.x) {
    uint64_t bytes = 4ull + 4ull * n;
    for (uint32_t k = 0; k < n; ++k) bytes += D.stream_bytes[l * n + k];
    D.section_bytes[l] = bytes;
  }
  __syncthreads();
  for (uint32_t l = threadIdx.x; l < L.layers; l += blockDim.x) {
    uint64_t at = 0;
    for (uint32_t k = 0; k < l; ++k) at += D.section_bytes[k];
    PutU32(D.out + at, n);
    at += 4;
    for (uint32_t k = 0; k < n; ++k) PutU32(D.out + at + 4 * k, D.stream_bytes[l * n + k]);
    at += 4ull * n;
    for (uint32_t k = 0; k < n; ++k) {
      D.dst[l * n + k] = at;
      at += D.stream_bytes[l * n + k];
    }
  }
}

// How many of a lane's keys (descending) are below `key`.
__device__ __forceinline__ uint32_t CountBelow(const uint32_t* keys, uint32_t n, uint32_t key) {
  uint32_t lo = 0, hi = n;  // the first index whose key is below `key`
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (keys[mid] < key) hi = mid; else lo = mid + 1;
  }
  return n - lo;
}

// The merge's words before each segment of 32 operations, every lane's
// (seg_s[s], exclusive; a thread per segment: a scan per warp, then over the
// warps). Called by every thread of the block, after the masks are in place.
__device__ __forceinline__ void MaskPrefixes(const uint32_t* mask_s, uint32_t* seg_s, uint32_t* warp_s,
                                             uint32_t segments, uint32_t lanes) {
  const uint32_t s = threadIdx.x;
  uint32_t count = 0;
  if (s < segments) {
    for (uint32_t o = 0; o < lanes; ++o) count += SqPopc(mask_s[s * kSqMergeLanes + o]);
  }
  uint32_t incl = count;
  for (uint32_t o = 1; o < 32; o *= 2) {
    const uint32_t v = __shfl_up_sync(0xFFFFFFFFu, incl, o);
    if (threadIdx.x % 32 >= o) incl += v;
  }
  if (threadIdx.x % 32 == 31) warp_s[threadIdx.x / 32] = incl;
  __syncthreads();
  uint32_t before = incl - count;
  for (uint32_t w = 0; w < threadIdx.x / 32; ++w) before += warp_s[w];
  if (s < segments) seg_s[s] = before;
}

// Word w of a group stream at rank r of its body (little-endian; the body need not be aligned).
__device__ __forceinline__ void PutWord(uint8_t* body, uint32_t r, uint16_t w) {
  body[2ull * r] = static_cast<uint8_t>(w);
  body[2ull * r + 1] = static_cast<uint8_t>(w >> 8);
}

// One block per group: the stream at its place in the item's output. Header
// (bitmap, lane count, final states), then every word at its key's rank:
// lane streams through the operation bitmasks, adaptive streams (and lanes
// of more operations than the masks hold) by counting each other lane's
// smaller keys with a binary search.
__global__ void __launch_bounds__(kMergeThreads) SqMergeKernel(SqLaunch L) {
  __shared__ uint32_t mask_s[kMergeSegments * kSqMergeLanes];
  __shared__ uint32_t seg_s[kMergeSegments];
  __shared__ uint32_t warp_s[kMergeThreads / 32];
  __shared__ uint16_t lane_before_s[kMergeSegments * kSqMergeLanes];
  __shared__ uint32_t first_s[kSqMergeLanes];
  const uint32_t gid = blockIdx.x;
  const SqDesc& D = L.descs[dense::FindItem(L.descs, L.count, gid, &SqDesc::first_group)];
  if (L.statuses[D.status_index] != 0) return;
  const uint32_t g = gid - D.first_group;
  const uint32_t d = L.head_dim;
  const uint32_t max_lanes = L.lanes ? kMaxLaneLanes : kMaxLanes;
  const uint32_t lanes = GroupLanes(L, D.coded[g], max_lanes);
  uint8_t* out = D.out + D.dst[g];
  const int16_t* rank = D.rank + uint64_t{g} * d;
  const uint32_t bitmap_bytes = (d + 7) / 8;
  for (uint32_t b = threadIdx.x; b < bitmap_bytes; b += blockDim.x) {
    uint32_t byte = 0;
    for (uint32_t k = 0; k < 8 && b * 8 + k < d; ++k) byte |= (rank[b * 8 + k] >= 0 ? 1u : 0u) << k;
    out[b] = static_cast<uint8_t>(byte);
  }
  const uint32_t* words_of = D.lane_words + uint64_t{g} * kSqLaneSlots;
  if (L.split) {  // shift, states, word counts, then each lane's words in turn: no merge
    if (lanes == 0) return;
    __shared__ uint32_t split_at_s[kSqLaneSlots + 1];  // the lanes' runs' word offsets, the body's byte offset
    if (threadIdx.x == 0) {
      out[bitmap_bytes] = static_cast<uint8_t>(D.shift[g]);
      uint32_t at = bitmap_bytes + 1 + 4 * lanes, words = 0;
      for (uint32_t l = 0; l < lanes; ++l) {
        split_at_s[l] = words;
        words += words_of[l];
        if (l + 1 == lanes) break;
        for (uint32_t v = words_of[l];; v >>= 7) {  // LEB128
          out[at++] = static_cast<uint8_t>(v < 0x80 ? v : 0x80 | (v & 0x7F));
          if (v < 0x80) break;
        }
      }
      split_at_s[kSqLaneSlots] = at;
    }
    if (threadIdx.x < lanes) {
      PutU32(out + bitmap_bytes + 1 + 4 * threadIdx.x, D.lane_states[uint64_t{g} * kSqLaneSlots + threadIdx.x]);
    }
    __syncthreads();
    uint8_t* body = out + split_at_s[kSqLaneSlots];
    if (LaneStreamFit(D, g, d, lanes).fits) {  // SqLaneWriteKernel's words, ascending: decode order
      const uint16_t* words = reinterpret_cast<const uint16_t*>(D.ops + uint64_t{g} * D.tokens * d);
      for (uint32_t l = 0; l < lanes; ++l) {
        const uint32_t first = LaneWordsEnd(D, g, l) - words_of[l];
        for (uint32_t p = threadIdx.x; p < words_of[l]; p += blockDim.x) {
          PutWord(body, split_at_s[l] + p, words[first + p]);
        }
      }
    } else {  // SqLaneKernel's, in the order the coder emitted them: backwards
      uint64_t at = uint64_t{g} * D.arena_cap;
      for (uint32_t l = 0; l < lanes; ++l) {
        const uint32_t n = words_of[l];
        for (uint32_t p = threadIdx.x; p < n; p += blockDim.x) {
          PutWord(body, split_at_s[l] + n - 1 - p, D.arena_words[at + p]);
        }
        at += n;
      }
    }
    return;
  }
  const uint32_t shift_bytes = L.lanes && lanes > 0 ? 1 : 0;
  if (threadIdx.x == 0) out[bitmap_bytes] = static_cast<uint8_t>(lanes);
  if (threadIdx.x == 0 && shift_bytes) out[bitmap_bytes + 1] = static_cast<uint8_t>(D.shift[g]);
  if (threadIdx.x < lanes) {
    PutU32(out + bitmap_bytes + 1 + shift_bytes + 4 * threadIdx.x,
           D.lane_states[uint64_t{g} * kSqLaneSlots + threadIdx.x]);
  }
  uint8_t* body = out + StreamHeader(d, lanes, L.lanes);
  const LaneFit fit = L.lanes ? LaneStreamFit(D, g, d, lanes) : LaneFit{false, 0};
  if (fit.fits) {  // SqLaneWriteKernel's masks and words; every thread takes this branch or none
    const uint32_t segments = fit.segments;
    const uint32_t* masks = D.arena_keys + uint64_t{g} * D.arena_cap;
    for (uint32_t k = threadIdx.x; k < segments * kSqMergeLanes; k += blockDim.x) {
      mask_s[k] = k % kSqMergeLanes < lanes ? masks[k] : 0u;
    }
    if (threadIdx.x < lanes) {  // where lane l's words begin (ascending: decode order)
      first_s[threadIdx.x] = LaneWordsEnd(D, g, threadIdx.x) - words_of[threadIdx.x];
    }
    __syncthreads();
    MaskPrefixes(mask_s, seg_s, warp_s, segments, lanes);
    if (threadIdx.x < lanes) {  // each lane's words before each segment
      uint32_t c = 0;
      for (uint32_t s = 0; s < segments; ++s) {
        lane_before_s[s * kSqMergeLanes + threadIdx.x] = static_cast<uint16_t>(c);
        c += SqPopc(mask_s[s * kSqMergeLanes + threadIdx.x]);
      }
    }
    __syncthreads();
    const uint16_t* words = reinterpret_cast<const uint16_t*>(D.ops + uint64_t{g} * D.tokens * d);
    for (uint32_t k = threadIdx.x; k < segments * lanes; k += blockDim.x) {
      const uint32_t s = k / lanes, l = k % lanes;
      uint32_t m = mask_s[s * kSqMergeLanes + l];
      uint32_t j = first_s[l] + lane_before_s[s * kSqMergeLanes + l];
      while (m != 0) {
        const uint32_t b = static_cast<uint32_t>(__ffs(m)) - 1;
        const uint32_t r = SqLaneWordRank(mask_s, seg_s, lanes, l, s * 32 + b);
        PutWord(body, r, words[j++]);
        m &= m - 1;
      }
    }
    return;
  }
  uint64_t lane_at[kSqLaneSlots];
  uint64_t at = uint64_t{g} * D.arena_cap;
  uint32_t max_ops = 0;
  for (uint32_t l = 0; l < lanes; ++l) {
    lane_at[l] = at;
    at += words_of[l];
    if (L.lanes) {
      const uint32_t ops = D.lane_ops[uint64_t{g} * kSqLaneSlots + l];
      max_ops = ops > max_ops ? ops : max_ops;
    }
  }
  const uint32_t segments = (max_ops + 31) / 32;
  if (L.lanes && segments <= kMergeSegments) {  // every thread takes this branch or none
    for (uint32_t k = threadIdx.x; k < segments * kSqMergeLanes; k += blockDim.x) mask_s[k] = 0;
    __syncthreads();
    for (uint32_t l = 0; l < lanes; ++l) {
      for (uint32_t p = threadIdx.x; p < words_of[l]; p += blockDim.x) {
        const uint32_t op = D.arena_keys[lane_at[l] + p] / kMaxLaneLanes;
        atomicOr(&mask_s[(op / 32) * kSqMergeLanes + l], 1u << (op % 32));
      }
    }
    __syncthreads();
    MaskPrefixes(mask_s, seg_s, warp_s, segments, lanes);
    __syncthreads();
    for (uint32_t l = 0; l < lanes; ++l) {
      for (uint32_t p = threadIdx.x; p < words_of[l]; p += blockDim.x) {
        const uint32_t op = D.arena_keys[lane_at[l] + p] / kMaxLaneLanes;
        const uint32_t r = SqLaneWordRank(mask_s, seg_s, lanes, l, op);
        PutWord(body, r, D.arena_words[lane_at[l] + p]);
      }
    }
    return;
  }
  for (uint32_t l = 0; l < lanes; ++l) {
    const uint32_t nl = words_of[l];
    for (uint32_t p = threadIdx.x; p < nl; p += blockDim.x) {
      const uint32_t key = D.arena_keys[lane_at[l] + p];
      uint32_t r = nl - 1 - p;  // this lane's later words have smaller keys
      for (uint32_t o = 0; o < lanes; ++o) {
        if (o != l) r += CountBelow(D.arena_keys + lane_at[o], words_of[o], key);
      }
      PutWord(body, r, D.arena_words[lane_at[l] + p]);
    }
  }
}

}  // namespace

cudaError_t LaunchSqLayer(const SqLaunch& launch, uint32_t layer, cudaStream_t stream) {
  if (launch.total_ctas == 0) return cudaSuccess;
  if (launch.int12) {
    const uint32_t d = launch.head_dim;
    if (!Int12Fits(d, launch.features) || launch.u_i8 == nullptr || launch.v_i8 == nullptr ||
        launch.fixed_exp == nullptr || (launch.features > 1 && launch.w_i8 == nullptr)) {
      return cudaErrorInvalidValue;
    }
    return d == 64 ? LaunchSqI12Layer<64>(launch, layer, stream) : LaunchSqI12Layer<128>(launch, layer, stream);
  }
  const uint32_t threads = (launch.head_dim + 31) / 32 * 32;
  const size_t smem = sizeof(float) * (TT * FC + 2 * TT * launch.head_dim + launch.head_dim);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(SqLayerKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  SqLayerKernel<<<launch.total_ctas, threads, smem, stream>>>(launch, layer);
  return cudaGetLastError();
}

cudaError_t LaunchSqModels(const SqLaunch& launch, cudaStream_t stream) {
  if (launch.total_groups == 0) return cudaSuccess;
  const uint32_t threads = (launch.head_dim + 31) / 32 * 32;
  if (launch.lanes) {
    const uint32_t smem = (launch.signed_lanes ? kBins<true> : kBins<false>) * launch.head_dim * sizeof(uint32_t);
    const auto kernel = launch.signed_lanes ? SqLaneModelKernel<true> : SqLaneModelKernel<false>;
    if (smem > 48 * 1024) {
      const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (e != cudaSuccess) return e;
    }
    kernel<<<launch.total_groups, threads, smem, stream>>>(launch);
  } else {
    SqModelKernel<<<launch.total_groups, threads, 0, stream>>>(launch);
  }
  return cudaGetLastError();
}

namespace {

template <uint32_t kMaxN>
void LaunchLaneWrite(const SqLaunch& launch, uint32_t blocks, size_t smem, cudaStream_t stream) {
  static_assert(kMaxN == 5 || kMaxN == 9 || kMaxN == 17, "d / 16 + 1 for d up to 64, 128, kMaxFitDim");
  if (launch.signed_lanes) {
    SqLaneWriteKernel<true, kMaxN><<<blocks, kLaneThreads, smem, stream>>>(launch);
  } else {
    SqLaneWriteKernel<false, kMaxN><<<blocks, kLaneThreads, smem, stream>>>(launch);
  }
}

template <bool kWrite>
cudaError_t LaunchLanes(const SqLaunch& launch, cudaStream_t stream) {
  const uint32_t slots = launch.lanes ? kMaxLaneLanes : kMaxLanes;
  const uint32_t blocks = (launch.total_groups * slots + kLaneThreads - 1) / kLaneThreads;
  const size_t smem = sizeof(uint32_t) * kLaneThreads * (launch.head_dim / slots + 1);
  if (launch.lanes) {
    if (!kWrite) {  // the groups that fit: words and masks in one pass
      const uint32_t d = launch.head_dim;
      if (d <= 64) {
        LaunchLaneWrite<5>(launch, blocks, smem, stream);
      } else if (d <= 128) {
        LaunchLaneWrite<9>(launch, blocks, smem, stream);
      } else if (d <= kMaxFitDim) {
        LaunchLaneWrite<17>(launch, blocks, smem, stream);
      }
    }
    SqLaneKernel<kWrite, true><<<blocks, kLaneThreads, smem, stream>>>(launch);
  } else {
    SqLaneKernel<kWrite, false><<<blocks, kLaneThreads, smem, stream>>>(launch);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSqLaneCounts(const SqLaunch& launch, cudaStream_t stream) {
  if (launch.total_groups == 0) return cudaSuccess;
  return LaunchLanes<false>(launch, stream);
}

cudaError_t LaunchSqPack(const SqLaunch& launch, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  SqSectionKernel<<<launch.count, kSectionThreads, 0, stream>>>(launch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  e = LaunchLanes<true>(launch, stream);
  if (e != cudaSuccess) return e;
  SqMergeKernel<<<launch.total_groups, kMergeThreads, 0, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace seqkv::gpu::internal
