// TurboQuant decode/encode kernels (CUDA C++17, sm_90).
//
// A group of G lanes per head vector (decode; encode uses the whole warp):
// lane q of the group holds coordinates [q*E, q*E + E) of the padded vector
// (d' = G E). The Walsh–Hadamard butterflies for h < E run in registers,
// those for h >= E through __shfl_xor_sync with lane mask h / E.
// Every float operation is the CPU reference's (codec/src/turboquant_codec.cc,
// hadamard.cc), in the same order per element, written with explicit _rn
// intrinsics so nvcc cannot contract a multiply and an add into an FMA: the
// results are bit-identical to the reference.
//
// A block (8 warps) handles one tile of one item: TqVectorsPerTile vectors,
// enumerated so that consecutive lane groups and warps write consecutive memory:
//   contiguous: (kv, layer, head, token)   paged: (kv, layer, token, head).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "turboquant_kernels.h"

namespace seqkv::gpu::internal {

namespace {

constexpr int kWarps = kTqThreadsPerBlock / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;
// Rounds of kWarps * VectorsPerWarp vectors per block: amortizes the block's
// set-up (item search, codebook) over enough work (measured: 1 round ran at
// 14-22% of the memory floor on the H200).
constexpr int kTileIters = 8;
constexpr int kDecodePasses = 2;

__host__ __device__ constexpr int VectorsPerWarp(int e) { return e >= 16 ? 1 : 16 / e; }

__device__ __forceinline__ uint32_t FindItem(const TqDesc* descs, uint32_t count, uint32_t tile) {
  uint32_t lo = 0, hi = count;  // last item with first_tile <= tile
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (descs[mid].first_tile <= tile) lo = mid; else hi = mid;
  }
  return lo;
}

__device__ __forceinline__ uint16_t FloatToBf16Bits(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// x <- H x (unnormalized butterflies) over the warp's d' = 32 E coordinates.
template <int E, int G = 32>
__device__ __forceinline__ void Butterflies(float (&x)[E], int lane) {
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
    const bool upper = (lane & m) != 0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const float p = __shfl_xor_sync(kFull, x[j], m);
      x[j] = upper ? __fsub_rn(p, x[j]) : __fadd_rn(x[j], p);
    }
  }
}

// Loads this lane's E*B code bits of a vector starting at `vec` (byte aligned)
// into a little-endian bit string; returns the bit shift of the first one.
template <int E, int B>
struct LaneCodes {
  static constexpr int kBits = E * B;
  static constexpr bool kByteAligned = (kBits % 8) == 0;
  static constexpr int kBytes = kByteAligned ? kBits / 8 : (7 + kBits + 7) / 8;
  static constexpr int kWords = (kBytes + 3) / 4;
  uint32_t w[kWords];
  int shift;

  __device__ __forceinline__ void Clear() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
    shift = 0;
  }
  __device__ __forceinline__ void Load(const uint8_t* vec, int lane) {
    const uint32_t first_bit = static_cast<uint32_t>(lane) * kBits;
    const uint8_t* p = vec + first_bit / 8;
    shift = kByteAligned ? 0 : static_cast<int>(first_bit % 8);
    // Only the bytes that hold this lane's bits are read (all inside the vector).
    const int needed = kByteAligned ? kBytes : (shift + kBits + 7) / 8;
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
    if (kByteAligned && kBytes % 4 == 0 && (reinterpret_cast<uintptr_t>(p) % 4) == 0) {
#pragma unroll
      for (int i = 0; i < kWords; ++i) w[i] = __ldg(reinterpret_cast<const uint32_t*>(p) + i);
      return;
    }
#pragma unroll
    for (int i = 0; i < kBytes; ++i) {
      if (i < needed) w[i / 4] |= static_cast<uint32_t>(__ldg(p + i)) << (8 * (i % 4));
    }
  }
  __device__ __forceinline__ uint32_t Get(int e) const {
    if (kByteAligned) {
      const int pos = e * B;  // compile-time after unrolling
      const int wi = pos / 32, off = pos % 32;
      uint32_t v = w[wi] >> off;
      if (off + B > 32) v |= w[wi + 1] << (32 - off);
      return v & ((1u << B) - 1u);
    }
    // Unaligned lanes hold at most 19 bits: one word.
    return (w[0] >> (shift + e * B)) & ((1u << B) - 1u);
  }
};

template <int E>
__device__ __forceinline__ void StoreBf16(uint16_t* dst, const float (&x)[E], int lane, uint32_t head_dim) {
  const uint32_t c0 = static_cast<uint32_t>(lane) * E;
  uint16_t h[E];
#pragma unroll
  for (int e = 0; e < E; ++e) h[e] = FloatToBf16Bits(x[e]);
  uint16_t* p = dst + c0;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  if (c0 + E <= head_dim && E >= 2 && (addr % (2 * E < 16 ? 2 * E : 16)) == 0) {
    if constexpr (E == 2) {
      *reinterpret_cast<uint32_t*>(p) = uint32_t{h[0]} | (uint32_t{h[1]} << 16);
    } else if constexpr (E == 4) {
      uint2 v;
      v.x = uint32_t{h[0]} | (uint32_t{h[1]} << 16);
      v.y = uint32_t{h[2]} | (uint32_t{h[3]} << 16);
      *reinterpret_cast<uint2*>(p) = v;
    } else if constexpr (E >= 8) {
#pragma unroll
      for (int q = 0; q < E / 8; ++q) {
        uint4 v;
        v.x = uint32_t{h[8 * q + 0]} | (uint32_t{h[8 * q + 1]} << 16);
        v.y = uint32_t{h[8 * q + 2]} | (uint32_t{h[8 * q + 3]} << 16);
        v.z = uint32_t{h[8 * q + 4]} | (uint32_t{h[8 * q + 5]} << 16);
        v.w = uint32_t{h[8 * q + 6]} | (uint32_t{h[8 * q + 7]} << 16);
        reinterpret_cast<uint4*>(p)[q] = v;
      }
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) {
    if (c0 + e < head_dim) p[e] = h[e];
  }
}

// Shared per block: the item's codebook.
struct BlockTables {
  float centroids[16];
  float thresholds[16];
};

__device__ __forceinline__ void LoadTables(const TqDesc& d, BlockTables* t) {
  if (threadIdx.x < 16) {
    t->centroids[threadIdx.x] = d.centroids[threadIdx.x];
    t->thresholds[threadIdx.x] = d.thresholds[threadIdx.x];
  }
  __syncthreads();
}

// Sign bits of coordinates [q*E, q*E + E) (E <= 32, E divides 64 or is 32).
template <int E>
__device__ __forceinline__ uint32_t GroupSigns(const TqDesc& d, int q) {
  const uint32_t first = static_cast<uint32_t>(q) * E;
  return static_cast<uint32_t>(d.sign_words[first / 64] >> (first % 64)) & (E >= 32 ? kFull : ((1u << E) - 1u));
}

template <int E>
__device__ __forceinline__ uint32_t LaneSigns(const TqDesc& d, int lane) {
  const uint32_t first = static_cast<uint32_t>(lane) * E;
  return static_cast<uint32_t>(d.sign_words[first / 64] >> (first % 64)) & (E >= 32 ? kFull : ((1u << E) - 1u));
}

// Decode: G lanes per vector (a lane holds E = d' / G coordinates), 32 / G
// vectors per warp pass, kPasses passes loaded before they are computed.
// More coordinates per lane amortize the per-vector index arithmetic and cut
// the shuffles to log2(G) stages (measured: one warp per vector, E = 4 at
// d' = 128, ran at 25% of the memory floor, bound by instruction issue).
template <int E, int G, int B, bool kPaged>
__global__ void __launch_bounds__(kTqThreadsPerBlock)
    TqDecodeKernel(const TqDesc* __restrict__ descs, uint32_t count, uint32_t block_size, uint32_t num_blocks,
                   int32_t* __restrict__ statuses) {
  constexpr int kGroups = 32 / G;  // vectors per warp pass
  constexpr int kPasses = kDecodePasses;
  __shared__ BlockTables tables;
  const uint32_t tile = blockIdx.x;
  const TqDesc& d = descs[FindItem(descs, count, tile)];
  LoadTables(d, &tables);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int q = lane % G;  // position in the group
  const int g = lane / G;  // group = vector of this pass
  // The item's fields, once, in registers (selects, not arrays: a runtime
  // index would put them in local memory).
  const uint32_t signs = GroupSigns<E>(d, q);
  const uint32_t H = d.heads, T = d.tokens, L = d.layers, D = d.head_dim;
  const uint32_t per_tensor = L * H * T;
  const uint32_t vec_bytes = d.padded * B / 8;
  const uint8_t* const k_norms = d.norms[0];
  const uint8_t* const v_norms = d.norms[1];
  const uint8_t* const k_codes = d.codes[0];
  const uint8_t* const v_codes = d.codes[1];
  uint16_t* const k_out = static_cast<uint16_t*>(d.tensors[0]);
  uint16_t* const v_out = static_cast<uint16_t*>(d.tensors[1]);
  void* const* const caches = d.layer_caches;
  const int32_t* const table = d.block_table;
  const uint64_t outer_tokens = d.outer_tokens;
  const uint32_t token_offset = static_cast<uint32_t>(d.token_offset);  // host checks < 2^32
  const float inv_sqrt = d.inv_sqrt_padded, sqrt_padded = d.sqrt_padded;
  int32_t* const status = &statuses[d.status_index];
  constexpr uint32_t kWarpVectors = kPasses * kGroups;
  const uint32_t tile_base = (tile - d.first_tile) * (kTileIters * kWarps * kWarpVectors);

  for (int it = 0; it < kTileIters; ++it) {
    const uint32_t first = tile_base + (it * kWarps + warp) * kWarpVectors;
    if (first >= 2 * per_tensor) break;  // warp-uniform
    LaneCodes<E, B> codes[kPasses];
    uint16_t norm16[kPasses];
    uint16_t* dst[kPasses];
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const uint32_t v = first + i * kGroups + g;
      norm16[i] = 0;
      dst[i] = nullptr;
      codes[i].Clear();
      if (v >= 2 * per_tensor) continue;
      const bool kv = v >= per_tensor;
      const uint32_t r = kv ? v - per_tensor : v;
      uint32_t iv;
      if (kPaged) {  // r = (layer * T + t) * H + h
        const uint32_t h = r % H, lt = r / H;
        const uint32_t t = lt % T, l = lt / T;
        iv = (l * H + h) * T + t;
        const uint32_t s = token_offset + t;
        const uint32_t bi = s / block_size;
        const int32_t blk = __ldg(table + bi);
        if (blk >= 0 && static_cast<uint32_t>(blk) < num_blocks) {
          dst[i] = static_cast<uint16_t*>(caches[l]) +
                   ((((uint64_t)blk * 2 + kv) * block_size + (s - bi * block_size)) * H + h) * D;
        }
      } else {
        iv = r;
        const uint32_t t = r % T, lh = r / T;
        dst[i] = (kv ? v_out : k_out) + ((uint64_t)lh * outer_tokens + token_offset + t) * D;
      }
      const uint8_t* np = (kv ? v_norms : k_norms) + 2ull * iv;
      norm16[i] = static_cast<uint16_t>(__ldg(np) | (__ldg(np + 1) << 8));
      codes[i].Load((kv ? v_codes : k_codes) + uint64_t{iv} * vec_bytes, q);
      if ((norm16[i] & 0x8000u) != 0 || (norm16[i] & 0x7C00u) == 0x7C00u) {
        if (q == 0) atomicMax(status, int32_t{kTqBadStoredNorm});
        dst[i] = nullptr;
        norm16[i] = 0;
      } else if (dst[i] == nullptr && q == 0) {
        atomicMax(status, int32_t{kTqBlockOutOfRange});
      }
    }
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      // Every lane runs the butterflies (the shuffles need the whole warp);
      // lanes without a vector compute on zeros and store nothing.
      float x[E];
#pragma unroll
      for (int e = 0; e < E; ++e) x[e] = tables.centroids[codes[i].Get(e)];
      Butterflies<E, G>(x, q);
      const float factor = __fdiv_rn(__half2float(__ushort_as_half(norm16[i])), sqrt_padded);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float y = __fmul_rn(x[e], inv_sqrt);
        if ((signs >> e) & 1u) y = __fmul_rn(y, -1.0f);
        x[e] = __fmul_rn(y, factor);
      }
      if (dst[i] != nullptr) StoreBf16<E>(dst[i], x, q, D);
    }
  }
}

// Encode: one warp per vector, vectors in (kv, layer, head, token) order.
template <int E, int B>
__global__ void __launch_bounds__(kTqThreadsPerBlock)
    TqEncodeKernel(const TqDesc* __restrict__ descs, uint32_t count, int32_t* __restrict__ statuses) {
  constexpr int kVpw = VectorsPerWarp(E);
  constexpr int kPadded = 32 * E;
  constexpr int kVecBytes = kPadded * B / 8;
  constexpr int kVecWords = kVecBytes / 4;  // d' >= 32: a whole number of words
  __shared__ BlockTables tables;
  __shared__ float values[kWarps][kPadded];
  __shared__ uint32_t packed[kWarps][kVecWords];
  const uint32_t tile = blockIdx.x;
  const TqDesc& d = descs[FindItem(descs, count, tile)];
  LoadTables(d, &tables);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const uint32_t signs = LaneSigns<E>(d, lane);
  const uint32_t per_tensor = d.layers * d.heads * d.tokens;
  const uint32_t tile_base = (tile - d.first_tile) * (kTileIters * kWarps * kVpw);
  const uint32_t c0 = static_cast<uint32_t>(lane) * E;

  for (int i = 0; i < kTileIters * kVpw; ++i) {
    const uint32_t v = tile_base + (i / kVpw * kWarps + warp) * kVpw + i % kVpw;
    if (v >= 2 * per_tensor) break;
    const uint32_t kv = v >= per_tensor;
    const uint32_t iv = v - kv * per_tensor;
    const uint32_t t = iv % d.tokens, lh = iv / d.tokens;
    const uint16_t* src = static_cast<const uint16_t*>(d.tensors[kv]) +
                          ((uint64_t)lh * d.outer_tokens + d.token_offset + t) * d.head_dim;
    float x[E];
    bool finite = true;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      x[e] = c0 + e < d.head_dim ? __uint_as_float(uint32_t{src[c0 + e]} << 16) : 0.0f;
      finite &= isfinite(x[e]);
      values[warp][c0 + e] = x[e];
    }
    if (__any_sync(kFull, !finite) && lane == 0) atomicMax(&statuses[d.status_index], int32_t{kTqNonFiniteInput});
#pragma unroll
    for (int w = lane; w < kVecWords; w += 32) packed[warp][w] = 0;
    __syncwarp();
    // The reference's norm: double sum of squares in channel order.
    double sum = 0.0;
    for (uint32_t j = 0; j < d.head_dim; ++j) {
      const double a = values[warp][j];
      sum = __dadd_rn(sum, __dmul_rn(a, a));
    }
    const float norm = __double2float_rn(__dsqrt_rn(sum));
    const uint16_t n16 = __half_as_ushort(__float2half_rn(norm));
    if ((n16 & 0x7C00u) == 0x7C00u && lane == 0) atomicMax(&statuses[d.status_index], int32_t{kTqNormOverflow});
    if (lane == 0) {
      uint8_t* np = d.out_norms[kv] + 2ull * iv;
      np[0] = static_cast<uint8_t>(n16);
      np[1] = static_cast<uint8_t>(n16 >> 8);
    }
    uint32_t idx[E];
    if (n16 == 0) {
#pragma unroll
      for (int e = 0; e < E; ++e) idx[e] = 0;
    } else {
      const float scale = __fdiv_rn(d.sqrt_padded, norm);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float y = c0 + e < d.head_dim ? __fmul_rn(x[e], scale) : x[e];
        if ((signs >> e) & 1u) y = __fmul_rn(y, -1.0f);
        x[e] = y;
      }
      Butterflies<E>(x, lane);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float w = __fmul_rn(x[e], d.inv_sqrt_padded);
        uint32_t index = 0;
#pragma unroll
        for (uint32_t step = 1u << (B - 1); step > 0; step >>= 1) {
          if (w >= tables.thresholds[index + step - 1]) index += step;
        }
        idx[e] = index;
      }
    }
    // Pack LSB-first: coordinate c at bit c*B of the vector.
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const uint32_t bit = (c0 + e) * B;
      const uint32_t wi = bit / 32, off = bit % 32;
      atomicOr(&packed[warp][wi], idx[e] << off);
      if (off + B > 32) atomicOr(&packed[warp][wi + 1], idx[e] >> (32 - off));
    }
    __syncwarp();
    uint8_t* out = d.out_codes[kv] + uint64_t{iv} * kVecBytes;
    for (int b = lane; b < kVecBytes; b += 32) out[b] = static_cast<uint8_t>(packed[warp][b / 4] >> (8 * (b % 4)));
    __syncwarp();
  }
}

// Decode lane layout for d' = 32 * elems_per_lane: E coordinates on each of G lanes.
__host__ __device__ constexpr int DecodeE(int elems_per_lane) { return elems_per_lane >= 32 ? 32 : 16; }
__host__ __device__ constexpr int DecodeG(int elems_per_lane) { return 32 * elems_per_lane / DecodeE(elems_per_lane); }

template <int EW, int B>
cudaError_t LaunchDecodeEB(const TqLaunchGroup& g, bool paged, uint32_t block_size, uint32_t num_blocks,
                           int32_t* statuses, cudaStream_t stream) {
  constexpr int E = DecodeE(EW), G = DecodeG(EW);
  if (g.total_tiles == 0) return cudaSuccess;
  if (paged) {
    TqDecodeKernel<E, G, B, true><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, block_size,
                                                                                    num_blocks, statuses);
  } else {
    TqDecodeKernel<E, G, B, false><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, block_size,
                                                                                     num_blocks, statuses);
  }
  return cudaGetLastError();
}

template <int E, int B>
cudaError_t LaunchEncodeEB(const TqLaunchGroup& g, int32_t* statuses, cudaStream_t stream) {
  if (g.total_tiles == 0) return cudaSuccess;
  TqEncodeKernel<E, B><<<g.total_tiles, kTqThreadsPerBlock, 0, stream>>>(g.descs, g.count, statuses);
  return cudaGetLastError();
}

}  // namespace

int TqVectorsPerTile(int elems_per_lane, bool decode) {
  if (decode) return kTileIters * kWarps * kDecodePasses * (32 / DecodeG(elems_per_lane));
  return kTileIters * kWarps * VectorsPerWarp(elems_per_lane);
}

// Runtime (E, bits) -> template dispatch, in one place.
#define SEQKV_TQ_DISPATCH(GROUP, CALL)                                  \
  switch ((GROUP).elems_per_lane * 8 + (GROUP).bits) {                  \
    case 1 * 8 + 1: return CALL(1, 1);   case 1 * 8 + 2: return CALL(1, 2);   \
    case 1 * 8 + 3: return CALL(1, 3);   case 1 * 8 + 4: return CALL(1, 4);   \
    case 2 * 8 + 1: return CALL(2, 1);   case 2 * 8 + 2: return CALL(2, 2);   \
    case 2 * 8 + 3: return CALL(2, 3);   case 2 * 8 + 4: return CALL(2, 4);   \
    case 4 * 8 + 1: return CALL(4, 1);   case 4 * 8 + 2: return CALL(4, 2);   \
    case 4 * 8 + 3: return CALL(4, 3);   case 4 * 8 + 4: return CALL(4, 4);   \
    case 8 * 8 + 1: return CALL(8, 1);   case 8 * 8 + 2: return CALL(8, 2);   \
    case 8 * 8 + 3: return CALL(8, 3);   case 8 * 8 + 4: return CALL(8, 4);   \
    case 16 * 8 + 1: return CALL(16, 1); case 16 * 8 + 2: return CALL(16, 2); \
    case 16 * 8 + 3: return CALL(16, 3); case 16 * 8 + 4: return CALL(16, 4); \
    case 32 * 8 + 1: return CALL(32, 1); case 32 * 8 + 2: return CALL(32, 2); \
    case 32 * 8 + 3: return CALL(32, 3); case 32 * 8 + 4: return CALL(32, 4); \
    default: return cudaErrorInvalidValue;                              \
  }

cudaError_t LaunchTqDecodeContiguous(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(E, B) LaunchDecodeEB<E, B>(group, false, 1, 0, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

cudaError_t LaunchTqDecodePaged(const TqLaunchGroup& group, uint32_t block_size, uint32_t num_blocks,
                                int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(E, B) LaunchDecodeEB<E, B>(group, true, block_size, num_blocks, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

cudaError_t LaunchTqEncode(const TqLaunchGroup& group, int32_t* statuses, cudaStream_t stream) {
#define SEQKV_TQ_CALL(E, B) LaunchEncodeEB<E, B>(group, statuses, stream)
  SEQKV_TQ_DISPATCH(group, SEQKV_TQ_CALL)
#undef SEQKV_TQ_CALL
}

}  // namespace seqkv::gpu::internal
