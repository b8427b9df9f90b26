// The seq codec's lane streams (`seq:…,streams=lanes` and `lanes2`;
// docs/format.md, "Lane streams"): a group's symbols on up to kSeqLaneMax
// independent rANS lanes that share one word stream in lock-step order, each
// symbol coded with a static model from the profile (a table per scale class
// and context; lanes2: a signed table per class, below). Written once
// for the CPU reference (seq_lossy_core.cc) and the GPU decoder
// (gpu/src/seq_lanes_kernels.cu): plain C++ on the host, __host__ __device__
// under nvcc. Integer arithmetic only.
//
// Word order: the decoder runs the lanes in steps; in step k every lane that
// has a k-th rANS operation left decodes it, lanes in ascending order, and a
// lane whose state fell below 2^16 reads the next word of the shared stream.
// The encoder codes the same operations in the exact reverse order.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SEQKV_LANES_HD __host__ __device__
#else
#define SEQKV_LANES_HD
#endif

namespace seqkv::internal {

inline constexpr uint32_t kSeqLaneMax = 16;          // lanes per group stream
inline constexpr int kSeqStaticClassMin = -96;       // scale classes, 1/8 octave
inline constexpr int kSeqStaticClassMax = 64;
inline constexpr int kSeqStaticClasses = kSeqStaticClassMax - kSeqStaticClassMin + 1;  // 161
inline constexpr int kSeqLaneSymbols = 16;           // magnitudes 0..14, 15 = escape (as kSeqSymbols)
inline constexpr int kSeqLaneContexts = 3;           // previous token's |q|: 0, 1, >= 2
inline constexpr uint32_t kSeqLaneScaleBits = 15;    // frequencies sum to 2^15
inline constexpr uint32_t kSeqLaneRansLow = 1u << 16;
inline constexpr int kSeqLaneMaxEscapeZeros = 24;
inline constexpr uint32_t kSeqLaneMaxMagnitude = 1u << 24;  // as kSeqMaxMagnitude
inline constexpr int16_t kSeqStaticScaleNone = -32768;  // a component never seen non-zero
inline constexpr int kSeqLaneMaxShift = 8;           // a group stream's class shift, |shift| <= 8

// The scale class of component i of group g before the stream's shift, in
// 1/8 octaves: from its profile scale L (1/16 octave, log2 of mean
// |coefficient| / step scale), the chunk's step class D (round(16 log2
// delta0)) and the group's step code (1/16 octave, 128 = 1):
// (L - D - (code - 128)) >> 1 (floor).
SEQKV_LANES_HD inline int SeqLaneClass(int16_t scale, int16_t step_class, uint8_t code) {
  return (int{scale} - int{step_class} - (int{code} - 128)) >> 1;
}
// The table of a class after the group stream's shift: clamp(k + shift) as an
// index 0 .. kSeqStaticClasses - 1.
SEQKV_LANES_HD inline int SeqLaneTable(int k, int shift) {
  const int c = k + shift;
  return (c < kSeqStaticClassMin ? kSeqStaticClassMin : (c > kSeqStaticClassMax ? kSeqStaticClassMax : c)) -
         kSeqStaticClassMin;
}
SEQKV_LANES_HD inline int SeqStaticClass(int16_t scale, int16_t step_class, uint8_t code) {
  return SeqLaneTable(SeqLaneClass(scale, step_class, code), 0);
}

SEQKV_LANES_HD inline int SeqLaneContext(int32_t prev) { return prev == 0 ? 0 : ((prev == 1 || prev == -1) ? 1 : 2); }

// Cumulative rows as the lane decoders read them: kSeqLaneRowStride uint16
// per row (17 used: cum[0] = 0 .. cum[16] = 2^15, strictly increasing; the
// padding makes every row 16-byte aligned for the GPU's vector loads).
inline constexpr uint32_t kSeqLaneRowStride = 24;

// The symbol of `slot` (0 .. 2^15 - 1) in a cumulative row; *start and *freq
// its interval.
SEQKV_LANES_HD inline int SeqLaneFind(const uint16_t* row, uint32_t slot, uint32_t* start, uint32_t* freq) {
#if defined(__CUDA_ARCH__)
  // Three independent 16-byte shared loads instead of four dependent ones;
  // the search runs on registers: u holds cum[2i] (low half) and cum[2i+1].
  const uint4 a = reinterpret_cast<const uint4*>(row)[0], b = reinterpret_cast<const uint4*>(row)[1];
  const uint32_t last = reinterpret_cast<const uint32_t*>(row)[8];  // cum[16] | pad
  const bool h8 = (b.x & 0xFFFFu) <= slot;
  const uint32_t u0 = h8 ? b.x : a.x, u1 = h8 ? b.y : a.y, u2 = h8 ? b.z : a.z, u3 = h8 ? b.w : a.w;
  const uint32_t u4 = h8 ? last : b.x;
  const bool h4 = (u2 & 0xFFFFu) <= slot;
  const uint32_t v0 = h4 ? u2 : u0, v1 = h4 ? u3 : u1, v2 = h4 ? u4 : u2;
  const bool h2 = (v1 & 0xFFFFu) <= slot;
  const uint32_t w0 = h2 ? v1 : v0, w1 = h2 ? v2 : v1;
  const bool h1 = (w0 >> 16) <= slot;
  *start = h1 ? (w0 >> 16) : (w0 & 0xFFFFu);
  *freq = (h1 ? (w1 & 0xFFFFu) : (w0 >> 16)) - *start;
  return (h8 ? 8 : 0) + (h4 ? 4 : 0) + (h2 ? 2 : 0) + (h1 ? 1 : 0);
#else
  int s = 0;
  if (row[s + 8] <= slot) s += 8;
  if (row[s + 4] <= slot) s += 4;
  if (row[s + 2] <= slot) s += 2;
  if (row[s + 1] <= slot) s += 1;
  *start = row[s];
  *freq = uint32_t{row[s + 1]} - row[s];
  return s;
#endif
}

// One lane's decoder. Its symbols: for every token, the lane's components in
// ascending order (coded component c is on lane c % lanes). Per symbol the
// rANS operations are the magnitude class (static table), for class 15 the
// Exp-Golomb-0 code of |q| - 15 in uniform bits (zeros, a one, the low
// bits), then a uniform sign bit when q != 0. Start a lane with idx = lane.
struct SeqLaneCursor {
  uint32_t x = 0;       // rANS state
  uint32_t t = 0;       // token
  uint32_t idx = 0;     // the current component's index among the coded ones (lane, lane + lanes, ...)
  uint32_t phase = 0;   // 0 magnitude, 1 escape zeros, 2 escape bits, 3 sign, 4 done
  uint32_t mag = 0;     // magnitude (escape: the Exp-Golomb value so far)
  int32_t k = 0;        // escape: zeros counted, then bits left
  uint32_t neg = 0;     // signed lanes: the escape's sign (a word: a bool costs the GPU byte permutes)
};

enum SeqLaneStepResult : int { kSeqLaneMore = 0, kSeqLaneDone = 1, kSeqLaneCorrupt = -1 };

// What a lane decoder reads and writes for one group (the GPU keeps these in
// shared memory), per coded component (index 0 .. n-1 in ascending component
// order): its component id and the table of its rows, its previous symbol,
// a flag set by a non-zero symbol (a coded component without one is not a
// valid stream); and q [tokens][dim] (only coded components are written).
struct SeqLaneGroupView {
  const uint16_t* cum;        // [kSeqStaticClasses][3][kSeqLaneRowStride]
  const uint32_t* info;       // [n] component | table << 16
  int32_t* prev;              // [n]
  uint8_t* nonzero;           // [n]
  int32_t* q;                 // [tokens][dim] (SeqLaneStoreQ; another store may leave it null)
  uint32_t n, lanes, tokens, dim;
};

SEQKV_LANES_HD inline uint32_t SeqLaneInfo(uint32_t component, uint32_t table) { return component | (table << 16); }

// Where a lane decoder puts a non-zero symbol: store(g, token, component,
// value). The default writes the int32 symbol into g.q; the GPU's f16 path
// passes its own (the FP16 operand q * step; gpu/src/seq_lanes_kernels.cu).
struct SeqLaneStoreQ {
  SEQKV_LANES_HD void operator()(const SeqLaneGroupView& g, uint32_t t, uint32_t component, int32_t value) const {
    g.q[size_t{t} * g.dim + component] = value;
  }
};

// A lane's symbol `value` for its current component and token is complete:
// store it (q is zero beforehand, so only non-zero symbols are stored), then
// move to the lane's next component, or to the next token.
template <typename Store = SeqLaneStoreQ>
SEQKV_LANES_HD inline int SeqLaneEmit(SeqLaneCursor* cur, const SeqLaneGroupView& g, uint32_t lane, uint32_t info,
                                      int32_t value, Store&& store = Store{}) {
  if (value != 0) {
    store(g, cur->t, info & 0xFFFFu, value);
    g.nonzero[cur->idx] = 1;
  }
  cur->phase = 0;
  cur->idx += g.lanes;
  if (cur->idx >= g.n) {
    cur->idx = lane;
    if (++cur->t == g.tokens) {
      cur->phase = 4;
      return kSeqLaneDone;
    }
  }
  return kSeqLaneMore;
}

// A uniform bit's rANS operation on state *x (escape bits, signs): the bit;
// *x becomes the state after it.
SEQKV_LANES_HD inline uint32_t SeqUniformBit(uint32_t* x) {
  constexpr uint32_t kHalf = 1u << (kSeqLaneScaleBits - 1);
  const uint32_t slot = *x & ((1u << kSeqLaneScaleBits) - 1);
  const uint32_t bit = slot >= kHalf ? 1u : 0u;
  *x = kHalf * (*x >> kSeqLaneScaleBits) + slot - (bit ? kHalf : 0u);
  return bit;
}

// Decodes the lane's next rANS operation (no renormalization: the caller
// reads a word when cur->x < kSeqLaneRansLow afterwards, in step order).
SEQKV_LANES_HD inline int SeqLaneStep(SeqLaneCursor* cur, const SeqLaneGroupView& g, uint32_t lane) {
  constexpr uint32_t kMask = (1u << kSeqLaneScaleBits) - 1;
  const uint32_t slot = cur->x & kMask;
  int32_t value = 0;
  bool emit = false;
  if (cur->phase == 0) {
    const uint32_t info = g.info[cur->idx];
    const int32_t prev = g.prev[cur->idx];
    const uint16_t* row = g.cum + ((info >> 16) * kSeqLaneContexts + SeqLaneContext(prev)) * kSeqLaneRowStride;
    uint32_t start, freq;
    const int s = SeqLaneFind(row, slot, &start, &freq);
    cur->x = freq * (cur->x >> kSeqLaneScaleBits) + slot - start;
    if (s == kSeqLaneSymbols - 1) {
      cur->phase = 1;
      cur->k = 0;
    } else if (s != 0) {
      cur->mag = static_cast<uint32_t>(s);
      cur->phase = 3;
    } else {
      emit = true;
    }
  } else {
    const uint32_t bit = SeqUniformBit(&cur->x);
    if (cur->phase == 1) {
      if (bit == 0) {
        if (++cur->k > kSeqLaneMaxEscapeZeros) return kSeqLaneCorrupt;
      } else {
        cur->mag = 1;
        cur->phase = cur->k > 0 ? 2 : 3;
        if (cur->phase == 3) cur->mag = kSeqLaneSymbols - 1;  // e = 1: |q| = 15
      }
    } else if (cur->phase == 2) {
      cur->mag = (cur->mag << 1) | bit;
      if (--cur->k == 0) {
        cur->mag = cur->mag + (kSeqLaneSymbols - 2);  // |q| = e + 14
        if (cur->mag > kSeqLaneMaxMagnitude) return kSeqLaneCorrupt;
        cur->phase = 3;
      }
    } else {  // sign
      value = bit ? -static_cast<int32_t>(cur->mag) : static_cast<int32_t>(cur->mag);
      emit = true;
    }
  }
  if (!emit) return kSeqLaneMore;
  g.prev[cur->idx] = value;
  return SeqLaneEmit(cur, g, lane, g.info[cur->idx], value);
}

// ---- signed lane streams (`streams=lanes2`; docs/format.md, "Lane streams") --
// The same lanes, word order, header and scale classes; the static model has
// one row per class (no context) over a signed alphabet, so a symbol is one
// rANS operation: s = 1 .. 29 is q = s - 15, s = 0 and s = 30 are escapes
// (q <= -15, q >= 15) followed by the Exp-Golomb-0 code of |q| - 15 in uniform
// bits, and no sign operation follows.
inline constexpr int kSeqSignedSymbols = 31;
inline constexpr int kSeqSignedZero = 15;            // the symbol of q = 0
inline constexpr int kSeqSignedEscapeNeg = 0, kSeqSignedEscapePos = 30;
inline constexpr uint32_t kSeqSignedRowStride = 32;  // cum[0] = 0 .. cum[31] = 2^15, one row 64 bytes

// rANS encoding by a reciprocal, for an encoder that codes many symbols with
// few distinct frequencies (the GPU lane writer keeps m beside each static
// interval): for 1 <= freq <= 2^15 and any 32-bit state x,
// SeqRansQuotient(x, SeqRansReciprocal(freq)) == x / freq. m = ceil(2^48 /
// freq) exceeds 2^48 / freq by less than 1, so x * m / 2^48 exceeds x / freq
// by less than 2^32 / 2^48 = 2^-16, while the fraction of x / freq is at most
// 1 - 1 / freq <= 1 - 2^-15: the floor does not move. The product is formed
// from 32-bit halves of m (m <= 2^48); dropping the low 32 bits of x * m_low
// first leaves the floor unchanged (nested floors of divisions).
SEQKV_LANES_HD inline uint64_t SeqRansReciprocal(uint32_t freq) {
  return ((uint64_t{1} << 48) + freq - 1) / freq;
}
SEQKV_LANES_HD inline uint32_t SeqRansQuotient(uint32_t x, uint64_t m) {
  const uint64_t low = (uint64_t{x} * static_cast<uint32_t>(m)) >> 32;
  return static_cast<uint32_t>((uint64_t{x} * static_cast<uint32_t>(m >> 32) + low) >> 16);
}
// The rANS encode step x -> (x / freq) 2^15 + x % freq + start (the state
// already small enough), written as x + (x / freq) (2^15 - freq) + start
// with the quotient from m = SeqRansReciprocal(freq).
SEQKV_LANES_HD inline uint32_t SeqRansPutByReciprocal(uint32_t x, uint32_t start, uint32_t freq, uint64_t m) {
  return x + start + SeqRansQuotient(x, m) * ((1u << kSeqLaneScaleBits) - freq);
}

SEQKV_LANES_HD inline int SeqSignedSymbol(int32_t v) {
  return v <= -kSeqSignedZero ? kSeqSignedEscapeNeg : (v >= kSeqSignedZero ? kSeqSignedEscapePos : v + kSeqSignedZero);
}

// The symbol of `slot` in a signed row; *start and *freq its interval.
SEQKV_LANES_HD inline int SeqSignedFind(const uint16_t* row, uint32_t slot, uint32_t* start, uint32_t* freq) {
  int s = 0;
  if (row[s + 16] <= slot) s += 16;
  if (row[s + 8] <= slot) s += 8;
  if (row[s + 4] <= slot) s += 4;
  if (row[s + 2] <= slot) s += 2;
  if (row[s + 1] <= slot) s += 1;
  *start = row[s];
  *freq = uint32_t{row[s + 1]} - row[s];
  return s;
}

// The GPU's search table of the signed model (built on the host from the
// cumulative rows; the same symbol as SeqSignedFind for every slot): per
// class the symbol of each bucket's middle slot (kSeqSignedBuckets buckets of
// 2^15 / kSeqSignedBuckets slots, u8). A decode step reads the bucket, then
// the row's cum[s] and cum[s + 1] (two 2-byte shared loads, independent), and
// walks down while slot < cum[s] or up while cum[s + 1] <= slot. The middle
// slot's symbol is the bucket's median symbol by slots, so walks are rare and
// short; a bucket's first symbol (the former start) made every slot of a
// frequent symbol walk past all the small symbols before it in its bucket,
// and a warp waits for its longest walk (ncu on the H200, 2026-11-30: 6.4
// loads per step). (Loading the whole 64-byte row instead gave 12.5-way bank
// conflicts.)
inline constexpr uint32_t kSeqSignedBucketBits = 7, kSeqSignedBuckets = 1u << kSeqSignedBucketBits;

// The walk from symbol s, *lo = row[s] and *hi = row[s + 1], to the symbol of
// `slot`, its interval left in [*lo, *hi).
SEQKV_LANES_HD inline uint32_t SeqSignedWalk(const uint16_t* row, uint32_t slot, uint32_t s, uint32_t* lo,
                                             uint32_t* hi) {
  uint32_t l = *lo, h = *hi;
  while (slot < l) {  // ends: cum[0] = 0 <= slot
    h = l;
    l = row[--s];
  }
  while (h <= slot) {  // ends: cum[31] = 2^15 > slot
    l = h;
    h = row[++s + 1];
  }
  *lo = l;
  *hi = h;
  return s;
}

SEQKV_LANES_HD inline int SeqSignedFindBucket(const uint8_t* buckets, const uint16_t* row, uint32_t slot,
                                              uint32_t* start, uint32_t* freq) {
  uint32_t s = buckets[slot >> (kSeqLaneScaleBits - kSeqSignedBucketBits)];
  uint32_t lo = row[s], hi = row[s + 1];
  s = SeqSignedWalk(row, slot, s, &lo, &hi);
  *start = lo;
  *freq = hi - lo;
  return static_cast<int>(s);
}

// One lane's next rANS operation of a signed lane stream (as SeqLaneStep;
// g.cum and g.prev are not used: find(table, slot, &start, &freq) returns the
// symbol of `slot` in the table's row, by SeqSignedFind or
// SeqSignedFindBucket; store as SeqLaneEmit's). Phases: 0 symbol, 1 escape
// zeros, 2 escape bits, 4 done; the escape's sign waits in cur->neg.
template <typename Find, typename Store = SeqLaneStoreQ>
SEQKV_LANES_HD inline int SeqSignedLaneStep(SeqLaneCursor* cur, const SeqLaneGroupView& g, uint32_t lane,
                                            Find&& find, Store&& store = Store{}) {
  constexpr uint32_t kMask = (1u << kSeqLaneScaleBits) - 1;
  const uint32_t slot = cur->x & kMask;
  int32_t value;
  const uint32_t info = g.info[cur->idx];
  if (cur->phase == 0) {
    uint32_t start, freq;
    const int s = find(info >> 16, slot, &start, &freq);
    cur->x = freq * (cur->x >> kSeqLaneScaleBits) + slot - start;
    if (s == kSeqSignedEscapeNeg || s == kSeqSignedEscapePos) {
      cur->phase = 1;
      cur->k = 0;
      cur->neg = s == kSeqSignedEscapeNeg ? 1u : 0u;
      return kSeqLaneMore;
    }
    value = s - kSeqSignedZero;
  } else {
    const uint32_t bit = SeqUniformBit(&cur->x);
    if (cur->phase == 1) {
      if (bit == 0) {
        if (++cur->k > kSeqLaneMaxEscapeZeros) return kSeqLaneCorrupt;
        return kSeqLaneMore;
      }
      cur->mag = 1;
      if (cur->k > 0) {
        cur->phase = 2;
        return kSeqLaneMore;
      }
    } else {
      cur->mag = (cur->mag << 1) | bit;
      if (--cur->k != 0) return kSeqLaneMore;
      if (cur->mag + (kSeqLaneSymbols - 2) > kSeqLaneMaxMagnitude) return kSeqLaneCorrupt;
    }
    const int32_t m = static_cast<int32_t>(cur->mag + (kSeqLaneSymbols - 2));  // |q| = e + 14
    value = cur->neg ? -m : m;
  }
  return SeqLaneEmit(cur, g, lane, info, value, store);
}

// ---- split lane streams (`streams=lanes3`; docs/format.md, "Split lane streams")
// lanes2's model and rANS operations, with every lane on its own word stream:
// lane j (of L = SeqSplitLanes(dim)) codes the coded components j, j + L, ...
// token by token, and after each of its operations reads the next word of
// its own stream when its state fell below 2^16. No order between lanes, so a
// GPU thread decodes its lane with no step shared with the others.
SEQKV_LANES_HD inline uint32_t SeqSplitLanes(uint32_t dim) { return dim < kSeqLaneMax ? dim : kSeqLaneMax; }

// What the encoders' estimate (SeqEstimateLaneGroupCost and the GPU
// encoder's, which must agree for rate control) charges for a split stream's
// word counts: a LEB128 count per lane but the last, each as long as the
// average lane's, from the payload's bits (symbols and escape bits).
SEQKV_LANES_HD inline uint64_t SeqSplitCountBits(uint64_t payload_bits, uint32_t lanes) {
  const uint64_t words = payload_bits / (16ull * lanes);
  return 8ull * (lanes - 1) * (words < 0x80 ? 1 : words < 0x4000 ? 2 : 3);
}

// SeqSplitLaneSymbol's value for a stream that is not valid (a symbol is at
// most 2^24 in magnitude).
inline constexpr int32_t kSeqSplitCorrupt = INT32_MIN;

// After an operation: a word when the state fell below 2^16 (take(&word)
// returns false past the lane's words).
template <typename Take>
SEQKV_LANES_HD inline bool SeqSplitRenorm(uint32_t* x, Take&& take) {
  if (*x >= kSeqLaneRansLow) return true;
  uint32_t word;
  if (!take(&word)) return false;
  *x = (*x << 16) | word;
  return true;
}

// An escape's value after its symbol s (kSeqSignedEscapeNeg or
// kSeqSignedEscapePos): the Exp-Golomb-0 bits of |q| - 15, each a uniform-bit
// operation followed by renorm(x) (false: past the lane's words). Returns q,
// or corrupt()'s value (the reference's: kSeqSplitCorrupt). On the GPU the
// loops stay rolled: escapes are rare, and a lane kernel inlines a copy per
// component.
template <typename Renorm, typename Corrupt>
SEQKV_LANES_HD inline int32_t SeqSplitEscape(int s, uint32_t* x, Renorm&& renorm, Corrupt&& corrupt) {
  uint32_t zeros = 0;
#ifdef __CUDA_ARCH__
#pragma unroll 1
#endif
  for (;;) {  // at most kSeqLaneMaxEscapeZeros + 1 operations
    const uint32_t bit = SeqUniformBit(x);
    if (!renorm(x)) return corrupt();
    if (bit) break;
    if (++zeros > static_cast<uint32_t>(kSeqLaneMaxEscapeZeros)) return corrupt();
  }
  uint32_t e = 1;
#ifdef __CUDA_ARCH__
#pragma unroll 1
#endif
  for (; zeros > 0; --zeros) {
    e = (e << 1) | SeqUniformBit(x);
    if (!renorm(x)) return corrupt();
  }
  const uint32_t mag = e + (kSeqLaneSymbols - 2);  // |q| = e + 14
  if (mag > kSeqLaneMaxMagnitude) return corrupt();
  return s == kSeqSignedEscapeNeg ? -static_cast<int32_t>(mag) : static_cast<int32_t>(mag);
}

// One symbol of a split lane: its signed-model operation (find(slot, &start,
// &freq) returns the symbol of `slot` in the component's row), then for an
// escape SeqSplitEscape. Returns q, or kSeqSplitCorrupt.
template <typename Find, typename Take>
SEQKV_LANES_HD inline int32_t SeqSplitLaneSymbol(uint32_t* x, Find&& find, Take&& take) {
  const uint32_t slot = *x & ((1u << kSeqLaneScaleBits) - 1);
  uint32_t start, freq;
  const int s = find(slot, &start, &freq);
  *x = freq * (*x >> kSeqLaneScaleBits) + slot - start;
  if (!SeqSplitRenorm(x, take)) return kSeqSplitCorrupt;
  if (s != kSeqSignedEscapeNeg && s != kSeqSignedEscapePos) return s - kSeqSignedZero;
  return SeqSplitEscape(
      s, x, [&take](uint32_t* y) { return SeqSplitRenorm(y, take); }, [] { return kSeqSplitCorrupt; });
}

}  // namespace seqkv::internal
