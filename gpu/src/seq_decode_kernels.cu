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
//
// SdLayerTcKernel (below) computes the same sums on tensor cores (TF32,
// SdLaunch::math), SdLayerH16Kernel with FP16 operands, within the
// tolerances docs/gpu.md documents; the kernels share the output stage
// (OutRowOffsets, OutWriteRows).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "seq_decode_kernels.h"
#include "seq_dense_device.cuh"
#include "seq_int12_device.cuh"

namespace seqkv::gpu::internal {

namespace {

constexpr uint32_t TT = kSdTileTokens;
using dense::CopyAsync16;
using dense::CopyAsync4;
using dense::CopyCommit;
using dense::CopyWait;
using dense::FC;

// Output of a tile's reconstructed rows (row_s[k * stride + channel], k <
// nt): RoPE on the keys, bf16, the destination layout. Two cooperative steps,
// every thread of the CTA in each (the caller synchronizes between them):
// OutRowOffsets finds each row's destination once (block table, divisions),
// OutWriteRows then converts and stores W channels of a row per unit — 16-byte
// stores (W = 8) when the destination allows. (The former output stage, a
// thread per channel with the row arithmetic per element, was over half of
// the tensor-core kernel's instructions: ncu, 2026-11-29.)
constexpr uint64_t kNoRow = ~uint64_t{0};  // a row whose block-table entry is out of range

// Row k's first element in OutBase's array, for k < nt (one thread per row).
__device__ __forceinline__ void OutRowOffsets(const SdLaunch& L, const SdDesc& desc, uint32_t layer, uint32_t kv,
                                              uint32_t h, uint32_t t0, uint32_t nt, uint64_t* dst_s, uint32_t tid,
                                              uint32_t nthreads) {
  const uint32_t d = L.head_dim, H = L.heads;
  for (uint32_t k = tid; k < nt; k += nthreads) {
    const uint64_t token = desc.token_offset + t0 + k;
    uint64_t off;
    if (L.paged) {
      const int32_t blk = desc.block_table[token / L.block_size];
      if (blk < 0 || static_cast<uint32_t>(blk) >= L.num_blocks) {
        atomicCAS(&L.statuses[desc.status_index], 0, kSdBlockOutOfRange);
        off = kNoRow;
      } else {
        off = (((uint64_t(blk) * 2 + kv) * L.block_size + token % L.block_size) * H + h) * d;
      }
    } else {
      off = ((uint64_t{layer} * H + h) * desc.outer_tokens + token) * d;
    }
    dst_s[k] = off;
  }
}

__device__ __forceinline__ uint16_t* OutBase(const SdLaunch& L, const SdDesc& desc, uint32_t layer, uint32_t kv) {
  return static_cast<uint16_t*>(L.paged ? desc.layer_caches[layer] : desc.out[kv]);
}

// Whether the tile's rows take RoPE (the keys of a chunk that rotates them).
__device__ __forceinline__ bool OutRotates(const SdLaunch& L, const SdDesc& desc, uint32_t kv) {
  return kv == 0 && desc.rotate_keys && L.rotary_dim > 0;
}

// Whether the output stage's 16-byte units fit (OutWriteRowsVec,
// OutWriteHalfAndRows): rows of whole units, a 16-byte aligned destination,
// row strides of whole float4s, and rotary sizes of whole 16-channel halves.
__device__ __forceinline__ bool OutTakesUnits(const SdLaunch& L, const uint16_t* base, uint32_t stride) {
  return L.head_dim % 8 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride % 4 == 0 &&
         L.rotary_dim % 16 == 0;
}

// Whether a key row's units go in RoPE pairs (OutWriteHalfPairs and
// OutWriteRowsVec): rotate_half over the whole head of d channels with a
// mirrored table (Llama's RoPE), so unit j0 < d / 2 and unit j0 + d / 2 are
// each other's operands and share their cos/sin.
__device__ __forceinline__ bool OutRopePairs(const SdLaunch& L, uint32_t d) {
  return L.rope_style == 1 && L.rotary_dim == d && L.rope_mirrored;
}

// Offset of the cos/sin of position pos, channel j0 (a unit's first): in the
// table's first half when both halves hold the same bits (rope_mirrored), so
// that a row's two halves load the same sectors.
__device__ __forceinline__ uint64_t RopeAt(const SdLaunch& L, uint64_t pos, uint32_t j0) {
  const uint32_t half = L.rotary_dim / 2;
  return pos * L.rotary_dim + (L.rope_mirrored && j0 >= half ? j0 - half : j0);
}

// An FP16 (cos, sin) pair (SdLaunch::rope_cs_h) as floats (exact).
__device__ __forceinline__ float2 HalfPair(uint32_t bits) {
  __half2 h;
  memcpy(&h, &bits, sizeof(h));
  return __half22float2(h);
}

// Units of W channels of a row; row k's RoPE position is pos0 + k. Each
// element's arithmetic is the reference's (RopeChannel, ToBf16); with
// half_angles (the FP16 kernels) cos and sin are the FP16 pairs the FP16
// output stage reads (SdLaunch::rope_cs_h), so every destination gets the
// same bytes.
template <uint32_t W>
__device__ __forceinline__ void OutWriteRowsW(const SdLaunch& L, uint16_t* base, bool rotate, uint64_t pos0,
                                              const uint64_t* dst_s, const float* row_s, uint32_t stride,
                                              uint32_t nt, uint32_t tid, uint32_t nthreads,
                                              bool half_angles) {
  const uint32_t d = L.head_dim, rd = L.rotary_dim, cpr = d / W;
  for (uint32_t u = tid; u < nt * cpr; u += nthreads) {
    const uint32_t k = u / cpr, j0 = (u - k * cpr) * W;
    const uint64_t off = dst_s[k];
    if (off == kNoRow) continue;
    const float* row = row_s + k * stride;
    uint32_t bits[W];
#pragma unroll
    for (uint32_t e = 0; e < W; ++e) {
      const uint32_t j = j0 + e;
      float val = row[j];
      if (rotate && j < rd) {
        float c, sn;
        if (half_angles) {
          const uint32_t half = rd / 2;
          const float2 cs = HalfPair(
              L.rope_cs_h[(pos0 + k) * L.rope_half_cols + (L.rope_mirrored && j >= half ? j - half : j)]);
          c = cs.x, sn = cs.y;
        } else {
          const uint64_t at = (pos0 + k) * rd + j;
          c = L.rope_cos[at], sn = L.rope_sin[at];
        }
        val = dense::RopeChannel(row, j, rd, L.rope_style, c, sn, false);
      }
      bits[e] = dense::ToBf16(val);
    }
    if constexpr (W == 8) {
      *reinterpret_cast<uint4*>(base + off + j0) =
          make_uint4(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16), bits[4] | (bits[5] << 16),
                     bits[6] | (bits[7] << 16));
    } else {
      base[off + j0] = static_cast<uint16_t>(bits[0]);
    }
  }
}

// Eight values of a row from shared memory (16-byte aligned).
__device__ __forceinline__ void Load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// The 32 bits of a pair of 16-bit values (__half2, __nv_bfloat162).
template <typename Pair>
__device__ __forceinline__ uint32_t Bits(Pair h) {
  static_assert(sizeof(Pair) == 4, "a pair of 16-bit values");
  uint32_t b;
  memcpy(&b, &h, sizeof(b));
  return b;
}

// (lo, hi) as bf16, lo in the low half: ToBf16's roundings. kExact: ToBf16
// itself; else cvt.rn.bf16x2, the same round to nearest even for every value
// but a NaN (ToBf16 keeps a NaN's sign and payload, the hardware makes it the
// canonical NaN), with `nan_max` a max over the pairs that turns NaN when
// one was met: the caller then writes its units again with kExact.
template <bool kExact>
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi, __nv_bfloat162& nan_max) {
  if constexpr (kExact) {
    return dense::ToBf16(lo) | (uint32_t{dense::ToBf16(hi)} << 16);
  } else {
    const __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);  // .x = lo in the low half
    nan_max = __hmax2_nan(nan_max, b);
    return Bits(b);
  }
}

// Eight values as FP16 to dst (16-byte aligned, global memory), |h| into
// hmax. One 16-byte store: written as a plain uint4 assignment, nvcc 13.0
// split it into four 4-byte generic stores (ncu: 75 % of their L2 sectors
// excessive in the wgmma kernel's output stage).
__device__ __forceinline__ void StoreHalf8(uint16_t* dst, const float (&v)[8], __half2& hmax) {
  __half2 h[4];
#pragma unroll
  for (uint32_t e = 0; e < 4; ++e) {
    h[e] = __floats2half2_rn(v[2 * e], v[2 * e + 1]);
    hmax = __hmax2_nan(hmax, __habs2(h[e]));
  }
  __stwb(reinterpret_cast<uint4*>(dst), make_uint4(Bits(h[0]), Bits(h[1]), Bits(h[2]), Bits(h[3])));
}
// Eight values as bf16 to dst (16-byte aligned): PackBf16's roundings.
template <bool kExact>
__device__ __forceinline__ void StoreBf16x8(uint16_t* dst, const float (&v)[8], __nv_bfloat162& bmax) {
  uint32_t w[4];
#pragma unroll
  for (uint32_t e = 0; e < 4; ++e) w[e] = PackBf16<kExact>(v[2 * e], v[2 * e + 1], bmax);
  *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Rows that take no RoPE (the values, and keys left unrotated): a unit
// needs its eight values alone, so four units a pass, all four loads issued
// before any store. Rows of cpr units, `stride` floats apart in row_s; with
// keep, each unit also goes to keep_rows as FP16 (the FP16 kernels' next
// layer's rows, cpr * 8 halves a row). (Eight a pass, a whole tile's units at
// once in the wgmma kernel, was 1.7 % slower per 8K f16 decode:
// docs/BENCHMARKS.md, 2026-12-03.)
template <bool kExact>
__device__ __forceinline__ void OutWritePlainUnits(uint16_t* base, uint16_t* keep_rows, bool keep,
                                                   const uint64_t* dst_s, const float* row_s, uint32_t stride,
                                                   uint32_t cpr, uint32_t nt, uint32_t tid, uint32_t nthreads,
                                                   __half2& hmax, __nv_bfloat162& bmax) {
  constexpr uint32_t kPer = 4;
  const uint32_t units = nt * cpr;
  for (uint32_t u = tid; u < units; u += kPer * nthreads) {
    float v[kPer][8];
    uint64_t off[kPer];
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
      const uint32_t x = u + i * nthreads, k = x / cpr;
      off[i] = x < units ? dst_s[k] : kNoRow;
      if (off[i] != kNoRow) Load8(row_s + k * stride + (x - k * cpr) * 8, v[i]);
    }
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
      const uint32_t x = u + i * nthreads, k = x / cpr, j0 = (x - k * cpr) * 8;
      if (off[i] != kNoRow) {
        if (keep) StoreHalf8(keep_rows + uint64_t{k} * (cpr * 8) + j0, v[i], hmax);
        StoreBf16x8<kExact>(base + off[i] + j0, v[i], bmax);
      }
    }
  }
}

// OutWriteRowsW<8> with every operand read as 16-byte vectors: the unit's
// values, their RoPE partners and the cos/sin of the unit. For row strides
// that are multiples of 4 and rotary sizes that are multiples of 16 (a unit is
// then wholly rotated or not, and its rotate_half partners are one aligned
// unit too). Element j's operations are RopeChannel's: x[j] * cos + p * sin
// with p = -x[partner] for the pair's first element, x[partner] for its
// second. (The scalar loads of the unit above were most of the tensor-core
// kernels' instructions: ncu, 2026-11-29.) Llama's RoPE and unrotated rows
// take the FP16 stage's arrangements (OutWriteHalfPairs; OutWritePlainUnits
// with kBatchPlain, the int12 kernel's): the 8K int12 decode 1.4 % and 1.1 %
// faster per call in two same-run A/Bs. (The exact float kernel was 4.5 %
// slower with the batched unrotated rows, so it keeps one unit a pass:
// docs/BENCHMARKS.md, 2026-12-03.)
template <bool kExact, bool kBatchPlain>
__device__ __forceinline__ bool OutWriteRowsVec(const SdLaunch& L, uint16_t* base, bool rotate, uint64_t pos0,
                                                const uint64_t* dst_s, const float* row_s, uint32_t stride,
                                                uint32_t nt, uint32_t tid, uint32_t nthreads) {
  const uint32_t d = L.head_dim, rd = L.rotary_dim, cpr = d / 8, half = rd / 2;
  __nv_bfloat162 bmax = __float2bfloat162_rn(0.0f);
  if (rotate && OutRopePairs(L, d)) {
    // Llama's RoPE: a unit j0 < d / 2 with its partner j0 + d / 2 a thread, as
    // OutWriteHalfPairs (one load of the pair's cos and sin for both).
    const uint32_t hp = d / 16;
    for (uint32_t u = tid; u < nt * hp; u += nthreads) {
      const uint32_t k = u / hp, j0 = (u - k * hp) * 8;
      const uint64_t off = dst_s[k];
      if (off == kNoRow) continue;
      const float* row = row_s + k * stride;
      float x[8], y[8], c[8], sn[8], a[8], b[8];
      Load8(row + j0, x);
      Load8(row + j0 + half, y);
      const uint64_t at = RopeAt(L, pos0 + k, j0);
      Load8(L.rope_cos + at, c);
      Load8(L.rope_sin + at, sn);
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) {
        a[e] = __fadd_rn(__fmul_rn(x[e], c[e]), __fmul_rn(-y[e], sn[e]));
        b[e] = __fadd_rn(__fmul_rn(y[e], c[e]), __fmul_rn(x[e], sn[e]));
      }
      StoreBf16x8<kExact>(base + off + j0, a, bmax);
      StoreBf16x8<kExact>(base + off + j0 + half, b, bmax);
    }
    return !kExact && (__hisnan(bmax.x) || __hisnan(bmax.y));
  }
  if (kBatchPlain && !rotate) {
    __half2 hmax = __float2half2_rn(0.0f);  // unused: no FP16 rows
    OutWritePlainUnits<kExact>(base, nullptr, false, dst_s, row_s, stride, cpr, nt, tid, nthreads, hmax,
                               bmax);
    return !kExact && (__hisnan(bmax.x) || __hisnan(bmax.y));
  }
  for (uint32_t u = tid; u < nt * cpr; u += nthreads) {
    const uint32_t k = u / cpr, j0 = (u - k * cpr) * 8;
    const uint64_t off = dst_s[k];
    if (off == kNoRow) continue;
    const float* row = row_s + k * stride;
    float v[8];
    Load8(row + j0, v);
    if (rotate && j0 < rd) {
      float p[8], c[8], sn[8];
      if (L.rope_style == 1) {  // rotate_half: partner j +- rd / 2
        const bool first = j0 < half;
        Load8(row + (first ? j0 + half : j0 - half), p);
#pragma unroll
        for (uint32_t e = 0; e < 8; ++e) p[e] = first ? -p[e] : p[e];
      } else {  // interleaved: pairs (2i, 2i + 1) within the unit
#pragma unroll
        for (uint32_t e = 0; e < 8; e += 2) {
          p[e] = -v[e + 1];
          p[e + 1] = v[e];
        }
      }
      const uint64_t at = RopeAt(L, pos0 + k, j0);
      Load8(L.rope_cos + at, c);
      Load8(L.rope_sin + at, sn);
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) v[e] = __fadd_rn(__fmul_rn(v[e], c[e]), __fmul_rn(p[e], sn[e]));
    }
    uint32_t w[4];
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) w[e] = PackBf16<kExact>(v[2 * e], v[2 * e + 1], bmax);
    *reinterpret_cast<uint4*>(base + off + j0) = make_uint4(w[0], w[1], w[2], w[3]);
  }
  return !kExact && (__hisnan(bmax.x) || __hisnan(bmax.y));
}

// The FP16 kernels' output stage in one pass (HalfRowsOut): a unit's eight
// values are read from the rows once for both of its writes, the next
// layer's FP16 row (keep) and the RoPE'd bf16 output, two units a pass with
// both units' loads issued before either's arithmetic (the cos/sin loads,
// global memory, were the stage's longest wait: ncu, 2026-12-01). cos and
// sin come as FP16 pairs (SdLaunch::rope_cs_h): 32 bytes a unit instead of
// float32's 64, within the FP16 math's tolerance (each angle's relative
// error <= 2^-11, under the bf16 output's own rounding); the 8K f16 decode
// was 1.4-2.0 % faster per call (docs/BENCHMARKS.md, 2026-12-02). The
// roundings are the hardware's conversions, two values an instruction:
// cvt.rn.f16x2 with the range check as a max over |h| (an element outside
// FP16's range, |x| >= 65520 or NaN, is exactly one that rounds to an
// infinity or a NaN), and cvt.rn.bf16x2, which is ToBf16's round to nearest
// even for every value but a NaN; a NaN (which finite FP16 operands and
// checked weights cannot make) is caught as a NaN in the max over the bf16
// pairs, and the caller then writes the thread's units again with kExact
// (ToBf16). (The former stage, a pass for the FP16 rows and another for the
// output, each element rounded and range-checked by integer and compare
// operations, was 49 % of the wgmma kernel's instructions and 55 % of its
// stall samples: ncu, 2026-12-01.)
struct OutUnit {
  float v[8], p[8];
  uint32_t cs[8];  // FP16 (cos, sin) pairs (SdLaunch::rope_cs_h)
  uint64_t off;  // destination of the row's first element
  uint32_t k;    // the row
  uint32_t j0;   // the unit's first channel
  bool rot;
};
template <uint32_t D>
__device__ __forceinline__ bool OutLoadUnit(const SdLaunch& L, bool rotate, uint64_t pos0,
                                            const uint64_t* dst_s, const float* row_s, uint32_t u,
                                            OutUnit& x) {
  const uint32_t rd = L.rotary_dim, half = rd / 2;
  const uint32_t k = u / (D / 8), j0 = (u % (D / 8)) * 8;
  x.off = dst_s[k];
  x.k = k;
  x.j0 = j0;
  x.rot = false;
  if (x.off == kNoRow) return false;  // the item has failed (kSdBlockOutOfRange)
  const float* row = row_s + k * (D + 8);
  Load8(row + j0, x.v);
  if (!rotate || j0 >= rd) return true;
  x.rot = true;
  if (L.rope_style == 1) {  // rotate_half: partner j +- rd / 2
    const bool first = j0 < half;
    Load8(row + (first ? j0 + half : j0 - half), x.p);
#pragma unroll
    for (uint32_t e = 0; e < 8; ++e) x.p[e] = first ? -x.p[e] : x.p[e];
  } else {  // interleaved: pairs (2i, 2i + 1) within the unit
#pragma unroll
    for (uint32_t e = 0; e < 8; e += 2) {
      x.p[e] = -x.v[e + 1];
      x.p[e + 1] = x.v[e];
    }
  }
  const uint32_t* at =
      L.rope_cs_h + (pos0 + k) * L.rope_half_cols + (L.rope_mirrored && j0 >= half ? j0 - half : j0);
  const uint4 a = *reinterpret_cast<const uint4*>(at), b = *reinterpret_cast<const uint4*>(at + 4);
  x.cs[0] = a.x, x.cs[1] = a.y, x.cs[2] = a.z, x.cs[3] = a.w, x.cs[4] = b.x, x.cs[5] = b.y, x.cs[6] = b.z,
  x.cs[7] = b.w;
  return true;
}
template <uint32_t D, bool kExact>
__device__ __forceinline__ void OutStoreUnit(uint16_t* base, uint16_t* cur_rows, bool keep, OutUnit& x,
                                             __half2& hmax, __nv_bfloat162& bmax) {
  if (keep) StoreHalf8(cur_rows + uint64_t{x.k} * D + x.j0, x.v, hmax);
  if (x.rot) {
#pragma unroll
    for (uint32_t e = 0; e < 8; ++e) {
      const float2 cs = HalfPair(x.cs[e]);
      x.v[e] = __fadd_rn(__fmul_rn(x.v[e], cs.x), __fmul_rn(x.p[e], cs.y));
    }
  }
  StoreBf16x8<kExact>(base + x.off + x.j0, x.v, bmax);
}

// rotate_half over the whole head with mirrored cos/sin (Llama's RoPE): a
// thread takes unit j0 < D / 2 of a row with its partner unit j0 + D / 2, so
// that each is the other's RoPE operand and one load of the unit's cos/sin
// serves both: half the loads of OutLoadUnit's units, and half the passes.
// Element j's operations are still RopeChannel's (x[j] * cos + (-x[j + D/2])
// * sin for the first half, x[j] * cos + x[j - D/2] * sin for the second),
// so the bytes are OutStoreUnit's.
template <uint32_t D, bool kExact>
__device__ __forceinline__ void OutWriteHalfPairs(const SdLaunch& L, uint16_t* base, uint16_t* cur_rows,
                                                  bool keep, uint64_t pos0, const uint64_t* dst_s,
                                                  const float* row_s, uint32_t nt, uint32_t tid,
                                                  __half2& hmax, __nv_bfloat162& bmax) {
  constexpr uint32_t NT = 2 * D, kPairs = D / 16, kPer = 2;  // pairs a row, pairs a pass
  const uint32_t pairs = nt * kPairs;
  for (uint32_t u = tid; u < pairs; u += kPer * NT) {
    float x[kPer][8], y[kPer][8];
    uint32_t cs[kPer][8];
    uint64_t off[kPer];
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
      const uint32_t p = u + i * NT, k = p / kPairs, j0 = (p % kPairs) * 8;
      off[i] = p < pairs ? dst_s[k] : kNoRow;
      if (off[i] == kNoRow) continue;
      const float* row = row_s + k * (D + 8);
      Load8(row + j0, x[i]);
      Load8(row + j0 + D / 2, y[i]);
      const uint32_t* at = L.rope_cs_h + (pos0 + k) * L.rope_half_cols + j0;
      const uint4 a = *reinterpret_cast<const uint4*>(at), b = *reinterpret_cast<const uint4*>(at + 4);
      cs[i][0] = a.x, cs[i][1] = a.y, cs[i][2] = a.z, cs[i][3] = a.w;
      cs[i][4] = b.x, cs[i][5] = b.y, cs[i][6] = b.z, cs[i][7] = b.w;
    }
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
      if (off[i] == kNoRow) continue;
      const uint32_t p = u + i * NT, k = p / kPairs, j0 = (p % kPairs) * 8;
      if (keep) {
        StoreHalf8(cur_rows + uint64_t{k} * D + j0, x[i], hmax);
        StoreHalf8(cur_rows + uint64_t{k} * D + j0 + D / 2, y[i], hmax);
      }
      float a[8], b[8];
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) {
        const float2 c = HalfPair(cs[i][e]);
        a[e] = __fadd_rn(__fmul_rn(x[i][e], c.x), __fmul_rn(-y[i][e], c.y));
        b[e] = __fadd_rn(__fmul_rn(y[i][e], c.x), __fmul_rn(x[i][e], c.y));
      }
      StoreBf16x8<kExact>(base + off[i] + j0, a, bmax);
      StoreBf16x8<kExact>(base + off[i] + j0 + D / 2, b, bmax);
    }
  }
}

// The thread's units; returns whether a bf16 rounding met a NaN (never with
// kExact). *bad is set when a kept FP16 element is outside FP16's range.
// Unrotated rows take OutWritePlainUnits, Llama's RoPE OutWriteHalfPairs
// (the 8K f16 decode: docs/BENCHMARKS.md, 2026-12-03), any other RoPE the
// units below.
template <uint32_t D, bool kExact>
__device__ __forceinline__ bool OutWriteHalfAndRows(const SdLaunch& L, uint16_t* base, uint16_t* cur_rows,
                                                    bool keep, bool rotate, uint64_t pos0,
                                                    const uint64_t* dst_s, const float* row_s, uint32_t nt,
                                                    uint32_t tid, bool* bad) {
  constexpr uint32_t NT = 2 * D;
  const uint32_t units = nt * (D / 8);
  __half2 hmax = __float2half2_rn(0.0f);
  __nv_bfloat162 bmax = __float2bfloat162_rn(0.0f);
  if (!rotate) {
    OutWritePlainUnits<kExact>(base, cur_rows, keep, dst_s, row_s, D + 8, D / 8, nt, tid, NT, hmax, bmax);
  } else if (OutRopePairs(L, D)) {
    OutWriteHalfPairs<D, kExact>(L, base, cur_rows, keep, pos0, dst_s, row_s, nt, tid, hmax, bmax);
  } else {
    for (uint32_t u = tid; u < units; u += 2 * NT) {
      OutUnit a, b;
      const bool has_a = OutLoadUnit<D>(L, rotate, pos0, dst_s, row_s, u, a);
      const bool has_b = u + NT < units && OutLoadUnit<D>(L, rotate, pos0, dst_s, row_s, u + NT, b);
      if (has_a) OutStoreUnit<D, kExact>(base, cur_rows, keep, a, hmax, bmax);
      if (has_b) OutStoreUnit<D, kExact>(base, cur_rows, keep, b, hmax, bmax);
    }
  }
  // Both halves of hmax at most 65504 (a NaN compares false).
  if (!__hble2(hmax, __float2half2_rn(65504.0f))) *bad = true;
  return !kExact && (__hisnan(bmax.x) || __hisnan(bmax.y));
}

// half_angles: see OutWriteRowsW (only where the 16-byte units do not apply).
// kBatchPlain: see OutWriteRowsVec.
template <bool kBatchPlain = false>
__device__ __forceinline__ void OutWriteRows(const SdLaunch& L, const SdDesc& desc, uint32_t layer,
                                             uint32_t kv, uint32_t t0, uint32_t nt, const uint64_t* dst_s,
                                             const float* row_s, uint32_t stride, uint32_t tid,
                                             uint32_t nthreads, bool half_angles = false) {
  uint16_t* base = OutBase(L, desc, layer, kv);
  const bool rotate = OutRotates(L, desc, kv);
  const uint64_t pos0 = desc.first_position + t0;
  if (OutTakesUnits(L, base, stride)) {
    if (OutWriteRowsVec<false, kBatchPlain>(L, base, rotate, pos0, dst_s, row_s, stride, nt, tid, nthreads)) {
      OutWriteRowsVec<true, kBatchPlain>(L, base, rotate, pos0, dst_s, row_s, stride, nt, tid, nthreads);
    }
  } else if (L.head_dim % 8 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0) {
    OutWriteRowsW<8>(L, base, rotate, pos0, dst_s, row_s, stride, nt, tid, nthreads, half_angles);
  } else {
    OutWriteRowsW<1>(L, base, rotate, pos0, dst_s, row_s, stride, nt, tid, nthreads, half_angles);
  }
}

// Whether a later layer reads layer `layer`'s reconstruction as features.
__device__ __forceinline__ bool KeepsRows(const SdLaunch& L, uint32_t layer) {
  return layer + 1 < L.layers && L.inputs != 0;
}

// Group g's step base, double(delta0) * multiplier(code): the CPU's
// SeqStepBase, the same double (one IEEE product).
__device__ __forceinline__ double SdStepBase(const SdLaunch& L, const SdDesc& desc, uint32_t g) {
  return static_cast<double>(desc.delta0) * L.multipliers[desc.codes[g]];
}

// The group's steps float(step_base * step_scale[i]) (the reference's) into
// step_s, i = tid, tid + n, ... < d.
__device__ __forceinline__ void StepsToShared(const SdLaunch& L, const SdDesc& desc, uint32_t g, uint32_t d,
                                              float* step_s, uint32_t tid, uint32_t n) {
  const double base = SdStepBase(L, desc, g);
  for (uint32_t i = tid; i < d; i += n) {
    step_s[i] = SeqStep(base, L.step_scale[uint64_t{g} * d + i]);
  }
}

__global__ void SdLayerKernel(SdLaunch L, uint32_t layer) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint64_t dst_s[TT];  // the rows' destinations (OutRowOffsets)
  const uint32_t d = L.head_dim, H = L.heads, F = L.features;
  float* feat_s = reinterpret_cast<float*>(smem);  // [TT][FC]
  float* y_s = feat_s + TT * FC;                    // [TT][d]: float(q) * step
  float* row_s = y_s + TT * d;                      // [TT][d]
  float* step_s = row_s + TT * d;                   // [d]

  dense::Tile tl;
  const SdDesc& desc = dense::TileItem<TT>(L.descs, L.count, L.item_ctas, H, layer, &tl);
  const uint32_t T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t j = threadIdx.x;
  const bool active = j < d;

  const float* W = L.predictor + uint64_t{g} * F * d;
  const float* U = L.basis + uint64_t{g} * d * d;
  const float* prev = desc.xhat[(layer + 1) % 2];  // layer - 1's reconstruction
  float* cur = desc.xhat[layer % 2];

  StepsToShared(L, desc, g, d, step_s, j, blockDim.x);
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
  const bool keep = KeepsRows(L, layer);
  if (active) {
    float rec[TT];
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) rec[k] = 0.0f;
    dense::AccumulateTile(y_s, d, d, U + j, d, rec);
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) {
      if (k < nt) {
        const float x = __fadd_rn(acc[k], rec[k]);
        if (keep) cur[((uint64_t{kv} * H + h) * T + t0 + k) * d + j] = x;
        row_s[k * d + j] = x;
      }
    }
  }
  OutRowOffsets(L, desc, layer, kv, h, t0, nt, dst_s, j, blockDim.x);
  __syncthreads();

  // Output: RoPE on the keys, bf16, the destination layout.
  OutWriteRows(L, desc, layer, kv, t0, nt, dst_s, row_s, d, j, blockDim.x);
}

// ---- Tensor-core variant (SdLaunch::math kSdMathTf32 / kSdMathTf32x3) ----
//
// The same sums as one matrix product per tile: the predictor's bias row
// (the accumulators' start) plus row t of the tile times the stacked matrix
// [W without its bias row; U] of the group, over K = nf + d columns: nf
// feature columns (the previous layer's rows; none for layer 0 and mean
// predictors) and d columns of symbols, whose weight rows are taken times
// their steps (q_i * (step_i * U_ij) for the reference's (q_i * step_i) *
// U_ij). K is then a multiple of 32 for the usual shapes. mma.sync m16n8k8 TF32 with float32 accumulation;
// kPasses 3 splits every operand x into hi = tf32(x) and lo = tf32(x - hi)
// and sums lo*hi + hi*lo + hi*hi. What differs from the reference — the
// dropped lo*lo term, the step's place, the order of the sums — gives the
// tolerance docs/gpu.md ("Sequential codec: the dense stage on tensor cores") measures.
//
// A CTA: TM = 128 tokens of one group, 2 * D / 32 warps; warp (wm, wn) owns
// tokens [64 wm, 64 wm + 64) x channels [32 wn, 32 wn + 32) (4 x 4 tiles of
// 16 x 8). The operands go through shared memory KC = 32 columns at a time,
// raw (float bits, or a symbol's int32), copied by cp.async kTcStages
// chunks deep, so the next chunks' copies run during this chunk's products; the
// conversion and the split happen at the fragment loads. (Converting each
// chunk once per CTA in shared memory instead, which saves the warps'
// repeated conversions of shared operands, measured slower: 8.0 vs 7.5 ms
// dense stage, tf32, 8K context, H200, 2026-11-29.) Strides make every
// fragment load conflict-free.
constexpr uint32_t TM = kSdTcTileTokens;
constexpr uint32_t KC = 32;
constexpr uint32_t kAStride = KC + 4;
constexpr uint32_t kTcStages = 3;

// x rounded to TF32 (10 mantissa bits), to nearest with ties away from
// zero: cvt.rna.tf32.f32's result for every finite x (the operands here are
// finite), in two integer instructions where ptxas expands the cvt into more.
__device__ __forceinline__ uint32_t ToTf32(float x) { return (__float_as_uint(x) + 0x1000u) & 0xFFFFE000u; }

__device__ __forceinline__ void MmaTf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// x split for the products: hi = tf32(x), lo = tf32(x - hi) (kPasses 3).
template <int kPasses>
__device__ __forceinline__ void Split(float x, uint32_t& hi, uint32_t& lo) {
  hi = ToTf32(x);
  if (kPasses == 3) lo = ToTf32(__fsub_rn(x, __uint_as_float(hi)));
}

// Shared memory of the tensor-core kernel: kTcStages stages of raw operands (A
// [TM][kAStride], B [KC][D + 8]), or after the loop the tile's rows [TM][D +
// 8]; then the steps.
__host__ __device__ constexpr uint32_t SdTcStageWords(uint32_t d) { return TM * kAStride + KC * (d + 8); }
__host__ __device__ constexpr uint32_t SdTcStepsAt(uint32_t d) {  // in words
  const uint32_t stages = kTcStages * SdTcStageWords(d), rows = TM * (d + 8);
  return stages > rows ? stages : rows;
}
__host__ __device__ constexpr uint32_t SdTcSharedBytes(uint32_t d) { return 4 * (SdTcStepsAt(d) + d); }

// Where feature column c (< nf) of token t0 lies in the previous layer's
// reconstruction ([2][H][T][d], element index): the column's block is kv'
// (same head) or kv' * H + h' (all heads), its channel c % d.
__device__ __forceinline__ uint64_t FeatureAt(const SdLaunch& L, uint32_t c, uint32_t H, uint32_t h, uint32_t T,
                                              uint32_t t0, uint32_t d) {
  const uint32_t blk = c / d;
  return (L.inputs == 1 ? (uint64_t{blk} * H + h) * T : uint64_t{blk} * T) * d + uint64_t{t0} * d + c % d;
}

// Row `row` of the stacked weights [W without its bias row; U] (nf feature
// rows, then the basis).
template <typename T>
__device__ __forceinline__ const T* WeightRow(const T* W, const T* U, uint32_t nf, uint32_t row, uint32_t d) {
  return row >= nf ? U + uint64_t{row - nf} * d : W + uint64_t{row} * d;
}

// A warp's accumulators (4 x 4 tiles of 16 x 8, tokens m0.., channels n0..;
// mma's C layout: c0, c1 at row gq, columns 2 tq, 2 tq + 1; c2, c3 eight rows
// down), each starting at the bias row's value of its column.
__device__ __forceinline__ void AccFromBias(const float* bias_row, uint32_t n0, uint32_t tq, float (&acc)[4][4][4]) {
#pragma unroll
  for (uint32_t n = 0; n < 4; ++n) {
    const float* bias = bias_row + n0 + n * 8 + 2 * tq;
    const float b0 = bias[0], b1 = bias[1];
#pragma unroll
    for (uint32_t m = 0; m < 4; ++m) {
      acc[m][n][0] = b0;
      acc[m][n][1] = b1;
      acc[m][n][2] = b0;
      acc[m][n][3] = b1;
    }
  }
}

// The accumulators into the tile's rows (row_s[token * stride + channel]).
__device__ __forceinline__ void AccToRows(const float (&acc)[4][4][4], float* row_s, uint32_t stride, uint32_t m0,
                                          uint32_t n0, uint32_t lane) {
  const uint32_t gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (uint32_t m = 0; m < 4; ++m) {
#pragma unroll
    for (uint32_t n = 0; n < 4; ++n) {
      const uint32_t col = n0 + n * 8 + 2 * tq, r = m0 + m * 16 + gq;
      *reinterpret_cast<float2*>(&row_s[r * stride + col]) = make_float2(acc[m][n][0], acc[m][n][1]);
      *reinterpret_cast<float2*>(&row_s[(r + 8) * stride + col]) = make_float2(acc[m][n][2], acc[m][n][3]);
    }
  }
}

template <int kPasses, uint32_t D>
__global__ void __launch_bounds__(2 * D, 2) SdLayerTcKernel(SdLaunch L, uint32_t layer) {
  constexpr uint32_t NT = 2 * D;            // threads
  constexpr uint32_t kARows = TM * 32 / NT;  // A rows a thread copies per chunk
  constexpr uint32_t BS = D + 8;             // B and row stride
  constexpr uint32_t kBVecs = KC * D / 4 / NT;  // 16-byte B copies a thread issues per chunk
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint64_t dst_s[TM];  // the rows' destinations (OutRowOffsets)
  const uint32_t H = L.heads, F = L.features;
  uint32_t* const stages = reinterpret_cast<uint32_t*>(smem);  // stage s at s * SdTcStageWords(D)
  float* row_s = reinterpret_cast<float*>(smem);  // after the loop: [TM][BS]
  float* step_s = reinterpret_cast<float*>(smem) + SdTcStepsAt(D);

  dense::Tile tl;
  const SdDesc& desc = dense::TileItem<TM>(L.descs, L.count, L.item_ctas, H, layer, &tl);
  const uint32_t T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t tid = threadIdx.x;

  const float* W = L.predictor + uint64_t{g} * F * D;
  const float* U = L.basis + uint64_t{g} * D * D;
  const float* prev = desc.xhat[(layer + 1) % 2];
  float* cur = desc.xhat[layer % 2];
  const int32_t* q = desc.q + (uint64_t{g} * T + t0) * D;

  StepsToShared(L, desc, g, D, step_s, tid, NT);
  const bool feats = layer > 0 && L.inputs != 0;
  const uint32_t nf = feats ? F - 1 : 0;  // feature columns; the bias row F - 1 starts the sums
  const uint32_t K = nf + D;
  const uint32_t chunks = (K + KC - 1) / KC;

  // Chunk c0's raw operands into stage st: A column (c0 + tid % 32), rows
  // tid / 32 + NT / 32 * i; B four channels of a row per 16-byte copy.
  auto issue = [&](uint32_t c0, uint32_t* st) {
    uint32_t* a = st;
    uint32_t* b = st + TM * kAStride;
    const uint32_t col = tid % 32, c = c0 + col;
    const uint32_t* src = nullptr;  // none past K: zeros
    if (c < nf) {
      src = reinterpret_cast<const uint32_t*>(prev + FeatureAt(L, c, H, h, T, t0, D));
    } else if (c < K) {
      src = reinterpret_cast<const uint32_t*>(q + (c - nf));
    }
#pragma unroll
    for (uint32_t i = 0; i < kARows; ++i) {
      const uint32_t k = tid / 32 + i * (NT / 32);
      uint32_t* dst = a + k * kAStride + col;
      if (k < nt && src != nullptr) {
        CopyAsync4(dst, src + uint64_t{k} * D);
      } else {
        *dst = 0u;
      }
    }
#pragma unroll
    for (uint32_t i = 0; i < kBVecs; ++i) {
      const uint32_t v = tid + i * NT, r = v / (D / 4), n = (v % (D / 4)) * 4, row = c0 + r;
      uint32_t* dst = b + r * BS + n;
      if (row < K) {
        CopyAsync16(dst, WeightRow(W, U, nf, row, D) + n);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    }
    CopyCommit();
  };

  const uint32_t warp = tid / 32, lane = tid % 32, gq = lane / 4, tq = lane % 4;
  const uint32_t m0 = (warp / (D / 32)) * 64, n0 = (warp % (D / 32)) * 32;
  float acc[4][4][4];
  AccFromBias(W + uint64_t{F - 1} * D, n0, tq, acc);

  // Chunks 0 .. kTcStages - 2 in flight first; then each step issues chunk
  // ci + kTcStages - 1 (an empty group past the end, so the wait count holds)
  // and waits for chunk ci.
#pragma unroll
  for (uint32_t ci = 0; ci + 1 < kTcStages; ++ci) {
    if (ci < chunks) issue(ci * KC, stages + ci * SdTcStageWords(D));
    else CopyCommit();
  }
  for (uint32_t ci = 0; ci < chunks; ++ci) {
    const uint32_t c0 = ci * KC;
    const uint32_t ahead = ci + kTcStages - 1;
    if (ahead < chunks) issue(ahead * KC, stages + (ahead % kTcStages) * SdTcStageWords(D));
    else CopyCommit();
    CopyWait<kTcStages - 1>();  // chunk ci's copies done, the later ones may still run
    __syncthreads();  // every thread's copies and constants visible (and step_s)
    const uint32_t* a = stages + (ci % kTcStages) * SdTcStageWords(D);
    const uint32_t* b = a + TM * kAStride;
    // A chunk holds feature columns only or symbol columns only (nf is a
    // multiple of KC: LaunchSdLayer checks), so its conversions are chosen
    // once per chunk: symbols become floats and their B rows take the steps;
    // features are used as they are (for one pass they were stored rounded
    // to TF32 by the previous layer, see the rows' output below).
    auto products = [&](auto symbols) {
      constexpr bool kSym = decltype(symbols)::value;
#pragma unroll
      for (uint32_t kk = 0; kk < KC; kk += 8) {
        // B: rows kk + tq and kk + tq + 4.
        uint32_t bh[4][2], bl[4][2];
        float bscale[2] = {1.0f, 1.0f};
        if constexpr (kSym) {
#pragma unroll
          for (uint32_t e = 0; e < 2; ++e) {
            const uint32_t row = c0 + kk + tq + 4 * e;
            bscale[e] = row < K ? step_s[row - nf] : 1.0f;
          }
        }
#pragma unroll
        for (uint32_t n = 0; n < 4; ++n) {
          const uint32_t at = (kk + tq) * BS + n0 + n * 8 + gq;
#pragma unroll
          for (uint32_t e = 0; e < 2; ++e) {
            const float w = __uint_as_float(b[at + 4 * e * BS]);
            Split<kPasses>(kSym ? __fmul_rn(w, bscale[e]) : w, bh[n][e], bl[n][e]);
          }
        }
        // A: columns kk + tq and kk + tq + 4.
#pragma unroll
        for (uint32_t m = 0; m < 4; ++m) {
          uint32_t ah[4], al[4];
          const uint32_t r0 = (m0 + m * 16 + gq) * kAStride + kk + tq;
#pragma unroll
          for (uint32_t e = 0; e < 4; ++e) {
            // fragment register e: row +8 for odd e, column +4 for e >= 2
            const uint32_t bits = a[r0 + (e & 1) * 8 * kAStride + (e >> 1) * 4];
            if constexpr (kSym) {
              Split<kPasses>(static_cast<float>(static_cast<int32_t>(bits)), ah[e], al[e]);
            } else if constexpr (kPasses == 1) {
              ah[e] = bits;
            } else {
              Split<kPasses>(__uint_as_float(bits), ah[e], al[e]);
            }
          }
#pragma unroll
          for (uint32_t n = 0; n < 4; ++n) {
            if (kPasses == 3) {
              MmaTf32(acc[m][n], al, bh[n]);
              MmaTf32(acc[m][n], ah, bl[n]);
            }
            MmaTf32(acc[m][n], ah, bh[n]);
          }
        }
      }
    };
    if (c0 >= nf) {
      products(std::true_type{});
    } else {
      products(std::false_type{});
    }
    __syncthreads();  // this stage consumed before the next issue overwrites it
  }
  AccToRows(acc, row_s, BS, m0, n0, lane);
  OutRowOffsets(L, desc, layer, kv, h, t0, nt, dst_s, tid, NT);
  __syncthreads();
  // The reconstruction for the next layer's features, four channels a store;
  // for one pass already rounded to TF32, as the next layer's products take it.
  float* cur_rows = cur + ((uint64_t{kv} * H + h) * T + t0) * D;
  const bool keep = KeepsRows(L, layer);
  for (uint32_t u = tid; keep && u < nt * (D / 4); u += NT) {
    const uint32_t k = u / (D / 4), c = (u % (D / 4)) * 4;
    float4 v = *reinterpret_cast<const float4*>(&row_s[k * BS + c]);
    if (kPasses == 1) {
      v = make_float4(__uint_as_float(ToTf32(v.x)), __uint_as_float(ToTf32(v.y)), __uint_as_float(ToTf32(v.z)),
                      __uint_as_float(ToTf32(v.w)));
    }
    *reinterpret_cast<float4*>(cur_rows + uint64_t{k} * D + c) = v;
  }
  OutWriteRows(L, desc, layer, kv, t0, nt, dst_s, row_s, BS, tid, NT);
}

// ---- FP16 tensor-core variant (SdLaunch::math kSdMathF16) ----
//
// The tile's product as above, with FP16 operands: mma.sync m16n8k16 (f16
// inputs, float32 accumulation) fed by ldmatrix. FP16 has TF32's 11-bit
// significand, so the rounding of each operand is one-pass TF32's; what it
// adds is FP16's range (|x| < 65520; magnitudes under 2^-14 lose precision,
// below 2^-24 flush to zero). The operands:
//   * features: the previous layer's rows, which this kernel stores as FP16
//     (half the bytes of the float32 rows), copied as they are;
//   * symbols: q_i * float(step_base), the chunk's and group's step base,
//     one for every component (HalfOperand; so the basis needs no per-chunk
//     scaling), rounded to FP16 by the thread that copied the raw int32
//     symbols, in its own copies, before the chunk's barrier;
//   * weights: the predictor without its bias row, and the basis rows times
//     their components' step scales (step_scale_i * U_i), rounded to FP16
//     once per profile on the host (SdLaunch::predictor_h, basis_h), copied
//     as they are. The bias row starts the float32 sums, as above.
// (Until 2026-12-03 the symbol operand was q_i * step_i, step_i =
// float(step_base * step_scale_i), with the basis unscaled: a step per
// component to compute and load in the lane kernels.)
// A row or symbol term outside FP16's range sets kSdHalfRange on the item
// (FAILED_PRECONDITION: decode it with another math); the profile's weights
// are checked on the host. Same tiles and warps as the TF32 kernel; shared
// row strides of 80 bytes (A) and 2 * (D + 8) bytes (B) keep every ldmatrix
// free of bank conflicts.
// Columns per chunk: 64 with FP16 symbols at head size 128 (half the chunks,
// barriers and copy issues of 32 columns: 8K f16 decode 5.27 -> 4.88 ms
// with the changes of 2026-12-01), else 32 (int32 symbols' staging at 64 would
// leave one CTA per SM; at head size 64 three 64-column stages would leave
// two CTAs per SM instead of three, and the tinyllama decode was 3 % slower).
__host__ __device__ constexpr uint32_t SdHChunk(uint32_t d, bool half_symbols) {
  return half_symbols && d >= 128 ? 64 : KC;
}
// A row stride, halves: 80 or 144 bytes keep every ldmatrix free of bank conflicts.
__host__ __device__ constexpr uint32_t SdHAStride(uint32_t d, bool half_symbols) {
  return SdHChunk(d, half_symbols) + 8;
}

// A stage, in bytes: A [TM][SdHAStride] halves, B [chunk][D + 8] halves, raw
// symbols [TM][chunk] int32 (none with FP16 symbols: they land in A as the
// features do).
__host__ __device__ constexpr uint32_t SdHStageBytes(uint32_t d, bool half_symbols) {
  const uint32_t kc = SdHChunk(d, half_symbols);
  return TM * SdHAStride(d, half_symbols) * 2 + kc * (d + 8) * 2 + (half_symbols ? 0 : TM * kc * 4);
}
// In bytes: the stages, which the tile's rows [TM][D + 8] floats overlay.
__host__ __device__ constexpr uint32_t SdHSharedBytes(uint32_t d, bool half_symbols) {
  const uint32_t stages = kTcStages * SdHStageBytes(d, half_symbols), rows = TM * (d + 8) * 4;
  return stages > rows ? stages : rows;
}
static_assert(2 * (SdHSharedBytes(128, true) + 1024) <= 227 * 1024, "two CTAs per SM");

// (a, b) rounded to FP16 (to nearest even), a in the low half; `bad` is set
// when either is outside FP16's range (or not a number).
__device__ __forceinline__ uint32_t PackHalf2(float a, float b, bool& bad) {
  bad |= OutsideHalfRange(a) || OutsideHalfRange(b);
  const __half2 h = __floats2half2_rn(a, b);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

// The FP16 kernels' end, the tile's float rows in row_s ([TM][D + 8]): the
// rows' destinations, then the next layer's features as FP16 rows (eight
// channels a store; an element outside FP16's range sets kSdHalfRange on the
// item, as does `bad` from the operands) and the output, in one pass
// (OutWriteHalfAndRows) where the destination takes 16-byte stores.
template <uint32_t D>
__device__ __forceinline__ void HalfRowsOut(const SdLaunch& L, const SdDesc& desc, uint32_t layer,
                                            const dense::Tile& tl, uint16_t* cur, uint64_t* dst_s,
                                            const float* row_s, uint32_t tid, bool bad) {
  constexpr uint32_t NT = 2 * D, BS = D + 8;
  const uint32_t t0 = tl.t0, nt = tl.nt;
  OutRowOffsets(L, desc, layer, tl.kv, tl.h, t0, nt, dst_s, tid, NT);
  __syncthreads();
  uint16_t* cur_rows = cur + ((uint64_t{tl.kv} * L.heads + tl.h) * desc.tokens + t0) * D;
  const bool keep = KeepsRows(L, layer);
  uint16_t* base = OutBase(L, desc, layer, tl.kv);
  if (OutTakesUnits(L, base, BS)) {
    const bool rotate = OutRotates(L, desc, tl.kv);
    const uint64_t pos0 = desc.first_position + t0;
    if (OutWriteHalfAndRows<D, false>(L, base, cur_rows, keep, rotate, pos0, dst_s, row_s, nt, tid, &bad)) {
      OutWriteHalfAndRows<D, true>(L, base, cur_rows, keep, rotate, pos0, dst_s, row_s, nt, tid, &bad);
    }
    if (bad) atomicCAS(&L.statuses[desc.status_index], 0, kSdHalfRange);
    return;
  }
  // A destination the 16-byte stores cannot take: two passes.
  for (uint32_t u = tid; keep && u < nt * (D / 8); u += NT) {
    const uint32_t k = u / (D / 8), c = (u % (D / 8)) * 8;
    const float4 x = *reinterpret_cast<const float4*>(&row_s[k * BS + c]);
    const float4 y = *reinterpret_cast<const float4*>(&row_s[k * BS + c + 4]);
    const uint4 out = make_uint4(PackHalf2(x.x, x.y, bad), PackHalf2(x.z, x.w, bad), PackHalf2(y.x, y.y, bad),
                                 PackHalf2(y.z, y.w, bad));
    *reinterpret_cast<uint4*>(cur_rows + uint64_t{k} * D + c) = out;
  }
  if (bad) atomicCAS(&L.statuses[desc.status_index], 0, kSdHalfRange);
  OutWriteRows(L, desc, layer, tl.kv, t0, nt, dst_s, row_s, BS, tid, NT, true);
}

// kHalfSym (SdLaunch::half_symbols): the symbols are already the FP16
// operands q * float(step_base) (the lane kernel stored them, SlLaunch::half_symbols,
// with this conversion's operations and range check), copied as the
// features are.
template <uint32_t D, bool kHalfSym>
__global__ void __launch_bounds__(2 * D, 2) SdLayerH16Kernel(SdLaunch L, uint32_t layer) {
  constexpr uint32_t NT = 2 * D;    // threads
  constexpr uint32_t BS = D + 8;    // B stride (halves) and row stride (floats)
  constexpr uint32_t KC = SdHChunk(D, kHalfSym);  // columns per chunk (shadows the TF32 kernels' 32)
  constexpr uint32_t AS = SdHAStride(D, kHalfSym);
  constexpr uint32_t kFeatCopies = TM * (KC / 8) / NT;  // 16-byte copies a thread issues per chunk
  constexpr uint32_t kSymCopies = TM * (KC / 4) / NT;
  constexpr uint32_t kBCopies = KC * (D / 8) / NT;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint64_t dst_s[TM];  // the rows' destinations (OutRowOffsets)
  const uint32_t H = L.heads, F = L.features;
  float* row_s = reinterpret_cast<float*>(smem);  // after the loop: [TM][BS]

  dense::Tile tl;
  const SdDesc& desc =
      dense::TileItem<TM, true>(L.descs, L.count, L.item_ctas, H, layer, &tl);  // 2 * D threads: whole warps
  const uint32_t T = desc.tokens;
  const uint32_t h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t tid = threadIdx.x;

  const uint16_t* W = L.predictor_h + uint64_t{g} * F * D;
  const uint16_t* U = L.basis_h + uint64_t{g} * D * D;
  const uint16_t* prev = reinterpret_cast<const uint16_t*>(desc.xhat[(layer + 1) % 2]);
  uint16_t* cur = reinterpret_cast<uint16_t*>(desc.xhat[layer % 2]);
  const int32_t* q = desc.q + (uint64_t{g} * T + t0) * D;
  // FP16 operands: group g's in the first half of its int32 symbols' place.
  const uint16_t* qh = reinterpret_cast<const uint16_t*>(desc.q + uint64_t{g} * T * D) + uint64_t{t0} * D;

  const float step = HalfOperandStep(SdStepBase(L, desc, g));  // the symbol operands' (HalfOperand)
  const bool feats = layer > 0 && L.inputs != 0;
  const uint32_t nf = feats ? F - 1 : 0;
  const uint32_t K = nf + D;
  const uint32_t chunks = (K + KC - 1) / KC;
  auto a_of = [&](uint32_t s) { return reinterpret_cast<uint16_t*>(smem + s * SdHStageBytes(D, kHalfSym)); };
  auto b_of = [&](uint32_t s) { return a_of(s) + TM * AS; };
  auto q_of = [&](uint32_t s) { return reinterpret_cast<int32_t*>(b_of(s) + KC * BS); };

  // Chunk c0's operands into stage st (a chunk is all feature or all symbol
  // columns, and never past K: nf and D are multiples of KC). A thread's
  // copies sit at the same places in every chunk (A copy i: a_at[i] in the
  // stage's A, a_src[i] from the chunk's first column; B copy i: row r,
  // channels n..n + 7 from the chunk's first weight row); only the chunk's
  // base pointers change.
  static_assert(D % KC == 0, "chunks of whole weight blocks");
  uint32_t a_at[kFeatCopies], a_src[kFeatCopies];  // in halves: shared offset in a stage's A, source offset
  bool a_live[kFeatCopies];
#pragma unroll
  for (uint32_t i = 0; i < kFeatCopies; ++i) {
    const uint32_t v = tid + i * NT, k = v / (KC / 8), c = (v % (KC / 8)) * 8;
    a_at[i] = k * AS + c;
    a_src[i] = k * D + c;
    a_live[i] = k < nt;
  }
  auto issue = [&](uint32_t c0, uint32_t st) {
    if (kHalfSym || c0 < nf) {
      const uint16_t* src = c0 < nf ? prev + FeatureAt(L, c0, H, h, T, t0, D) : qh + (c0 - nf);
      uint16_t* a = a_of(st);
#pragma unroll
      for (uint32_t i = 0; i < kFeatCopies; ++i) {
        if (a_live[i]) {
          CopyAsync16(a + a_at[i], src + a_src[i]);
        } else {
          *reinterpret_cast<uint4*>(a + a_at[i]) = make_uint4(0, 0, 0, 0);
        }
      }
    } else {
      const int32_t* src = q + (c0 - nf);
#pragma unroll
      for (uint32_t i = 0; i < kSymCopies; ++i) {
        const uint32_t v = tid + i * NT, k = v / (KC / 4), c = (v % (KC / 4)) * 4;
        if (k < nt) CopyAsync16(q_of(st) + k * KC + c, src + uint64_t{k} * D + c);
      }
    }
    const uint16_t* w = c0 < nf ? W + uint64_t{c0} * D : U + uint64_t{c0 - nf} * D;
    uint16_t* b = b_of(st);
#pragma unroll
    for (uint32_t i = 0; i < kBCopies; ++i) {
      const uint32_t v = tid + i * NT, r = v / (D / 8), n = (v % (D / 8)) * 8;
      CopyAsync16(b + r * BS + n, w + r * D + n);
    }
    CopyCommit();
  };

  const uint32_t warp = tid / 32, lane = tid % 32, tq = lane % 4;
  const uint32_t m0 = (warp / (D / 32)) * 64, n0 = (warp % (D / 32)) * 32;
  float acc[4][4][4];
  AccFromBias(L.predictor + uint64_t{g} * F * D + uint64_t{F - 1} * D, n0, tq, acc);

  bool bad = false;  // an operand outside FP16's range
  // Above: only what was in place before the lane stage (descriptors, the
  // step, the bias). The previous layer's rows and this layer's writes come after
  // the previous grid (LaunchSdLayerH16D's programmatic launch).
  dense::GridDependencyWait();
  dense::AllowDependents();
#pragma unroll
  for (uint32_t ci = 0; ci + 1 < kTcStages; ++ci) {
    if (ci < chunks) issue(ci * KC, ci);
    else CopyCommit();
  }
  for (uint32_t ci = 0; ci < chunks; ++ci) {
    const uint32_t c0 = ci * KC, st = ci % kTcStages;
    const uint32_t ahead = ci + kTcStages - 1;
    if (ahead < chunks) issue(ahead * KC, ahead % kTcStages);
    else CopyCommit();
    CopyWait<kTcStages - 1>();  // this thread's copies of chunk ci are done
    if (!kHalfSym && c0 >= nf) {
      // Symbols: the raw int32 this thread copied, times the step, to FP16.
#pragma unroll
      for (uint32_t i = 0; i < kSymCopies; ++i) {
        const uint32_t v = tid + i * NT, k = v / (KC / 4), c = (v % (KC / 4)) * 4;
        uint2 out = make_uint2(0, 0);
        if (k < nt) {
          const int4 x = *reinterpret_cast<const int4*>(q_of(st) + k * KC + c);
          out.x = PackHalf2(__fmul_rn(static_cast<float>(x.x), step),
                            __fmul_rn(static_cast<float>(x.y), step), bad);
          out.y = PackHalf2(__fmul_rn(static_cast<float>(x.z), step),
                            __fmul_rn(static_cast<float>(x.w), step), bad);
        }
        *reinterpret_cast<uint2*>(a_of(st) + k * AS + c) = out;
      }
    }
    __syncthreads();  // every thread's operands of chunk ci in place
    const uint16_t* a = a_of(st);
    const uint16_t* b = b_of(st);
#pragma unroll
    for (uint32_t ks = 0; ks < KC; ks += 16) dense::MmaStepF16(acc, a, AS, b, BS, m0, n0, ks, lane);
    __syncthreads();  // this stage consumed before the next issue overwrites it
  }
  AccToRows(acc, row_s, BS, m0, n0, lane);
  HalfRowsOut<D>(L, desc, layer, tl, cur, dst_s, row_s, tid, bad);
}

// ---- FP16 products on Hopper's wgmma (SdLaunch::predictor_ht) ----
//
// SdLayerH16Kernel<128, true> with its mainloop on wgmma: the same operands
// (FP16 features and FP16 symbols, FP16 weights, float32 sums from the bias
// row), the same output stage; only the order of the float32 additions
// inside the tensor cores may differ, within the FP16 tolerance. Two
// warpgroups of 64 tokens x 128 channels (wgmma m64n128k16, both operands
// from shared memory); 32-column chunks in 64-byte swizzled rows, the
// weights K-major (SdLaunch::predictor_ht, basis_ht: transposed once per
// profile on the host), six stages: four chunks in flight while a chunk's
// wgmmas run, one wgmma group left in flight behind them. Measured first in
// bench/gpu/wgmma_proto.cu (the products alone: 1.2x mma.sync, at the
// copies' bound). Compute capability 9.0 only (dense::SEQKV_WGMMA).
constexpr uint32_t kWgSw = 64;  // bytes a swizzled row: 32 columns a chunk
constexpr uint32_t kWgStages = 6;
constexpr uint32_t kWgStageBytes = (TM + 128) * kWgSw;  // A (tokens) then B (channels)
__host__ __device__ constexpr uint32_t SdWgSharedBytes() {
  const uint32_t stages = kWgStages * kWgStageBytes, rows = TM * (128 + 8) * 4;
  return stages > rows ? stages : rows;
}
static_assert(2 * (SdWgSharedBytes() + 2048) <= 227 * 1024, "two CTAs per SM");

__global__ void __launch_bounds__(256, 2) SdLayerWgKernel(SdLaunch L, uint32_t layer) {
#if SEQKV_WGMMA
  constexpr uint32_t D = 128, NT = 256, BS = D + 8;
  constexpr uint32_t kWgChunk = kWgSw / 2;        // columns a chunk
  constexpr uint32_t kUnits = kWgSw / 16;         // 16-byte units a row
  constexpr uint32_t kCopies = TM * kUnits / NT;  // A (and B) copies a thread issues per chunk
  constexpr uint32_t kAhead = kWgStages - 2;
  static_assert(D * kUnits / NT == kCopies, "as many B rows as A rows");
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ uint64_t dst_s[TM];  // the rows' destinations (OutRowOffsets)
  const uint32_t H = L.heads, F = L.features;
  float* row_s = reinterpret_cast<float*>(smem);        // after the loop: [TM][BS]
  if ((dense::SharedAddr(smem) & 1023) != 0) __trap();  // the swizzle atoms need their alignment

  dense::Tile tl;
  const SdDesc& desc = dense::TileItem<TM, true>(L.descs, L.count, L.item_ctas, H, layer, &tl);
  const uint32_t T = desc.tokens;
  const uint32_t h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;

  const uint16_t* WT = L.predictor_ht + uint64_t{g} * D * (F - 1);  // [D][F - 1]
  const uint16_t* UT = L.basis_ht + uint64_t{g} * D * D;            // [D][D]
  const uint16_t* prev = reinterpret_cast<const uint16_t*>(desc.xhat[(layer + 1) % 2]);
  uint16_t* cur = reinterpret_cast<uint16_t*>(desc.xhat[layer % 2]);
  const uint16_t* qh = reinterpret_cast<const uint16_t*>(desc.q + uint64_t{g} * T * D) + uint64_t{t0} * D;
  const bool feats = layer > 0 && L.inputs != 0;
  const uint32_t nf = feats ? F - 1 : 0;
  const uint32_t chunks = (nf + D) / kWgChunk;
  auto a_of = [&](uint32_t s) { return smem + s * kWgStageBytes; };
  auto b_of = [&](uint32_t s) { return a_of(s) + TM * kWgSw; };

  // A thread's copies: row r (a token of A, a channel of B), unit j, the
  // same places in every chunk.
  uint32_t at[kCopies], src_at[kCopies], w_at[kCopies], u_at[kCopies];
  bool live[kCopies];
#pragma unroll
  for (uint32_t i = 0; i < kCopies; ++i) {
    const uint32_t p = tid + i * NT, r = p / kUnits, j = p % kUnits;
    at[i] = dense::SwizzledAt<kWgSw>(r, j);
    src_at[i] = r * D + j * 8;
    w_at[i] = r * (F - 1) + j * 8;
    u_at[i] = r * D + j * 8;
    live[i] = r < nt;
  }
  auto issue = [&](uint32_t ci) {
    if (ci < chunks) {
      const uint32_t c0 = ci * kWgChunk, st = ci % kWgStages;
      const uint16_t* src = c0 < nf ? prev + FeatureAt(L, c0, H, h, T, t0, D) : qh + (c0 - nf);
      const uint16_t* w = c0 < nf ? WT + c0 : UT + (c0 - nf);
      unsigned char* a = a_of(st);
      unsigned char* b = b_of(st);
#pragma unroll
      for (uint32_t i = 0; i < kCopies; ++i) {
        if (live[i]) {
          CopyAsync16(a + at[i], src + src_at[i]);
        } else {
          *reinterpret_cast<uint4*>(a + at[i]) = make_uint4(0, 0, 0, 0);
        }
        CopyAsync16(b + at[i], w + (c0 < nf ? w_at[i] : u_at[i]));
      }
    }
    CopyCommit();  // an empty group past the last chunk keeps the wait counts uniform
  };

  // The sums start at the bias row's value of their column.
  float d[64];
  {
    const float* bias = L.predictor + uint64_t{g} * F * D + uint64_t{F - 1} * D;
#pragma unroll
    for (uint32_t j = 0; j < 16; ++j) {
      const uint32_t col = 8 * j + 2 * (lane % 4);
      d[4 * j] = d[4 * j + 2] = bias[col];
      d[4 * j + 1] = d[4 * j + 3] = bias[col + 1];
    }
  }
  // Above: only what was in place before the lane stage; the previous
  // layer's rows and this layer's writes come after the previous grid.
  dense::GridDependencyWait();
  dense::AllowDependents();
  dense::WgChunks<kAhead>(chunks, d, issue, [&](uint32_t ci) {
    const uint32_t as = dense::SharedAddr(a_of(ci % kWgStages)) + wg * 64 * kWgSw;  // this warpgroup's tokens
    const uint32_t bs = dense::SharedAddr(b_of(ci % kWgStages));
#pragma unroll
    for (uint32_t k = 0; k < kWgChunk / 16; ++k) {
      dense::WgmmaF16(d, dense::SwizzledDesc<kWgSw>(as + 32 * k), dense::SwizzledDesc<kWgSw>(bs + 32 * k));
    }
  });
  __syncthreads();  // every warpgroup's wgmmas done: the rows overlay the stages
  {
    const uint32_t r = wg * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (uint32_t j = 0; j < 16; ++j) {
      const uint32_t col = 8 * j + 2 * (lane % 4);
      *reinterpret_cast<float2*>(&row_s[r * BS + col]) = make_float2(d[4 * j], d[4 * j + 1]);
      *reinterpret_cast<float2*>(&row_s[(r + 8) * BS + col]) = make_float2(d[4 * j + 2], d[4 * j + 3]);
    }
  }
  HalfRowsOut<D>(L, desc, layer, tl, cur, dst_s, row_s, tid, false);
#else
  (void)L, (void)layer;
  __trap();  // the compute_90 PTX pass: never launched (LaunchSdLayer checks the device)
#endif
}

// ---- arith=int12 on int8 tensor cores (SdLaunch::math kSdMathInt12) ----
//
// The dense stage of arith=int12 chunks, exactly (seq_int12_device.cuh):
// per CTA, the prediction's feature blocks (the previous layer's float rows
// of block (kv', h') as int12 with the block's exponent, from the largest
// |x| that layer's CTAs gathered in SdDesc::max_bits) times the predictor's
// int12 rows, each block's exact sums scaled and added in double in the
// CPU's order (block ascending, from 0.0); then the symbols times the
// reconstruction weights. pred = float(sum) + bias and xhat = pred +
// float(double(A) 2^ev * base), each a separate round-to-nearest operation
// as on the CPU; then the shared output stage.
using i12::TMI;
static_assert(TMI == kInt12TileTokens, "the int12 tile");

template <uint32_t D>
__global__ void __launch_bounds__(2 * D, 2) SdLayerI12Kernel(SdLaunch L, uint32_t layer) {
  using Cta = i12::Cta<D>;
  constexpr uint32_t NT = Cta::NT, RS = Cta::kRowStride;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint64_t dst_s[TMI];  // the rows' destinations (OutRowOffsets)
  __shared__ uint32_t huge_s[TMI];  // row k has a symbol at or past 2^15 (Cta::Symbols)
  __shared__ int exp_s[kInt12MaxBlocks];  // the feature blocks' exponents
  Cta cta(smem);

  dense::Tile tl;
  const SdDesc& desc = dense::TileItem<TMI>(L.descs, L.count, L.item_ctas, L.heads, layer, &tl);
  const uint32_t H = L.heads, F = L.features, T = desc.tokens;
  const uint32_t kv = tl.kv, h = tl.h, g = tl.g, t0 = tl.t0, nt = tl.nt;
  const uint32_t tid = cta.tid;
  const bool feats = layer > 0 && L.inputs != 0;
  const uint32_t blocks = (F - 1) / D;  // the predictor's feature blocks
  const uint32_t nblk = feats ? blocks : 0;
  for (uint32_t k = tid; k < TMI; k += NT) huge_s[k] = 0;
  // Block b of the features: (kv', h') = (b, h) (same head), or b = kv' H + h' (all heads).
  auto block_of = [&](uint32_t b) { return L.inputs == 1 ? b * H + h : b; };
  const int ew = L.fixed_exp[3 * g], ev = L.fixed_exp[3 * g + 1];
  const int32_t* qrows = desc.q + (uint64_t{g} * T + t0) * D;
  const int8_t* vrows = L.v_i8 + uint64_t{g} * 2 * D * D;
  // The feature blocks' D columns, each block's sums flushed into the double sums.
  const uint32_t* prev_max = feats ? desc.max_bits + (layer - 1) * 2 * H : nullptr;
  // Above: only what was in place before the lane stage; the previous
  // layer's rows and largest |x|, and this layer's writes, come after the
  // previous grid (programmatic dependent launch, LaunchDense).
  dense::GridDependencyWait();
  dense::AllowDependents();
  cta.PredictBlocks(desc.xhat[(layer + 1) % 2], prev_max, block_of, nblk, T, t0, nt,
                    L.w_i8 + uint64_t{g} * blocks * 2 * D * D, ew, exp_s);

  // The symbols times the reconstruction weights, then xhat = pred + ... per element.
  float* const row_s = cta.Rows();
  const float* bias = L.predictor + (uint64_t{g} * F + (F - 1)) * D;
  const double base = SdStepBase(L, desc, g);
  const double vscale = ldexp(1.0, ev);
  auto pred_of = [&](uint32_t k, uint32_t j) {
    return i12::PredOf(feats, feats ? cta.dsum[i12::DsumAt(D, k, j)] : 0.0, bias[j]);
  };
  cta.template Symbols<false>(
      qrows, vrows, nt, huge_s, pred_of, [&](uint32_t k, uint32_t j, int64_t a, float pred) {
        row_s[k * RS + j] = __fadd_rn(pred, i12::RecOf(static_cast<double>(a), vscale, base));
      });
  OutRowOffsets(L, desc, layer, kv, h, t0, nt, dst_s, tid, NT);
  __syncthreads();
  // The next layer's features (float rows) and their blocks' largest |x|.
  if (KeepsRows(L, layer)) {
    cta.StoreRows(nt, desc.xhat[layer % 2] + ((uint64_t{kv} * H + h) * T + t0) * D,
                  &desc.max_bits[layer * 2 * H + kv * H + h]);
  }
  OutWriteRows<true>(L, desc, layer, kv, t0, nt, dst_s, row_s, RS, tid, NT);
}

// The FP16 and int12 kernels' launch, with programmatic stream serialization: layer
// l's CTAs start their prologue while layer l - 1's last CTAs finish (the
// kernels wait for that grid before they read its rows). SEQKV_DENSE_PDL=0
// launches plainly (a measuring switch).
cudaError_t LaunchDense(void (*kernel)(SdLaunch, uint32_t), uint32_t threads, size_t smem,
                        const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  static const bool pdl = [] {
    const char* e = std::getenv("SEQKV_DENSE_PDL");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(launch.total_ctas);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, launch, layer);
}

template <uint32_t D, bool kHalfSym>
cudaError_t LaunchSdLayerH16D(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  return LaunchDense(SdLayerH16Kernel<D, kHalfSym>, 2 * D, SdHSharedBytes(D, kHalfSym), launch, layer,
                     stream);
}

template <uint32_t D>
cudaError_t LaunchSdLayerI12D(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  return LaunchDense(SdLayerI12Kernel<D>, 2 * D, i12::SharedBytes(D), launch, layer, stream);
}

cudaError_t LaunchSdLayerWg(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  return LaunchDense(SdLayerWgKernel, 256, SdWgSharedBytes(), launch, layer, stream);
}

template <int kPasses, uint32_t D>
cudaError_t LaunchSdLayerTcD(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  const size_t smem = SdTcSharedBytes(D);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(SdLayerTcKernel<kPasses, D>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  SdLayerTcKernel<kPasses, D><<<launch.total_ctas, 2 * D, smem, stream>>>(launch, layer);
  return cudaGetLastError();
}

template <int kPasses>
cudaError_t LaunchSdLayerTc(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  return launch.head_dim == 64 ? LaunchSdLayerTcD<kPasses, 64>(launch, layer, stream)
                               : LaunchSdLayerTcD<kPasses, 128>(launch, layer, stream);
}

}  // namespace

cudaError_t LaunchSdLayer(const SdLaunch& launch, uint32_t layer, cudaStream_t stream) {
  if (launch.total_ctas == 0) return cudaSuccess;
  if (launch.math != kSdMathExact) {
    // Chunks of feature columns only or symbol columns only (always so at
    // head sizes 64 and 128: the features are 2 or 2 * heads rows of them).
    if (!SdTensorCoreFits(launch.head_dim) || (launch.features - 1) % KC != 0) return cudaErrorInvalidValue;
    if (launch.math == kSdMathInt12) {
      if (!Int12Fits(launch.head_dim, launch.features) || launch.v_i8 == nullptr || launch.fixed_exp == nullptr ||
          (launch.features > 1 && launch.w_i8 == nullptr)) {
        return cudaErrorInvalidValue;
      }
      return launch.head_dim == 64 ? LaunchSdLayerI12D<64>(launch, layer, stream)
                                   : LaunchSdLayerI12D<128>(launch, layer, stream);
    }
    if (launch.math == kSdMathF16) {
      if (launch.predictor_h == nullptr || launch.basis_h == nullptr) return cudaErrorInvalidValue;
      if (launch.half_symbols) {
        if ((launch.features - 1) % SdHChunk(launch.head_dim, true) != 0) return cudaErrorInvalidValue;
        if (launch.head_dim == 128 && launch.predictor_ht != nullptr && launch.basis_ht != nullptr) {
          return LaunchSdLayerWg(launch, layer, stream);
        }
        return launch.head_dim == 64 ? LaunchSdLayerH16D<64, true>(launch, layer, stream)
                                     : LaunchSdLayerH16D<128, true>(launch, layer, stream);
      }
      return launch.head_dim == 64 ? LaunchSdLayerH16D<64, false>(launch, layer, stream)
                                   : LaunchSdLayerH16D<128, false>(launch, layer, stream);
    }
    return launch.math == kSdMathTf32x3 ? LaunchSdLayerTc<3>(launch, layer, stream)
                                        : LaunchSdLayerTc<1>(launch, layer, stream);
  }
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
