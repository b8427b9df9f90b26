// The seq codec's split lane streams (`streams=lanes3`; codec/src/seq_lanes.h,
// docs/format.md "Split lane streams") on the GPU (CUDA C++17, sm_90): a
// half-warp per group stream, a thread per lane, and since every lane has its
// own words, each thread decodes its lane from start to end: no ballot,
// shuffle or barrier per symbol. Lane j owns components j, j + 16, ..., so the
// 16 lanes of a group store 16 consecutive symbols of a token together, every
// symbol (an uncoded component's is 0): nothing is cleared beforehand.
// Integer arithmetic: q is SeqDecodeLaneGroup's bit for bit, and a stream is
// refused exactly when the reference refuses it. With half_symbols the stored
// value is the f16 dense stage's FP16 operand q * float(step_base), as the
// lanes2 kernel's (HalfOperand).
//
// SplitSymbol runs SeqSplitLaneSymbol's operations (the signed model's
// bucket search, SeqSignedFindBucket) with fewer instructions per symbol:
//   * a word is taken without checking the lane's word count: the count is
//     checked once at the lane's end (a lane that took more words than its
//     own ends with a count that is not zero, the reference's refusal; the
//     reads past a lane's words stay inside the stream, WordReader::Load);
//   * an escape that the reference refuses marks the lane (WordReader::
//     Refuse) instead of a flag tested at every symbol;
//   * the escape's loops stay rolled: unrolled (once the reference's early
//     returns were gone, the compiler unrolled them in each of the eight
//     copies a token), they made the kernel twice as large and its lane
//     stage 1.6-1.7x slower (docs/BENCHMARKS.md, 2026-12-02).
//   * uncoded components decode with an identity table (kIdentity), so no
//     branch goes around them;
//   * the search loads the row's two bounds at once and walks behind one
//     rarely taken branch (SplitSearch);
//   * the word reader tops up at each token's start (WordReader::TopUp):
//     its refill runs about once a token per warp, not at most symbols.
//   The last three cut the lane stage from 1.49 to 1.32 ms for an 8K
//   context (ncu: 81 to 67 warp instructions per symbol).
// A binary search of the row in five steps, the same for every lane, was
// measured against the bucket search (same run, 17-word padded rows against
// bank conflicts): 1.62 against 1.49 ms for an 8K context; not kept.
//
// Shared memory per block: the signed model's search tables with the
// identity table (30.4 KiB), and
// for head sizes other than 64 and 128 each group's table per component.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "seq_lanes.h"
#include "seq_lanes_device.cuh"
#include "seq_lanes_kernels.h"
#include "seq_step_device.cuh"

namespace seqkv::gpu::internal {

namespace {

using seqkv::internal::kSeqLaneMax;
using seqkv::internal::kSeqLaneMaxShift;
using seqkv::internal::kSeqLaneRansLow;
using seqkv::internal::kSeqLaneScaleBits;
using seqkv::internal::kSeqSignedZero;

static_assert(kSeqLaneMax == 16, "a half-warp per group");

// Reads one lane's 16-bit words from an arbitrarily aligned place through
// aligned 32-bit loads, the next one loaded ahead; at least 16 bits are in
// buf between words. No load passes the stream's end: the unit that holds
// its last byte is read once at the start, a byte at a time up to that byte,
// and later units read as 0 (a unit's bytes before the stream's start are the
// chunk's, in the same buffer). `left` counts the lane's words down: it goes
// below 0 for a lane that reads past its own, and Refuse() puts it where it
// never comes back to 0 (a corrupt stream either way, found at the lane's end).
struct WordReader {
  static constexpr int32_t kRefused = INT32_MIN / 2;
  const uint32_t* unit;  // the unit to load next
  int32_t rest;          // units to load before the one with the stream's last byte
  uint32_t last_value;   // that unit's bytes up to the stream's end
  int32_t left;          // words of the lane not yet read
  uint32_t ahead;        // the unit before `unit`, loaded
  uint32_t bits;         // valid bits in buf, >= 16 between words
  uint64_t buf;

  __device__ __forceinline__ uint32_t Load() {
    const uint32_t v = rest > 0 ? __ldg(unit) : (rest == 0 ? last_value : 0u);
    ++unit;
    --rest;
    return v;
  }

  __device__ __forceinline__ void Refill() {
    buf |= uint64_t{ahead} << bits;
    bits += 32;
    ahead = Load();
  }

  __device__ __forceinline__ void Refuse() { left = kRefused; }

  // At a token's start: at least 33 bits in buf (two words), so Renorm's own
  // refill is taken about once a token per warp instead of at most symbols.
  __device__ __forceinline__ void TopUp() {
    if (bits <= 32) Refill();
  }

  __device__ __forceinline__ void Start(const uint8_t* at, uint32_t words, const uint8_t* stream_end) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(at), base = a & ~uintptr_t{3};
    unit = reinterpret_cast<const uint32_t*>(base);
    const uintptr_t end = reinterpret_cast<uintptr_t>(stream_end);
    left = static_cast<int32_t>(words);
    if (words == 0 || end <= base) {  // nothing to read (then no load at all)
      left = 0;
      rest = -1;
      last_value = 0;
      buf = 0;
      bits = 32;
      ahead = 0;
      return;
    }
    const uint32_t last = static_cast<uint32_t>((end - 1 - base) / 4);
    const uint32_t tail = static_cast<uint32_t>(end - base) - 4 * last;  // 1 .. 4
    const auto* b = reinterpret_cast<const uint8_t*>(unit + last);
    last_value = 0;
    for (uint32_t k = 0; k < tail; ++k) last_value |= uint32_t{__ldg(b + k)} << (8 * k);
    rest = static_cast<int32_t>(last);
    const uint32_t skip = static_cast<uint32_t>(a & 3) * 8;
    buf = Load() >> skip;
    bits = 32 - skip;
    ahead = Load();
    if (bits < 16) Refill();
  }

  // SeqSplitRenorm without the word count's check (`left`).
  __device__ __forceinline__ void Renorm(uint32_t& x) {
    if (x < kSeqLaneRansLow) {
      x = (x << 16) | (static_cast<uint32_t>(buf) & 0xFFFFu);
      buf >>= 16;
      bits -= 16;
      --left;
      if (bits < 16) Refill();
    }
  }
};

// The signed model's tables as the split kernel keeps them in shared memory:
// the model's rows and buckets (SeqSignedSearchBytes) with one more table,
// kIdentity, for uncoded components: all of its 2^15 slots are the zero
// symbol's, so a step with it decodes q = 0 and leaves the state as it was
// (x = 2^15 (x >> 15) + slot), with no word taken. Every component then takes
// the same instructions, without a branch around the uncoded ones.
constexpr uint32_t kIdentity = seqkv::internal::kSeqStaticClasses;
constexpr uint32_t kSplitTables = kIdentity + 1;
constexpr uint32_t kSplitRowBytes = 2u * kSplitTables * seqkv::internal::kSeqSignedRowStride;
constexpr uint32_t kSplitSearchBytes = kSplitRowBytes + kSplitTables * seqkv::internal::kSeqSignedBuckets;
static_assert(kSignedRowBytes % 16 == 0 && kSplitRowBytes % 16 == 0 && kSplitSearchBytes % 16 == 0,
              "copied in 16-byte units");
static_assert(kIdentity < 0xFFu, "a table fits a byte");

// SeqSignedFindBucket's search with the row's two bounds loaded at once and
// its walk (SeqSignedWalk) behind one rarely taken branch (~1 % of symbols).
struct SplitSearch {
  const uint16_t* rows;
  const uint8_t* buckets;
  __device__ explicit SplitSearch(const unsigned char* smem)
      : rows(reinterpret_cast<const uint16_t*>(smem)), buckets(smem + kSplitRowBytes) {}
  __device__ __forceinline__ uint32_t operator()(uint32_t table, uint32_t slot, uint32_t* start,
                                                 uint32_t* freq) const {
    using namespace seqkv::internal;
    const uint16_t* row = rows + table * kSeqSignedRowStride;
    uint32_t s = buckets[table * kSeqSignedBuckets + (slot >> (kSeqLaneScaleBits - kSeqSignedBucketBits))];
    uint32_t lo = row[s], hi = row[s + 1];
    if (__builtin_expect(slot < lo || hi <= slot, 0)) s = SeqSignedWalk(row, slot, s, &lo, &hi);
    *start = lo;
    *freq = hi - lo;
    return s;
  }
};

// An escape's Exp-Golomb-0 bits after its symbol s (SeqSplitEscape, the
// reference's; Renorm takes no word past the lane's, Refuse marks that): q, or
// 0 with the lane refused (the reference's kSeqSplitCorrupt).
__device__ __forceinline__ int32_t SplitEscape(uint32_t s, uint32_t* x, WordReader* r) {
  return seqkv::internal::SeqSplitEscape(
      static_cast<int>(s), x,
      [r](uint32_t* y) {
        r->Renorm(*y);
        return true;
      },
      [r] {
        r->Refuse();
        return int32_t{0};
      });
}

// One symbol of a split lane from its table's search (SeqSplitLaneSymbol's
// operations): q, or 0 with the lane refused (WordReader::Refuse).
__device__ __forceinline__ int32_t SplitSymbol(const SplitSearch& search, uint32_t table, uint32_t* x,
                                               WordReader* r) {
  constexpr uint32_t kMask = (1u << kSeqLaneScaleBits) - 1;
  const uint32_t slot = *x & kMask;
  uint32_t start, freq;
  const uint32_t s = search(table, slot, &start, &freq);
  *x = freq * (*x >> kSeqLaneScaleBits) + slot - start;
  r->Renorm(*x);
  if (s == seqkv::internal::kSeqSignedEscapeNeg || s == seqkv::internal::kSeqSignedEscapePos) {
    return SplitEscape(s, x, r);
  }
  return static_cast<int32_t>(s) - kSeqSignedZero;
}

// Shared memory per group after the search tables: each component's table
// (kPer == 0; kPer > 0 keeps them in registers). (Until 2026-12-03 FP16
// operands also kept each component's step here: q * step_base * scale_i.)
template <uint32_t kPer>
__host__ __device__ constexpr uint32_t GroupBytes(uint32_t dim) {
  return kPer > 0 ? 0u : (dim + 15) / 16 * 16;
}

// kPer: components per lane (head_dim / 16) with the lane's tables in
// registers, 4 and 8; 0: any head size, the tables in shared memory.
// kHalf: FP16 operands (SlLaunch::half_symbols). kMinBlocks: blocks per SM
// for __launch_bounds__ (3: at most 40 registers, no spills, 48 warps per SM;
// 4: 32 registers, which spill, 64 warps per SM; 0: no bound, ~60 registers;
// LaunchFor picks).
template <uint32_t kPer, uint32_t kThreads, bool kHalf, uint32_t kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks > 0 ? kMinBlocks : 1) SplitDecodeKernel(SlLaunch L) {
  constexpr uint32_t kGroups = kThreads / kSeqLaneMax;
  extern __shared__ __align__(16) unsigned char smem[];
  {  // The model's rows and buckets, each after its identity table's place.
    const auto* from = reinterpret_cast<const uint4*>(L.signed_search);
    for (uint32_t i = threadIdx.x; i < kSignedSearchBytes / 16; i += kThreads) {
      const uint32_t at = i < kSignedRowBytes / 16 ? i : i + (kSplitRowBytes - kSignedRowBytes) / 16;
      reinterpret_cast<uint4*>(smem)[at] = from[i];
    }
    using seqkv::internal::kSeqSignedBuckets;
    using seqkv::internal::kSeqSignedRowStride;
    static_assert(kThreads >= kSeqSignedBuckets, "one thread per identity bucket");
    if (threadIdx.x < kSeqSignedRowStride) {  // cum: 0 up to the zero symbol, then 2^15
      reinterpret_cast<uint16_t*>(smem)[kIdentity * kSeqSignedRowStride + threadIdx.x] =
          threadIdx.x <= kSeqSignedZero ? 0 : uint16_t{1u << kSeqLaneScaleBits};
    }
    if (threadIdx.x < kSeqSignedBuckets) {
      smem[kSplitRowBytes + kIdentity * kSeqSignedBuckets + threadIdx.x] =
          static_cast<uint8_t>(kSeqSignedZero);
    }
  }
  __syncthreads();
  const SplitSearch search(smem);

  // kPer > 0: head_dim is 16 kPer (the launcher's choice), a constant here.
  const uint32_t d = kPer > 0 ? kPer * kSeqLaneMax : L.dim;
  const uint32_t slot = threadIdx.x / kSeqLaneMax, j = threadIdx.x % kSeqLaneMax;
  const uint32_t item = blockIdx.x * kGroups + slot;
  // A half-warp past the batch's end takes part in the warp's shuffles and
  // decodes nothing.
  const bool valid = item < L.count;
  SlGroup desc{};
  if (valid) desc = LoadSlGroup(L, item);
  const uint8_t* s = desc.stream;
  const uint64_t bytes = desc.stream_bytes;
  const uint32_t lanes = seqkv::internal::SeqSplitLanes(d);
  const uint32_t per = kPer > 0 ? kPer : (d + kSeqLaneMax - 1) / kSeqLaneMax;  // <= 32 (kSplitMaxDim)
  const uint32_t bitmap = (d + 7) / 8;
  uint32_t bad = !valid || bytes < bitmap ? 1u : 0u;
  // The lane's coded components (a bit per p), and the group's count.
  uint32_t coded = 0;
  if (!bad) {
    for (uint32_t p = 0; p < per; ++p) {
      const uint32_t c = p * kSeqLaneMax + j;
      if (c < d && ((__ldg(s + c / 8) >> (c % 8)) & 1u)) coded |= 1u << p;
    }
    if (j == 0 && d % 8 != 0 && (__ldg(s + bitmap - 1) >> (d % 8)) != 0) bad = 1;  // bits past head_dim
  }
  uint32_t n = __popc(coded);
  for (uint32_t o = kSeqLaneMax / 2; o > 0; o /= 2) n += __shfl_xor_sync(0xFFFFFFFFu, n, o, kSeqLaneMax);
  // The header: shift, states, word counts (LEB128, every lane's but the last).
  uint32_t x = kSeqLaneRansLow, count = 0, start = 0, words_at = 0;
  int shift = 0;
  if (!bad && n == 0) {
    bad = bytes != bitmap ? 1u : 0u;
  } else if (!bad) {
    uint64_t at = bitmap + 1 + 4ull * lanes;
    if (desc.tokens == 0 || bytes < at) {
      bad = 1;
    } else {
      shift = static_cast<int8_t>(__ldg(s + bitmap));
      if (shift < -kSeqLaneMaxShift || shift > kSeqLaneMaxShift) bad = 1;
      if (j < lanes) {
        x = LoadLe32(s + bitmap + 1 + 4 * j);
        if (x < kSeqLaneRansLow) bad = 1;
      }
      uint64_t sum = 0;
      for (uint32_t l = 0; l + 1 < lanes && !bad; ++l) {
        uint64_t v = 0;
        for (uint32_t b = 0;; b += 7) {
          if (at >= bytes || b > 28) {
            bad = 1;
            break;
          }
          const uint32_t byte = __ldg(s + at++);
          v |= uint64_t{byte & 0x7Fu} << b;
          if (!(byte & 0x80u)) break;
        }
        if (l < j) start += static_cast<uint32_t>(v);
        if (l == j) count = static_cast<uint32_t>(v);
        sum += v;
      }
      if (!bad && ((bytes - at) % 2 != 0 || sum > (bytes - at) / 2)) bad = 1;
      if (!bad) {
        words_at = static_cast<uint32_t>(at);
        if (j == lanes - 1) count = static_cast<uint32_t>((bytes - at) / 2 - sum);
        if (j >= lanes) count = 0;
      }
    }
  }
  // The lanes of a group agree on whether its header is valid.
  bad = (__ballot_sync(0xFFFFFFFFu, bad) & (0xFFFFu << (threadIdx.x & 16u))) != 0 ? 1u : 0u;
  // The lane's tables: four per register (kPer > 0), else in shared memory.
  uint32_t tabs[kPer > 0 ? (kPer + 3) / 4 : 1] = {};
  uint8_t* group_smem = smem + kSplitSearchBytes + slot * GroupBytes<kPer>(d);
  [[maybe_unused]] uint8_t* group_tabs = group_smem;
  [[maybe_unused]] const float step = kHalf ? HalfOperandStep(desc.step_base) : 0.0f;
  const int16_t* scale = L.scale + uint64_t{desc.group} * d;
  for (uint32_t p = 0; p < per; ++p) {
    const uint32_t c = p * kSeqLaneMax + j;
    uint32_t t = kIdentity;
    if (!bad && ((coded >> p) & 1u)) {
      t = static_cast<uint32_t>(seqkv::internal::SeqLaneTable(
          seqkv::internal::SeqLaneClass(scale[c], desc.step_class, desc.code), shift));
    }
    if constexpr (kPer > 0) {
      tabs[p / 4] |= t << (8 * (p % 4));
    } else if (c < d) {
      group_tabs[c] = static_cast<uint8_t>(t);
    }
  }
  WordReader r;
  r.Start(s + words_at + 2ull * start, bad ? 0u : count, s + bytes);
  if (bad) r.Refuse();  // (its tables are all kIdentity: it decodes zeros)
  // Component p of the lane at token t, decoded and stored at out[16 p] (out:
  // the token's symbols from this lane's first component on).
  [[maybe_unused]] uint32_t over = 0;
  uint32_t nonzero = 0;
  auto symbol = [&](auto* out, uint32_t p) {
    const uint32_t c = p * kSeqLaneMax + j;
    if (kPer == 0 && c >= d) return;
    uint32_t table;
    if constexpr (kPer > 0) {
      table = (tabs[p / 4] >> (8 * (p % 4))) & 0xFFu;
    } else {
      table = group_tabs[c];
    }
    const int32_t v = SplitSymbol(search, table, &x, &r);
    nonzero |= v != 0 ? 1u << p : 0u;
    if constexpr (kHalf) {
      out[p * kSeqLaneMax] = HalfOperand(v, step, &over);  // 0 for v == 0
    } else {
      out[p * kSeqLaneMax] = v;
    }
  };
  const uint32_t tokens = valid ? desc.tokens : 0;
  auto run = [&](auto* out) {
    for (uint32_t t = 0; t < tokens; ++t, out += d) {
      r.TopUp();
      if constexpr (kPer > 0) {
#pragma unroll
        for (uint32_t p = 0; p < kPer; ++p) symbol(out, p);
      } else {
        for (uint32_t p = 0; p < per; ++p) symbol(out, p);
      }
    }
  };
  if constexpr (kHalf) {
    run(reinterpret_cast<uint16_t*>(desc.q) + j);
  } else {
    run(desc.q + j);
  }
  if (!valid) return;
  // A valid header, every word taken and none past the lane's, the final
  // state, every coded component non-zero somewhere.
  bad = r.left != 0 || x != kSeqLaneRansLow || nonzero != coded ? 1u : 0u;
  if (bad || (kHalf && over)) {
    // The item's status index read here, not held through the loop (fewer
    // spill loads at 32 registers).
    int32_t* status = &L.statuses[L.items[item / L.groups].status_index];
    if (bad) {
      atomicCAS(status, 0, kSlCorrupt);
      if (kHalf) atomicCAS(status, kSlHalfRange, kSlCorrupt);  // corrupt wins
    } else {
      atomicCAS(status, 0, kSlHalfRange);
    }
  }
}

template <uint32_t kPer, bool kHalf, uint32_t kMinBlocks = 3>
cudaError_t Launch(const SlLaunch& launch, cudaStream_t stream) {
  constexpr uint32_t kThreads = 512;
  constexpr uint32_t kGroups = kThreads / kSeqLaneMax;
  auto* kernel = SplitDecodeKernel<kPer, kThreads, kHalf, kMinBlocks>;
  const uint32_t smem = kSplitSearchBytes + kGroups * GroupBytes<kPer>(launch.dim);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const uint32_t blocks = (launch.count + kGroups - 1) / kGroups;
  kernel<<<blocks, kThreads, smem, stream>>>(launch);
  return cudaGetLastError();
}

template <uint32_t kPer, bool kHalf>
cudaError_t LaunchPer(const SlLaunch& launch, cudaStream_t stream, uint32_t min_blocks) {
  if (min_blocks == 0) return Launch<kPer, kHalf, 0>(launch, stream);
  if (min_blocks == 4) return Launch<kPer, kHalf, 4>(launch, stream);
  return Launch<kPer, kHalf>(launch, stream);
}

// The register bound: 4 blocks per SM for head size 128 (32 registers, with
// spills: the lane stage 8 % faster with int32 symbols, 1.5 % into FP16
// operands than at 3, docs/BENCHMARKS.md 2026-12-02), 3 for 64 (where 4
// gained nothing with int32 symbols and was 3 % slower into FP16 operands).
// SEQKV_SPLIT_GENERIC=1 takes the any-head-size kernel for 64 and 128 too (a
// test switch: the test profiles have head_dim 64). SEQKV_SPLIT_BLOCKS=0, 3
// or 4 sets the 64 and 128 kernels' bound (a measuring switch).
template <bool kHalf>
cudaError_t LaunchFor(const SlLaunch& launch, cudaStream_t stream) {
  const char* generic = std::getenv("SEQKV_SPLIT_GENERIC");
  const char* blocks = std::getenv("SEQKV_SPLIT_BLOCKS");
  const uint32_t min_blocks =
      blocks != nullptr ? static_cast<uint32_t>(std::atoi(blocks)) : (launch.dim == 128 ? 4u : 3u);
  if (generic == nullptr || std::strcmp(generic, "1") != 0) {
    if (launch.dim == 128) return LaunchPer<8, kHalf>(launch, stream, min_blocks);
    if (launch.dim == 64) return LaunchPer<4, kHalf>(launch, stream, min_blocks);
  }
  return Launch<0, kHalf>(launch, stream);
}

}  // namespace

cudaError_t LaunchSplitLaneDecode(const SlLaunch& launch, cudaStream_t stream) {
  if (launch.count == 0) return cudaSuccess;
  return launch.half_symbols ? LaunchFor<true>(launch, stream) : LaunchFor<false>(launch, stream);
}

}  // namespace seqkv::gpu::internal
