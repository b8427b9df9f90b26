// TurboQuant decode/encode kernels (CUDA C++17, sm_90), included by one
// translation unit per padded size d' = P (turboquant_kernels_p<P>.cu), which
// instantiates LaunchTqDecodeP<P> / LaunchTqEncodeP<P> (bits 1..4), so that the
// sizes compile in parallel (in one file they were the CUDA build's longest
// step); turboquant_kernels.cu dispatches to them.
//
// Lane layout: a vector of d' (padded) coordinates is held by G lanes of E
// coordinates each, E = min(d', kTqLaneCoords), G = d' / E; lane q of a group
// holds coordinates [q E, q E + E). At d' <= 128 (every model we serve) that is
// one lane per vector: the Walsh–Hadamard butterflies run in registers with no
// shuffle; above it the stages h >= E go through __shfl_xor_sync.
//
// Exactness: every float operation is the CPU reference's
// (codec/src/turboquant_codec.cc, hadamard.cc), in the same order per element,
// with explicit _rn intrinsics (and --fmad=false) so nothing is contracted into
// an FMA. Two rewrites are exact and used for speed: the sign flip (a multiply
// by -1) commutes with round-to-nearest, so decode multiplies by the signed
// constant +-1/sqrt(d') and encode flips the sign bit of the input; and the
// bf16 rounding is the hardware's cvt.rn.bf16x2.f32 (round to nearest even, as
// the reference; the values are never NaN).
//
// Memory access: a warp handles 32 / G vectors per pass. Its lanes compute in
// registers, then stage the bf16 rows in shared memory (rows padded by 16 B so
// 16-byte accesses are conflict-free) and the warp copies them out (decode) or
// in (encode) as consecutive 16-byte pieces: each store instruction writes
// whole 128-byte lines instead of one 16-byte piece of 32 lines.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "turboquant_kernels.h"

namespace seqkv::gpu::internal {

namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int kWarps = kTqThreadsPerBlock / 32;
constexpr int kPasses = kTqPasses;

template <int P>
struct Layout {
  static constexpr int E = P < kTqLaneCoords ? P : kTqLaneCoords;  // coordinates per lane
  static constexpr int G = P / E;                                  // lanes per vector
  static constexpr int kVecs = 32 / G;                             // vectors per warp pass
  static constexpr int kPartBytes = 2 * E + 16;                    // one lane's bf16 + 16 B pad
  static constexpr int kRowBytes = G * kPartBytes;
  static constexpr int kWarpBytes = kVecs * kRowBytes;
  static constexpr int kCols = P / 8;             // 16-byte columns of a row
  static constexpr int kPartCols = E / 8;
  // Code prefetch slots (decode): one per lane, padded to an odd number of
  // 16-byte units so the lanes' 16-byte reads are conflict-free.
  template <int B>
  static constexpr int kLaneCodeBytes = E * B / 8;
  template <int B>
  static constexpr bool kPrefetchCodes = kLaneCodeBytes<B> % 16 == 0;
  template <int B>
  static constexpr int kSlotBytes =
      !kPrefetchCodes<B> ? 16 : (kLaneCodeBytes<B> / 16) % 2 == 1 ? kLaneCodeBytes<B> : kLaneCodeBytes<B> + 16;
  // Registers: E floats dominate; 3 blocks of 128 threads leave 170 per thread.
  static constexpr int kMinBlocks = E >= 128 ? 3 : E >= 64 ? 4 : 6;
  static_assert(kVecs * kCols % 32 == 0, "whole copy rounds");
};

__device__ __forceinline__ uint32_t FindItem(const TqDesc* descs, uint32_t count, uint32_t tile) {
  uint32_t lo = 0, hi = count;  // last item with first_tile <= tile
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (descs[mid].first_tile <= tile) lo = mid; else hi = mid;
  }
  return lo;
}

// x <- H x (unnormalized butterflies) over the group's d' = G E coordinates.
template <int E, int G>
__device__ __forceinline__ void Butterflies(float (&x)[E], int q) {
#pragma unroll
  for (int h = 1; h < E; h <<= 1) {
#pragma unroll
    for (int j = 0; j < E; ++j) {
      if ((j & h) == 0) {
        const float a = x[j], b = x[j + h];
        x[j] = __fadd_rn(a, b);
        x[j + h] = __fsub_rn(a, b);
      }
    }
  }
#pragma unroll
  for (int m = 1; m < G; m <<= 1) {  // xor m < G stays inside the lane's group
    const bool upper = (q & m) != 0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const float p = __shfl_xor_sync(kFull, x[j], m);
      x[j] = upper ? __fsub_rn(p, x[j]) : __fadd_rn(x[j], p);
    }
  }
}

// One lane's E * B code bits (a whole number of 32-bit words, E >= 32),
// little-endian as the format packs them.
template <int E, int B>
struct LaneCodes {
  static constexpr int kBytes = E * B / 8;
  static constexpr int kWords = kBytes / 4;
  uint32_t w[kWords];

  __device__ __forceinline__ void Clear() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
  }

  // Sections follow the chunk header, so they are often not 16-byte aligned:
  // then the lane loads the aligned 16-byte window around its bytes and
  // funnel-shifts (the window's word offset is a compile-time case). Bytes of
  // the window outside [sec_begin, sec_end) are never read: such lanes (the
  // first and last vectors of a section) load byte by byte.
  template <int kOff>
  __device__ __forceinline__ void LoadShifted(const uint4* base, uint32_t shift) {
    constexpr int kU = kBytes / 16 + 1;
    uint32_t raw[4 * kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const uint4 v = __ldg(base + u);
      raw[4 * u] = v.x, raw[4 * u + 1] = v.y, raw[4 * u + 2] = v.z, raw[4 * u + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = __funnelshift_r(raw[kOff + i], raw[kOff + i + 1], shift);
  }

  __device__ __forceinline__ void Load(const uint8_t* p, const uint8_t* sec_begin, const uint8_t* sec_end) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if constexpr (kBytes % 16 == 0) {
      const uint32_t m = static_cast<uint32_t>(a & 15);
      if (m == 0) {
#pragma unroll
        for (int u = 0; u < kBytes / 16; ++u) {
          const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + u);
          w[4 * u] = v.x, w[4 * u + 1] = v.y, w[4 * u + 2] = v.z, w[4 * u + 3] = v.w;
        }
        return;
      }
      const uintptr_t base = a - m;
      if (base >= reinterpret_cast<uintptr_t>(sec_begin) &&
          base + 16 * (kBytes / 16 + 1) <= reinterpret_cast<uintptr_t>(sec_end)) {
        const auto* b = reinterpret_cast<const uint4*>(base);
        const uint32_t shift = 8 * (m & 3);
        switch (m >> 2) {
          case 0: LoadShifted<0>(b, shift); return;
          case 1: LoadShifted<1>(b, shift); return;
          case 2: LoadShifted<2>(b, shift); return;
          default: LoadShifted<3>(b, shift); return;
        }
      }
    } else if ((a & 3) == 0) {
#pragma unroll
      for (int i = 0; i < kWords; ++i) w[i] = __ldg(reinterpret_cast<const uint32_t*>(p) + i);
      return;
    }
    Clear();
#pragma unroll
    for (int i = 0; i < kBytes; ++i) w[i / 4] |= static_cast<uint32_t>(__ldg(p + i)) << (8 * (i % 4));
  }

  // 4 * index of coordinate e (a byte offset into a float table): two
  // instructions (shift or funnel shift, and).
  __device__ __forceinline__ uint32_t ByteOffset(int e) const {
    const int pos = e * B;  // compile-time after unrolling
    const int wi = pos / 32, off = pos % 32;
    uint32_t v;
    if (off >= 2) {
      v = off + B <= 32 ? w[wi] >> (off - 2) : __funnelshift_r(w[wi], w[wi + 1], off - 2);
    } else {
      v = w[wi] << (2 - off);
    }
    return v & (((1u << B) - 1u) << 2);
  }
};

__device__ __forceinline__ uint16_t LoadU16(const uint8_t* p) {
  if ((reinterpret_cast<uintptr_t>(p) & 1) == 0) return __ldg(reinterpret_cast<const uint16_t*>(p));
  return static_cast<uint16_t>(__ldg(p) | (__ldg(p + 1) << 8));
}

__device__ __forceinline__ void StoreU16(uint8_t* p, uint16_t v) {
  if ((reinterpret_cast<uintptr_t>(p) & 1) == 0) {
    *reinterpret_cast<uint16_t*>(p) = v;
  } else {
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
  }
}

// cp.async (sm_80+): 16 bytes global -> shared without a register, L1 bypassed.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

__device__ __forceinline__ const uint8_t* ShflPtr(const void* p, int src_lane) {
  return reinterpret_cast<const uint8_t*>(
      __shfl_sync(kFull, static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(p)), src_lane));
}

// Bits [first, first + 32) of the sign pattern (first a multiple of 32).
__device__ __forceinline__ uint32_t SignWord(const TqGroupConsts& c, uint32_t first) {
  return static_cast<uint32_t>(c.sign_words[first / 64] >> (first % 64));
}

__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo in the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Shared by decode and encode: which vector a lane group handles. Vectors are
// enumerated (kv, layer, head, token) for both destinations, so consecutive
// groups read consecutive code bytes and write whole bf16 rows.
struct VectorIndex {
  bool valid;
  uint32_t kv, iv, t, lh;  // iv = lh * tokens + t within K or V
};

__device__ __forceinline__ VectorIndex Locate(uint32_t v, uint32_t per_tensor, uint32_t tokens) {
  VectorIndex x;
  x.valid = v < 2 * per_tensor;
  x.kv = v >= per_tensor ? 1u : 0u;
  x.iv = x.valid ? v - x.kv * per_tensor : 0;
  x.t = x.iv % tokens;
  x.lh = x.iv / tokens;
  return x;
}

// Decode: one tile = kWarps * kPasses passes of 32 / G vectors of one item.
// While a pass computes, the next pass's codes are already on their way into
// shared memory (cp.async, 16-byte pieces, consecutive lanes on consecutive
// bytes) and its norms into registers: measured without it, the warps (3 per
// scheduler, limited by registers) stalled on those loads 41% of the time.
template <int P, int B, bool kPaged>
__global__ void __launch_bounds__(kTqThreadsPerBlock, Layout<P>::kMinBlocks)
    TqDecodeKernel(const TqDesc* __restrict__ descs, uint32_t count, uint32_t block_size, uint32_t num_blocks,
                   int32_t* __restrict__ statuses, const __grid_constant__ TqGroupConsts c) {
  using L = Layout<P>;
  constexpr int E = L::E, G = L::G, kVecs = L::kVecs;
  using Codes = LaneCodes<E, B>;
  constexpr bool kPrefetch = L::template kPrefetchCodes<B>;
  constexpr int kSlot = L::template kSlotBytes<B>;
  constexpr int kLaneChunks = Codes::kBytes / 16;  // 16-byte pieces of one lane's codes
  __shared__ float centroids[16];
  __shared__ __align__(16) uint8_t stage[kWarps][L::kWarpBytes];
  __shared__ __align__(16) uint8_t slots[kWarps][kPrefetch ? 32 * kSlot : 16];
  __shared__ uint16_t* rows[kWarps][kVecs];
  const uint32_t tile = blockIdx.x;
  const TqDesc& d = descs[FindItem(descs, count, tile)];
  if (threadIdx.x < 16) centroids[threadIdx.x] = c.centroids[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int q = lane % G;  // part of the vector
  const int g = lane / G;  // vector of the pass
  uint32_t signs[E / 32];  // G > 1 only: this lane's sign bits
#pragma unroll
  for (int i = 0; i < E / 32; ++i) signs[i] = G > 1 ? SignWord(c, static_cast<uint32_t>(q) * E + 32 * i) : 0;
  const uint32_t H = d.heads, T = d.tokens, D = d.head_dim;
  const uint32_t per_tensor = d.layers * H * T;
  constexpr uint32_t kVecBytes = P * B / 8;
  const uint32_t token_offset = static_cast<uint32_t>(d.token_offset);  // host checks < 2^32
  const float inv_sqrt = c.inv_sqrt_padded, sqrt_padded = c.sqrt_padded;
  int32_t* const status = &statuses[d.status_index];
  const uint32_t tile_base = (tile - d.first_tile) * (kPasses * kWarps * kVecs);
  uint8_t* const my_stage = stage[warp];
  uint8_t* const my_slots = slots[warp];
  auto pass_first = [&](int it) { return tile_base + (it * kWarps + warp) * kVecs; };
  auto code_ptr = [&](const VectorIndex& vi) {
    return d.codes[vi.kv] + uint64_t{vi.iv} * kVecBytes + q * Codes::kBytes;
  };

  // Starts the loads of pass `it`: its norm into *norm, its codes into the
  // slots when every lane's codes are 16-byte aligned (returns that).
  auto prefetch = [&](int it, uint16_t* norm) {
    *norm = 0;
    if (it >= kPasses) return false;
    const uint32_t first = pass_first(it);
    if (first >= 2 * per_tensor) return false;  // warp-uniform
    const VectorIndex vi = Locate(first + g, per_tensor, T);
    const uint8_t* p = nullptr;
    if (vi.valid) {
      *norm = LoadU16(d.norms[vi.kv] + 2ull * vi.iv);
      p = code_ptr(vi);
    }
    if constexpr (!kPrefetch) {
      return false;
    } else {
      if (!__all_sync(kFull, (reinterpret_cast<uintptr_t>(p) & 15) == 0)) return false;
#pragma unroll
      for (int i = 0; i < kLaneChunks; ++i) {
        const int k = i * 32 + lane;
        const int r = k / kLaneChunks, j = k % kLaneChunks;  // lane r's piece j
        const uint8_t* const src = ShflPtr(p, r);
        if (src != nullptr) CpAsync16(my_slots + r * kSlot + 16 * j, src + 16 * j);
      }
      CpAsyncCommit();
      return true;
    }
  };

  uint16_t norm_next;
  bool prefetched = prefetch(0, &norm_next);
  for (int it = 0; it < kPasses; ++it) {
    const uint32_t first = pass_first(it);
    if (first >= 2 * per_tensor) break;  // warp-uniform
    const VectorIndex vi = Locate(first + g, per_tensor, T);
    Codes codes;
    uint16_t norm16 = norm_next;
    if (prefetched) {
      CpAsyncWaitAll();
      __syncwarp();
#pragma unroll
      for (int u = 0; u < kLaneChunks; ++u) {
        const uint4 v = reinterpret_cast<const uint4*>(my_slots + lane * kSlot)[u];
        codes.w[4 * u] = v.x, codes.w[4 * u + 1] = v.y, codes.w[4 * u + 2] = v.z, codes.w[4 * u + 3] = v.w;
      }
      if (!vi.valid) codes.Clear();
    } else if (vi.valid) {
      const uint8_t* const sec = d.codes[vi.kv];
      codes.Load(code_ptr(vi), sec, sec + uint64_t{per_tensor} * kVecBytes);
    } else {
      codes.Clear();
    }
    __syncwarp();  // every lane has read its slot: the next pass may overwrite them
    prefetched = prefetch(it + 1, &norm_next);

    uint16_t* dst = nullptr;
    if (vi.valid) {
      if constexpr (kPaged) {
        const uint32_t h = vi.lh % H, l = vi.lh / H;
        const uint32_t s = token_offset + vi.t;
        const uint32_t bi = s / block_size;
        const int32_t blk = __ldg(d.block_table + bi);
        if (blk >= 0 && static_cast<uint32_t>(blk) < num_blocks) {
          dst = static_cast<uint16_t*>(d.layer_caches[l]) +
                ((((uint64_t)blk * 2 + vi.kv) * block_size + (s - bi * block_size)) * H + h) * D;
        }
      } else {
        dst = static_cast<uint16_t*>(d.tensors[vi.kv]) + ((uint64_t)vi.lh * d.outer_tokens + token_offset + vi.t) * D;
      }
      if ((norm16 & 0x8000u) != 0 || (norm16 & 0x7C00u) == 0x7C00u) {
        if (q == 0) atomicMax(status, int32_t{kTqBadStoredNorm});
        dst = nullptr;
        norm16 = 0;
      } else if (dst == nullptr && q == 0) {
        atomicMax(status, int32_t{kTqBlockOutOfRange});
      }
    }

    // y = centroid[index]; y <- H y; channel = ((y / sqrt(d')) * sign) * factor.
    float x[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      x[e] = *reinterpret_cast<const float*>(reinterpret_cast<const char*>(centroids) + codes.ByteOffset(e));
    }
    Butterflies<E, G>(x, q);
    const float factor = __fdiv_rn(__half2float(__ushort_as_half(norm16)), sqrt_padded);
    uint32_t packed[E / 2];
#pragma unroll
    for (int i = 0; i < E / 2; ++i) {
      float y[2];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = 2 * i + k;
        if constexpr (G == 1) {
          y[k] = __fmul_rn(x[e], c.signed_inv_sqrt[e]);  // a constant-bank operand
        } else {
          y[k] = __uint_as_float(__float_as_uint(__fmul_rn(x[e], inv_sqrt)) ^
                                 ((signs[e / 32] << (31 - e % 32)) & 0x80000000u));
        }
        y[k] = __fmul_rn(y[k], factor);
      }
      packed[i] = PackBf16x2(y[0], y[1]);
    }

    // Stage the rows, then copy them out as consecutive 16-byte pieces.
    __syncwarp();  // the previous pass has finished reading the stage
    uint8_t* const part = my_stage + g * L::kRowBytes + q * L::kPartBytes;
#pragma unroll
    for (int j = 0; j < E / 8; ++j) {
      reinterpret_cast<uint4*>(part)[j] =
          make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2], packed[4 * j + 3]);
    }
    if (q == 0) rows[warp][g] = dst;
    const bool wide = __all_sync(kFull, (reinterpret_cast<uintptr_t>(dst) & 15) == 0) && D % 8 == 0;
    __syncwarp();
    if (wide) {
#pragma unroll
      for (int i = 0; i < kVecs * L::kCols / 32; ++i) {
        const int k = i * 32 + lane;
        const int r = k / L::kCols, col = k % L::kCols;
        uint16_t* const row = rows[warp][r];
        if (row != nullptr && static_cast<uint32_t>(col) * 8 < D) {
          const uint4 v = *reinterpret_cast<const uint4*>(my_stage + r * L::kRowBytes +
                                                          (col / L::kPartCols) * L::kPartBytes +
                                                          (col % L::kPartCols) * 16);
          *reinterpret_cast<uint4*>(row + col * 8) = v;
        }
      }
    } else {  // unaligned rows or head_dim % 8 != 0: element by element
      for (int i = 0; i < kVecs * P / 32; ++i) {
        const int k = i * 32 + lane;
        const int r = k / P, col = k % P;
        uint16_t* const row = rows[warp][r];
        if (row != nullptr && static_cast<uint32_t>(col) < D) {
          row[col] = *reinterpret_cast<const uint16_t*>(my_stage + r * L::kRowBytes + (col / E) * L::kPartBytes +
                                                        (col % E) * 2);
        }
      }
    }
  }
  CpAsyncWaitAll();  // nothing may be in flight into shared memory at exit
}

// Cell of w: the reference's binary search (QuantizeToCell); the first two
// levels compare against constant-bank thresholds, the rest read shared memory.
template <int B>
__device__ __forceinline__ uint32_t Quantize(float w, const TqGroupConsts& c, const float* thresholds) {
  uint32_t index = w >= c.thresholds[(1 << (B - 1)) - 1] ? 1u << (B - 1) : 0u;
  if constexpr (B >= 2) {
    const float t = index != 0 ? c.thresholds[(1 << (B - 1)) + (1 << (B - 2)) - 1] : c.thresholds[(1 << (B - 2)) - 1];
    if (w >= t) index += 1u << (B - 2);
  }
#pragma unroll
  for (int step = B >= 3 ? 1 << (B - 3) : 0; step > 0; step >>= 1) {
    if (w >= thresholds[index + step - 1]) index += step;
  }
  return index;
}

// Encode: one tile = kWarps * kPasses passes of 32 / G vectors of one item.
template <int P, int B>
__global__ void __launch_bounds__(kTqThreadsPerBlock, Layout<P>::kMinBlocks)
    TqEncodeKernel(const TqDesc* __restrict__ descs, uint32_t count, int32_t* __restrict__ statuses,
                   const __grid_constant__ TqGroupConsts c) {
  using L = Layout<P>;
  constexpr int E = L::E, G = L::G, kVecs = L::kVecs;
  using Codes = LaneCodes<E, B>;
  __shared__ float thresholds[16];
  __shared__ __align__(16) uint8_t stage[kWarps][L::kWarpBytes];
  __shared__ const uint16_t* rows[kWarps][kVecs];
  const uint32_t tile = blockIdx.x;
  const TqDesc& d = descs[FindItem(descs, count, tile)];
  if (threadIdx.x < 16) thresholds[threadIdx.x] = c.thresholds[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int q = lane % G;
  const int g = lane / G;
  uint32_t signs[E / 32];
#pragma unroll
  for (int i = 0; i < E / 32; ++i) signs[i] = G > 1 ? SignWord(c, static_cast<uint32_t>(q) * E + 32 * i) : 0;
  const uint32_t T = d.tokens, D = d.head_dim;
  const uint32_t per_tensor = d.layers * d.heads * T;
  constexpr uint32_t kVecBytes = P * B / 8;
  const uint32_t c0 = static_cast<uint32_t>(q) * E;
  int32_t* const status = &statuses[d.status_index];
  const uint32_t tile_base = (tile - d.first_tile) * (kPasses * kWarps * kVecs);
  uint8_t* const my_stage = stage[warp];

  auto pass_first = [&](int it) { return tile_base + (it * kWarps + warp) * kVecs; };
  // A vector's bf16 row in the source (contiguous, or paged when the item has
  // layer caches); null past the item, or for a block table entry outside
  // [0, num_blocks) (OUT_OF_RANGE: the item's output is not used).
  auto source_row = [&](const VectorIndex& vi) -> const uint16_t* {
    if (!vi.valid) return nullptr;
    if (d.layer_caches != nullptr) {
      const uint32_t h = vi.lh % d.heads, l = vi.lh / d.heads;
      const uint64_t s = d.token_offset + vi.t;
      const int32_t blk = __ldg(d.block_table + s / d.block_size);
      if (blk < 0 || static_cast<uint32_t>(blk) >= d.num_blocks) {
        atomicMax(status, int32_t{kTqBlockOutOfRange});
        return nullptr;
      }
      return static_cast<const uint16_t*>(d.layer_caches[l]) +
             ((((uint64_t)blk * 2 + vi.kv) * d.block_size + s % d.block_size) * d.heads + h) * D;
    }
    return static_cast<const uint16_t*>(d.tensors[vi.kv]) + ((uint64_t)vi.lh * d.outer_tokens + d.token_offset + vi.t) * D;
  };
  // Starts copying pass `it`'s rows into the stage (cp.async, consecutive
  // lanes on consecutive 16-byte pieces) when they are 16-byte aligned and
  // head_dim % 8 == 0 (returns that; warp-uniform). The stage must be free.
  auto prefetch = [&](int it) {
    if (it >= kPasses) return false;
    const uint32_t first = pass_first(it);
    if (first >= 2 * per_tensor) return false;
    const uint16_t* const src = source_row(Locate(first + g, per_tensor, T));
    if (!__all_sync(kFull, (reinterpret_cast<uintptr_t>(src) & 15) == 0) || D % 8 != 0) return false;
#pragma unroll
    for (int i = 0; i < kVecs * L::kCols / 32; ++i) {
      const int k = i * 32 + lane;
      const int r = k / L::kCols, col = k % L::kCols;
      const uint8_t* const row = ShflPtr(src, r * G);
      if (row != nullptr && static_cast<uint32_t>(col) * 8 < D) {
        CpAsync16(my_stage + r * L::kRowBytes + (col / L::kPartCols) * L::kPartBytes + (col % L::kPartCols) * 16,
                  row + col * 16);
      }
    }
    CpAsyncCommit();
    return true;
  };

  bool prefetched = prefetch(0);
  for (int it = 0; it < kPasses; ++it) {
    const uint32_t first = pass_first(it);
    if (first >= 2 * per_tensor) break;  // warp-uniform
    const VectorIndex vi = Locate(first + g, per_tensor, T);
    if (prefetched) {
      CpAsyncWaitAll();
      __syncwarp();
    } else {  // unaligned rows or head_dim % 8 != 0: element by element
      const uint16_t* const src = source_row(vi);
      if (q == 0) rows[warp][g] = src;
      __syncwarp();
      for (int i = 0; i < kVecs * P / 32; ++i) {
        const int k = i * 32 + lane;
        const int r = k / P, col = k % P;
        const uint16_t* const row = rows[warp][r];
        if (row != nullptr && static_cast<uint32_t>(col) < D) {
          *reinterpret_cast<uint16_t*>(my_stage + r * L::kRowBytes + (col / E) * L::kPartBytes + (col % E) * 2) =
              __ldg(row + col);
        }
      }
      __syncwarp();
    }

    // This lane's coordinates; channels >= head_dim are the zero padding.
    float x[E];
    const uint8_t* const part = my_stage + g * L::kRowBytes + q * L::kPartBytes;
#pragma unroll
    for (int j = 0; j < E / 8; ++j) {
      const uint4 v = reinterpret_cast<const uint4*>(part)[j];
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        x[8 * j + k] = __uint_as_float(k % 2 == 0 ? words[k / 2] << 16 : words[k / 2] & 0xFFFF0000u);
      }
    }
    if (D < P) {  // warp-uniform; the stage holds stale bytes past head_dim
#pragma unroll
      for (int e = 0; e < E; ++e) x[e] = c0 + e < D ? x[e] : 0.0f;
    }
    if constexpr (G == 1) {
      __syncwarp();  // every lane has read its row: the next pass may fill the stage
      prefetched = prefetch(it + 1);
    }
    // The reference's norm: a double sum of squares in channel order. A
    // square of a finite bf16 is finite in double, so the sum is finite
    // exactly when every input is. The padding (+0) adds +0: no change.
    double sum = 0.0;
    if constexpr (G == 1) {
#pragma unroll
      for (int e = 0; e < E; ++e) sum = __dadd_rn(sum, __dmul_rn(x[e], x[e]));
    } else {
      if (q == 0) {
        const uint8_t* const row = my_stage + g * L::kRowBytes;
        for (uint32_t j = 0; j < D; ++j) {
          const uint16_t h = *reinterpret_cast<const uint16_t*>(row + (j / E) * L::kPartBytes + (j % E) * 2);
          const double a = __uint_as_float(uint32_t{h} << 16);
          sum = __dadd_rn(sum, __dmul_rn(a, a));
        }
      }
      sum = __shfl_sync(kFull, sum, lane - q);
    }
    if constexpr (G > 1) {  // (G == 1 started it above, before the norm's long dependent chain)
      __syncwarp();
      prefetched = prefetch(it + 1);
    }
    const float norm = __double2float_rn(__dsqrt_rn(sum));
    const uint16_t n16 = __half_as_ushort(__float2half_rn(norm));
    if (vi.valid && q == 0) {
      if (!isfinite(sum)) {
        atomicMax(status, int32_t{kTqNonFiniteInput});
      } else if ((n16 & 0x7C00u) == 0x7C00u) {
        atomicMax(status, int32_t{kTqNormOverflow});
      }
      StoreU16(d.out_norms[vi.kv] + 2ull * vi.iv, n16);
    }

    Codes codes;
    codes.Clear();
    if (n16 != 0) {  // else every index is 0
      const float scale = __fdiv_rn(c.sqrt_padded, norm);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const uint32_t sign = G == 1 ? c.sign_masks[e] : (signs[e / 32] << (31 - e % 32)) & 0x80000000u;
        x[e] = __fmul_rn(__uint_as_float(__float_as_uint(x[e]) ^ sign), scale);  // padding: +-0 stays +-0
      }
      Butterflies<E, G>(x, q);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const uint32_t index = Quantize<B>(__fmul_rn(x[e], c.inv_sqrt_padded), c, thresholds);
        const int pos = e * B, wi = pos / 32, off = pos % 32;  // LSB-first, as the format packs
        codes.w[wi] |= index << off;
        if (off + B > 32) codes.w[wi + 1] |= index >> (32 - off);
      }
    }
    if (vi.valid) {
      uint8_t* const out = d.out_codes[vi.kv] + uint64_t{vi.iv} * kVecBytes + q * Codes::kBytes;
      const uintptr_t a = reinterpret_cast<uintptr_t>(out);
      if (Codes::kBytes % 16 == 0 && (a & 15) == 0) {
#pragma unroll
        for (int u = 0; u < Codes::kWords / 4; ++u) {
          reinterpret_cast<uint4*>(out)[u] =
              make_uint4(codes.w[4 * u], codes.w[4 * u + 1], codes.w[4 * u + 2], codes.w[4 * u + 3]);
        }
      } else if ((a & 3) == 0) {
#pragma unroll
        for (int i = 0; i < Codes::kWords; ++i) reinterpret_cast<uint32_t*>(out)[i] = codes.w[i];
      } else {
#pragma unroll
        for (int i = 0; i < Codes::kBytes; ++i) out[i] = static_cast<uint8_t>(codes.w[i / 4] >> (8 * (i % 4)));
      }
    }
  }
  CpAsyncWaitAll();  // nothing may be in flight into shared memory at exit
}

template <int P, int B>
cudaError_t LaunchDecodePB(const TqLaunchGroup& g, bool paged, uint32_t block_size, uint32_t num_blocks,
                           int32_t* statuses, cudaStream_t stream) {
  if (g.total_tiles == 0) return cudaSuccess;
  if (paged) {
    TqDecodeKernel<P, B, true><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, block_size,
                                                                                  num_blocks, statuses, g.consts);
  } else {
    TqDecodeKernel<P, B, false><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, block_size,
                                                                                   num_blocks, statuses, g.consts);
  }
  return cudaGetLastError();
}

template <int P, int B>
cudaError_t LaunchEncodePB(const TqLaunchGroup& g, int32_t* statuses, cudaStream_t stream) {
  if (g.total_tiles == 0) return cudaSuccess;
  TqEncodeKernel<P, B><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, statuses, g.consts);
  return cudaGetLastError();
}

}  // namespace

template <int P>
cudaError_t LaunchTqDecodeP(const TqLaunchGroup& g, bool paged, uint32_t block_size, uint32_t num_blocks,
                            int32_t* statuses, cudaStream_t stream) {
  switch (g.bits) {
    case 1: return LaunchDecodePB<P, 1>(g, paged, block_size, num_blocks, statuses, stream);
    case 2: return LaunchDecodePB<P, 2>(g, paged, block_size, num_blocks, statuses, stream);
    case 3: return LaunchDecodePB<P, 3>(g, paged, block_size, num_blocks, statuses, stream);
    case 4: return LaunchDecodePB<P, 4>(g, paged, block_size, num_blocks, statuses, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <int P>
cudaError_t LaunchTqEncodeP(const TqLaunchGroup& g, int32_t* statuses, cudaStream_t stream) {
  switch (g.bits) {
    case 1: return LaunchEncodePB<P, 1>(g, statuses, stream);
    case 2: return LaunchEncodePB<P, 2>(g, statuses, stream);
    case 3: return LaunchEncodePB<P, 3>(g, statuses, stream);
    case 4: return LaunchEncodePB<P, 4>(g, statuses, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace seqkv::gpu::internal

// In turboquant_kernels_p<P>.cu: that size's launchers.
#define SEQKV_TQ_INSTANTIATE(P)                                                                           \
  namespace seqkv::gpu::internal {                                                                       \
  template cudaError_t LaunchTqDecodeP<P>(const TqLaunchGroup&, bool, uint32_t, uint32_t, int32_t*,       \
                                          cudaStream_t);                                                 \
  template cudaError_t LaunchTqEncodeP<P>(const TqLaunchGroup&, int32_t*, cudaStream_t);                 \
  }
