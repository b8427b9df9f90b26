// lossless:coder=rans kernels (CUDA C++17, sm_90). The format and the CPU
// reference are codec/src/lossless_rans.{h,cc}; these kernels read and write
// the same bytes (integer arithmetic only, so "the same" is exact).
//
// Decode: one CTA per (chunk, tensor, layer, group of 8 rANS blocks). The CTA
// checks the layer's frequency table and expands it into a 2048-entry lookup
// table in shared memory (slot -> symbol, frequency - 1, slot - cumulative,
// packed in 8 + 11 + 11 bits: one load per symbol); each warp then decodes one block
// of 16384 symbols in lockstep, lane i holding state i: per step every lane
// pops one symbol, the lanes whose state fell below 2^16 read one 16-bit word
// each, in lane order (a ballot and a prefix count give each its word), and
// every lane merges its exponent with the stored sign-mantissa byte and writes
// the bf16 value straight into the engine's layout (contiguous or paged).
//
// Encode: four launches. (1) per (chunk, tensor, layer): a histogram of the
// exponents in shared memory, the frequency table (LrNormalize's integer
// steps), and the raw sign-mantissa plane; (2) per block, a dry run of the
// encoder that counts the words it will write; (3) per (chunk, tensor): the
// table area, the block directory and each block's offset; (4) per block,
// the encoder again, now writing states and words at their final places.
// Encoding runs backwards over the steps, so the words of a step are placed
// in front of those of later steps, lanes in order: the decoder's reading order.
//
// Sections may sit at any byte offset of a chunk: multi-byte fields are
// read and written a byte at a time (little-endian).
#include <cuda_runtime.h>

#include <cstdint>

#include "lossless_kernels.h"
#include "lossless_rans_normalize.h"

namespace seqkv::gpu::internal {

namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr uint32_t kBlockSymbols = 16384;
constexpr uint32_t kScaleBits = 11;
constexpr uint32_t kTotal = 1u << kScaleBits;
constexpr uint32_t kLow = 1u << 16;
constexpr uint32_t kHeaderBytes = 128;
constexpr uint32_t kBad = 0xFFFFFFFFu;

__device__ __forceinline__ uint32_t Ld16(const uint8_t* p) { return p[0] | (uint32_t{p[1]} << 8); }
__device__ __forceinline__ uint32_t Ld32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
__device__ __forceinline__ void St16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
__device__ __forceinline__ void St32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

__device__ __forceinline__ void Fail(int32_t* statuses, uint32_t index, int32_t code) {
  atomicCAS(&statuses[index], 0, code);
}

// Last item whose prefix (`field` of the descriptor) is <= v.
template <typename F>
__device__ __forceinline__ uint32_t FindItem(const LlDesc* descs, uint32_t count, uint32_t v, F field) {
  uint32_t lo = 0, hi = count;
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (field(descs[mid]) <= v) lo = mid; else hi = mid;
  }
  return lo;
}

__device__ __forceinline__ uint64_t PerLayer(const LlDesc& d) {
  return uint64_t{d.heads} * d.tokens * d.head_dim;
}

// Block-wide (256 threads) exclusive prefix sum of v; *total gets the sum.
__device__ uint32_t ExclusiveScan256(uint32_t v, uint32_t* warp_sums, uint32_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t n = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  uint32_t before = 0, sum = 0;
  for (int w = 0; w < kLlWarpsPerBlock; ++w) {
    if (w < warp) before += warp_sums[w];
    sum += warp_sums[w];
  }
  __syncthreads();
  *total = sum;
  return before + incl - v;
}

// ------------------------------------------------------------------ decode

// Per (chunk, tensor): walks the table area (sizes only; the CTAs check the
// tables' contents), records each layer's table offset and the directory's,
// and checks the directory's size and the data area's end.
__global__ void LlPrepareKernel(LlLaunch L) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= 2 * L.count) return;
  const LlDesc& d = L.descs[i / 2];
  const uint32_t kv = i % 2;
  const uint8_t* p = d.coded[kv];
  const uint64_t size = d.coded_bytes[kv];
  uint32_t* meta = L.meta + 2 * (d.first_layer + i / 2) + kv * (d.layers + 1);
  const uint64_t per_layer = PerLayer(d);
  bool ok = true;
  uint64_t pos = 0;
  for (uint32_t l = 0; l < d.layers && ok; ++l) {
    if (pos + 2 > size) { ok = false; break; }
    const uint32_t n = Ld16(p + pos);
    if (n > 256 || (n == 0) != (per_layer == 0) || pos + 2 + 3 * uint64_t{n} > size) { ok = false; break; }
    meta[l] = static_cast<uint32_t>(pos);
    pos += 2 + 3 * uint64_t{n};
  }
  while (ok && pos % 4 != 0) {
    if (pos >= size || p[pos] != 0) ok = false;
    ++pos;
  }
  const uint64_t blocks = uint64_t{d.layers} * d.blocks_per_layer;
  if (ok && (size - pos) / 4 < blocks) ok = false;
  if (ok) {
    const uint64_t data_size = size - pos - 4 * blocks;
    if (blocks == 0 ? data_size != 0 : Ld32(p + pos + 4 * (blocks - 1)) != data_size) ok = false;
  }
  if (ok && pos >= kBad) ok = false;
  meta[d.layers] = ok ? static_cast<uint32_t>(pos) : kBad;
  if (!ok) Fail(L.statuses, d.status_index, kLlDataLoss);
}

__device__ __forceinline__ uint32_t WordAt(const uint8_t* words, uint32_t nwords, uint32_t i) {
  return i < nwords ? Ld16(words + 2 * i) : 0;
}

// Writes 8 consecutive elements (one lane's share of a flush) of the layer:
// exponents from the warp's stage, sign-mantissa bytes from the raw plane.
// kVector: head_dim % 8 == 0 and 16-byte-aligned destinations, so the 8
// elements are one row piece and one 16-byte store.
template <bool kPaged, bool kVector>
__device__ __forceinline__ void Flush8(const LlDesc& d, uint32_t kv, uint64_t e, const uint8_t* exps,
                                       const uint8_t* raw, bool raw_aligned, uint8_t* dst_base,
                                       uint32_t block_size, uint32_t num_blocks, int32_t* statuses) {
  const uint32_t H = d.heads, D = d.head_dim, T = d.tokens;
  if constexpr (kVector) {
    uint8_t r[8];
    if (raw_aligned) {
      const uint2 v = *reinterpret_cast<const uint2*>(raw + e);
      memcpy(r, &v, 8);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) r[k] = raw[e + k];
    }
    const uint2 ev = *reinterpret_cast<const uint2*>(exps);
    uint8_t x[8];
    memcpy(x, &ev, 8);
    uint32_t packed[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t a = ((r[2 * k] & 0x80u) << 8) | (uint32_t{x[2 * k]} << 7) | (r[2 * k] & 0x7Fu);
      const uint32_t b = ((r[2 * k + 1] & 0x80u) << 8) | (uint32_t{x[2 * k + 1]} << 7) | (r[2 * k + 1] & 0x7Fu);
      packed[k] = a | (b << 16);
    }
    const uint32_t e32 = static_cast<uint32_t>(e);  // a layer holds < 2^31 elements
    const uint32_t row = e32 / D, dd = e32 - row * D;
    const uint32_t t = row % T, h = row / T;
    const uint32_t token = static_cast<uint32_t>(d.token_offset) + t;
    uint64_t off;
    if constexpr (kPaged) {
      const int32_t blk = d.block_table[token / block_size];
      if (blk < 0 || static_cast<uint32_t>(blk) >= num_blocks) {
        Fail(statuses, d.status_index, kLlBlockOutOfRange);
        return;
      }
      off = (((uint64_t(blk) * 2 + kv) * block_size + token % block_size) * H + h) * D + dd;
    } else {
      off = (uint64_t{h} * d.outer_tokens + token) * D + dd;
    }
    *reinterpret_cast<uint4*>(dst_base + 2 * off) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  } else {
    (void)raw_aligned;
    for (int k = 0; k < 8; ++k) {
      const uint64_t ek = e + k;
      const uint32_t rb = raw[ek];
      const uint16_t v = static_cast<uint16_t>(((rb & 0x80) << 8) | (uint32_t{exps[k]} << 7) | (rb & 0x7F));
      const uint64_t row = ek / D, dd = ek % D;
      const uint64_t t = row % T, h = row / T;
      const uint64_t token = d.token_offset + t;
      uint64_t off;
      if constexpr (kPaged) {
        const int32_t blk = d.block_table[token / block_size];
        if (blk < 0 || static_cast<uint32_t>(blk) >= num_blocks) {
          Fail(statuses, d.status_index, kLlBlockOutOfRange);
          continue;
        }
        off = (((uint64_t(blk) * 2 + kv) * block_size + token % block_size) * H + h) * D + dd;
      } else {
        off = (h * d.outer_tokens + token) * D + dd;
      }
      reinterpret_cast<uint16_t*>(dst_base)[off] = v;
    }
  }
}

// Symbols decoded per warp between two flushes: 8 steps.
constexpr uint32_t kStageSteps = 8;

// Decodes one rANS block with one warp. Words come through a 64-word window
// held in registers (lane i: words base + i and base + 32 + i), refilled 32
// words ahead, so the state update never waits on a global load; decoded
// exponents go to a 256-byte stage and leave 8 steps at a time, 8 elements
// per lane, merged with the raw bytes, as one 16-byte store each.
template <bool kPaged, bool kVector>
__device__ void DecodeBlock(const LlDesc& d, uint32_t kv, uint32_t layer, uint32_t b, const uint32_t* lut,
                            uint8_t* stage, const uint8_t* data, uint32_t begin, uint32_t end, bool raw_aligned,
                            uint8_t* dst_base, uint32_t block_size, uint32_t num_blocks, int32_t* statuses) {
  const uint32_t lane = threadIdx.x & 31;
  uint32_t x = Ld32(data + begin + 4 * lane);
  bool err = x < kLow;
  const uint8_t* words = data + begin + kHeaderBytes;
  const uint32_t nwords = (end - begin - kHeaderBytes) / 2;
  const uint64_t per_layer = PerLayer(d);
  const uint64_t first = uint64_t{b} * kBlockSymbols;
  const uint32_t nb = static_cast<uint32_t>(min(uint64_t{kBlockSymbols}, per_layer - first));
  const uint8_t* raw = d.raw[kv] + layer * per_layer;
  const uint32_t lt_mask = (1u << lane) - 1;
  uint32_t pos = 0, base = 0;
  uint32_t win_lo = WordAt(words, nwords, lane), win_hi = WordAt(words, nwords, 32 + lane);
  const uint32_t steps = (nb + 31) / 32;
  for (uint32_t step = 0; step < steps; ++step) {
    const uint32_t j = step * 32 + lane;
    const bool active = j < nb;
    uint32_t sym = 0;
    if (active) {
      const uint32_t slot = x & (kTotal - 1);
      const uint32_t e = lut[slot];
      sym = e & 0xFF;
      x = (((e >> 8) & 0x7FF) + 1) * (x >> kScaleBits) + (e >> 19);
    }
    const bool need = active && x < kLow;
    const uint32_t m = __ballot_sync(kFull, need);
    const uint32_t idx = pos + __popc(m & lt_mask);
    const uint32_t rel = need ? idx - base : 0;  // < 64: pos - base < 32 before the step
    const uint32_t w_lo = __shfl_sync(kFull, win_lo, rel & 31);
    const uint32_t w_hi = __shfl_sync(kFull, win_hi, rel & 31);
    if (need) {
      if (idx >= nwords) err = true;
      x = (x << 16) | (rel < 32 ? w_lo : w_hi);
    }
    pos += __popc(m);
    if (pos - base >= 32) {
      base += 32;
      win_lo = win_hi;
      win_hi = WordAt(words, nwords, base + 32 + lane);
    }
    stage[(step % kStageSteps) * 32 + lane] = static_cast<uint8_t>(sym);
    if (step % kStageSteps == kStageSteps - 1 || step + 1 == steps) {
      __syncwarp();
      const uint32_t j0 = (step - step % kStageSteps) * 32 + 8 * lane;
      if (j0 < nb) {
        Flush8<kPaged, kVector>(d, kv, first + j0, stage + 8 * lane, raw, raw_aligned, dst_base, block_size,
                                num_blocks, statuses);
      }
      __syncwarp();
    }
  }
  // Exactly the encoder's words (plus one zero pad word after an odd count),
  // every state back at 2^16.
  const bool padded = pos % 2 == 1;
  const bool words_ok = nwords == pos + (padded ? 1 : 0) && (!padded || Ld16(words + 2 * pos) == 0);
  if (__any_sync(kFull, err || x != kLow || !words_ok)) {
    if (lane == 0) Fail(statuses, d.status_index, kLlDataLoss);
  }
}

// Resident 256-thread CTAs the decode kernel's register budget is cut for
// (overridable at build time for experiments; docs/gpu.md has the measurements).
#ifndef SEQKV_LL_MIN_CTAS
#define SEQKV_LL_MIN_CTAS 4
#endif

// One CTA of W = blockDim.x / 32 warps per (chunk, tensor, layer, group of W blocks).
template <bool kPaged>
__global__ void __launch_bounds__(kLlThreads, SEQKV_LL_MIN_CTAS) LlDecodeKernel(LlLaunch L, uint32_t block_size, uint32_t num_blocks) {
  __shared__ uint32_t lut[kTotal];
  // The table's arrays while the lookup table is built, the warps' stages
  // after (a barrier between): small shared memory, more resident CTAs.
  __shared__ __align__(16) uint32_t scratch[3 * 256];
  static_assert(sizeof(scratch) >= kLlWarpsPerBlock * kStageSteps * 32, "stages fit in the scratch");
  uint32_t* excl_s = scratch;
  uint32_t* freq_s = scratch + 256;
  uint32_t* sym_s = scratch + 512;
  __shared__ int bad_s;
  const uint32_t warps = blockDim.x / 32;
  const uint32_t unit = blockIdx.x;
  const uint32_t item = FindItem(L.descs, L.count, unit, [](const LlDesc& d) { return d.first_unit; });
  const LlDesc& d = L.descs[item];
  const uint32_t per_tl = (d.blocks_per_layer + warps - 1) / warps;
  const uint32_t local = unit - d.first_unit;
  const uint32_t tl = local / per_tl, group = local % per_tl;
  const uint32_t kv = tl / d.layers, layer = tl % d.layers;
  const uint32_t* meta = L.meta + 2 * (d.first_layer + item) + kv * (d.layers + 1);
  const uint32_t dir = meta[d.layers];
  if (dir == kBad) return;  // the prepare kernel set DATA_LOSS
  const uint8_t* coded = d.coded[kv];

  // Warp 0 checks the layer's table and accumulates it (8 entries a lane).
  const uint8_t* tp = coded + meta[layer];
  const uint32_t n = Ld16(tp);
  const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (warp == 0) {
    uint32_t f[8], sy[8], sum = 0;
    bool ok = true;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t i = 8 * lane + k;
      f[k] = 0;
      sy[k] = 0;
      if (i < n) {
        sy[k] = tp[2 + i];
        f[k] = Ld16(tp + 2 + n + 2 * i);
        ok = ok && f[k] >= 1 && (i == 0 || sy[k] > tp[2 + i - 1]);
      }
      sum += f[k];
    }
    uint32_t incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t v = __shfl_up_sync(kFull, incl, o);
      if (lane >= static_cast<uint32_t>(o)) incl += v;
    }
    const uint32_t total = __shfl_sync(kFull, incl, 31);
    uint32_t run = incl - sum;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      excl_s[8 * lane + k] = run;
      freq_s[8 * lane + k] = f[k];
      sym_s[8 * lane + k] = sy[k];
      run += f[k];
    }
    const bool bad = __any_sync(kFull, !ok) || (n > 0 && total != kTotal);
    if (lane == 0) bad_s = bad;
  }
  __syncthreads();
  if (bad_s) {
    if (tid == 0) Fail(L.statuses, d.status_index, kLlDataLoss);
    return;
  }
  if (n == 0) return;
  for (uint32_t slot = tid; slot < kTotal; slot += blockDim.x) {
    uint32_t lo = 0, hi = n;  // last symbol index with excl <= slot
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      if (excl_s[mid] <= slot) lo = mid; else hi = mid;
    }
    lut[slot] = sym_s[lo] | ((freq_s[lo] - 1) << 8) | ((slot - excl_s[lo]) << 19);
  }
  __syncthreads();

  const uint32_t b = group * warps + warp;
  if (b >= d.blocks_per_layer) return;
  const uint64_t blocks = uint64_t{d.layers} * d.blocks_per_layer;
  const uint64_t gb = uint64_t{layer} * d.blocks_per_layer + b;
  const uint8_t* directory = coded + dir;
  const uint8_t* data = directory + 4 * blocks;
  const uint64_t data_size = d.coded_bytes[kv] - dir - 4 * blocks;
  const uint32_t begin = gb == 0 ? 0 : Ld32(directory + 4 * (gb - 1));
  const uint32_t end = Ld32(directory + 4 * gb);
  if (end < begin || end - begin < kHeaderBytes || (end - begin) % 4 != 0 || end > data_size) {
    if (lane == 0) Fail(L.statuses, d.status_index, kLlDataLoss);
    return;
  }
  uint8_t* dst_base;
  if constexpr (kPaged) {
    dst_base = static_cast<uint8_t*>(d.layer_caches[layer]);
  } else {
    dst_base = static_cast<uint8_t*>(d.tensors[kv]) + 2 * uint64_t{layer} * d.heads * d.outer_tokens * d.head_dim;
  }
  uint8_t* stage = reinterpret_cast<uint8_t*>(scratch) + warp * kStageSteps * 32;
  const uint64_t per_layer = PerLayer(d);
  const bool raw_aligned = (reinterpret_cast<uintptr_t>(d.raw[kv] + layer * per_layer) & 7) == 0;
  const bool vector = d.head_dim % 8 == 0 && (reinterpret_cast<uintptr_t>(dst_base) & 15) == 0;
  if (vector) {
    DecodeBlock<kPaged, true>(d, kv, layer, b, lut, stage, data, begin, end, raw_aligned, dst_base, block_size,
                              num_blocks, L.statuses);
  } else {
    DecodeBlock<kPaged, false>(d, kv, layer, b, lut, stage, data, begin, end, raw_aligned, dst_base,
                               block_size, num_blocks, L.statuses);
  }
}

// ------------------------------------------------------------------ encode

// Element e of layer `layer` of tensor kv ([heads][tokens][head_dim] order),
// from the contiguous or the paged source; 0 (and OUT_OF_RANGE) for a block
// table entry outside [0, num_blocks).
template <bool kPaged>
__device__ __forceinline__ uint32_t InputAt(const LlLaunch& L, const LlDesc& d, uint32_t kv, uint32_t layer,
                                            uint64_t e) {
  const uint64_t dd = e % d.head_dim, row = e / d.head_dim;
  const uint64_t t = row % d.tokens, h = row / d.tokens;
  const uint64_t token = d.token_offset + t;
  if constexpr (kPaged) {
    const int32_t blk = d.block_table[token / L.src_block_size];
    if (blk < 0 || static_cast<uint32_t>(blk) >= L.src_num_blocks) {
      atomicCAS(&L.statuses[d.status_index], 0, kLlBlockOutOfRange);
      return 0;
    }
    const uint16_t* cache = static_cast<const uint16_t*>(d.layer_caches[layer]);
    return cache[(((uint64_t(blk) * 2 + kv) * L.src_block_size + token % L.src_block_size) * d.heads + h) *
                     d.head_dim + dd];
  }
  const uint16_t* in = static_cast<const uint16_t*>(d.tensors[kv]);
  return in[((uint64_t{layer} * d.heads + h) * d.outer_tokens + token) * d.head_dim + dd];
}

// Per (chunk, tensor, layer): histogram, frequency table, raw plane.
template <bool kPaged>
__global__ void __launch_bounds__(kLlThreads) LlHistogramKernel(LlLaunch L) {
  __shared__ uint32_t hist[256];
  const uint32_t c = blockIdx.x;
  const uint32_t item = FindItem(L.descs, L.count, c, [](const LlDesc& d) { return 2 * d.first_layer; });
  const LlDesc& d = L.descs[item];
  const uint32_t local = c - 2 * d.first_layer;
  const uint32_t kv = local / d.layers, layer = local % d.layers;
  hist[threadIdx.x] = 0;
  __syncthreads();
  const uint64_t per_layer = PerLayer(d);
  uint8_t* raw = d.out_raw[kv] + layer * per_layer;
  for (uint64_t e = threadIdx.x; e < per_layer; e += kLlThreads) {
    const uint32_t v = InputAt<kPaged>(L, d, kv, layer, e);
    atomicAdd(&hist[(v >> 7) & 0xFF], 1u);
    raw[e] = static_cast<uint8_t>(((v >> 8) & 0x80) | (v & 0x7F));
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  uint32_t freq[256] = {};  // an empty layer: no symbols
  if (per_layer > 0) seqkv::internal::LrNormalizeCounts(hist, per_layer, kTotal, freq);  // the reference's steps
  uint16_t* out = L.freqs + uint64_t{2 * d.first_layer + local} * 256;
  for (int s = 0; s < 256; ++s) out[s] = static_cast<uint16_t>(freq[s]);
}

// Per (chunk, tensor, layer, group of 8 blocks), a warp per block: counts the
// words of each block (kWrite = false) or writes the block (kWrite = true).
template <bool kWrite, bool kPaged>
__global__ void __launch_bounds__(kLlThreads) LlEncodeBlocksKernel(LlLaunch L) {
  __shared__ uint32_t freq_s[256], cum_s[256], warp_sums[kLlWarpsPerBlock];
  const uint32_t unit = blockIdx.x;
  const uint32_t item = FindItem(L.descs, L.count, unit, [](const LlDesc& d) { return d.first_unit; });
  const LlDesc& d = L.descs[item];
  const uint32_t per_tl = (d.blocks_per_layer + kLlWarpsPerBlock - 1) / kLlWarpsPerBlock;
  const uint32_t local = unit - d.first_unit;
  const uint32_t tl = local / per_tl, group = local % per_tl;
  const uint32_t kv = tl / d.layers, layer = tl % d.layers;
  const uint32_t tid = threadIdx.x;
  const uint32_t f = L.freqs[uint64_t{2 * d.first_layer + tl} * 256 + tid];
  uint32_t total = 0;
  const uint32_t cum = ExclusiveScan256(f, warp_sums, &total);
  freq_s[tid] = f;
  cum_s[tid] = cum;
  __syncthreads();
  const uint32_t warp = tid >> 5, lane = tid & 31;
  const uint32_t b = group * kLlWarpsPerBlock + warp;
  if (b >= d.blocks_per_layer) return;
  const uint64_t blocks = uint64_t{d.layers} * d.blocks_per_layer;
  const uint64_t g = 2 * uint64_t{d.first_block} + kv * blocks + uint64_t{layer} * d.blocks_per_layer + b;
  const uint64_t per_layer = PerLayer(d);
  const uint64_t first = uint64_t{b} * kBlockSymbols;
  const uint32_t nb = static_cast<uint32_t>(min(uint64_t{kBlockSymbols}, per_layer - first));
  const uint32_t lt_mask = (1u << lane) - 1;
  uint8_t* block = nullptr;
  uint32_t wpos = 0;
  if constexpr (kWrite) {
    block = d.out_coded[kv] + L.words[2 * uint64_t{L.total_blocks} + g];
    wpos = L.words[g];
  }
  uint32_t x = kLow, count = 0;
  const uint32_t steps = (nb + 31) / 32;
  for (uint32_t step = steps; step-- > 0;) {
    const uint32_t j = step * 32 + lane;
    const bool active = j < nb;
    uint32_t sym = 0, fs = 1;
    if (active) {
      sym = (InputAt<kPaged>(L, d, kv, layer, first + j) >> 7) & 0xFF;
      fs = freq_s[sym];
    }
    const bool emit = active && uint64_t{x} >= (uint64_t{kLow >> kScaleBits} << 16) * fs;
    const uint32_t m = __ballot_sync(kFull, emit);
    const uint32_t k = __popc(m);
    if constexpr (kWrite) {
      if (emit) St16(block + kHeaderBytes + 2 * (wpos - k + __popc(m & lt_mask)), x & 0xFFFF);
      wpos -= k;
    } else {
      count += k;
    }
    if (emit) x >>= 16;
    if (active) x = ((x / fs) << kScaleBits) + (x % fs) + cum_s[sym];
  }
  if constexpr (kWrite) {
    St32(block + 4 * lane, x);
    const uint32_t words = L.words[g];
    if (lane == 0 && words % 2 == 1) St16(block + kHeaderBytes + 2 * words, 0);
  } else {
    if (lane == 0) L.words[g] = count;
  }
}

// Per (chunk, tensor): the table area, the directory, each block's offset
// (into the second half of L.words) and the section's size.
__global__ void LlLayoutKernel(LlLaunch L) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= 2 * L.count) return;
  const LlDesc& d = L.descs[i / 2];
  const uint32_t kv = i % 2;
  uint8_t* out = d.out_coded[kv];
  uint64_t pos = 0;
  for (uint32_t l = 0; l < d.layers; ++l) {
    const uint16_t* f = L.freqs + uint64_t{2 * d.first_layer + kv * d.layers + l} * 256;
    uint32_t n = 0;
    for (int s = 0; s < 256; ++s) n += f[s] != 0;
    St16(out + pos, n);
    uint64_t at = pos + 2;
    for (int s = 0; s < 256; ++s) {
      if (f[s]) out[at++] = static_cast<uint8_t>(s);
    }
    for (int s = 0; s < 256; ++s) {
      if (f[s]) {
        St16(out + at, f[s]);
        at += 2;
      }
    }
    pos = at;
  }
  while (pos % 4 != 0) out[pos++] = 0;
  const uint64_t blocks = uint64_t{d.layers} * d.blocks_per_layer;
  const uint64_t data = pos + 4 * blocks;
  const uint64_t g0 = 2 * uint64_t{d.first_block} + kv * blocks;
  uint64_t running = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint32_t words = L.words[g0 + b];
    L.words[2 * uint64_t{L.total_blocks} + g0 + b] = static_cast<uint32_t>(data + running);
    running += kHeaderBytes + 2 * (words + (words & 1));
    St32(out + pos + 4 * b, static_cast<uint32_t>(running));
  }
  L.sizes[2 * uint64_t{d.status_index} + kv] = data + running;
}

}  // namespace

cudaError_t LaunchLlDecode(const LlLaunch& launch, bool paged, uint32_t block_size, uint32_t num_blocks,
                           cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  LlPrepareKernel<<<(2 * launch.count + 127) / 128, 128, 0, stream>>>(launch);
  if (launch.total_units > 0) {
    const uint32_t threads = 32 * launch.warps;
    if (paged) {
      LlDecodeKernel<true><<<launch.total_units, threads, 0, stream>>>(launch, block_size, num_blocks);
    } else {
      LlDecodeKernel<false><<<launch.total_units, threads, 0, stream>>>(launch, block_size, num_blocks);
    }
  }
  return cudaGetLastError();
}

cudaError_t LaunchLlEncode(const LlLaunch& launch, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  // The source layout is a template argument: the contiguous kernels are
  // unchanged by the paged path (a run-time branch cost 26 % at d = 64).
  const bool paged = launch.src_paged;
  if (launch.total_layers > 0) {
    if (paged) {
      LlHistogramKernel<true><<<2 * launch.total_layers, kLlThreads, 0, stream>>>(launch);
    } else {
      LlHistogramKernel<false><<<2 * launch.total_layers, kLlThreads, 0, stream>>>(launch);
    }
  }
  if (launch.total_units > 0) {
    if (paged) {
      LlEncodeBlocksKernel<false, true><<<launch.total_units, kLlThreads, 0, stream>>>(launch);
    } else {
      LlEncodeBlocksKernel<false, false><<<launch.total_units, kLlThreads, 0, stream>>>(launch);
    }
  }
  LlLayoutKernel<<<(2 * launch.count + 127) / 128, 128, 0, stream>>>(launch);
  if (launch.total_units > 0) {
    if (paged) {
      LlEncodeBlocksKernel<true, true><<<launch.total_units, kLlThreads, 0, stream>>>(launch);
    } else {
      LlEncodeBlocksKernel<true, false><<<launch.total_units, kLlThreads, 0, stream>>>(launch);
    }
  }
  return cudaGetLastError();
}

}  // namespace seqkv::gpu::internal
