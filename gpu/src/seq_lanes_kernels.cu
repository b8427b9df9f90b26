// The seq codec's lane-stream decode (CUDA C++17, sm_90): a half-warp per
// group stream, a thread per lane, the lanes in lock-step as the format
// orders their words (codec/src/seq_lanes.h): every thread decodes its lane's
// next rANS operation with the same SeqLaneStep as the CPU reference, then the
// lanes that need a word take consecutive words of the shared stream in lane
// order (a ballot and a population count; the words come from a window of
// the stream held in the half-warp's registers). Integer arithmetic only: q is
// SeqDecodeLaneGroup's bit for bit, and a stream is refused exactly when the
// reference refuses it.
//
// Shared memory per block: the static model's cumulative rows (16 KiB), then
// per half-warp its group's coded components, table per component, previous
// symbols and non-zero flags.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "seq_lanes.h"
#include "seq_lanes_device.cuh"
#include "seq_lanes_kernels.h"
#include "seq_step_device.cuh"

namespace seqkv::gpu::internal {

namespace {

using seqkv::internal::kSeqLaneMax;
using seqkv::internal::kSeqLaneMaxShift;
using seqkv::internal::kSeqLaneRansLow;
using seqkv::internal::kSeqStaticClasses;
using seqkv::internal::SeqLaneCursor;
using seqkv::internal::SeqLaneGroupView;

// Threads per block (SlLaunch::threads; default 256 for the signed model,
// whose tables are larger, so more groups share one copy; 128 otherwise).
// The static model in shared memory: the magnitude model's cumulative rows (3
// contexts per class), or the signed model's search tables (cumulative rows, buckets).
template <bool kSigned>
constexpr uint32_t kCumBytes = kSigned ? kSignedSearchBytes
                                       : 2u * kSeqStaticClasses * 3 * seqkv::internal::kSeqLaneRowStride;
static_assert(kCumBytes<false> % 16 == 0 && kCumBytes<true> % 16 == 0, "rows of 16-byte units");
static_assert(kSeqLaneMax == 16, "a half-warp per group");

// Per coded component: info, (magnitude model) previous symbol, non-zero flag.
template <bool kSigned>
__host__ __device__ inline uint32_t SlotBytes(uint32_t dim) {
  return (dim * (kSigned ? 4 + 1 : 4 + 4 + 1) + 15) / 16 * 16;
}

struct SlotHeader {
  uint32_t n, lanes, words_at, words;
  int32_t shift;
  int32_t error;
};

// (Measured on the H200, 8K Llama-3-8B context: the rows read through L1
// from global memory instead of shared took 19.3 ms instead of 13.8.)
// kHalf (signed model only, SlLaunch::half_symbols): q holds the f16 dense
// stage's FP16 operands; the step function's store hook writes each non-zero
// symbol's float(q) * step rounded to FP16.
template <bool kSigned, uint32_t kThreads, bool kHalf = false>
__global__ void __launch_bounds__(kThreads, kHalf ? 5 : 1) SlDecodeKernel(SlLaunch L) {
  static_assert(kSigned || !kHalf, "FP16 operands from signed lane streams only");
  constexpr uint32_t kCum = kCumBytes<kSigned>;
  constexpr uint32_t kGroups = kThreads / kSeqLaneMax;  // groups per block
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ SlotHeader headers[kGroups];
  const auto* table_src = reinterpret_cast<const uint4*>(kSigned ? L.signed_search : static_cast<const void*>(L.cum));
  for (uint32_t i = threadIdx.x; i < kCum / 16; i += blockDim.x) reinterpret_cast<uint4*>(smem)[i] = table_src[i];
  const SignedSearch search(smem);  // signed model
  const auto* cum = reinterpret_cast<const uint16_t*>(smem);
  __syncthreads();

  const uint32_t d = L.dim;
  const uint32_t slot = threadIdx.x / kSeqLaneMax, j = threadIdx.x % kSeqLaneMax;
  const uint32_t item = blockIdx.x * kGroups + slot;
  const bool valid = item < L.count;
  unsigned char* mine = smem + kCum + slot * SlotBytes<kSigned>(d);
  auto* info = reinterpret_cast<uint32_t*>(mine);  // [n] component, then | table << 16
  auto* prev = kSigned ? nullptr : reinterpret_cast<int32_t*>(mine + 4 * d);
  auto* nonzero = mine + (kSigned ? 4 : 8) * d;
  SlotHeader& h = headers[slot];
  const unsigned half = 0xFFFFu << (16 * (slot % 2));

  SlGroup desc{};
  if (valid) desc = LoadSlGroup(L, item);
  const uint8_t* s = desc.stream;
  const uint64_t bytes = desc.stream_bytes;
  const uint32_t bitmap = (d + 7) / 8;
  // The header, by the half-warp's first thread.
  if (valid && j == 0) {
    h = SlotHeader{};
    if (bytes < bitmap + 1) {
      h.error = 1;
    } else {
      uint32_t n = 0;
      for (uint32_t i = 0; i < bitmap * 8; ++i) {
        if (!(__ldg(s + i / 8) & (1u << (i % 8)))) continue;
        if (i >= d) {
          h.error = 1;
          break;
        }
        info[n++] = i;
      }
      const uint32_t lanes = __ldg(s + bitmap);
      h.n = n;
      h.lanes = lanes;
      if (lanes != (n < kSeqLaneMax ? n : kSeqLaneMax)) h.error = 1;
      if (!h.error && lanes == 0 && bytes != bitmap + 1) h.error = 1;
      if (!h.error && lanes > 0) {
        const uint64_t need = uint64_t{bitmap} + 2 + 4ull * lanes;
        const int shift = static_cast<int8_t>(bytes > bitmap + 1 ? __ldg(s + bitmap + 1) : 0);
        if (desc.tokens == 0 || bytes < need || (bytes - need) % 2 != 0 || shift < -kSeqLaneMaxShift ||
            shift > kSeqLaneMaxShift) {
          h.error = 1;
        } else {
          h.shift = shift;
          h.words_at = static_cast<uint32_t>(need);
          h.words = static_cast<uint32_t>((bytes - need) / 2);
        }
      }
    }
  }
  __syncwarp();
  const bool ok = valid && h.error == 0;
  // Tables, previous symbols and flags per coded component. Only non-zero
  // symbols are stored, which are the fewest (scattered 4-byte stores were
  // this kernel's largest cost), into a q that is zero: cleared by the
  // caller beforehand (magnitude model) or by the kernel ahead of the lanes
  // (signed model, below).
  if (ok) {
    const int16_t* scale = L.scale + uint64_t{desc.group} * d;
    for (uint32_t c = j; c < h.n; c += kSeqLaneMax) {
      const uint32_t i = info[c];
      info[c] = seqkv::internal::SeqLaneInfo(
          i, static_cast<uint32_t>(seqkv::internal::SeqLaneTable(
                 seqkv::internal::SeqLaneClass(scale[i], desc.step_class, desc.code), h.shift)));
      if (!kSigned) prev[c] = 0;
      nonzero[c] = 0;
    }
    __syncwarp(half);
  }
  const uint32_t lanes = ok ? h.lanes : 0;
  SeqLaneCursor cur;
  cur.idx = j;
  // Flags as words, not bools: the compiler kept bools as bytes and spent a
  // byte permute per flag per step (ncu, 2026-11-30: ~20 of 142 instructions).
  uint32_t active = j < lanes ? 1u : 0u;
  uint32_t bad = 0;
  if (active) {
    cur.x = LoadLe32(s + bitmap + 2 + 4 * j);
    if (cur.x < kSeqLaneRansLow) {
      bad = 1;
      active = 0;
    }
  }
  const SeqLaneGroupView view{cum, info, prev, nonzero, kHalf ? nullptr : desc.q, ok ? h.n : 0, lanes, desc.tokens, d};
  // kHalf: the group's FP16 operands, q * float(step_base); `over` is set
  // by a term outside FP16's range.
  [[maybe_unused]] auto* qh = reinterpret_cast<uint16_t*>(desc.q);
  [[maybe_unused]] const float step = kHalf ? HalfOperandStep(desc.step_base) : 0.0f;
  [[maybe_unused]] uint32_t over = 0;
  const uint8_t* words = s + (ok ? h.words_at : 0);
  const uint32_t nwords = ok ? h.words : 0;
  // The group's next words wait in registers, one per thread of the
  // half-warp: window[0] holds word base + j, window[1] word base + 16 + j,
  // and a lane takes its word from the thread that holds it (a shuffle).
  // When the words read pass base + 16 the window moves on by 16 and loads
  // the next 16, which are needed some steps later, so no step waits on a
  // global load. (Loading each word when a lane needed it put that load's
  // latency in every step: a third of the kernel's stall samples, ncu
  // 2026-11-30.) Past the stream's end the window holds zeros, and a lane
  // that would read there marks the stream corrupt as before.
  auto word_at = [&](uint32_t k) -> uint32_t {
    return k < nwords ? uint32_t{__ldg(words + 2 * k)} | (uint32_t{__ldg(words + 2 * k + 1)} << 8) : 0u;
  };
  uint32_t base = 0;
  uint32_t window0 = word_at(j), window1 = word_at(kSeqLaneMax + j);
  uint32_t at = 0;  // words the half-warp has read
  const unsigned below = (1u << (threadIdx.x % 32)) - 1;
  // Signed lane streams: q's rows, cleared by the half-warp ahead of its
  // lanes. A lane takes at least one step per symbol and has at least
  // per = n / lanes symbols per token, so before step s no lane is past
  // token s / per. Clearing here instead of a memset of all symbols
  // beforehand spreads those stores over the decode, which is bound by its
  // steps, not by memory (H200, 8K Llama batch: the memset took ~0.4 ms of
  // a 7.99 ms f16 decode; the kernel's time did not change). The magnitude
  // kernel measured 1.1 ms slower with the same clearing, so its caller
  // keeps the memset.
  const uint32_t row_tokens = valid ? desc.tokens : 0;
  constexpr uint32_t kPerVector = kHalf ? 8 : 4;  // symbols per 16-byte store
  const bool row_vectors = d % kPerVector == 0 && reinterpret_cast<uintptr_t>(desc.q) % 16 == 0;
  uint32_t cleared = 0;
  auto clear_rows = [&](uint32_t upto) {
    for (upto = upto < row_tokens ? upto : row_tokens; cleared < upto; ++cleared) {
      auto* row = reinterpret_cast<unsigned char*>(desc.q) + uint64_t{cleared} * d * (kHalf ? 2 : 4);
      if (row_vectors) {
        for (uint32_t i = j; i < d / kPerVector; i += kSeqLaneMax) {
          reinterpret_cast<uint4*>(row)[i] = make_uint4(0, 0, 0, 0);
        }
      } else if (kHalf) {
        for (uint32_t i = j; i < d; i += kSeqLaneMax) reinterpret_cast<uint16_t*>(row)[i] = 0;
      } else {
        for (uint32_t i = j; i < d; i += kSeqLaneMax) reinterpret_cast<int32_t*>(row)[i] = 0;
      }
    }
  };
  // Steps per cleared row, the same in the whole warp (the smaller of its
  // two groups'), so the barrier that orders the clears before the lanes'
  // stores is taken by all 32 threads together.
  uint32_t per = lanes > 0 ? (ok ? h.n : 0) / lanes : 0xFFFFFFFFu;
  per = per == 0 ? 1 : per;
  uint32_t target = 2;  // rows [0, target) are cleared
  if constexpr (kSigned) {
    per = min(per, __shfl_xor_sync(0xFFFFFFFFu, per, kSeqLaneMax));
    clear_rows(target);
  }
  uint32_t countdown = per;
  __syncwarp();
  while (__any_sync(0xFFFFFFFFu, active)) {
    uint32_t need = 0;
    if (active) {
      int rc;
      if constexpr (kHalf) {
        // The store hook writes each non-zero symbol's FP16 operand.
        rc = seqkv::internal::SeqSignedLaneStep(
            &cur, view, j, search,
            [&](const SeqLaneGroupView&, uint32_t t, uint32_t component, int32_t value) {
              qh[uint64_t{t} * d + component] = HalfOperand(value, step, &over);
            });
      } else if constexpr (kSigned) {
        rc = seqkv::internal::SeqSignedLaneStep(&cur, view, j, search);
      } else {
        rc = seqkv::internal::SeqLaneStep(&cur, view, j);
      }
      if (rc == seqkv::internal::kSeqLaneCorrupt) {
        bad = 1;
        active = 0;
      } else {
        need = cur.x < kSeqLaneRansLow ? 1u : 0u;
        if (rc == seqkv::internal::kSeqLaneDone) active = 0;  // its last word, if any, is still read below
      }
    }
    const unsigned want = __ballot_sync(0xFFFFFFFFu, need) & half;
    const uint32_t k = at + __popc(want & below);  // this lane's word, if it needs one
    const uint32_t r = (k - base) % (2 * kSeqLaneMax);  // < 32: at - base < 16, and at most 16 lanes read
    const uint32_t from0 = __shfl_sync(0xFFFFFFFFu, window0, r % kSeqLaneMax, kSeqLaneMax);
    const uint32_t from1 = __shfl_sync(0xFFFFFFFFu, window1, r % kSeqLaneMax, kSeqLaneMax);
    if (need) {
      if (k >= nwords) {
        bad = 1;
        active = 0;
      } else {
        cur.x = (cur.x << 16) | (r < kSeqLaneMax ? from0 : from1);
      }
    }
    at += __popc(want);
    if (at - base >= kSeqLaneMax) {  // the same in the whole half-warp
      base += kSeqLaneMax;
      window0 = window1;
      window1 = word_at(base + kSeqLaneMax + j);
    }
    if constexpr (kSigned) {
      if (--countdown == 0) {
        countdown = per;
        clear_rows(++target);
        __syncwarp();
      }
    }
  }
  if constexpr (kSigned) clear_rows(row_tokens);  // the rows no lane reached (a corrupt or empty stream)
  if (j < lanes && !bad && cur.x != kSeqLaneRansLow) bad = 1;
  // Every word read, every coded component non-zero somewhere.
  if (ok && j == 0 && lanes > 0 && at != nwords) bad = 1;
  __syncwarp();
  if (ok) {
    for (uint32_t c = j; c < h.n; c += kSeqLaneMax) {
      if (!nonzero[c]) bad = 1;
    }
  }
  if (valid && (h.error != 0 || bad)) {
    atomicCAS(&L.statuses[desc.status_index], 0, kSlCorrupt);
    if (kHalf) atomicCAS(&L.statuses[desc.status_index], kSlHalfRange, kSlCorrupt);  // corrupt wins
  } else if (kHalf && valid && over) {
    atomicCAS(&L.statuses[desc.status_index], 0, kSlHalfRange);
  }
}

template <bool kSigned, uint32_t kThreads, bool kHalf = false>
cudaError_t Launch(const SlLaunch& launch, cudaStream_t stream) {
  constexpr uint32_t kGroups = kThreads / kSeqLaneMax;
  const uint32_t smem = kCumBytes<kSigned> + kGroups * SlotBytes<kSigned>(launch.dim);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(SlDecodeKernel<kSigned, kThreads, kHalf>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const uint32_t blocks = (launch.count + kGroups - 1) / kGroups;
  SlDecodeKernel<kSigned, kThreads, kHalf><<<blocks, kThreads, smem, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSlDecode(const SlLaunch& launch, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  if (!launch.signed_model) return Launch<false, 128>(launch, stream);
  if (launch.half_symbols) return Launch<true, 256, true>(launch, stream);
  return launch.threads == 128 ? Launch<true, 128>(launch, stream) : Launch<true, 256>(launch, stream);
}

}  // namespace seqkv::gpu::internal
