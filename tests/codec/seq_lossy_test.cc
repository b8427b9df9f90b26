// Tests of seq's lossy modes (codec/src/seq_lossy_*.cc, seq_profile.cc,
// seq_calibrate.cc): the group entropy coder, profiles, calibration, rate
// control, the guardrail and its fallback, layer 0 from the model, and that
// the decoder rebuilds exactly what the encoder reconstructed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

#include "../../codec/src/checksum.h"
#include "../../codec/src/seq_lanes.h"
#include "../../codec/src/seq_lossy_core.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

// ------------------------------------------------------------ group coder

std::vector<int32_t> RandomSymbols(uint32_t tokens, uint32_t dim, double zero_p, double scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int32_t> q(size_t{tokens} * dim, 0);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t i = 0; i < dim; ++i) {
      if (i % 5 == 3) continue;  // some components stay all zero
      if (u(rng) < zero_p) continue;
      const double mag = 1 + std::floor(-std::log(1 - u(rng)) * scale * (1 + i % 3));
      q[size_t{t} * dim + i] = static_cast<int32_t>(u(rng) < 0.5 ? -mag : mag);
    }
  }
  return q;
}

TEST(SeqGroupCoderTest, RoundTripsEveryKindOfSymbol) {
  struct Case { uint32_t tokens, dim; double zero_p, scale; };
  for (const Case& c : {Case{1, 1, 0.5, 1}, Case{7, 3, 0.0, 2}, Case{256, 64, 0.7, 1.5}, Case{100, 33, 0.2, 40},
                        Case{64, 8, 0.9, 0.3}, Case{300, 16, 0.0, 5000}}) {
    std::vector<int32_t> q = RandomSymbols(c.tokens, c.dim, c.zero_p, c.scale, c.tokens * 31 + c.dim);
    if (c.tokens > 10) q[5] = (1 << 24) - 1;  // near the largest magnitude
    if (c.tokens > 10) q[6] = -(1 << 24);
    std::vector<uint8_t> stream = internal::SeqEncodeGroup(q.data(), c.tokens, c.dim);
    std::vector<int32_t> back(q.size(), 7);
    Status st = internal::SeqDecodeGroup(stream, c.tokens, c.dim, back.data());
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(back, q) << c.tokens << "x" << c.dim;
    // The estimate is the coded size up to the rANS state flush.
    const double est = internal::SeqEstimateGroupBits(q.data(), c.tokens, c.dim);
    EXPECT_NEAR(est, 8.0 * stream.size(), 0.02 * 8.0 * stream.size() + 64) << c.tokens << "x" << c.dim;
  }
  // All zero: a bitmap and a zero lane count, nothing else.
  std::vector<int32_t> zeros(64 * 10, 0);
  std::vector<uint8_t> stream = internal::SeqEncodeGroup(zeros.data(), 10, 64);
  EXPECT_EQ(stream.size(), 9u);
  std::vector<int32_t> back(zeros.size(), 3);
  ASSERT_TRUE(internal::SeqDecodeGroup(stream, 10, 64, back.data()).ok());
  EXPECT_EQ(back, zeros);
}

// Truncations, trailing bytes and random byte flips of a valid stream:
// always DATA_LOSS or (rarely, a flip the coder cannot see) OK, never a crash;
// the coder alone catches over 90 % of the flips (the container's checksums
// catch the rest).
void ExpectDamageIsDataLoss(const std::vector<uint8_t>& stream,
                            const std::function<Status(std::span<const uint8_t>)>& decode) {
  for (size_t cut : {size_t{0}, size_t{3}, stream.size() / 2, stream.size() - 2, stream.size() - 1}) {
    EXPECT_EQ(decode(std::span<const uint8_t>(stream.data(), cut)).code(), StatusCode::kDataLoss) << cut;
  }
  std::vector<uint8_t> longer = stream;
  longer.push_back(0);
  longer.push_back(0);
  EXPECT_EQ(decode(longer).code(), StatusCode::kDataLoss);
  std::mt19937_64 rng(9);
  int detected = 0;
  const int trials = 200;
  for (int i = 0; i < trials; ++i) {
    std::vector<uint8_t> bad = stream;
    bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    const Status st = decode(bad);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), StatusCode::kDataLoss);
      ++detected;
    }
  }
  EXPECT_GT(detected, trials * 9 / 10);
}

TEST(SeqGroupCoderTest, CorruptOrTruncatedStreamsAreErrorsNotCrashes) {
  const uint32_t tokens = 128, dim = 32;
  std::vector<int32_t> q = RandomSymbols(tokens, dim, 0.5, 2, 5);
  std::vector<uint8_t> stream = internal::SeqEncodeGroup(q.data(), tokens, dim);
  std::vector<int32_t> back(q.size());
  ExpectDamageIsDataLoss(stream, [&](std::span<const uint8_t> s) {
    return internal::SeqDecodeGroup(s, tokens, dim, back.data());
  });
}

// ------------------------------------------------------------ lane streams

// Static tables of a made-up model: row (class, context) geometric with a
// ratio that grows with the class (frequencies >= 1, rows of 2^15).
internal::SeqStaticTables SyntheticTables() {
  SeqProfile p;
  const int rows = internal::kSeqStaticClasses * internal::kSeqLaneContexts;
  p.static_freq.resize(size_t(rows) * internal::kSeqLaneSymbols);
  for (int r = 0; r < rows; ++r) {
    const double ratio = 0.05 + 0.9 * (r / internal::kSeqLaneContexts) / double(internal::kSeqStaticClasses);
    double w[internal::kSeqLaneSymbols], total = 0;
    for (int s = 0; s < internal::kSeqLaneSymbols; ++s) total += w[s] = std::pow(ratio, s);
    uint32_t sum = 0;
    for (int s = 1; s < internal::kSeqLaneSymbols; ++s) {
      const uint32_t f = std::max<uint32_t>(1, static_cast<uint32_t>(w[s] / total * 32768));
      p.static_freq[size_t(r) * internal::kSeqLaneSymbols + s] = static_cast<uint16_t>(f);
      sum += f;
    }
    p.static_freq[size_t(r) * internal::kSeqLaneSymbols] = static_cast<uint16_t>(32768 - sum);
  }
  // The signed model: geometric in |q| with a class-dependent ratio, negative
  // values a little less likely than positive ones.
  constexpr int kN = internal::kSeqSignedSymbols, kZero = internal::kSeqSignedZero;
  p.signed_freq.resize(size_t(internal::kSeqStaticClasses) * kN);
  for (int r = 0; r < internal::kSeqStaticClasses; ++r) {
    const double ratio = 0.05 + 0.9 * r / double(internal::kSeqStaticClasses);
    double w[kN], total = 0;
    for (int s = 0; s < kN; ++s) {
      const int m = s == 0 || s == kN - 1 ? kZero : std::abs(s - kZero);
      total += w[s] = std::pow(ratio, m) * (s < kZero ? 0.8 : 1.0);
    }
    uint32_t sum = 0;
    for (int s = 0; s < kN; ++s) {
      if (s == kZero) continue;
      const uint32_t f = std::max<uint32_t>(1, static_cast<uint32_t>(w[s] / total * 32768));
      p.signed_freq[size_t(r) * kN + s] = static_cast<uint16_t>(f);
      sum += f;
    }
    p.signed_freq[size_t(r) * kN + kZero] = static_cast<uint16_t>(32768 - sum);
  }
  return internal::MakeSeqStaticTables(p);
}

constexpr internal::SeqLaneModel kLaneModels[] = {internal::SeqLaneModel::kMagnitude, internal::SeqLaneModel::kSigned};

// Every model, and split lane streams (streams=lanes3: head sizes below its
// 16 lanes, sparse groups and more than 8 components per lane included).
TEST(SeqLaneCoderTest, RoundTripsEveryKindOfSymbol) {
  const internal::SeqStaticTables tables = SyntheticTables();
  for (const internal::SeqLaneModel model :
       {internal::SeqLaneModel::kMagnitude, internal::SeqLaneModel::kSigned, internal::SeqLaneModel::kSplit}) {
  SCOPED_TRACE(model == internal::SeqLaneModel::kSigned  ? "signed model"
               : model == internal::SeqLaneModel::kSplit ? "split lanes"
                                                         : "magnitude model");
  struct Case { uint32_t tokens, dim; double zero_p, scale; };
  for (const Case& c : {Case{1, 1, 0.5, 1}, Case{7, 3, 0.0, 2}, Case{256, 64, 0.7, 1.5}, Case{100, 33, 0.2, 40},
                        Case{64, 8, 0.9, 0.3}, Case{300, 16, 0.0, 5000}, Case{256, 128, 0.6, 1},
                        Case{256, 128, 0.97, 0.5}, Case{40, 200, 0.5, 3}}) {
    std::vector<int32_t> q = RandomSymbols(c.tokens, c.dim, c.zero_p, c.scale, c.tokens * 17 + c.dim);
    if (c.tokens > 10) q[5] = (1 << 24) - 1;
    if (c.tokens > 10) q[6] = -(1 << 24);
    std::vector<int16_t> cls(c.dim);
    for (uint32_t i = 0; i < c.dim; ++i) cls[i] = static_cast<int16_t>((i * 37) % 200 - 120);
    std::vector<uint8_t> stream =
        internal::SeqEncodeLaneGroup(q.data(), c.tokens, c.dim, tables, cls.data(), model);
    std::vector<int32_t> back(q.size(), 7);
    Status st = internal::SeqDecodeLaneGroup(stream, c.tokens, c.dim, tables, cls.data(), back.data(), model);
    ASSERT_TRUE(st.ok()) << st.ToString() << " " << c.tokens << "x" << c.dim;
    EXPECT_EQ(back, q) << c.tokens << "x" << c.dim;
    const double est =
        double(internal::SeqEstimateLaneGroupCost(q.data(), c.tokens, c.dim, tables, cls.data(), nullptr, model)) /
        double(1u << internal::kSeqCostFracBits);
    EXPECT_NEAR(est, 8.0 * stream.size(), 0.02 * 8.0 * stream.size() + 64) << c.tokens << "x" << c.dim;
  }
  std::vector<int32_t> zeros(64 * 10, 0);
  std::vector<int16_t> cls(64, 0);
  std::vector<uint8_t> stream = internal::SeqEncodeLaneGroup(zeros.data(), 10, 64, tables, cls.data(), model);
  EXPECT_EQ(stream.size(), model == internal::SeqLaneModel::kSplit ? 8u : 9u);  // the bitmap (and lane byte)
  std::vector<int32_t> back(zeros.size(), 3);
  ASSERT_TRUE(internal::SeqDecodeLaneGroup(stream, 10, 64, tables, cls.data(), back.data(), model).ok());
  EXPECT_EQ(back, zeros);
  }
}

// The signed model round-trips the alphabet's edges and the escapes past
// them, and a stream of one model never decodes as the same symbols with the
// other.
TEST(SeqLaneCoderTest, SignedModelRoundTripsEdgesAndIsNotTheMagnitudeModel) {
  const internal::SeqStaticTables tables = SyntheticTables();
  const uint32_t tokens = 256, dim = 64;
  std::vector<int32_t> q = RandomSymbols(tokens, dim, 0.5, 2, 11);
  std::vector<int16_t> cls(dim, -4);
  const auto mag = internal::SeqEncodeLaneGroup(q.data(), tokens, dim, tables, cls.data(),
                                                internal::SeqLaneModel::kMagnitude);
  const auto sgn = internal::SeqEncodeLaneGroup(q.data(), tokens, dim, tables, cls.data(),
                                                internal::SeqLaneModel::kSigned);
  std::vector<int32_t> back(q.size());
  ASSERT_TRUE(internal::SeqDecodeLaneGroup(sgn, tokens, dim, tables, cls.data(), back.data(),
                                           internal::SeqLaneModel::kSigned).ok());
  EXPECT_EQ(back, q);
  EXPECT_NE(mag, sgn);
  std::vector<int32_t> wrong(q.size());
  const Status st = internal::SeqDecodeLaneGroup(sgn, tokens, dim, tables, cls.data(), wrong.data(),
                                                 internal::SeqLaneModel::kMagnitude);
  EXPECT_TRUE(!st.ok() || wrong != q);  // never silently the same symbols
  if (!st.ok()) {
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  }
  // Symbols at the alphabet's edges and just past them (escapes).
  std::vector<int32_t> edges;
  for (int v : {-16, -15, -14, -1, 0, 1, 14, 15, 16, 300, -300}) {
    for (uint32_t i = 0; i < dim; ++i) edges.push_back(i % 3 == 0 ? v : static_cast<int32_t>(i % 5) - 2);
  }
  const uint32_t edge_tokens = static_cast<uint32_t>(edges.size() / dim);
  const auto e = internal::SeqEncodeLaneGroup(edges.data(), edge_tokens, dim, tables, cls.data(),
                                              internal::SeqLaneModel::kSigned);
  std::vector<int32_t> edge_back(edges.size());
  ASSERT_TRUE(internal::SeqDecodeLaneGroup(e, edge_tokens, dim, tables, cls.data(), edge_back.data(),
                                           internal::SeqLaneModel::kSigned).ok());
  EXPECT_EQ(edge_back, edges);
}

// The GPU's bucket search finds the same symbol as the reference's binary
// search for every slot of every class, on the synthetic model and on a
// model with the extremes (one symbol taking almost all of 2^15).
TEST(SeqLaneCoderTest, BucketSearchFindsTheReferenceSymbol) {
  internal::SeqStaticTables tables = SyntheticTables();
  uint16_t* last = tables.signed_cum.data() + size_t{internal::kSeqStaticClasses - 1} * internal::kSeqSignedRowStride;
  for (int k = 0; k <= internal::kSeqSignedSymbols; ++k) {  // symbol 15 takes 2^15 - 30
    last[k] = static_cast<uint16_t>(k <= internal::kSeqSignedZero ? k : k + 32768 - internal::kSeqSignedSymbols);
  }
  const std::vector<uint8_t> buckets = internal::SeqSignedBuckets(tables);
  uint64_t checked = 0;
  for (uint32_t c = 0; c < uint32_t(internal::kSeqStaticClasses); ++c) {
    const uint16_t* row = tables.signed_cum.data() + size_t{c} * internal::kSeqSignedRowStride;
    for (uint32_t slot = 0; slot < (1u << internal::kSeqLaneScaleBits); ++slot) {
      uint32_t s0, f0, s1, f1;
      const int a = internal::SeqSignedFind(row, slot, &s0, &f0);
      const int b = internal::SeqSignedFindBucket(buckets.data() + size_t{c} * internal::kSeqSignedBuckets, row,
                                                  slot, &s1, &f1);
      if (a != b || s0 != s1 || f0 != f1) {
        ADD_FAILURE() << "class " << c << " slot " << slot << ": " << a << " vs " << b;
        return;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, uint64_t{internal::kSeqStaticClasses} << internal::kSeqLaneScaleBits);
}

// The GPU lane writer's division by a reciprocal: x / freq (and the encode
// step built on it) for every frequency a static row can hold, at the states
// where a quotient is closest to moving (just below, at and above each
// multiple of freq near the top and the bottom of the state range) and at
// random states.
TEST(SeqLaneCoderTest, RansQuotientByReciprocalIsExact) {
  std::mt19937 rng(7);
  uint64_t checked = 0;
  auto check = [&](uint32_t x, uint32_t freq, uint64_t m) {
    const uint32_t got = internal::SeqRansQuotient(x, m);
    ++checked;
    if (got != x / freq) {
      ADD_FAILURE() << "x " << x << " freq " << freq << ": " << got << " vs " << x / freq;
      return false;
    }
    // The encode step built on it, where the state may take the interval
    // (x < freq 2^17, the encoder's renormalization bound).
    if (uint64_t{x} < (uint64_t{freq} << 17)) {
      const uint32_t start = (1u << internal::kSeqLaneScaleBits) - freq;  // the largest start freq allows
      const uint32_t want = ((x / freq) << internal::kSeqLaneScaleBits) + x % freq + start;
      if (internal::SeqRansPutByReciprocal(x, start, freq, m) != want) {
        ADD_FAILURE() << "put x " << x << " freq " << freq;
        return false;
      }
    }
    return true;
  };
  for (uint32_t freq = 1; freq <= (1u << internal::kSeqLaneScaleBits); ++freq) {
    const uint64_t m = internal::SeqRansReciprocal(freq);
    const uint64_t top = 0xFFFFFFFFull / freq;  // the largest quotient
    for (uint64_t k : {uint64_t{1}, uint64_t{2}, uint64_t{65536} / freq + 1, top - 1, top}) {
      for (int64_t delta : {-1, 0, 1}) {
        const int64_t x = static_cast<int64_t>(k * freq) + delta;
        if (x < 0 || x > 0xFFFFFFFFll) continue;
        if (!check(static_cast<uint32_t>(x), freq, m)) return;
      }
    }
    for (int r = 0; r < 16; ++r) {
      if (!check(static_cast<uint32_t>(rng()), freq, m)) return;
    }
    if (!check(0xFFFFFFFFu, freq, m) || !check(0, freq, m)) return;
  }
  EXPECT_GT(checked, uint64_t{32768} * 16);
}

TEST(SeqLaneCoderTest, CorruptOrTruncatedStreamsAreErrorsNotCrashes) {
  const internal::SeqStaticTables tables = SyntheticTables();
  for (const internal::SeqLaneModel model : kLaneModels) {
  SCOPED_TRACE(model == internal::SeqLaneModel::kSigned ? "signed model" : "magnitude model");
  const uint32_t tokens = 128, dim = 64;
  std::vector<int32_t> q = RandomSymbols(tokens, dim, 0.5, 2, 5);
  std::vector<int16_t> cls(dim, -10);
  std::vector<uint8_t> stream = internal::SeqEncodeLaneGroup(q.data(), tokens, dim, tables, cls.data(), model);
  std::vector<int32_t> back(q.size());
  auto decode = [&](std::span<const uint8_t> s) {
    return internal::SeqDecodeLaneGroup(s, tokens, dim, tables, cls.data(), back.data(), model);
  };
  ExpectDamageIsDataLoss(stream, decode);
  std::vector<uint8_t> lanes = stream;
  lanes[dim / 8] = 3;  // not min(16, coded)
  EXPECT_EQ(decode(lanes).code(), StatusCode::kDataLoss);
  }
}

// Split lane streams code lanes2's operations on other lanes: their size is
// lanes2's within the header's difference and the lanes' final words.
TEST(SeqLaneCoderTest, SplitLanesCostLanes2sSizeAndTheirWordCounts) {
  const internal::SeqStaticTables tables = SyntheticTables();
  for (const double zero_p : {0.0, 0.6, 0.97}) {
    for (const uint32_t dim : {16u, 64u, 128u}) {
      const std::vector<int32_t> q = RandomSymbols(256, dim, zero_p, 1.5, dim + 7);
      std::vector<int16_t> cls(dim);
      for (uint32_t i = 0; i < dim; ++i) cls[i] = static_cast<int16_t>((i * 13) % 100 - 60);
      const size_t split =
          internal::SeqEncodeLaneGroup(q.data(), 256, dim, tables, cls.data(), internal::SeqLaneModel::kSplit).size();
      const size_t lanes2 =
          internal::SeqEncodeLaneGroup(q.data(), 256, dim, tables, cls.data(), internal::SeqLaneModel::kSigned).size();
      EXPECT_NEAR(double(split), double(lanes2), 0.01 * lanes2 + 48) << dim << " " << zero_p;
    }
  }
}

// A damaged split stream is DATA_LOSS: cuts, extra bytes, flipped bytes, and
// each header field made inconsistent (word counts past the stream, a count
// that moves words between lanes, an over-long count, a state below 2^16).
TEST(SeqLaneCoderTest, SplitLanesCorruptOrTruncatedStreamsAreErrorsNotCrashes) {
  const internal::SeqStaticTables tables = SyntheticTables();
  constexpr auto kSplit = internal::SeqLaneModel::kSplit;
  const uint32_t tokens = 128, dim = 64;
  std::vector<int32_t> q = RandomSymbols(tokens, dim, 0.5, 2, 5);
  std::vector<int16_t> cls(dim, -10);
  const std::vector<uint8_t> stream = internal::SeqEncodeLaneGroup(q.data(), tokens, dim, tables, cls.data(), kSplit);
  std::vector<int32_t> back(q.size());
  auto decode = [&](std::span<const uint8_t> s) {
    return internal::SeqDecodeLaneGroup(s, tokens, dim, tables, cls.data(), back.data(), kSplit);
  };
  ASSERT_TRUE(decode(stream).ok());
  ExpectDamageIsDataLoss(stream, decode);
  const size_t counts_at = dim / 8 + 1 + 4 * 16;  // bitmap, shift, states
  // Lane 0's count: one word more (taken from lane 15), and far past the stream.
  ASSERT_LT(stream[counts_at], 0x80);  // one LEB128 byte at this rate
  std::vector<uint8_t> moved = stream;
  ++moved[counts_at];
  EXPECT_EQ(decode(moved).code(), StatusCode::kDataLoss);
  std::vector<uint8_t> past = stream;
  past[counts_at] = 0xFF;
  past.insert(past.begin() + static_cast<std::ptrdiff_t>(counts_at) + 1, {0xFF, 0x7F});
  EXPECT_EQ(decode(past).code(), StatusCode::kDataLoss);
  std::vector<uint8_t> overlong = stream;
  overlong.erase(overlong.begin() + static_cast<std::ptrdiff_t>(counts_at));
  overlong.insert(overlong.begin() + static_cast<std::ptrdiff_t>(counts_at), {0x80, 0x80, 0x80, 0x80, 0x80, 0x01});
  EXPECT_EQ(decode(overlong).code(), StatusCode::kDataLoss);
  std::vector<uint8_t> low_state = stream;
  for (int b = 0; b < 4; ++b) low_state[dim / 8 + 1 + 4 * 3 + b] = b == 0 ? 1 : 0;  // lane 3's state = 1
  EXPECT_EQ(decode(low_state).code(), StatusCode::kDataLoss);
}

TEST(SeqLaneCoderTest, ClassesFollowTheStepInEighthsOfAnOctave) {
  using internal::SeqStaticClass;
  const int zero = -internal::kSeqStaticClassMin;  // the index of class 0
  EXPECT_EQ(SeqStaticClass(0, 0, 128), zero);
  EXPECT_EQ(SeqStaticClass(16, 0, 128), zero + 8);    // coefficients twice the step: one octave up
  EXPECT_EQ(SeqStaticClass(0, 16, 128), zero - 8);    // a step twice as large: one octave down
  EXPECT_EQ(SeqStaticClass(0, 0, 144), zero - 8);     // the group's step code counts the same
  EXPECT_EQ(SeqStaticClass(-1, 0, 128), zero - 1);    // floor, also below zero
  EXPECT_EQ(SeqStaticClass(internal::kSeqStaticScaleNone, 0, 128), 0);
  EXPECT_EQ(SeqStaticClass(32767, -32767, 0), internal::kSeqStaticClasses - 1);
  EXPECT_EQ(internal::SeqLaneTable(-3, 2), zero - 1);  // the stream's shift, then the clamp
  EXPECT_EQ(internal::SeqLaneTable(internal::kSeqStaticClassMax, 1), internal::kSeqStaticClasses - 1);
  EXPECT_EQ(internal::SeqStepClass(1.0f), 0);
  EXPECT_EQ(internal::SeqStepClass(0.5f), -16);
  EXPECT_EQ(internal::SeqStepClass(3.0f), 25);  // 16 log2 3 = 25.36
}

TEST(SeqLossyCoreTest, StepMultipliersArePowersOfTwoSixteenths) {
  EXPECT_EQ(internal::SeqMultiplier(128), 1.0);
  EXPECT_EQ(internal::SeqMultiplier(144), 2.0);
  EXPECT_EQ(internal::SeqMultiplier(112), 0.5);
  EXPECT_NEAR(internal::SeqMultiplier(136), std::sqrt(2.0), 4e-15);
  EXPECT_NEAR(internal::SeqMultiplier(120), 1 / std::sqrt(2.0), 4e-15);
}

// arith=int12's fixed point (docs/format.md): the smallest exponent with
// max |v| <= 2047 2^e, values rounded half to even, non-finite values 0.
TEST(SeqLossyCoreTest, FixedPointRoundsHalfToEvenAndIgnoresNonFiniteValues) {
  EXPECT_EQ(internal::SeqFixedExponent(0.0), 0);
  EXPECT_EQ(internal::SeqFixedExponent(2047.0), 0);
  EXPECT_EQ(internal::SeqFixedExponent(2047.5), 1);
  EXPECT_EQ(internal::SeqFixedExponent(1023.6), 0);
  EXPECT_EQ(internal::SeqFixedExponent(1023.5), -1);
  // max 2047: e = 0, so the values are rounded to integers, ties to even.
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<float> v = {2047.0f, 0.5f,   1.5f, 2.5f, -0.5f, -1.5f, -2.5f,
                                1.25f,   -1.75f, nan,  inf,  -inf,  0.0f,  -0.0f};
  std::vector<int16_t> out(v.size(), 99);
  EXPECT_EQ(internal::SeqToFixed(v.data(), 1, v.size(), v.size(), out.data()), 0);
  EXPECT_EQ(out, (std::vector<int16_t>{2047, 0, 2, 2, 0, -2, -2, 1, -2, 0, 0, 0, 0, 0}));
  // Scaled: max 4094 -> e = 1, values / 2 then rounded (1.0 / 2 = 0.5 -> 0, 3.0 / 2 = 1.5 -> 2).
  const std::vector<float> w = {4094.0f, 1.0f, 3.0f, -5.0f, -4093.0f};
  std::vector<int16_t> wo(w.size());
  EXPECT_EQ(internal::SeqToFixed(w.data(), 1, w.size(), w.size(), wo.data()), 1);
  EXPECT_EQ(wo, (std::vector<int16_t>{2047, 0, 2, -2, -2046}));
  // Tiny values: the exponent goes far below float's normal range, exactly.
  const std::vector<float> tiny = {std::ldexp(2047.0f, -140), std::ldexp(3.0f, -149)};
  std::vector<int16_t> to(tiny.size());
  EXPECT_EQ(internal::SeqToFixed(tiny.data(), 1, tiny.size(), tiny.size(), to.data()), -140);
  EXPECT_EQ(to, (std::vector<int16_t>{2047, 0}));
}

// ------------------------------------------------------------ helpers

// Tokens [start, start + n) of a chunk, positions kept.
Chunk Slice(const Chunk& c, uint32_t start, uint32_t n) {
  Chunk out = c;
  out.shape.tokens = n;
  out.first_position = c.first_position + start;
  out.tokens.assign(c.tokens.begin() + start, c.tokens.begin() + start + n);
  const size_t es = DTypeSize(c.dtype), d = c.shape.head_dim;
  out.k.clear();
  out.v.clear();
  for (uint32_t l = 0; l < c.shape.layers; ++l) {
    for (uint32_t h = 0; h < c.shape.kv_heads; ++h) {
      const size_t base = ((size_t{l} * c.shape.kv_heads + h) * c.shape.tokens + start) * d * es;
      out.k.insert(out.k.end(), c.k.begin() + base, c.k.begin() + base + n * d * es);
      out.v.insert(out.v.end(), c.v.begin() + base, c.v.begin() + base + n * d * es);
    }
  }
  return out;
}

Chunk LoadDev(const std::string& name) {
  auto dump = ReadKvDump(test::DevDump(name));
  EXPECT_TRUE(dump.ok()) << dump.status().ToString();
  return dump.ok() ? dump->chunk : Chunk{};
}

std::string ModelDir() { return test::SharedDir() + "/models/tinyllama-12m"; }

std::unique_ptr<Codec> MakeOrFail(const std::string& spec) {
  auto c = MakeCodec(spec);
  EXPECT_TRUE(c.ok()) << spec << ": " << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Encodes with info and reconstruction, frames the sections as EncodeChunk
// does, decodes, and checks the decoder rebuilt the encoder's reconstruction.
struct Coded {
  std::vector<uint8_t> bytes;
  SeqEncodeInfo info;
  Chunk recon;
  Chunk decoded;
  double bits_per_element = 0;
};

Coded EncodeAndCheck(const Codec& codec, const Chunk& chunk) {
  Coded out;
  const auto* enc = dynamic_cast<const SeqLossyEncoder*>(&codec);
  EXPECT_NE(enc, nullptr);
  if (enc == nullptr) return out;
  std::vector<Section> sections;
  Status st = enc->EncodeWithInfo(chunk, &sections, &out.info, &out.recon);
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto bytes = EncodeChunk(chunk, codec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  if (!bytes.ok()) return out;
  out.bytes = *bytes;
  out.bits_per_element = 8.0 * bytes->size() / (2.0 * chunk.shape.elements());
  auto back = DecodeChunk(*bytes);
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  if (!back.ok()) return out;
  out.decoded = *back;
  EXPECT_EQ(out.decoded.k, out.recon.k) << "decoder K differs from the encoder's reconstruction";
  EXPECT_EQ(out.decoded.v, out.recon.v) << "decoder V differs from the encoder's reconstruction";
  return out;
}

// ------------------------------------------------------------ synthetic

class SeqLossySyntheticTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void TearDown() override { SeqResources::Default().Clear(); }
};

TEST_P(SeqLossySyntheticTest, CalibratesEncodesAndDecodesExactlyWhatTheEncoderSaw) {
  const auto [inputs, dtype] = GetParam();
  const KvShape shape{3, 3, 150, 16};
  std::vector<Chunk> cal = {test::RandomChunk(shape, dtype, 1), test::RandomChunk(shape, dtype, 2)};
  for (Chunk& c : cal) c.rope = {RopeStyle::kInterleaved, 500.0, 16};
  SeqCalibrateOptions o;
  o.inputs = *ParseSeqInputs(inputs);
  o.sensitivity.assign(3 * 2 * 3, 0.0);
  for (size_t g = 0; g < o.sensitivity.size(); ++g) o.sensitivity[g] = 0.5 + 0.25 * (g % 4);
  SeqCalibrateReport report;
  auto profile = CalibrateSeqProfile(cal, o, nullptr, &report);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  EXPECT_FALSE(profile->layer0_from_model);
  EXPECT_TRUE(profile->has_sensitivity);
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(*profile));

  Chunk test_chunk = test::RandomChunk({3, 3, 77, 16}, dtype, 3);
  test_chunk.rope = cal[0].rope;
  test_chunk.first_position = 1000;
  // Both dense-stage arithmetics: float, and 12-bit fixed point with exact integer sums.
  for (const char* arith : {"", ",arith=int12"}) {
    double prev_mse = INFINITY;
    for (const char* bits : {"1", "3", "6"}) {
      auto codec = MakeOrFail(std::string("seq:bits=") + bits + arith);
      ASSERT_TRUE(codec);
      EXPECT_EQ(codec->ChunkFlags(), kFlagNeedsProfile);
      Coded c = EncodeAndCheck(*codec, test_chunk);
      ASSERT_FALSE(c.bytes.empty());
      EXPECT_EQ(c.decoded.tokens, test_chunk.tokens);
      const double mse =
          test::RelativeMse(test::Floats(test_chunk, test_chunk.k), test::Floats(c.decoded, c.decoded.k)) +
          test::RelativeMse(test::Floats(test_chunk, test_chunk.v), test::Floats(c.decoded, c.decoded.v));
      EXPECT_LT(mse, prev_mse) << bits << arith;
      prev_mse = mse;
    }
    EXPECT_LT(prev_mse, 0.01) << arith;
  }
}

INSTANTIATE_TEST_SUITE_P(Inputs, SeqLossySyntheticTest,
                         ::testing::Combine(::testing::Values("all", "same", "mean"),
                                            ::testing::Values(DType::kBF16, DType::kFP16, DType::kFP32)));

TEST(SeqProfileTest, SerializesWithAChecksumAndRejectsDamage) {
  const KvShape shape{2, 2, 80, 8};
  std::vector<Chunk> cal = {test::RandomChunk(shape, DType::kBF16, 4)};
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kSameHead;
  auto p = CalibrateSeqProfile(cal, o, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<uint8_t> bytes = p->Serialize();
  auto back = SeqProfile::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->Id(), p->Id());
  EXPECT_EQ(back->Serialize(), bytes);
  EXPECT_EQ(p->Id().size(), 16u);
  EXPECT_EQ(p->SizeBytes().total, bytes.size());
  for (size_t i : {size_t{0}, size_t{5}, size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0x10;
    EXPECT_EQ(SeqProfile::Parse(bad).status().code(), StatusCode::kDataLoss) << i;
  }
  EXPECT_EQ(SeqProfile::Parse(std::span<const uint8_t>(bytes.data(), bytes.size() - 9)).status().code(),
            StatusCode::kDataLoss);
  const std::string dir = test::TempDir("seqprofile");
  ASSERT_TRUE(p->Save(dir + "/p.sqkp").ok());
  auto loaded = SeqProfile::Load(dir + "/p.sqkp");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->Id(), p->Id());
  EXPECT_EQ(SeqProfile::Load(dir + "/missing.sqkp").status().code(), StatusCode::kNotFound);
}

TEST(SeqProfileTest, CalibrationRejectsBadInput) {
  EXPECT_EQ(CalibrateSeqProfile({}, {}, nullptr).status().code(), StatusCode::kInvalidArgument);
  Chunk a = test::RandomChunk({2, 2, 200, 8}, DType::kBF16, 1);
  Chunk b = test::RandomChunk({2, 2, 200, 16}, DType::kBF16, 1);
  EXPECT_EQ(CalibrateSeqProfile({a, b}, {}, nullptr).status().code(), StatusCode::kInvalidArgument);
  Chunk tiny = test::RandomChunk({2, 2, 10, 8}, DType::kBF16, 1);  // 10 tokens < 2 x 33 inputs
  auto st = CalibrateSeqProfile({tiny}, {}, nullptr).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("too few"), std::string::npos) << st.ToString();
  SeqCalibrateOptions o;
  o.sensitivity = {1.0, 2.0};  // wrong count
  EXPECT_EQ(CalibrateSeqProfile({a}, o, nullptr).status().code(), StatusCode::kInvalidArgument);
}

TEST(SeqProfileTest, SensitivityJsonIsCheckedAgainstTheShape) {
  const std::string good = R"({"format": "seqkv-sensitivity/1", "layers": 2, "kv_heads": 1, "head_dim": 4,
    "key_domain": "pre_rope", "sensitivity": [[[1.0],[2.0]],[[3.0],[4.5]]]})";
  auto s = ParseSensitivityJson(good, 2, 1, 4);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, (std::vector<double>{1.0, 2.0, 3.0, 4.5}));
  EXPECT_FALSE(ParseSensitivityJson(good, 2, 2, 4).ok());
  EXPECT_FALSE(ParseSensitivityJson("not json", 2, 1, 4).ok());
  std::string negative = good;
  negative.replace(negative.find("4.5"), 3, "-1.");
  EXPECT_FALSE(ParseSensitivityJson(negative, 2, 1, 4).ok());
}

TEST(SeqLossySpecTest, ClearErrors) {
  SeqResources::Default().Clear();
  auto none = MakeCodec("seq:bits=2");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("--profile"), std::string::npos);
  auto missing = MakeCodec("seq:bits=2,profile=0123456789abcdef");
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);

  const KvShape shape{2, 2, 100, 8};
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kSameHead;
  auto p = CalibrateSeqProfile({test::RandomChunk(shape, DType::kBF16, 1)}, o, nullptr);
  ASSERT_TRUE(p.ok());
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(*p));
  EXPECT_EQ(MakeCodec("seq:deadzone=0.4").status().code(), StatusCode::kInvalidArgument);  // no mode
  EXPECT_EQ(MakeCodec("seq:bits=2,delta=0.1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:bits=20").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:bits=2,fallback=maybe").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:bits=2,colour=red").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:bits=2,lrate=1_2_3").status().code(), StatusCode::kInvalidArgument);  // 2 layers
  EXPECT_EQ(MakeCodec("seq:bits=2,lrate=1_x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:bits=2,arith=int8").status().code(), StatusCode::kInvalidArgument);
  {
    // arith=int12 is in the canonical spec (float, the default, is not).
    auto int12 = MakeOrFail("seq:delta=0.2,arith=int12");
    auto float_spec = MakeOrFail("seq:delta=0.2,arith=float");
    ASSERT_TRUE(int12 && float_spec);
    EXPECT_EQ(int12->Spec(), "seq:arith=int12,deadzone=0.5,delta=0.2,profile=" + p->Id() + ",streams=lanes2");
    EXPECT_EQ(float_spec->Spec(), "seq:deadzone=0.5,delta=0.2,profile=" + p->Id() + ",streams=lanes2");
  }
  {
    // Rates per layer and per K/V: finer steps where asked, in the canonical spec.
    auto plain = MakeOrFail("seq:delta=0.2");
    auto tuned = MakeOrFail("seq:delta=0.2,krate=1,lrate=0_2");
    ASSERT_TRUE(plain && tuned);
    EXPECT_EQ(tuned->Spec(), "seq:deadzone=0.5,delta=0.2,krate=1,lrate=0_2,profile=" + p->Id() + ",streams=lanes2");
    const Chunk c = test::RandomChunk(shape, DType::kBF16, 5);
    auto a = EncodeChunk(c, *plain), b = EncodeChunk(c, *tuned);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_GT(b->size(), a->size());
    const SeqEncodeInfo& info = SeqLastEncodeInfo();
    ASSERT_EQ(info.layer_bytes.size(), 2u);
    auto back = DecodeChunk(*b);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
  }
  // kl= needs sensitivities in the profile.
  EXPECT_EQ(MakeCodec("seq:kl=0.01").status().code(), StatusCode::kFailedPrecondition);
  // A chunk of another shape is refused at encode and its bytes name the profile.
  auto codec = MakeOrFail("seq:delta=0.1");
  ASSERT_TRUE(codec);
  EXPECT_EQ(codec->Spec(), "seq:deadzone=0.5,delta=0.1,profile=" + p->Id() + ",streams=lanes2");
  EXPECT_EQ(EncodeChunk(test::RandomChunk({3, 2, 10, 8}, DType::kBF16, 1), *codec).status().code(),
            StatusCode::kInvalidArgument);
  auto bytes = EncodeChunk(test::RandomChunk(shape, DType::kBF16, 2), *codec);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(DecodeChunk(*bytes).ok());
  // Without the profile the chunk is not corrupt: the caller must load it.
  SeqResources::Default().Clear();
  auto out = DecodeChunk(*bytes);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kFailedPrecondition) << out.status().ToString();
  EXPECT_NE(out.status().message().find(p->Id()), std::string::npos);
}

TEST(SeqLossyGuardrailTest, BudgetRaisesTheRateOrFallsBackToLossless) {
  SeqResources::Default().Clear();
  const KvShape shape{3, 2, 120, 16};
  std::vector<Chunk> cal = {test::RandomChunk(shape, DType::kBF16, 11), test::RandomChunk(shape, DType::kBF16, 12)};
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kAllHeads;
  o.sensitivity.assign(3 * 2 * 2, 1e-3);
  auto p = CalibrateSeqProfile(cal, o, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(*p));
  const Chunk chunk = test::RandomChunk(shape, DType::kBF16, 13);

  auto at2 = MakeOrFail("seq:bits=2");
  ASSERT_TRUE(at2);
  Coded base = EncodeAndCheck(*at2, chunk);
  ASSERT_GT(base.info.proxy, 0);
  EXPECT_NEAR(base.bits_per_element, 2.0, 0.2);  // small chunk: the container header counts

  // kl= alone: the largest step within the budget.
  const double budget = base.info.proxy / 4;
  auto kl = MakeOrFail("seq:kl=" + std::to_string(budget));
  ASSERT_TRUE(kl);
  Coded k = EncodeAndCheck(*kl, chunk);
  EXPECT_LE(k.info.proxy, budget);
  EXPECT_GE(k.info.proxy, 0.9 * budget);
  EXPECT_GT(k.bits_per_element, base.bits_per_element);
  EXPECT_FALSE(k.info.guardrail_raised);

  // bits= with a budget it would exceed: the guardrail raises the rate, and counts it.
  const SeqEncodeCounters before = GetSeqEncodeCounters();
  auto both = MakeOrFail("seq:bits=2,kl=" + std::to_string(budget));
  ASSERT_TRUE(both);
  Coded b = EncodeAndCheck(*both, chunk);
  EXPECT_TRUE(b.info.guardrail_raised);
  EXPECT_LE(b.info.proxy, budget);
  EXPECT_GE(GetSeqEncodeCounters().guardrail_raised, before.guardrail_raised + 1);
  // A loose budget leaves bits= alone.
  auto loose = MakeOrFail("seq:bits=2,kl=" + std::to_string(base.info.proxy * 4));
  Coded l = EncodeAndCheck(*loose, chunk);
  EXPECT_FALSE(l.info.guardrail_raised);
  EXPECT_NEAR(l.bits_per_element, base.bits_per_element, 0.02);

  // A budget that needs more than maxbits: coded losslessly, bit-exact, counted.
  auto strict = MakeOrFail("seq:kl=" + std::to_string(budget) + ",maxbits=1");
  ASSERT_TRUE(strict);
  Coded s = EncodeAndCheck(*strict, chunk);
  EXPECT_TRUE(s.info.lossless_fallback);
  EXPECT_EQ(s.decoded.k, chunk.k);
  EXPECT_EQ(s.decoded.v, chunk.v);
  EXPECT_GE(GetSeqEncodeCounters().lossless_fallback, before.lossless_fallback + 1);
  auto refuse = MakeOrFail("seq:kl=" + std::to_string(budget) + ",maxbits=1,fallback=none");
  ASSERT_TRUE(refuse);
  EXPECT_EQ(EncodeChunk(chunk, *refuse).status().code(), StatusCode::kFailedPrecondition);
  SeqResources::Default().Clear();
}

// ------------------------------------------------------------ real dumps

class SeqLossyDevTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = KvModel::Load(ModelDir());
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = *model;
    std::vector<Chunk> cal = {Slice(LoadDev("doc00.safetensors"), 0, 512),
                              Slice(LoadDev("doc05.safetensors"), 256, 512)};
    SeqCalibrateOptions o;
    // Sensitivities shaped like the measured ones: layer 4's keys ~10x.
    for (uint32_t l = 0; l < 6; ++l) {
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < 2; ++h) o.sensitivity.push_back(kv == 0 ? (l == 4 ? 5e-3 : 5e-4) : 3e-3);
      }
    }
    auto p = CalibrateSeqProfile(cal, o, model_.get());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    profile_ = std::make_shared<const SeqProfile>(*p);
  }
  static void TearDownTestSuite() {
    profile_.reset();
    model_.reset();
  }
  void SetUp() override {
    SeqResources::Default().Clear();
    SeqResources::Default().AddProfile(profile_);
    SeqResources::Default().AddModel(model_);
  }
  void TearDown() override { SeqResources::Default().Clear(); }

  static std::shared_ptr<const KvModel> model_;
  static std::shared_ptr<const SeqProfile> profile_;
};
std::shared_ptr<const KvModel> SeqLossyDevTest::model_;
std::shared_ptr<const SeqProfile> SeqLossyDevTest::profile_;

TEST_F(SeqLossyDevTest, RateControlHitsTheTargetAndLayerZeroIsExact) {
  ASSERT_TRUE(profile_->layer0_from_model);
  const Chunk chunk = Slice(LoadDev("doc04.safetensors"), 300, 256);
  double prev_err = INFINITY;
  for (double target : {1.0, 2.0, 3.0}) {
    auto codec = MakeOrFail("seq:bits=" + std::to_string(target));
    ASSERT_TRUE(codec);
    EXPECT_EQ(codec->ChunkFlags(), kFlagNeedsProfile | kFlagNeedsModel);
    Coded c = EncodeAndCheck(*codec, chunk);
    ASSERT_FALSE(c.bytes.empty());
    EXPECT_NEAR(c.bits_per_element, target, 0.03 * target) << "coded size off the target";
    EXPECT_TRUE(c.info.layer0_from_model);
    // Layer 0 comes back bit-exact.
    const size_t layer0_bytes = chunk.k.size() / chunk.shape.layers;
    EXPECT_TRUE(std::equal(chunk.k.begin(), chunk.k.begin() + layer0_bytes, c.decoded.k.begin()));
    EXPECT_TRUE(std::equal(chunk.v.begin(), chunk.v.begin() + layer0_bytes, c.decoded.v.begin()));
    const double err = test::RelativeMse(test::Floats(chunk, chunk.v), test::Floats(c.decoded, c.decoded.v));
    EXPECT_LT(err, prev_err) << target;
    prev_err = err;
    std::printf("seq:bits=%.0f on doc04[300:556]: %.4f bits/element, V rel MSE %.5f, proxy %.5f, %u trials, "
                "layer-0 corrections %llu\n",
                target, c.bits_per_element, err, c.info.proxy, c.info.trials,
                static_cast<unsigned long long>(c.info.layer0_corrections));
  }
  EXPECT_LT(prev_err, 0.05);
}

TEST_F(SeqLossyDevTest, ChunksThatNeedTheModelSaySoAndFailClearlyWithoutIt) {
  const Chunk chunk = Slice(LoadDev("doc02.safetensors"), 0, 128);
  auto codec = MakeOrFail("seq:bits=2");
  ASSERT_TRUE(codec);
  auto bytes = EncodeChunk(chunk, *codec);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto header = ParseChunkHeader(*bytes);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->flags, kFlagNeedsProfile | kFlagNeedsModel);
  SeqResources::Default().Clear();
  SeqResources::Default().AddProfile(profile_);
  auto out = DecodeChunk(*bytes);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kFailedPrecondition) << out.status().ToString();
  EXPECT_NE(out.status().message().find("--model"), std::string::npos) << out.status().ToString();
  // And the encoder refuses rather than silently coding without it.
  auto no_model = MakeOrFail("seq:bits=2");
  ASSERT_TRUE(no_model);
  EXPECT_EQ(EncodeChunk(chunk, *no_model).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(SeqLossyDevTest, Fp32ChunksCodeLayerZeroToo) {
  Chunk chunk = Slice(LoadDev("doc06.safetensors"), 0, 128);
  std::vector<float> k = test::Floats(chunk, chunk.k), v = test::Floats(chunk, chunk.v);
  chunk.dtype = DType::kFP32;
  chunk.k.resize(k.size() * 4);
  chunk.v.resize(v.size() * 4);
  FromFloat(DType::kFP32, k.data(), k.size(), chunk.k.data());
  FromFloat(DType::kFP32, v.data(), v.size(), chunk.v.data());
  auto codec = MakeOrFail("seq:bits=2");
  ASSERT_TRUE(codec);
  Coded c = EncodeAndCheck(*codec, chunk);
  EXPECT_FALSE(c.info.layer0_from_model);
  EXPECT_NEAR(c.bits_per_element, 2.0, 0.1);
}

TEST_F(SeqLossyDevTest, ParentConditionedChunksStartFromTheirParentsModels) {
  const Chunk doc = LoadDev("doc07.safetensors");
  auto codec = MakeOrFail("seq:delta=0.4,streams=adaptive");
  ASSERT_TRUE(codec);
  const int n = 4;
  std::vector<std::vector<uint8_t>> chained, plain;
  std::vector<Chunk> parts;
  ChunkContext ctx;
  size_t chained_bytes = 0, plain_bytes = 0;
  for (int i = 0; i < n; ++i) {
    parts.push_back(Slice(doc, 256 * i, 256));
    ChunkContext next;
    auto bytes = EncodeChunk(parts[i], *codec, i == 0 ? nullptr : &ctx, &next);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    auto header = ParseChunkHeader(*bytes);
    ASSERT_TRUE(header.ok());
    EXPECT_EQ((header->flags & kFlagNeedsParent) != 0, i > 0) << i;
    chained.push_back(*bytes);
    chained_bytes += bytes->size();
    ctx = next;
    auto alone = EncodeChunk(parts[i], *codec);
    ASSERT_TRUE(alone.ok());
    plain.push_back(*alone);
    plain_bytes += alone->size();
  }
  std::printf("4 x 256 tokens of doc07 at delta 0.4: %zu bytes chained, %zu independent (%.1f%% saved)\n",
              chained_bytes, plain_bytes, 100.0 * (1.0 - double(chained_bytes) / plain_bytes));
  EXPECT_LT(chained_bytes, plain_bytes);
  // Decoded in order, each with its parent's context: the same KV as independent chunks.
  ChunkContext dctx;
  for (int i = 0; i < n; ++i) {
    ChunkContext next;
    auto out = DecodeChunk(chained[i], i == 0 ? nullptr : &dctx, &next);
    ASSERT_TRUE(out.ok()) << i << ": " << out.status().ToString();
    auto alone = DecodeChunk(plain[i]);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(out->k, alone->k) << i;
    EXPECT_EQ(out->v, alone->v) << i;
    dctx = next;
  }
  // A child without its parent, or with another chunk's context: a clear error, never wrong KV.
  EXPECT_EQ(DecodeChunk(chained[2]).status().code(), StatusCode::kFailedPrecondition);
  ChunkContext first;
  ASSERT_TRUE(DecodeChunk(chained[0], nullptr, &first).ok());
  auto wrong = DecodeChunk(chained[2], &first, nullptr);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition) << wrong.status().ToString();
  // Codecs that cannot continue ignore the parent and write plain chunks.
  auto raw = MakeOrFail("raw");
  auto raw_bytes = EncodeChunk(parts[1], *raw, &ctx, nullptr);
  ASSERT_TRUE(raw_bytes.ok());
  EXPECT_EQ(ParseChunkHeader(*raw_bytes)->flags & kFlagNeedsParent, 0u);
}

// streams=lanes codes the same symbols with the profile's static model on 16
// lanes: the same KV as the adaptive streams, and on fresh 256-token chunks
// fewer bytes (docs/format.md, "Lane streams"; sizes in docs/gpu.md).
TEST_F(SeqLossyDevTest, LaneStreamsDecodeToTheSameKvInFewerBytes) {
  ASSERT_TRUE(profile_->has_static_model());
  for (const char* delta : {"0.3", "1"}) {
    auto adaptive = MakeOrFail(std::string("seq:delta=") + delta + ",streams=adaptive");
    auto lanes = MakeOrFail(std::string("seq:delta=") + delta + ",streams=lanes");
    auto lanes2 = MakeOrFail(std::string("seq:delta=") + delta + ",streams=lanes2");
    ASSERT_TRUE(adaptive && lanes && lanes2);
    EXPECT_TRUE(lanes->Spec().ends_with(",streams=lanes")) << lanes->Spec();
    EXPECT_NE(lanes2->Spec().find("streams=lanes2"), std::string::npos) << lanes2->Spec();
    size_t adaptive_bytes = 0, lanes_bytes = 0, chained_bytes = 0, signed_bytes = 0;
    ChunkContext ctx;
    for (const char* doc : {"doc06.safetensors", "doc07.safetensors"}) {
      const Chunk whole = LoadDev(doc);
      for (uint32_t t0 = 0; t0 + 256 <= whole.shape.tokens; t0 += 256) {
        const Chunk chunk = Slice(whole, t0, 256);
        auto a = EncodeChunk(chunk, *adaptive);
        ASSERT_TRUE(a.ok()) << a.status().ToString();
        // A parent context does not make a lane chunk continue it.
        ChunkContext next;
        auto l = EncodeChunk(chunk, *lanes, t0 == 0 ? nullptr : &ctx, &next);
        ASSERT_TRUE(l.ok()) << l.status().ToString();
        EXPECT_EQ(ParseChunkHeader(*l)->flags & kFlagNeedsParent, 0u);
        ChunkContext chained_next;
        auto c = EncodeChunk(chunk, *adaptive, t0 == 0 ? nullptr : &ctx, &chained_next);
        ASSERT_TRUE(c.ok());
        ctx = chained_next;
        adaptive_bytes += a->size();
        lanes_bytes += l->size();
        chained_bytes += c->size();
        ChunkContext next2;
        auto l2 = EncodeChunk(chunk, *lanes2, t0 == 0 ? nullptr : &ctx, &next2);
        ASSERT_TRUE(l2.ok()) << l2.status().ToString();
        EXPECT_EQ(ParseChunkHeader(*l2)->flags & kFlagNeedsParent, 0u);
        signed_bytes += l2->size();
        auto da = DecodeChunk(*a);
        auto dl = DecodeChunk(*l);
        auto dl2 = DecodeChunk(*l2);
        ASSERT_TRUE(da.ok() && dl.ok() && dl2.ok()) << dl.status().ToString() << dl2.status().ToString();
        EXPECT_EQ(dl->k, da->k) << doc << " " << t0;
        EXPECT_EQ(dl->v, da->v) << doc << " " << t0;
        EXPECT_EQ(dl2->k, da->k) << doc << " " << t0;
        EXPECT_EQ(dl2->v, da->v) << doc << " " << t0;
      }
    }
    std::printf("doc06-07 in 256-token chunks at delta %s: adaptive %zu bytes, adaptive chained %zu, lanes %zu "
                "(%.1f%% smaller than adaptive), lanes2 %zu (%+.2f%% against lanes)\n",
                delta, adaptive_bytes, chained_bytes, lanes_bytes,
                100.0 * (1.0 - double(lanes_bytes) / double(adaptive_bytes)), signed_bytes,
                100.0 * (double(signed_bytes) / double(lanes_bytes) - 1.0));
    EXPECT_LT(lanes_bytes, adaptive_bytes) << delta;
    EXPECT_LT(lanes_bytes, chained_bytes) << delta;  // even against chunks that continue their parents
    EXPECT_LT(signed_bytes, chained_bytes) << delta;
    // The signed model drops the context and puts the sign in the alphabet:
    // within 1 % of the magnitude model (docs/BENCHMARKS.md).
    EXPECT_LT(std::abs(double(signed_bytes) / double(lanes_bytes) - 1.0), 0.01) << delta;
  }
  // Rate control with lanes counts the lane streams' bits.
  for (const char* streams : {"lanes", "lanes2"}) {
    auto rate = MakeOrFail(std::string("seq:bits=2,streams=") + streams);
    ASSERT_TRUE(rate);
    Coded c = EncodeAndCheck(*rate, Slice(LoadDev("doc06.safetensors"), 256, 256));
    EXPECT_NEAR(c.bits_per_element, 2.0, 0.1) << streams;
  }
}

// Split lane streams (streams=lanes3) code lanes2's symbols on per-lane word
// streams: the same KV, byte for byte, for the lanes' word counts (measured
// on doc06-07; docs/BENCHMARKS.md), and rate control prices them.
TEST_F(SeqLossyDevTest, SplitLaneStreamsDecodeToLanes2sKv) {
  for (const char* delta : {"0.3", "1", "2", "4"}) {
    auto lanes2 = MakeOrFail(std::string("seq:delta=") + delta + ",streams=lanes2");
    auto lanes3 = MakeOrFail(std::string("seq:delta=") + delta + ",streams=lanes3");
    ASSERT_TRUE(lanes2 && lanes3);
    EXPECT_NE(lanes3->Spec().find("streams=lanes3"), std::string::npos) << lanes3->Spec();
    auto again = MakeOrFail(lanes3->Spec());
    ASSERT_TRUE(again);
    EXPECT_EQ(again->Spec(), lanes3->Spec());
    size_t bytes2 = 0, bytes3 = 0, elements = 0;
    for (const char* doc : {"doc06.safetensors", "doc07.safetensors"}) {
      const Chunk whole = LoadDev(doc);
      for (uint32_t t0 = 0; t0 + 256 <= whole.shape.tokens; t0 += 256) {
        const Chunk chunk = Slice(whole, t0, 256);
        auto a = EncodeChunk(chunk, *lanes2);
        auto b = EncodeChunk(chunk, *lanes3);
        ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
        EXPECT_NE(*a, *b);
        bytes2 += a->size();
        bytes3 += b->size();
        elements += 2 * chunk.k.size() / 2;
        auto da = DecodeChunk(*a);
        auto db = DecodeChunk(*b);
        ASSERT_TRUE(da.ok() && db.ok()) << db.status().ToString();
        EXPECT_EQ(db->k, da->k) << doc << " " << t0;
        EXPECT_EQ(db->v, da->v) << doc << " " << t0;
      }
    }
    const double cost = double(bytes3) / double(bytes2) - 1.0;
    std::printf("doc06-07 in 256-token chunks at delta %s: lanes2 %zu bytes (%.3f bits/element), lanes3 %zu "
                "(%.3f, %+.2f%%)\n",
                delta, bytes2, 8.0 * bytes2 / elements, bytes3, 8.0 * bytes3 / elements, 100.0 * cost);
    EXPECT_GT(cost, 0.0) << delta;  // the word counts cost a little
    EXPECT_LT(cost, 0.10) << delta;
  }
  auto rate = MakeOrFail("seq:bits=2,streams=lanes3");
  ASSERT_TRUE(rate);
  Coded c = EncodeAndCheck(*rate, Slice(LoadDev("doc06.safetensors"), 256, 256));
  EXPECT_NEAR(c.bits_per_element, 2.0, 0.1);
}

// arith=int12 (12-bit fixed-point operands, exact integer sums: what tensor
// cores reproduce in any order) codes real KV in the float arithmetic's size
// and quality (docs/BENCHMARKS.md: within 0.05 % on doc04-07), and its decoder
// rebuilds the encoder's reconstruction bit for bit.
TEST_F(SeqLossyDevTest, IntegerArithmeticKeepsSizeAndQuality) {
  for (const char* streams : {"lanes2", "adaptive"}) {
    for (const char* delta : {"0.3", "1"}) {
      auto floating = MakeOrFail(std::string("seq:delta=") + delta + ",streams=" + streams);
      auto integer = MakeOrFail(std::string("seq:delta=") + delta + ",streams=" + streams + ",arith=int12");
      ASSERT_TRUE(floating && integer);
      double float_bytes = 0, int_bytes = 0, float_err = 0, int_err = 0;
      for (uint32_t t0 : {0u, 256u, 512u}) {
        const Chunk chunk = Slice(LoadDev("doc06.safetensors"), t0, 256);
        Coded f = EncodeAndCheck(*floating, chunk);
        Coded i = EncodeAndCheck(*integer, chunk);
        ASSERT_FALSE(f.bytes.empty() || i.bytes.empty());
        EXPECT_NE(f.bytes, i.bytes);
        float_bytes += f.bytes.size();
        int_bytes += i.bytes.size();
        for (const Coded* c : {&f, &i}) {
          const double err =
              test::RelativeMse(test::Floats(chunk, chunk.k), test::Floats(c->decoded, c->decoded.k)) +
              test::RelativeMse(test::Floats(chunk, chunk.v), test::Floats(c->decoded, c->decoded.v));
          (c == &f ? float_err : int_err) += err;
        }
      }
      std::printf("%s delta %s: float %.0f bytes (error %.5f), int12 %.0f bytes (error %.5f)\n", streams, delta,
                  float_bytes, float_err, int_bytes, int_err);
      EXPECT_LT(std::abs(int_bytes / float_bytes - 1.0), 0.005) << streams << " " << delta;
      EXPECT_LT(std::abs(int_err / float_err - 1.0), 0.01) << streams << " " << delta;
    }
  }
}

TEST_F(SeqLossyDevTest, LaneStreamsNeedAProfileWithAStaticModel) {
  SeqProfile old = *profile_;
  old.static_scale.clear();
  old.static_freq.clear();
  old.signed_freq.clear();
  const std::vector<uint8_t> bytes = old.Serialize();
  EXPECT_EQ(bytes[4] | (bytes[5] << 8), kSeqProfileVersion);  // written as version 1, as before
  auto parsed = SeqProfile::Parse(bytes);
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->has_static_model());
  const std::vector<uint8_t> full = profile_->Serialize();
  EXPECT_EQ(full[4] | (full[5] << 8), kSeqProfileVersionSigned);
  auto back = SeqProfile::Parse(full);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->static_scale, profile_->static_scale);
  EXPECT_EQ(back->static_freq, profile_->static_freq);
  EXPECT_EQ(back->signed_freq, profile_->signed_freq);
  EXPECT_EQ(back->Id(), profile_->Id());
  // A version-2 profile (the magnitude model only) still reads, and codes streams=lanes.
  SeqProfile v2 = *profile_;
  v2.signed_freq.clear();
  const std::vector<uint8_t> v2_bytes = v2.Serialize();
  EXPECT_EQ(v2_bytes[4] | (v2_bytes[5] << 8), kSeqProfileVersionStatic);
  auto v2_back = SeqProfile::Parse(v2_bytes);
  ASSERT_TRUE(v2_back.ok()) << v2_back.status().ToString();
  EXPECT_TRUE(v2_back->has_static_model());
  EXPECT_FALSE(v2_back->has_signed_model());
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(old));
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(v2));
  // The default: signed lane streams where the profile has their model, else
  // lane streams where it has a static model, else adaptive; the spec says which.
  auto fresh = MakeCodec("seq:delta=0.3,profile=" + profile_->Id());
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE((*fresh)->Spec().find("streams=lanes2"), std::string::npos) << (*fresh)->Spec();
  auto middle = MakeCodec("seq:delta=0.3,profile=" + v2.Id());
  ASSERT_TRUE(middle.ok());
  EXPECT_TRUE((*middle)->Spec().ends_with(",streams=lanes")) << (*middle)->Spec();
  auto no_signed = MakeCodec("seq:delta=0.3,streams=lanes2,profile=" + v2.Id());
  ASSERT_FALSE(no_signed.ok());
  EXPECT_EQ(no_signed.status().code(), StatusCode::kFailedPrecondition) << no_signed.status().ToString();
  auto older = MakeCodec("seq:delta=0.3,profile=" + old.Id());
  ASSERT_TRUE(older.ok());
  EXPECT_EQ((*older)->Spec().find("streams="), std::string::npos) << (*older)->Spec();
  auto chosen = MakeCodec("seq:delta=0.3,streams=adaptive,profile=" + profile_->Id());
  ASSERT_TRUE(chosen.ok());
  EXPECT_NE((*chosen)->Spec().find("streams=adaptive"), std::string::npos) << (*chosen)->Spec();
  auto codec = MakeCodec("seq:delta=0.3,streams=lanes,profile=" + old.Id());
  ASSERT_FALSE(codec.ok());
  EXPECT_EQ(codec.status().code(), StatusCode::kFailedPrecondition) << codec.status().ToString();
  EXPECT_EQ(MakeCodec("seq:delta=0.3,streams=fast,profile=" + old.Id()).status().code(),
            StatusCode::kInvalidArgument);
  // A static model that does not add up is refused, a signed one too, and a
  // signed model without the static one (whose scales it uses).
  SeqProfile bad = *profile_;
  bad.static_freq[0] += 1;
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
  SeqProfile bad_signed = *profile_;
  bad_signed.signed_freq[40] += 1;
  EXPECT_EQ(bad_signed.Validate().code(), StatusCode::kInvalidArgument);
  SeqProfile orphan = old;
  orphan.signed_freq = profile_->signed_freq;
  EXPECT_EQ(orphan.Validate().code(), StatusCode::kInvalidArgument);
}

// The same input and spec give the same bytes with every compiler, vector
// width and machine: the profile (calibration) and the chunk are pinned to
// digests recorded once. The g++ build (x86-64 clones with AVX2) and the
// clang sanitizer build of CI both run this test.
TEST_F(SeqLossyDevTest, BytesAreTheSameOnEveryBuild) {
  const std::string profile_id = profile_->Id();
  const Chunk chunk = Slice(LoadDev("doc03.safetensors"), 512, 128);
  auto hex = [](const std::vector<uint8_t>& bytes) {
    char digest[17];
    std::snprintf(digest, sizeof digest, "%016llx", static_cast<unsigned long long>(internal::Xxh3(bytes)));
    return std::string(digest);
  };
  // A spec's chunk digest and its decoded K then V digest.
  struct Digests {
    std::string chunk, kv;
  };
  auto digests = [&](const std::string& spec) -> Digests {
    auto codec = MakeOrFail(spec);
    EXPECT_TRUE(codec);
    if (!codec) return {};
    auto bytes = EncodeChunk(chunk, *codec);
    EXPECT_TRUE(bytes.ok());
    if (!bytes.ok()) return {};
    auto decoded = DecodeChunk(*bytes);
    EXPECT_TRUE(decoded.ok());
    if (!decoded.ok()) return {};
    std::vector<uint8_t> kv = decoded->k;
    kv.insert(kv.end(), decoded->v.begin(), decoded->v.end());
    Digests d{hex(*bytes), hex(kv)};
    std::printf("%s: chunk %s (%zu bytes) decoded %s, spec %s\n", spec.c_str(), d.chunk.c_str(), bytes->size(),
                d.kv.c_str(), codec->Spec().c_str());
    return d;
  };
  const Digests adaptive = digests("seq:delta=0.3,streams=adaptive");
  // The lane streams of the same chunk decode to the same KV: the magnitude
  // model, and the signed one (the default with this profile).
  const Digests lanes = digests("seq:delta=0.3,streams=lanes");
  const Digests lanes2 = digests("seq:delta=0.3");
  EXPECT_EQ(lanes.kv, adaptive.kv);
  EXPECT_EQ(lanes2.kv, adaptive.kv);
  EXPECT_EQ(lanes.chunk, "02c60f344c9cc698");
  EXPECT_EQ(lanes2.chunk, "9b8abf5b0b394e03");
  // Integer dense arithmetic: its own bytes and KV, pinned too (its sums are
  // exact, its few float operations in a fixed order).
  const Digests int12 = digests("seq:delta=0.3,arith=int12");
  EXPECT_EQ(int12.chunk, "d0976e4dd2e52af1");
  EXPECT_EQ(int12.kv, "8a82aa180719397e");
  EXPECT_EQ(profile_id, "c31f333e92bb0051");
  EXPECT_EQ(adaptive.chunk, "bd54dab1479d42f9");
  EXPECT_EQ(adaptive.kv, "5dfe3b1198da1b51");
}

}  // namespace
}  // namespace seqkv
