// Private to gpu/: device code shared by the seq codec's dense decode and
// encode kernels (seq_decode_kernels.cu, seq_encode_kernels.cu). Every float
// operation is a separate round-to-nearest _rn intrinsic in the CPU
// reference's order (codec/src/seq_lossy_core.cc), so results are bit-exact.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "seq_decode_kernels.h"
#include "seq_step_device.cuh"

namespace seqkv::gpu::internal::dense {

constexpr uint32_t FC = kSdFeatureChunk;

// The last descriptor whose prefix field (`first`, e.g. &Desc::first_cta)
// is <= x: the item of CTA, group, ... x.
template <typename Desc>
__device__ __forceinline__ uint32_t FindItem(const Desc* descs, uint32_t count, uint32_t x,
                                             uint32_t Desc::*first) {
  uint32_t lo = 0, hi = count;
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (descs[mid].*first <= x) lo = mid; else hi = mid;
  }
  return lo;
}

// What a dense-stage CTA works on: one (kv, head) group of layer `layer` and
// one tile of TT tokens of its item (CTAs ordered by group, then tile).
struct Tile {
  uint32_t kv, h, g;  // g = the group's index (layer * 2 + kv) * H + h
  uint32_t tile, tiles;
  uint32_t t0, nt;    // first token and token count of the tile
};

template <uint32_t TT>
__device__ __forceinline__ Tile TileOf(uint32_t local_cta, uint32_t tokens, uint32_t heads, uint32_t layer) {
  Tile x;
  x.tiles = (tokens + TT - 1) / TT;
  const uint32_t gl = local_cta / x.tiles;
  x.tile = local_cta % x.tiles;
  x.kv = gl / heads;
  x.h = gl % heads;
  x.g = (layer * 2 + x.kv) * heads + x.h;
  x.t0 = x.tile * TT;
  x.nt = min(TT, tokens - x.t0);
  return x;
}

// FindItem by whole warps (every lane of the warp calling it with the same
// arguments; the result is the same): each round the 32 lanes probe 32
// evenly spaced descriptors of [lo, hi) and a ballot keeps the gap after the
// last one <= x, so a round costs one load latency and a batch of up to 32
// items takes one round. (The binary search's chain of dependent loads was
// 7 % of the FP16 dense kernel's stall samples: ncu, 2026-12-01.)
template <typename Desc>
__device__ __forceinline__ uint32_t FindItemWarp(const Desc* descs, uint32_t count, uint32_t x,
                                                 uint32_t Desc::*first) {
  const uint32_t lane = threadIdx.x % 32;
  uint32_t lo = 0, hi = count;  // the answer is in [lo, hi); descs[lo].*first <= x
  while (hi - lo > 1) {
    const uint64_t span = hi - lo;
    const bool le = descs[lo + static_cast<uint32_t>(lane * span / 32)].*first <= x;  // lane 0 probes lo
    const uint32_t best = 31 - __clz(__ballot_sync(0xffffffffu, le) | 1u);
    const uint32_t next_lo = lo + static_cast<uint32_t>(best * span / 32);
    hi = best == 31 ? hi : lo + static_cast<uint32_t>((best + 1) * span / 32);
    lo = next_lo;
  }
  return lo;
}

// This CTA's item (the last whose first_cta <= blockIdx.x) and its tile, in
// a per-layer dense launch (the decode's SdDesc, the encode's SqDesc).
// item_ctas: every item's CTA count when they are all the same (the launch's
// item_ctas), so the item is blockIdx.x / item_ctas without a search (its
// chain of dependent loads was ~5 % of the int12 predict kernel's stall
// samples: ncu, 2026-12-04); 0 otherwise. kWarpSearch: the search through
// FindItemWarp, for kernels whose every thread calls it, in whole warps,
// before any divergence.
template <uint32_t TT, bool kWarpSearch = false, typename Desc>
__device__ __forceinline__ const Desc& TileItem(const Desc* descs, uint32_t count, uint32_t item_ctas,
                                                uint32_t heads, uint32_t layer, Tile* tile) {
  const uint32_t cta = blockIdx.x;
  const uint32_t item = item_ctas != 0 ? min(cta / item_ctas, count - 1)
                        : kWarpSearch  ? FindItemWarp(descs, count, cta, &Desc::first_cta)
                                       : FindItem(descs, count, cta, &Desc::first_cta);
  const Desc& desc = descs[item];
  *tile = TileOf<TT>(cta - desc.first_cta, desc.tokens, heads, layer);
  return desc;
}

// A shared-memory pointer as the 32-bit shared-window address PTX takes.
__device__ __forceinline__ uint32_t SharedAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Asynchronous copies global -> shared (cp.async), 4 bytes (through L1) or
// 16 bytes (L2 only), committed as groups; CopyWait<N> waits until at most N
// of this thread's groups are pending.
__device__ __forceinline__ void CopyAsync4(void* dst, const void* src) {
  const uint32_t d = SharedAddr(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src) {
  const uint32_t d = SharedAddr(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void CopyCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CopyWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Programmatic dependent launch (sm_90; LaunchSdLayer's per-layer kernels):
// a grid launched with programmatic stream serialization may start while the
// previous grid on its stream still runs. GridDependencyWait returns once that
// grid has completed and its writes are visible (at once when the launch had
// no such attribute); AllowDependents lets the next grid start its CTAs (they
// wait in turn). A kernel reads nothing an earlier grid writes, and writes
// nothing, before the wait.
__device__ __forceinline__ void GridDependencyWait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void AllowDependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// Four 8x8 matrices of 16-bit elements (or 8x16 bytes) from shared memory,
// lane l giving the address of row l % 8 of matrix l / 8 (ldmatrix).
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = SharedAddr(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = SharedAddr(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// c += a * b on tensor cores: mma.sync m16n8k16, FP16 operands (a: four
// registers of an ldmatrix x4, b: two of an ldmatrix x4.trans), float32 sums.
__device__ __forceinline__ void MmaF16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One k16 step of a warp's 64 x 32 tile (the FP16 dense kernel's mainloop;
// also bench/gpu/wgmma_proto.cu's baseline): A rows m0.. of `a` (row stride
// `as` halves), columns ks..ks + 15; B rows ks..ks + 15 of `b` (row stride
// `bs` halves), channels n0..n0 + 31; acc[m][n] is the 16 x 8 tile of tokens
// m0 + 16 m, channels n0 + 8 n (mma's C layout).
__device__ __forceinline__ void MmaStepF16(float (&acc)[4][4][4], const uint16_t* a, uint32_t as,
                                           const uint16_t* b, uint32_t bs, uint32_t m0, uint32_t n0,
                                           uint32_t ks, uint32_t lane) {
  // B: two n8 tiles a load.
  uint32_t bf[4][2];
#pragma unroll
  for (uint32_t np = 0; np < 2; ++np) {
    uint32_t r[4];
    LdMatrixX4Trans(r, b + (ks + lane % 8 + ((lane / 8) % 2) * 8) * bs + n0 + np * 16 + (lane / 16) * 8);
    bf[2 * np][0] = r[0];
    bf[2 * np][1] = r[1];
    bf[2 * np + 1][0] = r[2];
    bf[2 * np + 1][1] = r[3];
  }
#pragma unroll
  for (uint32_t m = 0; m < 4; ++m) {
    uint32_t af[4];
    LdMatrixX4(af, a + (m0 + m * 16 + lane % 16) * as + ks + (lane / 16) * 8);
#pragma unroll
    for (uint32_t n = 0; n < 4; ++n) MmaF16(acc[m][n], af, bf[n][0], bf[n][1]);
  }
}

// FloatToBf16 (dtype.h): round to nearest even, NaN made quiet.
__device__ __forceinline__ uint16_t ToBf16(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// Channel j (< rd) of a row after RoPE (undo = false: x * cos + rotate(x) *
// sin, engine_rope.cc ApplyRope) or with it undone (undo = true: x * cos -
// rotate(x) * sin, UndoRope): the pair (a, b) = (row[ia], row[ib]) gives
// ia: a * cos + ra * sin, ib: b * cos + rb * sin (products, then the sum),
// with (ra, rb) = (-b, a), or (b, -a) when undoing. style 1: rotate_half
// (pairs (i, i + rd/2)), else interleaved (pairs (2i, 2i + 1)).
__device__ __forceinline__ void RopePairOf(uint32_t j, uint32_t rd, uint32_t style, uint32_t& ia, uint32_t& ib,
                                           bool& first) {
  if (style == 1) {
    const uint32_t half = rd / 2;
    first = j < half;
    ia = first ? j : j - half;
  } else {
    first = (j & 1) == 0;
    ia = first ? j : j - 1;
  }
  ib = style == 1 ? ia + rd / 2 : ia + 1;
}
// RopeChannel's value from the pair (a, b) of channel j (`first`: j is ia).
__device__ __forceinline__ float RopePair(float a, float b, bool first, float c, float s, bool undo) {
  const float ra = undo ? b : -b, rb = undo ? -a : a;
  return first ? __fadd_rn(__fmul_rn(a, c), __fmul_rn(ra, s)) : __fadd_rn(__fmul_rn(b, c), __fmul_rn(rb, s));
}
__device__ __forceinline__ float RopeChannel(const float* row, uint32_t j, uint32_t rd, uint32_t style, float c,
                                             float s, bool undo) {
  uint32_t ia, ib;
  bool first;
  RopePairOf(j, rd, style, ia, ib, first);
  return RopePair(row[ia], row[ib], first, c, s, undo);
}

// acc[k] += in[k][f] * m[f * d] for f = 0..n-1 ascending, for each of the
// tile's TT tokens k; `in` is shared memory with row stride `stride`, `m` the
// thread's column of a row-major matrix with d columns. Four columns a step
// (one 16-byte shared load per token) when the rows are 16-byte aligned; each
// token's sum keeps the ascending order either way. (Loading the next step's
// weights ahead, by hand, measured slower on the H200: 36.3 vs 34.9 ms for the
// encoder's dense stage, 29.9 vs 29.3 ms for the decoder's, 8K context.)
template <uint32_t TT>
__device__ __forceinline__ void AccumulateTile(const float* in, uint32_t stride, uint32_t n, const float* m,
                                               uint32_t d, float (&acc)[TT]) {
  uint32_t f = 0;
  if (stride % 4 == 0) {
    for (; f + 4 <= n; f += 4) {
      const float* mp = m + uint64_t{f} * d;
      const float m0 = mp[0], m1 = mp[d], m2 = mp[2 * d], m3 = mp[3 * d];
#pragma unroll
      for (uint32_t k = 0; k < TT; ++k) {
        const float4 x = *reinterpret_cast<const float4*>(in + k * stride + f);
        float a = acc[k];
        a = __fadd_rn(a, __fmul_rn(x.x, m0));
        a = __fadd_rn(a, __fmul_rn(x.y, m1));
        a = __fadd_rn(a, __fmul_rn(x.z, m2));
        a = __fadd_rn(a, __fmul_rn(x.w, m3));
        acc[k] = a;
      }
    }
  }
  for (; f < n; ++f) {
    const float w = m[uint64_t{f} * d];
#pragma unroll
    for (uint32_t k = 0; k < TT; ++k) acc[k] = __fadd_rn(acc[k], __fmul_rn(in[k * stride + f], w));
  }
}

// What PredictTile needs to know about the group and its tile.
struct PredictArgs {
  const float* W;     // the group's predictor [F][d]
  const float* prev;  // the previous layer's reconstruction [2][H][T][d]
  uint32_t F, d, H, T;
  uint32_t inputs;    // 0 mean, 1 same head, 2 all heads (SeqInputs)
  uint32_t h, t0, nt;
  bool has_features;  // layer > 0 and inputs != mean
};

// pred[k] for the thread's channel j (Predict in seq_lossy_core.cc): the
// tile's features staged in feat_s ([TT][FC]) FC columns at a time. Every
// thread of the block calls it (it synchronizes); `active` says j < d.
template <uint32_t TT>
__device__ __forceinline__ void PredictTile(const PredictArgs& a, float* feat_s, uint32_t j, bool active,
                                            float (&acc)[TT]) {
#pragma unroll
  for (uint32_t k = 0; k < TT; ++k) acc[k] = 0.0f;
  const uint32_t F = a.F, d = a.d;
  if (!a.has_features) {
    if (active) {
      const float w = a.W[uint64_t{F - 1} * d + j];  // the bias row alone
#pragma unroll
      for (uint32_t k = 0; k < TT; ++k) acc[k] = __fadd_rn(0.0f, __fmul_rn(1.0f, w));
    }
    return;
  }
  for (uint32_t f0 = 0; f0 < F; f0 += FC) {
    const uint32_t fc = min(FC, F - f0);
    __syncthreads();
    for (uint32_t idx = threadIdx.x; idx < TT * FC; idx += blockDim.x) {
      const uint32_t k = idx / FC, ff = idx % FC, f = f0 + ff;
      float v = 0.0f;
      if (k < a.nt && ff < fc) {
        const uint64_t t = a.t0 + k;
        if (f == F - 1) {
          v = 1.0f;
        } else if (a.inputs == 1) {  // same head: [K row, V row, 1]
          const uint32_t pkv = f / d, c = f % d;
          v = a.prev[((uint64_t{pkv} * a.H + a.h) * a.T + t) * d + c];
        } else {  // all heads: [K heads..., V heads..., 1]
          const uint32_t blk = f / d, c = f % d;  // blk = kv' * H + h'
          v = a.prev[(uint64_t{blk} * a.T + t) * d + c];
        }
      }
      feat_s[idx] = v;
    }
    __syncthreads();
    if (active) AccumulateTile(feat_s, FC, fc, a.W + uint64_t{f0} * d + j, d, acc);
  }
}

// ---- Hopper's wgmma (the sm_90a pass only; see SEQKV_WGMMA) ----
//
// wgmma and its fences exist only in the architecture-specific sm_90a
// target. The library is built for sm_90a machine code and compute_90 PTX
// (cmake/SeqkvCuda.cmake): in the PTX pass (what a newer GPU would compile)
// these helpers trap, and the host never launches a kernel that uses them
// on anything but a compute capability 9.0 device.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SEQKV_WGMMA 1
#else
#define SEQKV_WGMMA 0
#endif

// A shared-memory matrix descriptor of a K-major operand stored in kSw-byte
// swizzled rows (kSw 128, 64 or 32: the row is one swizzle atom wide, 8 rows
// an atom of 8 kSw bytes, aligned to its size): the start address, LBO
// unused (1), SBO = 8 kSw (one 8-row group to the next), the swizzle mode in
// bits 62-63. A k16 step within the row advances the start by 32 bytes (the
// hardware applies the XOR to the addresses it forms).
template <uint32_t kSw>
__device__ __forceinline__ uint64_t SwizzledDesc(uint32_t addr) {
  static_assert(kSw == 128 || kSw == 64 || kSw == 32, "swizzle width");
  constexpr uint64_t mode = kSw == 128 ? 1 : kSw == 64 ? 2 : 3;
  return uint64_t{(addr & 0x3FFFF) >> 4} | (uint64_t{1} << 16) | (uint64_t{8 * kSw >> 4} << 32) |
         (mode << 62);
}
// Where 16-byte unit j of row r lies in such rows, in bytes.
template <uint32_t kSw>
__host__ __device__ constexpr uint32_t SwizzledAt(uint32_t r, uint32_t j) {
  return r * kSw + ((j ^ ((r * kSw / 128) % (kSw / 16))) * 16);
}

__device__ __forceinline__ void WgFence() {
#if SEQKV_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void WgCommit() {
#if SEQKV_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void WgWait() {
#if SEQKV_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Shared memory written through the generic proxy (cp.async, ordinary
// stores) made visible to wgmma's async proxy: each writing thread, before
// the barrier that precedes the wgmma.
__device__ __forceinline__ void FenceProxyAsync() {
#if SEQKV_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving accumulator accesses across wgmma's fences
// and waits.
__device__ __forceinline__ void FenceAcc(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D (64 x 128, float32) += A (64 x 16) * B (16 x 128), FP16 operands in
// shared memory (descriptors da, db), issued by a warpgroup: A K-major; B
// K-major (kTransB 0) or MN-major (1, wgmma transposes it). D's layout: warp
// w of the warpgroup holds rows 16 w .. 16 w + 15; d[4 j .. 4 j + 3] are
// columns 8 j + 2 (lane % 4) and + 1, at rows lane / 4 and lane / 4 + 8.
template <int kTransB = 0>
__device__ __forceinline__ void WgmmaF16(float (&d)[64], uint64_t da, uint64_t db) {
#if SEQKV_WGMMA
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
      "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
      "%62, %63}, %64, %65, 1, 1, 1, 0, %66;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]),
        "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]),
        "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "n"(kTransB));
#else
  (void)d, (void)da, (void)db;
  __trap();
#endif
}

// The wgmma kernels' chunk pipeline: kAhead chunks in flight (issue(ci):
// chunk ci's cp.async copies into its stage and one commit, an empty one
// past the last chunk); chunk ci's wgmmas (mma(ci)) once every thread's
// copies of it are in and visible to the async proxy, one wgmma group left
// in flight behind the next chunk's. issue(ci + kAhead) refills chunk
// ci - 2's stage: at least kAhead + 2 stages. Returns with this warpgroup's
// wgmmas done (the caller synchronizes the CTA before reusing the stages).
template <uint32_t kAhead, typename Issue, typename Mma>
__device__ __forceinline__ void WgChunks(uint32_t chunks, float (&d)[64], Issue&& issue, Mma&& mma) {
  for (uint32_t ci = 0; ci < kAhead; ++ci) issue(ci);
  for (uint32_t ci = 0; ci < chunks; ++ci) {
    CopyWait<kAhead - 1>();  // this thread's copies of chunk ci are done
    FenceProxyAsync();
    __syncthreads();  // every thread's part of chunk ci; every warpgroup past chunk ci - 2's wgmmas
    issue(ci + kAhead);
    FenceAcc(d);
    WgFence();
    mma(ci);
    WgCommit();
    WgWait<1>();
    FenceAcc(d);
  }
  WgWait<0>();
  FenceAcc(d);
}

}  // namespace seqkv::gpu::internal::dense
