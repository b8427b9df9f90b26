// The seq codec's GPU encoder (CUDA C++17, sm_90), the CPU reference's
// operations in its order (codec/src/seq_lossy_core.cc Loop with encode,
// SeqQuantize, SeqGroupSse, SeqEncodeGroup; engine_rope.cc UndoRope), each
// float operation a separate round-to-nearest intrinsic (--fmad=false):
//
//  * SqLayerKernel, per layer, per group (layer, kv, head), per tile of
//    kSdTileTokens tokens, one thread per channel: the bf16 input with RoPE
//    undone on the keys, the prediction from layer - 1's reconstruction, the
//    residual's KLT coefficients c[i] = sum_j r[j] * U[i][j] (j ascending),
//    the symbols floor(|c| / step + rho) with c's sign, then the decoder's
//    reconstruction (the closed loop) and the tile's partial squared errors.
//  * SqEntropyKernel, one thread per group stream: the group's squared error
//    (partials in SeqGroupSse's order), then the stream: a forward pass runs
//    the adaptive models and records each magnitude symbol's (start, freq);
//    a backward pass runs the interleaved rANS encoder and writes the words
//    downward from the end of the group's slot, so the stream ends up
//    contiguous at the slot's end in the reference's byte order.
//  * SqSectionKernel (one thread per item) lays out the layer sections and
//    SqCopyKernel (one block per group) copies the streams into them.
#include <cuda_runtime.h>

#include <cstdint>

#include "seq_dense_device.cuh"
#include "seq_encode_kernels.h"

namespace seqkv::gpu::internal {

namespace {

using dense::FC;
using dense::TT;

constexpr uint32_t kScaleBits = 15;
constexpr uint32_t kTotal = 1u << kScaleBits;
constexpr uint32_t kHalf = kTotal / 2;
constexpr uint32_t kLow = 1u << 16;
constexpr uint32_t kSymbols = 16;
constexpr uint32_t kEscape = 15;
constexpr uint32_t kMaxLanes = 8;
constexpr float kMaxMagnitude = 16777216.0f;  // kSeqMaxMagnitude = 2^24
constexpr uint32_t kMaxDimWords = 128;        // head_dim <= 4096

__global__ void SqLayerKernel(SqLaunch L, uint32_t layer) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t d = L.head_dim, H = L.heads, F = L.features;
  float* feat_s = reinterpret_cast<float*>(smem);  // [TT][FC]
  float* x_s = feat_s + TT * FC;                    // [TT][d] coding-domain input
  float* r_s = x_s + TT * d;                        // [TT][d] residual, then float(q) * step
  float* step_s = r_s + TT * d;                     // [d]

  const uint32_t cta = blockIdx.x;
  const SqDesc& desc = L.descs[dense::FindItem(L.descs, L.count, cta)];
  const uint32_t T = desc.tokens;
  const uint32_t tiles = (T + TT - 1) / TT;
  const uint32_t local = cta - desc.first_cta;
  const uint32_t gl = local / tiles, tile = local % tiles;
  const uint32_t kv = gl / H, h = gl % H;
  const uint32_t g = (layer * 2 + kv) * H + h;
  const uint32_t t0 = tile * TT;
  const uint32_t nt = min(TT, T - t0);
  const uint32_t j = threadIdx.x;
  const bool active = j < d;

  const float* W = L.predictor + uint64_t{g} * F * d;
  const float* U = L.basis + uint64_t{g} * d * d;
  const float* Ut = L.basis_t + uint64_t{g} * d * d;
  const float* prev = desc.xhat[(layer + 1) % 2];
  float* cur = desc.xhat[layer % 2];

  for (uint32_t i = j; i < d; i += blockDim.x) {
    step_s[i] = __double2float_rn(__dmul_rn(desc.step_base[g], static_cast<double>(L.step_scale[uint64_t{g} * d + i])));
  }
  // The input tile as float (bf16 widened: exact).
  const uint16_t* in = desc.in[kv] + ((uint64_t{layer} * H + h) * desc.in_tokens + desc.token_offset + t0) * d;
  for (uint32_t idx = j; idx < TT * d; idx += blockDim.x) {
    const uint32_t k = idx / d;
    x_s[idx] = k < nt ? __uint_as_float(static_cast<uint32_t>(in[idx]) << 16) : 0.0f;
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
  double part = 0.0;
#pragma unroll
  for (uint32_t k = 0; k < TT; ++k) {
    if (k < nt) {
      const float x = __fadd_rn(pred[k], rec[k]);
      cur[((uint64_t{kv} * H + h) * T + t0 + k) * d + j] = x;
      const double e = __dsub_rn(static_cast<double>(x_s[k * d + j]), static_cast<double>(x));
      part = __dadd_rn(part, __dmul_rn(e, e));
    }
  }
  desc.sse_part[(uint64_t{g} * tiles + tile) * d + j] = part;
}

// SeqAdaptiveModel.
struct Model {
  uint16_t p[kSymbols];
  uint32_t n;
};
static_assert(sizeof(Model) == kSqModelBytes, "model layout");

__device__ __forceinline__ uint32_t Context(int32_t prev) {
  return prev == 0 ? 0u : (prev == 1 || prev == -1) ? 1u : 2u;
}

__device__ __forceinline__ uint32_t Magnitude(int32_t v) {
  return v < 0 ? 0u - static_cast<uint32_t>(v) : static_cast<uint32_t>(v);
}

// rANS encode step on lane state x; words go downward from *pos (byte
// offset in the slot), never below `floor`. False when the slot is full.
__device__ __forceinline__ bool Put(uint32_t& x, uint32_t start, uint32_t freq, uint8_t* slot, uint64_t* pos,
                                    uint64_t floor) {
  if (uint64_t{x} >= (uint64_t{freq} << (32 - kScaleBits))) {
    if (*pos < floor + 2) return false;
    *pos -= 2;
    slot[*pos] = static_cast<uint8_t>(x);
    slot[*pos + 1] = static_cast<uint8_t>(x >> 8);
    x >>= 16;
  }
  x = ((x / freq) << kScaleBits) + (x % freq) + start;
  return true;
}

// Returns false when the stream does not fit the slot.
__device__ bool EncodeGroup(const SqDesc& D, uint32_t g, uint32_t d) {
  const uint32_t T = D.tokens;
  const int32_t* q = D.q + uint64_t{g} * T * d;
  uint32_t* ops = D.ops + uint64_t{g} * T * d;
  Model* models = reinterpret_cast<Model*>(D.models + uint64_t{g} * d * 3 * kSqModelBytes);
  uint8_t* slot = D.slots + uint64_t{g} * D.slot_bytes;

  uint32_t coded_bits[kMaxDimWords];
  const uint32_t words = (d + 31) / 32;
  for (uint32_t w = 0; w < words; ++w) coded_bits[w] = 0;
  for (uint64_t idx = 0; idx < uint64_t{T} * d; ++idx) {
    if (q[idx] != 0) {
      const uint32_t i = static_cast<uint32_t>(idx % d);
      coded_bits[i / 32] |= 1u << (i % 32);
    }
  }
  uint32_t coded = 0;
  for (uint32_t w = 0; w < words; ++w) coded += __popc(coded_bits[w]);
  const uint32_t lanes = coded < kMaxLanes ? coded : kMaxLanes;
  auto is_coded = [&](uint32_t i) { return (coded_bits[i / 32] >> (i % 32)) & 1u; };

  // Forward: the models in decode order; each coded symbol's (start, freq).
  if (lanes > 0) {
    constexpr uint16_t kInit = ((1u << 15) - kSymbols) / kSymbols;  // no remainder for p0
    for (uint32_t i = 0; i < d; ++i) {
      if (!is_coded(i)) continue;
      for (uint32_t c = 0; c < 3; ++c) {
        Model& m = models[i * 3 + c];
        for (uint32_t s = 0; s < kSymbols; ++s) m.p[s] = kInit;
        m.n = 0;
      }
    }
    for (uint32_t t = 0; t < T; ++t) {
      for (uint32_t i = 0; i < d; ++i) {
        if (!is_coded(i)) continue;
        const int32_t v = q[uint64_t{t} * d + i];
        const int32_t prev = t > 0 ? q[uint64_t{t - 1} * d + i] : 0;
        Model& m = models[i * 3 + Context(prev)];
        const uint32_t mag = Magnitude(v);
        const uint32_t s = mag >= kEscape ? kEscape : mag;
        uint32_t start = 0;
        for (uint32_t k = 0; k < s; ++k) start += m.p[k] + 1u;
        const uint32_t freq = m.p[s] + 1u;
        ops[uint64_t{t} * d + i] = start | (freq << 16);
        const uint32_t rate = m.n < 16 ? 2 : m.n < 64 ? 3 : m.n < 256 ? 4 : 5;
        uint32_t moved = 0;
        for (uint32_t k = 0; k < kSymbols; ++k) {
          const uint16_t give = static_cast<uint16_t>(m.p[k] >> rate);
          m.p[k] = static_cast<uint16_t>(m.p[k] - give);
          moved += give;
        }
        m.p[s] = static_cast<uint16_t>(m.p[s] + moved);
        ++m.n;
      }
    }
  }

  // Backward: the rANS coder over the same symbols in reverse.
  const uint32_t bitmap_bytes = (d + 7) / 8;
  const uint64_t header = bitmap_bytes + 1 + 4ull * lanes;
  uint64_t pos = D.slot_bytes;
  uint32_t x[kMaxLanes];
  for (uint32_t l = 0; l < kMaxLanes; ++l) x[l] = kLow;
  if (lanes > 0) {
    for (uint32_t t = T; t-- > 0;) {
      uint32_t c = coded;
      for (uint32_t i = d; i-- > 0;) {
        if (!is_coded(i)) continue;
        --c;
        uint32_t& xs = x[c % lanes];
        const int32_t v = q[uint64_t{t} * d + i];
        const uint32_t mag = Magnitude(v);
        if (mag != 0 && !Put(xs, v < 0 ? kHalf : 0u, kHalf, slot, &pos, header)) return false;
        if (mag >= kEscape) {  // Exp-Golomb 0 of mag - 15, reversed
          const uint32_t e = mag - kEscape + 1;
          const int k = 31 - __clz(e);
          for (int b = 0; b < k; ++b) {
            if (!Put(xs, ((e >> b) & 1u) ? kHalf : 0u, kHalf, slot, &pos, header)) return false;
          }
          if (!Put(xs, kHalf, kHalf, slot, &pos, header)) return false;
          for (int b = 0; b < k; ++b) {
            if (!Put(xs, 0u, kHalf, slot, &pos, header)) return false;
          }
        }
        const uint32_t op = ops[uint64_t{t} * d + i];
        if (!Put(xs, op & 0xFFFFu, op >> 16, slot, &pos, header)) return false;
      }
    }
  }
  // The header just below the words: bitmap, lanes, states.
  uint64_t at = pos - header;
  for (uint32_t b = 0; b < bitmap_bytes; ++b) {
    const uint32_t i0 = b * 8;
    slot[at + b] = static_cast<uint8_t>((coded_bits[i0 / 32] >> (i0 % 32)) & 0xFFu);
  }
  slot[at + bitmap_bytes] = static_cast<uint8_t>(lanes);
  for (uint32_t l = 0; l < lanes; ++l) {
    uint8_t* p = slot + at + bitmap_bytes + 1 + 4 * l;
    p[0] = static_cast<uint8_t>(x[l]);
    p[1] = static_cast<uint8_t>(x[l] >> 8);
    p[2] = static_cast<uint8_t>(x[l] >> 16);
    p[3] = static_cast<uint8_t>(x[l] >> 24);
  }
  // The limit of SeqEncodeMaxBytes (the slot itself is rounded up).
  if (D.slot_bytes - at > SqMaxHeaderBytes(d) + 2ull * T * d) return false;
  D.stream_bytes[g] = static_cast<uint32_t>(D.slot_bytes - at);
  return true;
}

__global__ void SqEntropyKernel(SqLaunch L) {
  const uint32_t gid = blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= L.total_groups) return;
  uint32_t lo = 0, hi = L.count;
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (L.descs[mid].first_group <= gid) lo = mid; else hi = mid;
  }
  const SqDesc& D = L.descs[lo];
  const uint32_t g = gid - D.first_group;
  const uint32_t d = L.head_dim;
  // SeqGroupSse's order: tiles ascending, channels ascending.
  const uint32_t tiles = (D.tokens + TT - 1) / TT;
  double sse = 0.0;
  for (uint64_t k = 0; k < uint64_t{tiles} * d; ++k) sse = __dadd_rn(sse, D.sse_part[uint64_t{g} * tiles * d + k]);
  D.sse[g] = sse;
  if (!EncodeGroup(D, g, d)) {
    D.stream_bytes[g] = 0;
    atomicCAS(&L.statuses[D.status_index], 0, kSqOverflow);
  }
}

__device__ __forceinline__ void PutU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

// Per item: section l = u32 n (2H), n x u32 stream length, the streams.
__global__ void SqSectionKernel(SqLaunch L) {
  const uint32_t item = blockIdx.x * blockDim.x + threadIdx.x;
  if (item >= L.count) return;
  const SqDesc& D = L.descs[item];
  if (L.statuses[D.status_index] != 0) return;
  const uint32_t n = 2 * L.heads;
  uint64_t at = 0;
  for (uint32_t l = 0; l < L.layers; ++l) {
    const uint64_t start = at;
    PutU32(D.out + at, n);
    at += 4;
    for (uint32_t k = 0; k < n; ++k) PutU32(D.out + at + 4 * k, D.stream_bytes[l * n + k]);
    at += 4ull * n;
    for (uint32_t k = 0; k < n; ++k) {
      D.dst[l * n + k] = at;
      at += D.stream_bytes[l * n + k];
    }
    D.section_bytes[l] = at - start;
  }
}

__global__ void SqCopyKernel(SqLaunch L) {
  const uint32_t gid = blockIdx.x;
  uint32_t lo = 0, hi = L.count;
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (L.descs[mid].first_group <= gid) lo = mid; else hi = mid;
  }
  const SqDesc& D = L.descs[lo];
  if (L.statuses[D.status_index] != 0) return;
  const uint32_t g = gid - D.first_group;
  const uint32_t n = D.stream_bytes[g];
  const uint8_t* src = D.slots + uint64_t{g} * D.slot_bytes + (D.slot_bytes - n);
  uint8_t* dst = D.out + D.dst[g];
  for (uint32_t b = threadIdx.x; b < n; b += blockDim.x) dst[b] = src[b];
}

}  // namespace

cudaError_t LaunchSqLayer(const SqLaunch& launch, uint32_t layer, cudaStream_t stream) {
  if (launch.total_ctas == 0) return cudaSuccess;
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

cudaError_t LaunchSqEntropy(const SqLaunch& launch, cudaStream_t stream) {
  if (launch.total_groups == 0) return cudaSuccess;
  constexpr uint32_t kThreads = 64;
  SqEntropyKernel<<<(launch.total_groups + kThreads - 1) / kThreads, kThreads, 0, stream>>>(launch);
  return cudaGetLastError();
}

cudaError_t LaunchSqPack(const SqLaunch& launch, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  SqSectionKernel<<<(launch.count + 63) / 64, 64, 0, stream>>>(launch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  SqCopyKernel<<<launch.total_groups, 256, 0, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace seqkv::gpu::internal
