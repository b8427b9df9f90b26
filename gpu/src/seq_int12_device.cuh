// Private to gpu/: device code of arith=int12's dense stage on int8 tensor
// cores, shared by the decode kernel (seq_decode_kernels.cu,
// SdLayerI12Kernel) and the encoder's (seq_encode_kernels.cu).
//
// arith=int12 (docs/format.md; codec/src/seq_lossy_core.cc PredictFixed,
// ForwardFixed, ReconstructInt) makes every sum an exact integer, so the
// tensor cores' order of summation gives the CPU's bytes:
//   * an int12 x int12 sum as four int8 products: with n = 64 hi + lo,
//     lo in [-32, 31], hi in [-32, 32], acc1 = 64 sum(hi*hi) + sum(hi*lo +
//     lo*hi) and acc0 = sum(lo*lo), S = 64 acc1 + acc0. For d <= 128 every
//     partial and final sum stays below 2^31 (|S| <= d 2047^2);
//   * symbols times int12 weights: int8 symbols, two products
//     (A = 64 sum(q*v_hi) + sum(q*v_lo)); a tile with a symbol outside
//     [-128, 127] takes a second pass over the symbols' high parts
//     (Cta::Symbols), and a row with one at or past 2^15 is summed again in
//     int64 on the CUDA cores (SumRow);
//   * values into int12 (features, residuals): n = rint(x 2^-e), e from the
//     block's largest finite |x| (FixedExponent), gathered by atomicMax on
//     the float bits by the kernels that wrote the values.
//
// A CTA: TMI = 64 tokens of one group, 2 * D / 32 warps; warp (wm, wn) owns
// tokens [32 wm, 32 wm + 32) x output columns [32 wn, 32 wn + 32) (2 x 4
// tiles of m16n8k32). I12Run streams the operands through shared memory
// KCI = 32 columns (one k-step) at a time, two chunks deep: cp.async copies
// a chunk's raw values (floats or int32 symbols) and its int8 weights while
// the previous chunk's products run; then each thread converts the raw
// values it copied into the int8 operands. Operand rows are 48 bytes apart,
// so every ldmatrix is free of bank conflicts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "seq_dense_device.cuh"
#include "seq_int12.h"

namespace seqkv::gpu::internal::i12 {

constexpr uint32_t TMI = kInt12TileTokens;  // tokens per CTA
constexpr uint32_t KCI = 32;             // K columns staged at a time
constexpr uint32_t kIStride = KCI + 16;  // int8 operand row stride, bytes

// Shared memory (dynamic): the per-element double sums [TMI][d] (DsumAt);
// two stages, each the raw chunk [TMI][KCI] words and the weights' hi and lo
// [d][kIStride]; the converted operands' hi and lo [TMI][kIStride]. A
// kernel's float rows [TMI][d + 4] may overlay the stages at the end.
__host__ __device__ constexpr uint32_t StageBytes(uint32_t d) { return TMI * KCI * 4 + 2 * d * kIStride; }
__host__ __device__ constexpr uint32_t AreaBytes(uint32_t d) { return 2 * StageBytes(d) + 2 * TMI * kIStride; }
__host__ __device__ constexpr uint32_t RowBytes(uint32_t d) { return TMI * (d + 4) * 4; }  // Cta::kRowStride
__host__ __device__ constexpr uint32_t SumBytes(uint32_t d) { return TMI * d * 8; }
__host__ __device__ constexpr uint32_t SharedBytes(uint32_t d) {
  return SumBytes(d) + (AreaBytes(d) > RowBytes(d) ? AreaBytes(d) : RowBytes(d));
}

__device__ __forceinline__ void MmaS8(int32_t (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// SeqFixedExponent (seq_lossy_core.cc): the smallest e with m <= 2047 2^e;
// 0 for m = 0. m is finite here.
__device__ __forceinline__ int FixedExponent(double m) {
  if (!(m > 0)) return 0;
  int e = 0;
  frexp(__ddiv_rn(m, 2047.0), &e);  // a first guess; the checks below are exact
  while (m > ldexp(2047.0, e)) ++e;
  while (m <= ldexp(2047.0, e - 1)) --e;
  return e;
}
// The exponent of a block whose largest finite |x| has float bits `bits`.
__device__ __forceinline__ int ExponentOfBits(uint32_t bits) {
  return FixedExponent(static_cast<double>(__uint_as_float(bits)));
}

// 2^-e as a float when that is a normal float, else 0 (ToFixed's `scale`).
__device__ __forceinline__ float FixedScale(int e) {
  return e >= -127 && e <= 126 ? __int_as_float((127 - e) << 23) : 0.0f;
}

// SeqToFixed's value: rint(x 2^-e) for finite x, else 0. With a normal
// `scale` (FixedScale) the product is exact, or below 2^-126 where both
// round to 0; else scalbnf (exact).
__device__ __forceinline__ int32_t ToFixed(float x, float scale, int e) {
  if (!isfinite(x)) return 0;
  return __float2int_rn(scale != 0.0f ? __fmul_rn(x, scale) : scalbnf(x, -e));
}

// |x| as float bits (ordered as the values), 0 for a value that is not finite.
__device__ __forceinline__ uint32_t FiniteAbsBits(float x) { return isfinite(x) ? __float_as_uint(fabsf(x)) : 0u; }

// The largest of a warp's values (float bits) into *at (every lane calls it).
__device__ __forceinline__ void WarpMaxInto(uint32_t most, uint32_t lane, uint32_t* at) {
  most = __reduce_max_sync(0xFFFFFFFFu, most);
  if (lane == 0 && most != 0) atomicMax(at, most);
}

// n = 64 hi + lo as two int8 bytes in byte `at` of the words.
__device__ __forceinline__ void SplitInto(int32_t n, uint32_t at, uint32_t& hi, uint32_t& lo) {
  const int32_t h = (n + 32) >> 6;
  hi |= (static_cast<uint32_t>(h) & 0xFFu) << (8 * at);
  lo |= (static_cast<uint32_t>(n - h * 64) & 0xFFu) << (8 * at);
}

// Four values of a row as int12 (ToFixed, any value and scale), split into
// bytes 0..3 of hi and lo (SplitInto).
__device__ __forceinline__ void SplitEach(float4 x, float scale, int e, uint32_t& hi, uint32_t& lo) {
  SplitInto(ToFixed(x.x, scale, e), 0, hi, lo);
  SplitInto(ToFixed(x.y, scale, e), 1, hi, lo);
  SplitInto(ToFixed(x.z, scale, e), 2, hi, lo);
  SplitInto(ToFixed(x.w, scale, e), 3, hi, lo);
}

// Element (k, j) of the double sums [TMI][d]: pairs of channels, pair p of
// row k stored at p ^ (k % 8), so a warp's 16-byte accesses to its fragments
// are free of bank conflicts.
__device__ __forceinline__ uint32_t DsumAt(uint32_t d, uint32_t k, uint32_t j) {
  return k * d + (((j / 2) ^ (k % 8)) * 2) + (j % 2);
}

// sum_i q[i] v[i][j] in int64, v from the int8 halves' row j (hi, then lo
// d * d bytes later): a row with a symbol at or past 2^15 (Cta::Symbols).
__device__ __forceinline__ int64_t SumRow(const int32_t* q, const int8_t* vh_row, uint32_t d) {
  const int8_t* vl_row = vh_row + uint64_t{d} * d;
  int64_t a = 0;
  for (uint32_t i = 0; i < d; ++i) a += int64_t{q[i]} * (int32_t{vh_row[i]} * 64 + vl_row[i]);
  return a;
}

// ---- the split-value products on wgmma (Hopper, sm_90a; head size 128) ----
//
// Cta::ValuesWg: two warpgroups, each 64 tokens x 64 output columns (wgmma
// m64n64k32 s8, both operands from shared memory, 32-byte swizzled rows: one
// k32 step a row). The int12 values' halves give three exact int32 sums a
// block, hh = sum(hi*hi), mid = sum(hi*lo + lo*hi) and ll = sum(lo*lo), and
// S = 4096 hh + 64 mid + ll (|S| < 2^31 as above). Each thread loads its raw
// values of the next chunk into registers while the tensor cores run the
// current one, so shared memory holds only the int8 operands: a stage is A's
// hi and lo rows [TMI][32] then B's [128][32], three stages.
namespace wg {
constexpr uint32_t kSw = 32;
constexpr uint32_t kStages = 3;
constexpr uint32_t kAPart = TMI * kSw;  // A's hi (or lo) rows of a stage, bytes
constexpr uint32_t kBPart = 128 * kSw;  // B's
constexpr uint32_t kStage = 2 * kAPart + 2 * kBPart;
// The stages, aligned to their swizzle atoms (256 bytes), fit in the area.
static_assert(kStages * kStage + 255 <= AreaBytes(128), "wgmma stages in the area");
}  // namespace wg

// D (64 x 64, int32) = A (64 x 32) * B (32 x 64) (+ D with `accumulate`),
// int8 operands in shared memory (descriptors da, db, both K-major), issued
// by a warpgroup. D's
// layout as WgmmaF16's: warp w of the warpgroup holds rows 16 w .. 16 w + 15;
// d[4 j .. 4 j + 3] are columns 8 j + 2 (lane % 4) and + 1, at rows lane / 4
// and lane / 4 + 8.
__device__ __forceinline__ void WgmmaS8(int32_t (&d)[32], uint64_t da, uint64_t db, bool accumulate) {
#if SEQKV_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]),
        "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]),
        "+r"(d[30]), "+r"(d[31])
      : "l"(da), "l"(db), "r"(accumulate ? 1 : 0));
#else
  (void)d, (void)da, (void)db;
  __trap();
#endif
}
__device__ __forceinline__ void FenceAcc(int32_t (&d)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// Four values of a row as int12 (ToFixed with a normal `scale`), split into
// hi and lo bytes (SplitInto) of one word each. fma(x, scale, 1.5 2^23 + 32)
// rounds x 2^-e (exact, or below 2^-126: 0) to the nearest integer n, ties to
// even, as __float2int_rn does, leaving b = 0x4B400020 + n in the bits for
// |n| <= 2047; then hi = floor((n + 32) / 64) is the low byte of b >> 6 and
// lo = n - 64 hi = (b mod 64) - 32, formed four bytes at a time. The values
// must be finite (the caller checks).
__device__ __forceinline__ void SplitFour(float4 x, float scale, uint32_t& hi, uint32_t& lo) {
  constexpr float kMagic = 12582944.0f;  // 1.5 2^23 + 32
  const uint32_t b0 = __float_as_uint(__fmaf_rn(x.x, scale, kMagic));
  const uint32_t b1 = __float_as_uint(__fmaf_rn(x.y, scale, kMagic));
  const uint32_t b2 = __float_as_uint(__fmaf_rn(x.z, scale, kMagic));
  const uint32_t b3 = __float_as_uint(__fmaf_rn(x.w, scale, kMagic));
  hi = __byte_perm(__byte_perm(b0 >> 6, b1 >> 6, 0x0040), __byte_perm(b2 >> 6, b3 >> 6, 0x0040), 0x5410);
  const uint32_t l = __byte_perm(__byte_perm(b0, b1, 0x0040), __byte_perm(b2, b3, 0x0040), 0x5410);
  // Per byte v = b mod 64 in [0, 63]: (v + 128 - 32) ^ 128 = v - 32 mod 256, no borrow between bytes.
  lo = (((l & 0x3F3F3F3Fu) | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
}
__device__ __forceinline__ bool AllFinite(float4 x) {
  return fabsf(x.x) <= 3.402823466e38f && fabsf(x.y) <= 3.402823466e38f && fabsf(x.z) <= 3.402823466e38f &&
         fabsf(x.w) <= 3.402823466e38f;
}

// One CTA's view: its shared memory, its warp's place and its accumulators.
template <uint32_t D>
struct Cta {
  static constexpr uint32_t NT = 2 * D;
  static constexpr uint32_t AS = kIStride;
  static constexpr uint32_t kRawCopies = TMI * (KCI / 4) / NT;   // 16-byte raw copies (four columns) per thread
  static constexpr uint32_t kBCopies = 2 * D * (KCI / 16) / NT;  // 16-byte weight copies per thread
  static constexpr uint32_t kChunksPer = D / KCI;                // chunks of a D-column block
  static constexpr uint32_t kRowStride = D + 4;                  // Rows()' row stride, floats

  double* dsum;
  unsigned char* area;
  unsigned char* xh;
  unsigned char* xl;
  uint32_t tid, lane, gq, tq, m0, n0;
  int32_t acc1[2][4][4], acc0[2][4][4];

  __device__ __forceinline__ explicit Cta(unsigned char* smem) {
    dsum = reinterpret_cast<double*>(smem);
    area = smem + SumBytes(D);
    xh = area + 2 * StageBytes(D);
    xl = xh + TMI * AS;
    tid = threadIdx.x;
    const uint32_t warp = tid / 32;
    lane = tid % 32;
    gq = lane / 4;
    tq = lane % 4;
    m0 = (warp / (D / 32)) * 32;
    n0 = (warp % (D / 32)) * 32;
    Zero();
  }
  __device__ __forceinline__ uint32_t* Raw(uint32_t s) const {
    return reinterpret_cast<uint32_t*>(area + s * StageBytes(D));
  }
  __device__ __forceinline__ unsigned char* Bh(uint32_t s) const { return area + s * StageBytes(D) + TMI * KCI * 4; }
  // The float rows [TMI][kRowStride], over the stages once the products are done.
  __device__ __forceinline__ float* Rows() const { return reinterpret_cast<float*>(area); }
  // Element r of tile (m, n) of this thread: row RowOf(m, r), column ColOf(n) + r % 2.
  __device__ __forceinline__ uint32_t RowOf(uint32_t m, uint32_t r) const { return m0 + m * 16 + gq + (r / 2) * 8; }
  __device__ __forceinline__ uint32_t ColOf(uint32_t n) const { return n0 + n * 8 + 2 * tq; }
  __device__ __forceinline__ int32_t Sum(uint32_t m, uint32_t n, uint32_t r) const {
    return acc1[m][n][r] * 64 + acc0[m][n][r];
  }

  // fn(m, n, r) for each of this thread's accumulator elements, r in steps
  // of kStep (2: the first of each pair of columns).
  template <uint32_t kStep = 1, typename Fn>
  __device__ __forceinline__ void ForEach(Fn fn) const {
#pragma unroll
    for (uint32_t m = 0; m < 2; ++m)
#pragma unroll
      for (uint32_t n = 0; n < 4; ++n)
#pragma unroll
        for (uint32_t r = 0; r < 4; r += kStep) fn(m, n, r);
  }

  __device__ __forceinline__ void Zero() {
    ForEach([&](uint32_t m, uint32_t n, uint32_t r) { acc1[m][n][r] = acc0[m][n][r] = 0; });
  }

  // Row k and chunk column c (the first of four) of this thread's raw copy i:
  // Issue copies and ConvertValues / ConvertSymbols convert the same ones, so
  // a thread converts only what it copied itself.
  __device__ __forceinline__ void CopySlot(uint32_t i, uint32_t& k, uint32_t& c) const {
    const uint32_t v = tid + i * NT;
    k = v / (KCI / 4);
    c = (v % (KCI / 4)) * 4;
  }

  // Columns [k0, k0 + KCI) of the first nt rows of `src` (row stride D
  // words: floats or int32) and of the D weight rows of hi and lo (hi, then
  // lo D * D bytes later; row stride D) into stage s, one commit group.
  __device__ __forceinline__ void Issue(const uint32_t* src, const int8_t* hi_rows, uint32_t k0, uint32_t nt,
                                        uint32_t s) {
#pragma unroll
    for (uint32_t i = 0; i < kRawCopies; ++i) {
      uint32_t k, c;
      CopySlot(i, k, c);
      if (k < nt) dense::CopyAsync16(Raw(s) + k * KCI + c, src + uint64_t{k} * D + k0 + c);
    }
#pragma unroll
    for (uint32_t i = 0; i < kBCopies; ++i) {
      const uint32_t v = tid + i * NT, part = v / (D * (KCI / 16)), r = (v / (KCI / 16)) % D;
      const uint32_t c = (v % (KCI / 16)) * 16;
      dense::CopyAsync16(Bh(s) + part * D * AS + r * AS + c, hi_rows + part * D * D + uint64_t{r} * D + k0 + c);
    }
    dense::CopyCommit();
  }

  // The raw value x of row k, chunk column c as it is (ConvertValues' default).
  struct AsIs {
    __device__ __forceinline__ float operator()(uint32_t, uint32_t, float x) const { return x; }
  };

  // This thread's raw copies of stage s, each through value(k, c, x) (row k,
  // chunk column c), as int12 values (exponent e, scale FixedScale(e)) split
  // into xh and xl; rows past nt are zeros.
  template <typename ValueFn = AsIs>
  __device__ __forceinline__ void ConvertValues(uint32_t s, uint32_t nt, int e, float scale, ValueFn value = {}) {
#pragma unroll
    for (uint32_t i = 0; i < kRawCopies; ++i) {
      uint32_t k, c;
      CopySlot(i, k, c);
      uint32_t hi = 0, lo = 0;
      if (k < nt) {
        const float4 x = *reinterpret_cast<const float4*>(Raw(s) + k * KCI + c);
        SplitEach(make_float4(value(k, c, x.x), value(k, c + 1, x.y), value(k, c + 2, x.z), value(k, c + 3, x.w)),
                  scale, e, hi, lo);
      }
      *reinterpret_cast<uint32_t*>(xh + k * AS + c) = hi;
      *reinterpret_cast<uint32_t*>(xl + k * AS + c) = lo;
    }
  }

  // This thread's raw copies of stage s as int8 symbols into xh: with q =
  // 256 qh + ql (ql in [-128, 127]), the low bytes ql, or (`high`) the high
  // parts qh. Returns whether a symbol is outside what the pass covers:
  // int8 (low), or qh outside int8 (high: such rows are marked in huge_s).
  __device__ __forceinline__ bool ConvertSymbols(uint32_t s, uint32_t nt, bool high, uint32_t* huge_s) {
    bool out = false;
#pragma unroll
    for (uint32_t i = 0; i < kRawCopies; ++i) {
      uint32_t k, c;
      CopySlot(i, k, c);
      uint32_t packed = 0;
      if (k < nt) {
        const uint4 x = *reinterpret_cast<const uint4*>(Raw(s) + k * KCI + c);
        const int32_t q[4] = {static_cast<int32_t>(x.x), static_cast<int32_t>(x.y), static_cast<int32_t>(x.z),
                              static_cast<int32_t>(x.w)};
        bool row_out = false;
#pragma unroll
        for (uint32_t e = 0; e < 4; ++e) {
          const int32_t qh = (q[e] + 128) >> 8;
          row_out |= high ? (qh < -128 || qh > 127) : (q[e] < -128 || q[e] > 127);
          packed |= (static_cast<uint32_t>(high ? qh : q[e]) & 0xFFu) << (8 * e);
        }
        if (row_out && high) huge_s[k] = 1;
        out |= row_out;
      }
      *reinterpret_cast<uint32_t*>(xh + k * AS + c) = packed;
    }
    return out;
  }

  // The staged chunk's products into acc1, acc0: split values (four
  // products) or int8 symbols (two).
  template <bool kSplit>
  __device__ __forceinline__ void Products(uint32_t s) {
    const unsigned char* bh = Bh(s);
    const unsigned char* bl = bh + D * AS;
    uint32_t fh[4][2], fl[4][2];
#pragma unroll
    for (uint32_t np = 0; np < 2; ++np) {
      const uint32_t at = (n0 + np * 16 + lane % 8 + (lane / 16) * 8) * AS + ((lane / 8) % 2) * 16;
      uint32_t r[4];
      dense::LdMatrixX4(r, bh + at);
      fh[2 * np][0] = r[0], fh[2 * np][1] = r[1], fh[2 * np + 1][0] = r[2], fh[2 * np + 1][1] = r[3];
      dense::LdMatrixX4(r, bl + at);
      fl[2 * np][0] = r[0], fl[2 * np][1] = r[1], fl[2 * np + 1][0] = r[2], fl[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (uint32_t m = 0; m < 2; ++m) {
      const uint32_t at = (m0 + m * 16 + lane % 16) * AS + (lane / 16) * 16;
      uint32_t ah[4], al[4];
      dense::LdMatrixX4(ah, xh + at);
      if constexpr (kSplit) dense::LdMatrixX4(al, xl + at);
#pragma unroll
      for (uint32_t n = 0; n < 4; ++n) {
        if constexpr (kSplit) {
          int32_t t[4] = {0, 0, 0, 0};
          MmaS8(t, ah, fh[n]);
#pragma unroll
          for (uint32_t r = 0; r < 4; ++r) acc1[m][n][r] += t[r] * 64;
          MmaS8(acc1[m][n], ah, fl[n]);
          MmaS8(acc1[m][n], al, fh[n]);
          MmaS8(acc0[m][n], al, fl[n]);
        } else {
          MmaS8(acc1[m][n], ah, fh[n]);
          MmaS8(acc0[m][n], ah, fl[n]);
        }
      }
    }
  }

  // Chunks [0, chunks) through the two-stage pipeline: issue(ci, s) copies
  // chunk ci into stage s (Issue); convert(ci, s) turns this thread's raw
  // copies into the operands and returns whether they are split values
  // (true) or symbols; done(ci) runs after chunk ci's products (e.g. a
  // block's flush, FlushBlock). Every thread calls it; it synchronizes.
  template <typename IssueFn, typename ConvertFn, typename DoneFn>
  __device__ __forceinline__ void Run(uint32_t chunks, IssueFn issue, ConvertFn convert, DoneFn done) {
    if (chunks == 0) return;
    issue(0u, 0u);
    __syncthreads();  // the caller's shared values (exponents, flags) before any conversion
    for (uint32_t ci = 0; ci < chunks; ++ci) {
      const uint32_t s = ci % 2;
      if (ci + 1 < chunks) issue(ci + 1, (ci + 1) % 2);  // into the stage chunk ci - 1 used
      else dense::CopyCommit();
      dense::CopyWait<1>();  // this thread's copies of chunk ci are done
      const bool split = convert(ci, s);
      __syncthreads();  // the operands and every thread's weight copies of chunk ci in place
      if (split) Products<true>(s);
      else Products<false>(s);
      done(ci);
      __syncthreads();  // the operands and stage s consumed
    }
  }

  // The symbols of the first nt rows of qrows (row stride D) times the
  // weights vrows (int8 halves, rows = output columns): each element's exact
  // sum A, passed with pred(k, j) (a float of the caller's, e.g. the
  // prediction) to emit(k, j, A, pred) (every thread calls it; it
  // synchronizes). One pass over the low bytes; when a symbol of the tile is
  // outside int8, a second over the high parts, A = 256 A_high + A_low (each
  // below 2^31 for |q| < 2^15: 2^7 * 2047 * 128); between the passes each
  // element's pred and A_low wait in its 8 bytes of dsum (read by pred
  // first). A row with a symbol outside even that (marked in huge_s, zeroed
  // by the caller before) is summed again in int64 (SumRow) and emitted again.
  // The caller synchronizes before it reads what emit wrote. kWg: the low
  // bytes' pass on wgmma first (SymbolsWg; D = 128, sm_90a) — a kernel
  // at its register cap may lose more to spills than it gains.
  template <bool kWg, typename PredFn, typename EmitFn>
  __device__ __forceinline__ void Symbols(const int32_t* qrows, const int8_t* vrows, uint32_t nt,
                                          uint32_t* huge_s, PredFn pred, EmitFn emit) {
#if SEQKV_WGMMA
    if constexpr (kWg && D == 128) {
      if (SymbolsWg(qrows, vrows, nt, pred, emit)) return;
    }
#endif
    auto issue = [&](uint32_t ci, uint32_t s) {
      Issue(reinterpret_cast<const uint32_t*>(qrows), vrows, ci * KCI, nt, s);
    };
    // A pass over the low bytes or the high parts; whether a symbol is outside what it covers.
    auto pass = [&](bool high) {
      bool out = false;
      Run(
          kChunksPer, issue,
          [&](uint32_t, uint32_t s) {
            out |= ConvertSymbols(s, nt, high, huge_s);
            return false;
          },
          [](uint32_t) {});
      return out;
    };
    const bool second = __syncthreads_or(pass(false));
    ForEach([&](uint32_t m, uint32_t n, uint32_t r) {
      const uint32_t k = RowOf(m, r), j = ColOf(n) + r % 2;
      if (second) {
        *reinterpret_cast<int2*>(dsum + DsumAt(D, k, j)) = make_int2(__float_as_int(pred(k, j)), Sum(m, n, r));
      } else {
        emit(k, j, int64_t{Sum(m, n, r)}, pred(k, j));
      }
    });
    if (!second) return;
    Zero();
    const bool huge = pass(true);
    ForEach([&](uint32_t m, uint32_t n, uint32_t r) {
      const uint32_t k = RowOf(m, r), j = ColOf(n) + r % 2;
      const int2 kept = *reinterpret_cast<const int2*>(dsum + DsumAt(D, k, j));
      emit(k, j, int64_t{Sum(m, n, r)} * 256 + kept.y, __int_as_float(kept.x));
    });
    if (!__syncthreads_or(huge)) return;
    for (uint32_t k = 0; k < nt; ++k) {
      if (huge_s[k] == 0) continue;
      for (uint32_t j = tid; j < D; j += NT) {
        const float kept = __int_as_float(reinterpret_cast<const int2*>(dsum + DsumAt(D, k, j))->x);
        emit(k, j, SumRow(qrows + uint64_t{k} * D, vrows + uint64_t{j} * D, D), kept);
      }
    }
  }

  // The first nt float rows of Rows() to cur_rows (row stride D), four
  // channels a store, and their largest finite |x| into *max_at (float bits,
  // one atomicMax per warp). Every thread calls it.
  __device__ __forceinline__ void StoreRows(uint32_t nt, float* cur_rows, uint32_t* max_at) const {
    const float* row_s = Rows();
    uint32_t most = 0;
    for (uint32_t u = tid; u < nt * (D / 4); u += NT) {
      const uint32_t k = u / (D / 4), c = (u % (D / 4)) * 4;
      const float4 v = *reinterpret_cast<const float4*>(&row_s[k * kRowStride + c]);
      reinterpret_cast<float4*>(cur_rows)[(uint64_t{k} * D + c) / 4] = v;
      most = max(most, max(max(FiniteAbsBits(v.x), FiniteAbsBits(v.y)), max(FiniteAbsBits(v.z), FiniteAbsBits(v.w))));
    }
    WarpMaxInto(most, lane, max_at);
  }

  // The prediction's feature blocks into the double sums: nblk blocks of D
  // columns, block b the rows of value block block_of(b) of `prev` ([blocks
  // of T rows of D floats]; this tile's rows start at t0) with the exponent of
  // prev_max[block_of(b)] (float bits), times the predictor's int8 halves
  // w_group + b * 2 D D; the sums scaled by 2^(e_b + ew). exp_s: shared
  // memory for nblk exponents. Every thread calls it; it synchronizes.
  template <typename BlockFn>
  __device__ __forceinline__ void PredictBlocks(const float* prev, const uint32_t* prev_max, BlockFn block_of,
                                                uint32_t nblk, uint32_t T, uint32_t t0, uint32_t nt,
                                                const int8_t* w_group, int ew, int* exp_s) {
    for (uint32_t b = tid; b < nblk; b += NT) exp_s[b] = ExponentOfBits(prev_max[block_of(b)]);
#if SEQKV_WGMMA
    if constexpr (D == 128) {
      ValuesWg(
          nblk, nt, exp_s, [&](uint32_t b) { return prev + (uint64_t{block_of(b)} * T + t0) * D; },
          [&](uint32_t b) { return w_group + uint64_t{b} * 2 * D * D; },
          [](uint32_t, uint32_t, float x) { return x; },
          [&](uint32_t b) {
            const double scale = ldexp(1.0, exp_s[b] + ew);  // S * scale is exact (a power of two)
            double* const sums = dsum;
            const bool first = b == 0;
            return [=](uint32_t k, uint32_t j, int32_t s0, int32_t s1) {
              double2* at = reinterpret_cast<double2*>(sums + DsumAt(D, k, j));
              const double u0 = __dmul_rn(static_cast<double>(s0), scale);
              const double u1 = __dmul_rn(static_cast<double>(s1), scale);
              const double2 old = first ? make_double2(0.0, 0.0) : *at;
              *at = make_double2(__dadd_rn(old.x, u0), __dadd_rn(old.y, u1));
            };
          });
      return;
    }
#endif
    Run(
        nblk * kChunksPer,
        [&](uint32_t ci, uint32_t s) {
          const uint32_t b = ci / kChunksPer;
          Issue(reinterpret_cast<const uint32_t*>(prev + (uint64_t{block_of(b)} * T + t0) * D),
                w_group + uint64_t{b} * 2 * D * D, (ci % kChunksPer) * KCI, nt, s);
        },
        [&](uint32_t ci, uint32_t s) {
          const int e = exp_s[ci / kChunksPer];
          ConvertValues(s, nt, e, FixedScale(e));
          return true;
        },
        [&](uint32_t ci) {
          const uint32_t b = ci / kChunksPer;
          if (ci % kChunksPer == kChunksPer - 1) FlushBlock(b == 0, exp_s[b] + ew);
        });
  }

  // The wgmma chunk pipeline (D = 128, sm_90a; see wg above) over chunks
  // [0, chunks): load(ci) loads this thread's raw values of chunk ci into
  // registers (a chunk ahead of their conversion); convert(ci, as) writes them
  // as int8 operands into A's rows at `as` (hi, then lo kAPart bytes later);
  // w_of(ci): chunk ci's KCI weight columns (rows = output columns, row
  // stride D; hi, then lo D * D bytes later), copied into the stage's B;
  // ready(ci) runs once chunk ci - 1's wgmmas are done (the accumulators
  // readable: fenced there) and before chunk ci's start; mma(ci, a, b)
  // issues chunk ci's wgmmas, a the shared address of A's rows, b of this
  // warpgroup's B rows. Returns with every wgmma done and read (ready(chunks)
  // last), without synchronizing. Every thread calls it.
  template <typename WFn, typename LoadFn, typename ConvertFn, typename ReadyFn, typename MmaFn>
  __device__ __forceinline__ void WgRun(uint32_t chunks, WFn w_of, LoadFn load, ConvertFn convert,
                                        ReadyFn ready, MmaFn mma) {
    static_assert(D == 128, "two warpgroups of 64 output columns");
    using namespace wg;
    static_assert(2 * D * (KCI / 16) == 2 * NT, "one weight copy per part and thread");
    unsigned char* const base = area + ((256u - (dense::SharedAddr(area) & 255u)) & 255u);
    const uint32_t grp = tid / 128;
    auto issue_b = [&](uint32_t ci) {
      if (ci < chunks) {
        const int8_t* w = w_of(ci);
        unsigned char* bs = base + (ci % kStages) * kStage + 2 * kAPart;
#pragma unroll
        for (uint32_t part = 0; part < 2; ++part) {
          const uint32_t r = tid / 2, u = tid % 2;
          dense::CopyAsync16(bs + part * kBPart + dense::SwizzledAt<kSw>(r, u),
                             w + part * D * D + uint64_t{r} * D + u * 16);
        }
      }
      dense::CopyCommit();  // an empty group past the last chunk keeps the wait counts uniform
    };
    issue_b(0);
    issue_b(1);
    load(0u);
    for (uint32_t ci = 0; ci < chunks; ++ci) {
      unsigned char* const as = base + (ci % kStages) * kStage;
      convert(ci, as);
      if (ci + 1 < chunks) load(ci + 1);  // in flight under the barrier and the wgmmas
      dense::WgWait<0>();                 // chunk ci - 1's wgmmas: its stage is refilled below
      ready(ci);
      dense::CopyWait<1>();  // this thread's weight copies of chunk ci
      dense::FenceProxyAsync();
      __syncthreads();  // every thread's operands of chunk ci; every warpgroup past chunk ci - 1
      issue_b(ci + 2);
      dense::WgFence();
      const uint32_t a = dense::SharedAddr(as);
      mma(ci, a, a + 2 * kAPart + grp * 64 * kSw);
      dense::WgCommit();
    }
    dense::WgWait<0>();
    ready(chunks);
  }

  // The split-value products on wgmma (D = 128, sm_90a; see wg above): for
  // blocks b < nblk, the first nt rows of src_of(b) (the tile's rows: floats,
  // row stride D) through value(k, j, x) (row k, block column j) as int12
  // with exponent exp_s[b] (in shared memory before the call), times the
  // weights' int8 halves w_of(b) (rows = output columns, hi then lo D * D
  // bytes later); after block b, f = flush(b), then f(k, j, s0, s1) with the
  // exact sums of columns j and j + 1 of row k (every row of the tile, zeros
  // past nt). Every thread calls it; it synchronizes, first and last.
  template <typename SrcFn, typename WFn, typename ValueFn, typename FlushFn>
  __device__ __forceinline__ void ValuesWg(uint32_t nblk, uint32_t nt, const int* exp_s, SrcFn src_of,
                                           WFn w_of, ValueFn value, FlushFn flush) {
    using namespace wg;
    const uint32_t chunks = nblk * kChunksPer;
    __syncthreads();  // the caller's exponents; the area free
    if (chunks == 0) return;
    const uint32_t grp = tid / 128, wl = (tid % 128) / 32;
    float4 ra[kRawCopies];
    int32_t hh[32], mid[32], ll[32];
#pragma unroll
    for (uint32_t i = 0; i < 32; ++i) hh[i] = mid[i] = ll[i] = 0;
    WgRun(
        chunks, [&](uint32_t ci) { return w_of(ci / kChunksPer) + (ci % kChunksPer) * KCI; },
        [&](uint32_t ci) {
          const float* src = src_of(ci / kChunksPer) + (ci % kChunksPer) * KCI;
#pragma unroll
          for (uint32_t i = 0; i < kRawCopies; ++i) {
            uint32_t k, c;
            CopySlot(i, k, c);
            if (k < nt) ra[i] = *reinterpret_cast<const float4*>(src + uint64_t{k} * D + c);
          }
        },
        [&](uint32_t ci, unsigned char* as) {
          const uint32_t b = ci / kChunksPer, j0 = (ci % kChunksPer) * KCI;
          const int e = exp_s[b];
          const float scale = FixedScale(e);
#pragma unroll
          for (uint32_t i = 0; i < kRawCopies; ++i) {
            uint32_t k, c;
            CopySlot(i, k, c);
            uint32_t hi = 0, lo = 0;
            if (k < nt) {
              float4 x = ra[i];
              x.x = value(k, j0 + c, x.x), x.y = value(k, j0 + c + 1, x.y);
              x.z = value(k, j0 + c + 2, x.z), x.w = value(k, j0 + c + 3, x.w);
              if (scale != 0.0f && AllFinite(x)) {
                SplitFour(x, scale, hi, lo);
              } else {
                SplitEach(x, scale, e, hi, lo);
              }
            }
            const uint32_t at = dense::SwizzledAt<kSw>(k, c / 16) + c % 16;
            *reinterpret_cast<uint32_t*>(as + at) = hi;
            *reinterpret_cast<uint32_t*>(as + kAPart + at) = lo;
          }
        },
        [&](uint32_t ci) {
          FenceAcc(hh), FenceAcc(mid), FenceAcc(ll);
          if (ci == 0 || ci % kChunksPer != 0) return;  // block ci / kChunksPer - 1's sums are done
          auto f = flush(ci / kChunksPer - 1);
#pragma unroll
          for (uint32_t j = 0; j < 8; ++j) {
#pragma unroll
            for (uint32_t h = 0; h < 2; ++h) {
              const uint32_t i = 4 * j + 2 * h;
              const int32_t s0 = hh[i] * 4096 + mid[i] * 64 + ll[i];
              const int32_t s1 = hh[i + 1] * 4096 + mid[i + 1] * 64 + ll[i + 1];
              f(wl * 16 + lane / 4 + 8 * h, grp * 64 + 8 * j + 2 * (lane % 4), s0, s1);
            }
          }
        },
        [&](uint32_t ci, uint32_t a, uint32_t bw) {
          const uint64_t ah = dense::SwizzledDesc<kSw>(a), al = dense::SwizzledDesc<kSw>(a + kAPart);
          const uint64_t bh = dense::SwizzledDesc<kSw>(bw), bl = dense::SwizzledDesc<kSw>(bw + kBPart);
          const bool acc = ci % kChunksPer != 0;  // a block's first chunk starts its sums
          WgmmaS8(hh, ah, bh, acc);
          WgmmaS8(mid, ah, bl, acc);
          WgmmaS8(mid, al, bh, true);
          WgmmaS8(ll, al, bl, acc);
        });
    __syncthreads();  // every warpgroup's wgmmas done and every flush in place
  }

  // Cta::Symbols' pass over the symbols' low bytes on wgmma (D = 128,
  // sm_90a): when every symbol of the tile is within int8, emits each
  // element as Symbols does and returns true; else false, having emitted
  // nothing (the caller runs Symbols). Every thread calls it; it
  // synchronizes, first and last.
  template <typename PredFn, typename EmitFn>
  __device__ __forceinline__ bool SymbolsWg(const int32_t* qrows, const int8_t* vrows, uint32_t nt,
                                            PredFn pred, EmitFn emit) {
    using namespace wg;
    __syncthreads();  // the area free
    const uint32_t grp = tid / 128, wl = (tid % 128) / 32;
    int4 ra[kRawCopies];
    int32_t sh[32], sl[32];
#pragma unroll
    for (uint32_t i = 0; i < 32; ++i) sh[i] = sl[i] = 0;
    bool out = false;
    WgRun(
        kChunksPer, [&](uint32_t ci) { return vrows + ci * KCI; },
        [&](uint32_t ci) {
#pragma unroll
          for (uint32_t i = 0; i < kRawCopies; ++i) {
            uint32_t k, c;
            CopySlot(i, k, c);
            if (k < nt) ra[i] = *reinterpret_cast<const int4*>(qrows + uint64_t{k} * D + ci * KCI + c);
          }
        },
        [&](uint32_t, unsigned char* as) {
#pragma unroll
          for (uint32_t i = 0; i < kRawCopies; ++i) {
            uint32_t k, c;
            CopySlot(i, k, c);
            uint32_t packed = 0;
            if (k < nt) {
              const int4 q = ra[i];
              out |= static_cast<uint32_t>(q.x + 128) > 255u || static_cast<uint32_t>(q.y + 128) > 255u ||
                     static_cast<uint32_t>(q.z + 128) > 255u || static_cast<uint32_t>(q.w + 128) > 255u;
              packed = __byte_perm(__byte_perm(q.x, q.y, 0x0040), __byte_perm(q.z, q.w, 0x0040), 0x5410);
            }
            *reinterpret_cast<uint32_t*>(as + dense::SwizzledAt<kSw>(k, c / 16) + c % 16) = packed;
          }
        },
        [&](uint32_t) { FenceAcc(sh), FenceAcc(sl); },
        [&](uint32_t ci, uint32_t a, uint32_t bw) {
          const uint64_t aq = dense::SwizzledDesc<kSw>(a);
          WgmmaS8(sh, aq, dense::SwizzledDesc<kSw>(bw), ci != 0);
          WgmmaS8(sl, aq, dense::SwizzledDesc<kSw>(bw + kBPart), ci != 0);
        });
    if (__syncthreads_or(out)) return false;  // every warpgroup's wgmmas done: the area free
#pragma unroll
    for (uint32_t i = 0; i < 32; ++i) {
      const uint32_t k = wl * 16 + lane / 4 + 8 * ((i / 2) % 2),
                     j = grp * 64 + 8 * (i / 4) + 2 * (lane % 4) + i % 2;
      emit(k, j, int64_t{sh[i] * 64 + sl[i]}, pred(k, j));
    }
    return true;
  }

  // The block's exact sums S, times 2^(e), added in double to the sums
  // (the CPU's sum += double(S) * 2^e, blocks ascending from 0.0); then zero.
  __device__ __forceinline__ void FlushBlock(bool first, int e) {
    const double scale = ldexp(1.0, e);  // S * scale is exact (a power of two)
    ForEach<2>([&](uint32_t m, uint32_t n, uint32_t r) {
      double2* at = reinterpret_cast<double2*>(dsum + DsumAt(D, RowOf(m, r), ColOf(n)));
      const double t0 = __dmul_rn(static_cast<double>(Sum(m, n, r)), scale);
      const double t1 = __dmul_rn(static_cast<double>(Sum(m, n, r + 1)), scale);
      const double2 old = first ? make_double2(0.0, 0.0) : *at;
      *at = make_double2(__dadd_rn(old.x, t0), __dadd_rn(old.y, t1));
    });
    Zero();
  }
};

// The prediction of element (k, j) (PredictFixed / Predict's bias-only form).
__device__ __forceinline__ float PredOf(bool feats, double sum, float bias) {
  return feats ? __fadd_rn(__double2float_rn(sum), bias) : __fadd_rn(0.0f, __fmul_rn(1.0f, bias));
}

// ReconstructInt's float(double(A) 2^ev * base).
__device__ __forceinline__ float RecOf(double a, double vscale, double base) {
  return __double2float_rn(__dmul_rn(__dmul_rn(a, vscale), base));
}

}  // namespace seqkv::gpu::internal::i12
