// Seq group-stream decode kernels (CUDA C++17, sm_90): the interleaved rANS
// stream with per-component adaptive models of docs/format.md ("Group
// stream"), decoded exactly as seqkv::internal::SeqDecodeGroup does.
//
// Why one thread per group stream: the format is sequential inside a group.
// Its 8 rANS lanes share one word stream in symbol order (where the next word
// starts depends on every earlier symbol's renormalisation), and each
// component's model changes after every symbol it codes. So a group is one
// dependency chain; the parallelism is across groups (512 per Llama-3-8B
// chunk of 256 tokens, times the chunks of a batch). Both kernels run the same
// per-group code (DecodeGroup) and differ only in where the models live:
//   * global: in the workspace (dim * 104 bytes per group, L2-resident), so
//     any number of groups are in flight, but a model load is an L2 round trip;
//   * shared: in shared memory, a few groups per block, so loads are short but
//     only ~16 groups per SM are in flight at dim 128.
//
// Per symbol the work is integer only: the context (from the component's last
// symbol, kept in its metadata), a linear search of the 16 cumulative
// frequencies (a short path for symbol 0, the most frequent), the rANS step,
// and the model update. The 16 uint16 frequencies travel packed two per 32-bit word, and
// the update (every p_k gives p_k >> r to p_s) runs on the packed words: a
// shift and a mask per word, with no carry between halves since every p_k is
// below 2^15 and their sum below 2^15 + 16.
#include <cuda_runtime.h>

#include <cstdint>

#include "seq_entropy_kernels.h"
#include "seq_model_device.cuh"

namespace seqkv::gpu::internal {

namespace {

constexpr uint32_t kScaleBits = 15;
constexpr uint32_t kTotal = 1u << kScaleBits;
constexpr uint32_t kHalf = kTotal / 2;
constexpr uint32_t kLow = 1u << 16;  // rANS states live in [2^16, 2^32)
constexpr int kEscape = 15;          // magnitude symbol 15 = escape
constexpr uint32_t kMaxLanes = 8;
constexpr uint32_t kMaxMagnitude = 1u << 24;
constexpr int kMaxEscapeZeros = 24;
// SeqAdaptiveModel's start: (2^15 - 16) / 16 each, the remainder on p0 (none).
constexpr uint32_t kInitP = ((1u << 15) - 16) / 16;
static_assert(((1u << 15) - 16) % 16 == 0, "the initial remainder on p0 is zero");
constexpr uint32_t kInitWord = kInitP * 0x10001u;

// Metadata per component (uint2): x = n(ctx 0) | n(ctx 1) << 16 (update
// counts, saturated at 256 where the rate stops changing); y = n(ctx 2) |
// context << 16 | lane << 20 | coded | seen non-zero.
constexpr uint32_t kCtxShift = 16;
constexpr uint32_t kLaneShift = 20;
constexpr uint32_t kCodedBit = 1u << 24;
constexpr uint32_t kSeenBit = 1u << 25;
constexpr uint32_t kCountCap = 256;

constexpr uint32_t kGlobalThreads = 64;

// The word stream: u16 little-endian at [pos, end); end - pos is even (checked
// before decoding), so pos < end means both bytes are inside the stream.
struct WordReader {
  const uint8_t* base;
  uint64_t pos, end;
  __device__ __forceinline__ bool Next(uint32_t* word) {
    if (pos >= end) return false;
    *word = static_cast<uint32_t>(__ldg(base + pos)) | (static_cast<uint32_t>(__ldg(base + pos + 1)) << 8);
    pos += 2;
    return true;
  }
};

// Pops a symbol with (start, freq) from state x; false when a word is
// needed and none is left.
__device__ __forceinline__ bool Advance(uint32_t& x, uint32_t start, uint32_t freq, WordReader& r) {
  const uint32_t slot = x & (kTotal - 1);
  x = freq * (x >> kScaleBits) + slot - start;
  if (x < kLow) {
    uint32_t w;
    if (!r.Next(&w)) return false;
    x = (x << 16) | w;
  }
  return true;
}

// A uniform bit (frequency 2^14 each).
__device__ __forceinline__ bool Bit(uint32_t& x, WordReader& r, uint32_t* b) {
  *b = (x & (kTotal - 1)) >= kHalf ? 1u : 0u;
  return Advance(x, *b ? kHalf : 0u, kHalf, r);
}

using model::Half;

// Decodes one group stream into d.q; `models` holds dim * 6 uint4 (three
// packed models per component), `meta` dim uint2. Returns a SeDeviceStatus.
__device__ int32_t DecodeGroup(const SeDesc& d, uint4* __restrict__ models, uint2* __restrict__ meta) {
  const uint8_t* s = d.stream;
  const uint64_t n = d.stream_bytes;
  const uint32_t dim = d.dim;
  const uint32_t bitmap_bytes = (dim + 7) / 8;
  if (n < uint64_t{bitmap_bytes} + 1) return kSeTruncatedHeader;
  // Bits past dim in the last bitmap byte must be clear.
  if (dim % 8 != 0 && (__ldg(s + bitmap_bytes - 1) >> (dim % 8)) != 0) return kSeBadBitmap;
  uint32_t coded = 0;
  for (uint32_t b = 0; b < bitmap_bytes; ++b) coded += __popc(__ldg(s + b));
  const uint32_t lanes = __ldg(s + bitmap_bytes);
  if (lanes != (coded < kMaxLanes ? coded : kMaxLanes)) return kSeBadLanes;
  const uint64_t total = uint64_t{d.tokens} * dim;
  if (lanes == 0) {
    if (n != uint64_t{bitmap_bytes} + 1) return kSeTrailingBytes;
    for (uint64_t k = 0; k < total; ++k) d.q[k] = 0;
    return kSeOk;
  }
  const uint64_t states_at = uint64_t{bitmap_bytes} + 1;
  if (n - states_at < 4ull * lanes) return kSeBadState;
  uint32_t x_state[kMaxLanes];
  for (uint32_t l = 0; l < lanes; ++l) {
    const uint8_t* p = s + states_at + 4 * l;
    const uint32_t x = static_cast<uint32_t>(__ldg(p)) | (static_cast<uint32_t>(__ldg(p + 1)) << 8) |
                       (static_cast<uint32_t>(__ldg(p + 2)) << 16) |
                       (static_cast<uint32_t>(__ldg(p + 3)) << 24);
    if (x < kLow) return kSeBadState;
    x_state[l] = x;
  }
  WordReader r{s, states_at + 4ull * lanes, n};
  if ((r.end - r.pos) % 2 != 0) return kSeOddWords;

  // Fresh models for the coded components; coded component c on lane c % lanes.
  {
    uint32_t lane = 0;
    for (uint32_t i = 0; i < dim; ++i) {
      const bool is_coded = (__ldg(s + i / 8) >> (i % 8)) & 1u;
      if (is_coded) {
        meta[i] = make_uint2(0, (lane << kLaneShift) | kCodedBit);
        const uint4 init = make_uint4(kInitWord, kInitWord, kInitWord, kInitWord);
#pragma unroll
        for (int j = 0; j < 6; ++j) models[size_t{i} * 6 + j] = init;
        lane = lane + 1 == lanes ? 0 : lane + 1;
      } else {
        meta[i] = make_uint2(0, 0);
      }
    }
  }

  for (uint32_t t = 0; t < d.tokens; ++t) {
    int32_t* row = d.q + uint64_t{t} * dim;
    for (uint32_t i = 0; i < dim; ++i) {
      uint2 m = meta[i];
      if (!(m.y & kCodedBit)) {
        row[i] = 0;
        continue;
      }
      const uint32_t ctx = (m.y >> kCtxShift) & 3u;
      const uint32_t lane = (m.y >> kLaneShift) & 7u;
      uint4* mp = models + size_t{i} * 6 + 2 * ctx;
      const uint4 a = mp[0], b = mp[1];
      uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      uint32_t x = x_state[lane];
      const uint32_t slot = x & (kTotal - 1);
      // The symbol: the first s with slot < start(s) + f(s), else the escape.
      // Symbol 0 (most of them) takes a short path; otherwise a branch-free
      // scan with compile-time indices (a loop that breaks early would index
      // w[] at run time and put it in local memory).
      int sym;
      uint32_t start, freq;
      const uint32_t f0 = Half(w, 0) + 1;
      if (slot < f0) {
        sym = 0;
        start = 0;
        freq = f0;
      } else {
        sym = 1;
        start = f0;
        uint32_t cum = f0;
#pragma unroll
        for (int k = 1; k < kEscape; ++k) {
          const uint32_t next = cum + Half(w, k) + 1;
          if (slot >= next) {
            sym = k + 1;
            start = next;
          }
          cum = next;
        }
        freq = 0;
#pragma unroll
        for (int k = 1; k <= kEscape; ++k) {
          if (sym == k) freq = Half(w, k) + 1;
        }
      }
      if (!Advance(x, start, freq, r)) return kSeCorrupt;
      // Model update: every p_k gives p_k >> rate to p_sym.
      const uint32_t count = ctx == 0 ? (m.x & 0xFFFFu) : ctx == 1 ? (m.x >> 16) : (m.y & 0xFFFFu);
      model::Update(w, model::Rate(count), static_cast<uint32_t>(sym));
      mp[0] = make_uint4(w[0], w[1], w[2], w[3]);
      mp[1] = make_uint4(w[4], w[5], w[6], w[7]);
      const uint32_t next_count = count + 1 < kCountCap ? count + 1 : kCountCap;
      if (ctx == 0) {
        m.x = (m.x & 0xFFFF0000u) | next_count;
      } else if (ctx == 1) {
        m.x = (m.x & 0xFFFFu) | (next_count << 16);
      } else {
        m.y = (m.y & 0xFFFF0000u) | next_count;
      }

      uint32_t mag = static_cast<uint32_t>(sym);
      if (sym == kEscape) {  // Exp-Golomb 0 of mag - 15 in uniform bits
        int zeros = 0;
        uint32_t bit;
        for (;;) {
          if (!Bit(x, r, &bit)) return kSeCorrupt;
          if (bit) break;
          if (++zeros > kMaxEscapeZeros) return kSeCorrupt;
        }
        uint32_t e = 1;
        for (int k = 0; k < zeros; ++k) {
          if (!Bit(x, r, &bit)) return kSeCorrupt;
          e = (e << 1) | bit;
        }
        mag = e - 1 + kEscape;
        if (mag > kMaxMagnitude) return kSeCorrupt;
      }
      int32_t v = static_cast<int32_t>(mag);
      if (mag != 0) {
        uint32_t neg;
        if (!Bit(x, r, &neg)) return kSeCorrupt;
        if (neg) v = -v;
      }
      x_state[lane] = x;
      row[i] = v;
      const uint32_t next_ctx = mag == 0 ? 0u : mag == 1 ? 1u : 2u;
      m.y = (m.y & ~(3u << kCtxShift)) | (next_ctx << kCtxShift) | (mag != 0 ? kSeenBit : 0u);
      meta[i] = m;
    }
  }
  if (r.pos != r.end) return kSeTrailingBytes;
  // The encoder codes exactly the components with a non-zero symbol.
  for (uint32_t i = 0; i < dim; ++i) {
    const uint32_t y = meta[i].y;
    if ((y & kCodedBit) && !(y & kSeenBit)) return kSeEmptyComponent;
  }
  for (uint32_t l = 0; l < lanes; ++l) {
    if (x_state[l] != kLow) return kSeFinalState;
  }
  return kSeOk;
}

__global__ void __launch_bounds__(kGlobalThreads)
    SeDecodeGlobalKernel(const SeDesc* __restrict__ descs, uint32_t count, uint8_t* models,
                         int32_t* statuses) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  const SeDesc d = descs[k];
  uint8_t* base = models + d.models_offset;
  statuses[d.status_index] = DecodeGroup(d, reinterpret_cast<uint4*>(base),
                                         reinterpret_cast<uint2*>(base + size_t{d.dim} * kSeModelBytes));
}

__global__ void SeDecodeSharedKernel(const SeDesc* __restrict__ descs, uint32_t count, uint32_t max_dim,
                                     int32_t* statuses) {
  extern __shared__ uint4 smem[];
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  const SeDesc d = descs[k];
  uint8_t* base = reinterpret_cast<uint8_t*>(smem) + threadIdx.x * SeSharedStride(max_dim);
  statuses[d.status_index] = DecodeGroup(d, reinterpret_cast<uint4*>(base),
                                         reinterpret_cast<uint2*>(base + size_t{d.dim} * kSeModelBytes));
}

}  // namespace

int SeSmCount() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      return 132;
    }
    return n;
  }();
  return sms;
}

cudaError_t SeSharedMemoryPerBlock(int* bytes) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  return cudaDeviceGetAttribute(bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
}

cudaError_t LaunchSeDecodeGlobal(const SeLaunch& launch, int32_t* statuses, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  // Spread small batches over every SM: a group is one dependency chain, so a
  // batch runs as long as its slowest chain, and sharing a warp costs
  // memory-divergence replays.
  uint32_t threads = launch.threads != 0 ? launch.threads : kGlobalThreads;
  const uint32_t per_sm = (launch.count + SeSmCount() - 1) / SeSmCount();
  if (per_sm < threads) threads = per_sm < 1 ? 1 : per_sm;
  if (threads > kGlobalThreads) threads = kGlobalThreads;
  const uint32_t blocks = (launch.count + threads - 1) / threads;
  SeDecodeGlobalKernel<<<blocks, threads, 0, stream>>>(launch.descs, launch.count, launch.models, statuses);
  return cudaGetLastError();
}

cudaError_t LaunchSeDecodeShared(const SeLaunch& launch, int32_t* statuses, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  const uint32_t threads = launch.threads;
  const size_t bytes = size_t{threads} * SeSharedStride(launch.max_dim);
  cudaError_t err = cudaFuncSetAttribute(SeDecodeSharedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes));
  if (err != cudaSuccess) return err;
  const uint32_t blocks = (launch.count + threads - 1) / threads;
  SeDecodeSharedKernel<<<blocks, threads, bytes, stream>>>(launch.descs, launch.count, launch.max_dim,
                                                           statuses);
  return cudaGetLastError();
}

}  // namespace seqkv::gpu::internal
