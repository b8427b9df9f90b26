// What GPU-oriented variants of the seq codec's entropy stage cost in size,
// measured on the dev dumps (docs/gpu.md). Measurements, only with
// SEQKV_MEASURE=1; each prints a table:
//   StaticModelsAndIndependentLanes  per-component static tables and 32
//       independent lanes against the adaptive format (ideal code lengths);
//   ScaleIndexedTablesAcrossSteps   the design of lane streams before it was
//       built: one table family indexed by scale (SEQKV_RES classes per octave),
//       SEQKV_LANES lanes, SEQKV_SHAPES shape classes, SEQKV_SHIFT the range of
//       a per-group class shift, SEQKV_ALL=1 all-heads predictors;
//   LaneStreamsThroughTheCodec      the implemented formats (streams=lanes, lanes2)
//       against adaptive and parent-chained adaptive chunks, whole chunk bytes
//       and CPU speed;
//   FixedPointWeights               the profile's predictors and KLT bases
//       rounded to B-bit fixed point (per group, a power-of-two scale), the
//       first step toward integer arithmetic that tensor cores reproduce
//       exactly (docs/seq_codec_design.md, "What next" 8): chunk bytes and
//       K/V error at equal steps;
//   FixedPointTransform             all three dense products in fixed point:
//       weights, features, and the transform (SeqLoopParams::transform_bits);
//   FixedPointFeatures              the other half: the predictor's features
//       (the previous layer's reconstruction) rounded to B-bit fixed point in
//       the closed loop (SeqLoopParams::feature_bits), with float or int16
//       weights: ideal code lengths of the adaptive coder and squared error;
//   RateControlTrials               rate control's trial encodes per chunk
//       (SeqLastEncodeInfo) with adaptive and lane streams at bits= targets;
//   LaneAlphabetsForFasterDecode    what a lane model with fewer rANS
//       operations per symbol would cost: the sign inside the alphabet (one
//       operation per symbol instead of two for a non-zero one), with or
//       without contexts, refitted on the calibration pieces (ideal lengths).
//
//   LaneZeroRuns                    fewer lock-step steps for the GPU lane
//       kernel (its time is its steps: docs/BENCHMARKS.md): the signed lane
//       model (streams=lanes2) with run symbols for 2 .. 16 zeros of a lane,
//       in the format's token-major order or component-major; and run-level
//       coding per component column (run then level, or one joint symbol):
//       size, rANS operations per symbol, half-warp steps per group.
//
// Symbols: a profile calibrated (no model) on 256-token pieces of doc00-03,
// the codec's own closed loop (SeqEncodeLoop) on pieces of doc04-07 at fixed
// steps. The first test compares, in bits per element of K and V:
//   adaptive      the format as it is (SeqEstimateGroupBits: adaptive models,
//                 8 interleaved lanes sharing one word stream)
//   static        per (group, component, context) frequencies fitted on the
//                 calibration pieces and kept in the profile (no per-chunk
//                 cost), so a decoder needs no model updates: a lookup table
//   + 32 lanes    either, with 32 independent lane streams (a warp per group):
//                 24 more rANS states and a u16 length per lane per group
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../../codec/src/seq_lanes.h"
#include "../../codec/src/seq_lossy_core.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

using internal::kSeqContexts;
using internal::kSeqSymbols;

constexpr uint32_t kPiece = 256;

std::vector<Chunk> Pieces(const std::vector<int>& docs) {
  std::vector<Chunk> out;
  for (int doc : docs) {
    auto dump = ReadKvDump(test::DevDump("doc0" + std::to_string(doc) + ".safetensors"));
    EXPECT_TRUE(dump.ok());
    if (!dump.ok()) continue;
    const Chunk& c = dump->chunk;
    for (uint32_t t0 = 0; t0 + kPiece <= c.shape.tokens; t0 += kPiece) out.push_back(test::SliceTokens(c, t0, kPiece));
  }
  return out;
}

std::vector<int32_t> Symbols(const SeqProfile& p, const Chunk& c, float delta) {
  internal::SeqLoopParams params;
  params.delta0 = delta;
  params.mult_code.assign(p.groups(), 128);
  internal::SeqLoopResult loop;
  const std::vector<float> x = internal::SeqCodingDomain(c, p.pre_rope_keys);
  internal::SeqEncodeLoop(p, c.shape.tokens, x.data(), nullptr, params, &loop);
  return loop.q;
}

int Context(int32_t prev) { return prev == 0 ? 0 : (prev == 1 || prev == -1) ? 1 : 2; }

// Bits of one symbol beyond its magnitude class: escape (Exp-Golomb 0) and sign.
double ExtraBits(int32_t v) {
  const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
  double bits = mag != 0 ? 1 : 0;
  if (mag >= static_cast<uint32_t>(kSeqSymbols - 1)) {
    const uint32_t e = mag - (kSeqSymbols - 1) + 1;
    bits += 2 * (std::floor(std::log2(double(e)))) + 1;
  }
  return bits;
}

int Class(int32_t v) {
  const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
  return mag >= static_cast<uint32_t>(kSeqSymbols - 1) ? kSeqSymbols - 1 : static_cast<int>(mag);
}

// The measurements' data, skipped without SEQKV_MEASURE or the dumps:
// calibration pieces (doc00-03) and test pieces (doc04-07).
class SeqGpuVariantsMeasure : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::getenv("SEQKV_MEASURE")) GTEST_SKIP() << "set SEQKV_MEASURE=1";
    if (test::DevDump("doc07.safetensors").empty()) GTEST_SKIP() << "no ../shared/kvdata/dev";
    cal_ = Pieces({0, 1, 2, 3});
    test_pieces_ = Pieces({4, 5, 6, 7});
  }
  // A profile calibrated (no model) on the calibration pieces.
  Result<SeqProfile> Calibrated(SeqInputs inputs) const {
    SeqCalibrateOptions o;
    o.inputs = inputs;
    return CalibrateSeqProfile(cal_, o, nullptr);
  }
  std::vector<Chunk> cal_, test_pieces_;
};

TEST_F(SeqGpuVariantsMeasure, StaticModelsAndIndependentLanes) {
  auto profile = Calibrated(SeqInputs::kSameHead);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const SeqProfile& p = *profile;
  const uint32_t G = p.groups(), d = p.head_dim, T = kPiece;
  const double elements_per_piece = 2.0 * p.layers * p.kv_heads * T * d;
  std::printf("seq entropy variants: same-head profile on 256-token pieces of doc00-03 (%zu), scored on doc04-07 "
              "(%zu)\n", cal_.size(), test_pieces_.size());
  std::printf("%6s %10s %10s %18s %16s\n", "delta", "adaptive", "static", "adaptive+32 lanes", "static+32 lanes");
  for (float delta : {0.5f, 1.0f, 2.0f}) {
    // Static models: counts per (group, component, context, class) on the calibration pieces.
    std::vector<double> counts(size_t{G} * d * kSeqContexts * kSeqSymbols, 0.5);  // add-1/2
    for (const Chunk& c : cal_) {
      const std::vector<int32_t> q = Symbols(p, c, delta);
      for (uint32_t g = 0; g < G; ++g) {
        for (uint32_t i = 0; i < d; ++i) {
          int32_t prev = 0;
          for (uint32_t t = 0; t < T; ++t) {
            const int32_t v = q[(size_t{g} * T + t) * d + i];
            counts[((size_t{g} * d + i) * kSeqContexts + Context(prev)) * kSeqSymbols + Class(v)] += 1;
            prev = v;
          }
        }
      }
    }
    double adaptive = 0, stat = 0, lanes_extra = 0;
    for (const Chunk& c : test_pieces_) {
      const std::vector<int32_t> q = Symbols(p, c, delta);
      for (uint32_t g = 0; g < G; ++g) {
        const int32_t* qg = q.data() + size_t{g} * T * d;
        adaptive += internal::SeqEstimateGroupBits(qg, T, d);
        // The same stream layout (bitmap, lane count, states) with static
        // probabilities for the coded components.
        std::vector<uint8_t> coded(d, 0);
        for (size_t k = 0; k < size_t{T} * d; ++k) coded[k % d] |= qg[k] != 0;
        uint32_t nc = 0;
        for (uint32_t i = 0; i < d; ++i) nc += coded[i];
        const uint32_t lanes = std::min<uint32_t>(8, nc);
        double bits = 8.0 * ((d + 7) / 8 + 1) + 32.0 * lanes;
        for (uint32_t i = 0; i < d; ++i) {
          if (!coded[i]) continue;
          int32_t prev = 0;
          for (uint32_t t = 0; t < T; ++t) {
            const int32_t v = qg[size_t{t} * d + i];
            const double* row = &counts[((size_t{g} * d + i) * kSeqContexts + Context(prev)) * kSeqSymbols];
            double total = 0;
            for (int s = 0; s < kSeqSymbols; ++s) total += row[s];
            bits += -std::log2(row[Class(v)] / total) + ExtraBits(v);
            prev = v;
          }
        }
        stat += bits;
        // 32 independent lanes: 32 states (not min(8, coded)) and a u16 length each.
        const uint32_t lanes32 = std::min<uint32_t>(32, nc);
        lanes_extra += 32.0 * (lanes32 - lanes) + 16.0 * lanes32;
      }
    }
    const double n = elements_per_piece * test_pieces_.size();
    std::printf("%6.2f %10.4f %10.4f %18.4f %16.4f\n", delta, adaptive / n, stat / n, (adaptive + lanes_extra) / n,
                (stat + lanes_extra) / n);
    EXPECT_GT(adaptive, 0);
  }
}


// A step-independent static model (docs/gpu.md): one family of frequency
// tables indexed by (scale class k, context), shared by every component, and
// per (group, component) one integer L: 8 log2 of its mean |coefficient| /
// step-scale, measured at a fine step on the calibration pieces. A chunk at
// step delta codes component i of group g with class k = L - 8 log2(delta).
// The tables are pooled histograms of the calibration pieces' symbols at
// several steps. Scored at steps on and off that grid, against the adaptive
// format with and without parent conditioning (pieces of one dump in order).
TEST_F(SeqGpuVariantsMeasure, ScaleIndexedTablesAcrossSteps) {
  auto profile = Calibrated(std::getenv("SEQKV_ALL") ? SeqInputs::kAllHeads : SeqInputs::kSameHead);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const SeqProfile& p = *profile;
  const uint32_t G = p.groups(), d = p.head_dim, T = kPiece;
  const int res = std::getenv("SEQKV_RES") ? std::atoi(std::getenv("SEQKV_RES")) : 8;  // classes per octave
  const uint32_t lanes = std::getenv("SEQKV_LANES") ? uint32_t(std::atoi(std::getenv("SEQKV_LANES"))) : 32;
  const int kmin = -12 * res, kmax = 8 * res, K = kmax - kmin + 1;
  // L[g][i] from a fine step.
  const float fine = 0.0625f;
  std::vector<double> mean_abs(size_t{G} * d, 0.0), mean_sq(size_t{G} * d, 0.0);
  for (const Chunk& c : cal_) {
    const std::vector<int32_t> q = Symbols(p, c, fine);
    for (uint32_t g = 0; g < G; ++g)
      for (uint32_t t = 0; t < T; ++t)
        for (uint32_t i = 0; i < d; ++i) {
          const double v = q[(size_t{g} * T + t) * d + i];
          mean_abs[size_t{g} * d + i] += std::abs(v);
          mean_sq[size_t{g} * d + i] += v * v;
        }
  }
  const int shapes = std::getenv("SEQKV_SHAPES") ? std::atoi(std::getenv("SEQKV_SHAPES")) : 1;
  std::vector<int> shape(size_t{G} * d, 0);
  for (size_t k = 0; k < shape.size(); ++k) {
    const double r = mean_sq[k] > 0 ? mean_abs[k] * mean_abs[k] / (mean_sq[k] * double(T) * cal_.size()) : 0.6;
    // edges between shape classes over [0.3, 0.7]
    shape[k] = std::clamp(int((r - 0.3) / 0.4 * shapes), 0, shapes - 1);
  }
  std::vector<int> L(size_t{G} * d);
  for (size_t k = 0; k < L.size(); ++k) {
    const double a = mean_abs[k] / (double(T) * cal_.size()) * fine;
    L[k] = a > 0 ? int(std::lround(res * std::log2(a))) : kmin - 1000;
  }
  auto klass = [&](uint32_t g, uint32_t i, float delta) {
    const int k = L[size_t{g} * d + i] - int(std::lround(res * std::log2(double(delta))));
    return shape[size_t{g} * d + i] * K + std::clamp(k, kmin, kmax) - kmin;
  };
  std::vector<double> H(size_t(K) * shapes * kSeqContexts * kSeqSymbols, 0.0);
  for (float delta : {0.25f, 0.5f, 1.0f, 2.0f, 4.0f, 8.0f}) {
    for (const Chunk& c : cal_) {
      const std::vector<int32_t> q = Symbols(p, c, delta);
      for (uint32_t g = 0; g < G; ++g)
        for (uint32_t i = 0; i < d; ++i) {
          const int k = klass(g, i, delta);
          int32_t prev = 0;
          for (uint32_t t = 0; t < T; ++t) {
            const int32_t v = q[(size_t{g} * T + t) * d + i];
            H[(size_t(k) * kSeqContexts + Context(prev)) * kSeqSymbols + Class(v)] += 1;
            prev = v;
          }
        }
    }
  }
  // Probabilities: counts + 1/2, each row normalised (a row never seen is uniform).
  std::vector<double> cost(H.size());
  for (size_t r = 0; r < H.size() / kSeqSymbols; ++r) {
    double total = 0;
    for (int s = 0; s < kSeqSymbols; ++s) total += H[r * kSeqSymbols + s] + 0.5;
    for (int s = 0; s < kSeqSymbols; ++s) cost[r * kSeqSymbols + s] = -std::log2((H[r * kSeqSymbols + s] + 0.5) / total);
  }
  std::printf("%d shapes, ", shapes);
  std::printf("scale-indexed tables (%d classes per octave, %d classes, %u lanes): bits/element on doc04-07\n", res, K,
              lanes);
  std::printf("%6s %10s %14s %16s\n", "delta", "adaptive", "adaptive+parent", "scaled+lanes");
  for (float delta : {0.35f, 0.5f, 0.7f, 1.0f, 1.4f, 2.0f, 3.0f}) {
    double adaptive = 0, parent = 0, scaled = 0;
    std::vector<internal::SeqGroupState> states;
    for (size_t pi = 0; pi < test_pieces_.size(); ++pi) {
      if (pi % 4 == 0) states.assign(G, internal::SeqGroupState(d));  // a new dump: 1024 tokens = 4 pieces
      const std::vector<int32_t> q = Symbols(p, test_pieces_[pi], delta);
      for (uint32_t g = 0; g < G; ++g) {
        const int32_t* qg = q.data() + size_t{g} * T * d;
        adaptive += internal::SeqEstimateGroupBits(qg, T, d);
        parent += internal::SeqEstimateGroupBits(qg, T, d, &states[g]);
        internal::SeqEncodeGroup(qg, T, d, &states[g]);
        std::vector<uint8_t> coded(d, 0);
        for (size_t k = 0; k < size_t{T} * d; ++k) coded[k % d] |= qg[k] != 0;
        uint32_t nc = 0;
        for (uint32_t i = 0; i < d; ++i) nc += coded[i];
        const int max_shift = std::getenv("SEQKV_SHIFT") ? std::atoi(std::getenv("SEQKV_SHIFT")) : 0;
        double best = 1e300;
        for (int shift = -max_shift; shift <= max_shift; ++shift) {
          // bitmap, lane byte, a u32 state per lane (one shared word stream), a shift byte
          double bits = 8.0 * ((d + 7) / 8 + 1) + 32.0 * std::min<uint32_t>(lanes, nc) + (max_shift ? 8 : 0);
          for (uint32_t i = 0; i < d; ++i) {
            if (!coded[i]) continue;
            const int k0 = klass(g, i, delta);
            const int base = k0 - k0 % K;
            const int k = base + std::clamp(k0 % K + shift, 0, K - 1);
            int32_t prev = 0;
            for (uint32_t t = 0; t < T; ++t) {
              const int32_t v = qg[size_t{t} * d + i];
              bits += cost[(size_t(k) * kSeqContexts + Context(prev)) * kSeqSymbols + Class(v)] + ExtraBits(v);
              prev = v;
            }
          }
          best = std::min(best, bits);
        }
        const double bits = best;
        scaled += bits;
      }
    }
    const double n = 2.0 * p.layers * p.kv_heads * T * d * test_pieces_.size();
    std::printf("%6.2f %10.4f %14.4f %16.4f\n", delta, adaptive / n, parent / n, scaled / n);
    EXPECT_GT(scaled, 0);
  }
}


// The implemented format (streams=lanes, docs/format.md) against the adaptive
// streams, fresh and parent-chained, through the codec itself: profiles
// calibrated (no model, no sensitivities) on 256-token pieces of doc00-03,
// chunks = 256-token pieces of doc04-07, whole chunk bytes (headers and
// tables included), bits per element of K and V.
TEST_F(SeqGpuVariantsMeasure, LaneStreamsThroughTheCodec) {
  std::printf("%6s %6s %10s %10s %10s %10s %14s %14s %14s\n", "inputs", "delta", "adaptive", "chained", "lanes",
              "lanes2", "vs adaptive", "vs chained", "lanes2/lanes");
  for (SeqInputs inputs : {SeqInputs::kSameHead, SeqInputs::kAllHeads}) {
    auto profile = Calibrated(inputs);
    ASSERT_TRUE(profile.ok()) << profile.status().ToString();
    auto shared = std::make_shared<const SeqProfile>(*profile);
    SeqResources::Default().AddProfile(shared);
    const std::string pid = ",profile=" + shared->Id();
    for (const char* delta : {"0.25", "0.5", "1", "2"}) {
      // Every stream coding named: the default is lanes2 with this profile.
      auto adaptive = MakeCodec(std::string("seq:delta=") + delta + ",streams=adaptive" + pid);
      auto lanes = MakeCodec(std::string("seq:delta=") + delta + ",streams=lanes" + pid);
      auto lanes2 = MakeCodec(std::string("seq:delta=") + delta + ",streams=lanes2" + pid);
      ASSERT_TRUE(adaptive.ok() && lanes.ok() && lanes2.ok());
      double a = 0, c = 0, l = 0, l2 = 0, n = 0;
      double enc_a = 0, enc_l = 0, enc_l2 = 0, dec_a = 0, dec_l = 0, dec_l2 = 0;  // seconds, one core
      using Clock = std::chrono::steady_clock;
      auto seconds = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
      ChunkContext ctx;
      for (size_t i = 0; i < test_pieces_.size(); ++i) {
        const Chunk& piece = test_pieces_[i];
        auto t0 = Clock::now();
        auto ab = EncodeChunk(piece, **adaptive);
        enc_a += seconds(t0);
        ChunkContext next;
        auto cb = EncodeChunk(piece, **adaptive, i % 4 == 0 ? nullptr : &ctx, &next);  // 4 pieces per dump
        t0 = Clock::now();
        auto lb = EncodeChunk(piece, **lanes);
        enc_l += seconds(t0);
        ASSERT_TRUE(ab.ok() && cb.ok() && lb.ok());
        t0 = Clock::now();
        ASSERT_TRUE(DecodeChunk(*ab).ok());
        dec_a += seconds(t0);
        t0 = Clock::now();
        ASSERT_TRUE(DecodeChunk(*lb).ok());
        dec_l += seconds(t0);
        t0 = Clock::now();
        auto l2b = EncodeChunk(piece, **lanes2);
        enc_l2 += seconds(t0);
        ASSERT_TRUE(l2b.ok());
        t0 = Clock::now();
        ASSERT_TRUE(DecodeChunk(*l2b).ok());
        dec_l2 += seconds(t0);
        l2 += 8.0 * l2b->size();
        ctx = next;
        a += 8.0 * ab->size();
        c += 8.0 * cb->size();
        l += 8.0 * lb->size();
        n += 2.0 * piece.shape.elements();
      }
      std::printf("%6s %6s %10.4f %10.4f %10.4f %10.4f %13.1f%% %13.1f%% %13.2f%%   CPU MB/s encode %.1f / %.1f / "
                  "%.1f, decode %.1f / %.1f / %.1f (adaptive / lanes / lanes2)\n",
                  std::string(SeqInputsName(inputs)).c_str(), delta, a / n, c / n, l / n, l2 / n,
                  100.0 * (l / a - 1.0), 100.0 * (l / c - 1.0), 100.0 * (l2 / l - 1.0), n * 2 / 1e6 / enc_a,
                  n * 2 / 1e6 / enc_l, n * 2 / 1e6 / enc_l2, n * 2 / 1e6 / dec_a, n * 2 / 1e6 / dec_l,
                  n * 2 / 1e6 / dec_l2);
      EXPECT_GT(l, 0);
    }
    SeqResources::Default().Clear();
  }
}

// The closed loop on the test pieces at a fixed step, with the measurement
// knobs of SeqLoopParams: ideal code lengths of the adaptive coder (bits per
// element) and squared error relative to the coding domain's energy.
struct LoopScore {
  double bits = 0, rel_mse = 0;
};
LoopScore ScoreLoop(const SeqProfile& p, const std::vector<Chunk>& pieces, float delta, int feature_bits,
                    int transform_bits) {
  const uint32_t d = p.head_dim;
  double bits = 0, n = 0, sse = 0, energy = 0;
  for (const Chunk& c : pieces) {
    internal::SeqLoopParams params;
    params.delta0 = delta;
    params.mult_code.assign(p.groups(), 128);
    params.feature_bits = feature_bits;
    params.transform_bits = transform_bits;
    internal::SeqLoopResult loop;
    const std::vector<float> x = internal::SeqCodingDomain(c, p.pre_rope_keys);
    internal::SeqEncodeLoop(p, c.shape.tokens, x.data(), nullptr, params, &loop);
    const uint32_t T = c.shape.tokens;
    for (uint32_t g = 0; g < p.groups(); ++g) {
      bits += internal::SeqEstimateGroupBits(loop.q.data() + size_t{g} * T * d, T, d);
      sse += loop.sse[g];
    }
    for (float v : x) energy += double(v) * v;
    n += double(x.size());
  }
  return {bits / n, sse / energy};
}

// The profile's predictors and KLT bases in `bits`-bit fixed point, one
// power-of-two scale per group (internal::SeqRoundFixedPoint).
void WeightsToFixedPoint(SeqProfile* p, int bits) {
  for (std::vector<float>* w : {&p->predictor, &p->basis}) {
    const size_t per_group = w->size() / p->groups();
    for (size_t g0 = 0; g0 < w->size(); g0 += per_group) {
      internal::SeqRoundFixedPoint(w->data() + g0, 1, per_group, per_group, bits);
    }
  }
}

TEST_F(SeqGpuVariantsMeasure, FixedPointWeights) {
  std::printf("%6s %6s %7s %12s %12s %12s\n", "inputs", "delta", "weights", "bits/elem", "K rel MSE", "V rel MSE");
  for (SeqInputs inputs : {SeqInputs::kSameHead, SeqInputs::kAllHeads}) {
    auto calibrated = Calibrated(inputs);
    ASSERT_TRUE(calibrated.ok()) << calibrated.status().ToString();
    for (int bits : {32, 16, 12, 8}) {
      SeqProfile p = *calibrated;
      if (bits < 32) WeightsToFixedPoint(&p, bits);
      ASSERT_TRUE(p.Validate().ok());
      auto shared = std::make_shared<const SeqProfile>(std::move(p));
      SeqResources::Default().AddProfile(shared);
      for (const char* delta : {"0.5", "1"}) {
        auto codec = MakeCodec(std::string("seq:delta=") + delta + ",profile=" + shared->Id());
        ASSERT_TRUE(codec.ok()) << codec.status().ToString();
        double coded = 0, n = 0, err[2] = {0, 0}, energy[2] = {0, 0};
        for (const Chunk& piece : test_pieces_) {
          auto bytes = EncodeChunk(piece, **codec);
          ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
          auto back = DecodeChunk(*bytes);
          ASSERT_TRUE(back.ok()) << back.status().ToString();
          coded += 8.0 * bytes->size();
          n += 2.0 * piece.shape.elements();
          for (int kv = 0; kv < 2; ++kv) {
            const std::vector<uint8_t>& a = kv ? piece.v : piece.k;
            const std::vector<uint8_t>& b = kv ? back->v : back->k;
            for (size_t e = 0; e < a.size() / 2; ++e) {
              uint16_t x, y;
              std::memcpy(&x, &a[2 * e], 2);
              std::memcpy(&y, &b[2 * e], 2);
              const double xf = Bf16ToFloat(x), yf = Bf16ToFloat(y);
              err[kv] += (xf - yf) * (xf - yf);
              energy[kv] += xf * xf;
            }
          }
        }
        std::printf("%6s %6s %7s %12.4f %12.5f %12.5f\n", std::string(SeqInputsName(inputs)).c_str(), delta,
                    bits == 32 ? "float" : ("int" + std::to_string(bits)).c_str(), coded / n, err[0] / energy[0],
                    err[1] / energy[1]);
      }
    }
    SeqResources::Default().Clear();
  }
}

TEST_F(SeqGpuVariantsMeasure, FixedPointFeatures) {
  std::printf("%6s %6s %7s %8s %12s %12s\n", "inputs", "delta", "weights", "features", "bits/elem", "rel MSE");
  for (SeqInputs inputs : {SeqInputs::kSameHead, SeqInputs::kAllHeads}) {
    auto calibrated = Calibrated(inputs);
    ASSERT_TRUE(calibrated.ok()) << calibrated.status().ToString();
    for (int weight_bits : {32, 16}) {
      SeqProfile p = *calibrated;
      if (weight_bits < 32) WeightsToFixedPoint(&p, weight_bits);
      for (float delta : {0.5f, 1.0f}) {
        for (int feature_bits : {0, 16, 12, 8}) {
          const LoopScore score = ScoreLoop(p, test_pieces_, delta, feature_bits, 0);
          std::printf("%6s %6.2f %7s %8s %12.4f %12.5f\n", std::string(SeqInputsName(inputs)).c_str(), delta,
                      weight_bits == 32 ? "float" : "int16",
                      feature_bits == 0 ? "float" : ("int" + std::to_string(feature_bits)).c_str(), score.bits,
                      score.rel_mse);
        }
      }
    }
  }
}

// All three dense products in fixed point: the predictor (weights and
// features), the encoder's forward transform (residual rows and basis) and
// the reconstruction (step_scale * U, SeqLoopParams::transform_bits), as an
// integer dense stage that tensor cores compute exactly would need them
// (docs/seq_codec_design.md, "What next" 8). Same method as
// FixedPointFeatures: the closed loop, ideal code lengths of the adaptive
// coder, squared error in the coding domain.
TEST_F(SeqGpuVariantsMeasure, FixedPointTransform) {
  std::printf("%6s %6s %7s %8s %9s %12s %12s\n", "inputs", "delta", "weights", "features", "transform", "bits/elem",
              "rel MSE");
  struct Row {
    int weights, features, transform;
  };
  const Row rows[] = {{32, 0, 0},  {32, 0, 16}, {32, 0, 12},  {32, 0, 8},   {16, 16, 16},
                      {16, 12, 12}, {16, 8, 16}, {12, 12, 12}, {16, 16, 8}};
  auto name = [](int bits, int none) { return bits == none ? std::string("float") : "int" + std::to_string(bits); };
  for (SeqInputs inputs : {SeqInputs::kSameHead, SeqInputs::kAllHeads}) {
    auto calibrated = Calibrated(inputs);
    ASSERT_TRUE(calibrated.ok()) << calibrated.status().ToString();
    for (float delta : {0.5f, 1.0f}) {
      for (const Row& row : rows) {
        SeqProfile p = *calibrated;
        if (row.weights < 32) WeightsToFixedPoint(&p, row.weights);
        const LoopScore score = ScoreLoop(p, test_pieces_, delta, row.features, row.transform);
        std::printf("%6s %6.2f %7s %8s %9s %12.4f %12.5f\n", std::string(SeqInputsName(inputs)).c_str(), delta,
                    name(row.weights, 32).c_str(), name(row.features, 0).c_str(), name(row.transform, 0).c_str(),
                    score.bits, score.rel_mse);
        EXPECT_GT(score.bits, 0);
      }
    }
  }
}

TEST_F(SeqGpuVariantsMeasure, RateControlTrials) {
  auto profile = Calibrated(SeqInputs::kSameHead);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  auto shared = std::make_shared<const SeqProfile>(*profile);
  SeqResources::Default().AddProfile(shared);
  std::printf("%9s %5s %12s %11s %10s\n", "streams", "bits", "trials mean", "trials max", "bits/elem");
  for (const char* streams : {"adaptive", "lanes"}) {
    for (const char* bits : {"1.5", "2", "3"}) {
      auto codec = MakeCodec(std::string("seq:bits=") + bits + ",streams=" + streams + ",profile=" + shared->Id());
      ASSERT_TRUE(codec.ok()) << codec.status().ToString();
      uint32_t sum = 0, most = 0;
      double coded = 0, n = 0;
      for (const Chunk& piece : test_pieces_) {
        auto bytes = EncodeChunk(piece, **codec);
        ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
        const uint32_t trials = SeqLastEncodeInfo().trials;
        sum += trials;
        most = std::max(most, trials);
        coded += 8.0 * bytes->size();
        n += 2.0 * piece.shape.elements();
      }
      std::printf("%9s %5s %12.2f %11u %10.4f\n", streams, bits, double(sum) / test_pieces_.size(), most, coded / n);
      EXPECT_GT(most, 0u);
    }
  }
  SeqResources::Default().Clear();
}

// Lane models for a faster GPU decode (docs/gpu.md: the lane decoder is
// issue-bound, ~140 instructions per symbol). Each variant is refitted on
// the calibration pieces' symbols with the implemented format's tables per
// scale class (SeqLaneClass, no shift) and scored on the test pieces as ideal
// code lengths of the coded components (groups' bitmaps, lane bytes and
// states are the same for every variant and left out); counts start at 1/2.
//   magnitude, |prev| ctx  the implemented structure: magnitudes 0..14 and an
//                          escape, contexts by the previous token's |q| (0, 1,
//                          >= 2), a sign operation per non-zero symbol;
//   magnitude, no ctx      the same with one context;
//   signed, |prev| ctx     one symbol per value: -14..14 and two escapes (one
//                          per sign), no separate sign operation;
//   signed, signed ctx     the same, contexts 0, +1, -1, >= 2, <= -2.
// Escapes add their Exp-Golomb-0 bits in every variant. Operations: rANS
// operations per coded symbol (magnitude or value, sign, escape bits). Also
// printed: the share of symbols beyond int8 and the largest |q| (what 8- or
// 16-bit symbol storage on a GPU would have to carry aside).
TEST_F(SeqGpuVariantsMeasure, LaneAlphabetsForFasterDecode) {
  auto profile = Calibrated(SeqInputs::kSameHead);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const SeqProfile& p = *profile;
  ASSERT_FALSE(p.static_scale.empty());
  const uint32_t G = p.groups(), d = p.head_dim, T = kPiece;
  constexpr int kClasses = internal::kSeqStaticClasses;
  constexpr int kMag = kSeqSymbols;              // 0..14, 15 = escape
  constexpr int kSigned = 2 * kSeqSymbols - 1;   // -14..14 at v + 14, escapes 29 (+), 30 (-)
  constexpr int kEsc = kSeqSymbols - 1;
  auto mag_of = [](int32_t v) { return static_cast<uint32_t>(v < 0 ? -int64_t{v} : v); };
  auto mag_symbol = [&](int32_t v) { return std::min<uint32_t>(mag_of(v), kEsc); };
  auto signed_symbol = [&](int32_t v) -> int {
    if (mag_of(v) >= static_cast<uint32_t>(kEsc)) return v > 0 ? kSigned - 2 : kSigned - 1;
    return v + (kEsc - 1);
  };
  auto abs_ctx = [](int32_t prev) { return prev == 0 ? 0 : (prev == 1 || prev == -1) ? 1 : 2; };
  auto signed_ctx = [](int32_t prev) { return prev == 0 ? 0 : prev == 1 ? 1 : prev == -1 ? 2 : prev > 0 ? 3 : 4; };
  auto escape_bits = [&](int32_t v) {  // Exp-Golomb 0 of |q| - 15: 2 floor(log2(e)) + 1 bits, e = |q| - 14
    const uint32_t m = mag_of(v);
    return m >= static_cast<uint32_t>(kEsc) ? 2 * std::floor(std::log2(double(m - kEsc + 1))) + 1 : 0.0;
  };
  struct Model {
    const char* name;
    int contexts, symbols;
    bool sign_op;
  };
  const Model models[] = {{"magnitude, |prev| ctx", 3, kMag, true},
                          {"magnitude, no ctx", 1, kMag, true},
                          {"signed, |prev| ctx", 3, kSigned, false},
                          {"signed, signed ctx", 5, kSigned, false}};
  auto slot = [&](int m, int32_t v, int32_t prev) -> std::pair<int, int> {  // (context, symbol)
    switch (m) {
      case 0: return {abs_ctx(prev), static_cast<int>(mag_symbol(v))};
      case 1: return {0, static_cast<int>(mag_symbol(v))};
      case 2: return {abs_ctx(prev), signed_symbol(v)};
      default: return {signed_ctx(prev), signed_symbol(v)};
    }
  };
  // Visits every coded component's symbols of every group: f(class, v, prev).
  auto each_symbol = [&](const std::vector<int32_t>& q, int16_t step_class, auto&& f) {
    std::vector<int16_t> k(d);
    for (uint32_t g = 0; g < G; ++g) {
      internal::SeqLaneClasses(p, g, step_class, 128, k.data());
      const int32_t* qg = q.data() + size_t{g} * T * d;
      for (uint32_t i = 0; i < d; ++i) {
        bool coded = false;
        for (uint32_t t = 0; t < T && !coded; ++t) coded = qg[size_t{t} * d + i] != 0;
        if (!coded) continue;
        const int cls = internal::SeqLaneTable(k[i], 0);
        int32_t prev = 0;
        for (uint32_t t = 0; t < T; ++t) {
          const int32_t v = qg[size_t{t} * d + i];
          f(cls, v, prev);
          prev = v;
        }
      }
    }
  };
  std::printf("lane models (same-head profile, calibration doc00-03 %zu pieces, scored on doc04-07 %zu pieces): "
              "bits per element of K and V (coded components' payload) / rANS operations per coded symbol\n",
              cal_.size(), test_pieces_.size());
  std::printf("%6s %24s %24s %24s %24s   %s\n", "delta", models[0].name, models[1].name, models[2].name,
              models[3].name, "coded symbols / non-zero share, beyond int8, largest");
  for (float delta : {0.125f, 0.25f, 0.5f, 1.0f, 2.0f}) {
    const int16_t step_class = internal::SeqStepClass(delta);
    std::vector<std::vector<double>> counts;
    for (const Model& m : models) counts.emplace_back(size_t(kClasses) * m.contexts * m.symbols, 0.5);
    for (const Chunk& c : cal_) {
      each_symbol(Symbols(p, c, delta), step_class, [&](int cls, int32_t v, int32_t prev) {
        for (int m = 0; m < 4; ++m) {
          const auto [ctx, sym] = slot(m, v, prev);
          counts[m][(size_t{uint32_t(cls)} * models[m].contexts + ctx) * models[m].symbols + sym] += 1;
        }
      });
    }
    // Code lengths per row entry.
    std::vector<std::vector<double>> len(4);
    for (int m = 0; m < 4; ++m) {
      const int n = models[m].symbols;
      len[m].resize(counts[m].size());
      for (size_t r = 0; r < counts[m].size(); r += n) {
        double total = 0;
        for (int s2 = 0; s2 < n; ++s2) total += counts[m][r + s2];
        for (int s2 = 0; s2 < n; ++s2) len[m][r + s2] = -std::log2(counts[m][r + s2] / total);
      }
    }
    double bits[4] = {0, 0, 0, 0}, ops[4] = {0, 0, 0, 0}, coded = 0, nonzero = 0, elements = 0;
    double over127 = 0;  // symbols beyond int8
    uint32_t max_mag = 0;
    for (const Chunk& c : test_pieces_) {
      elements += 2.0 * c.shape.elements();
      each_symbol(Symbols(p, c, delta), step_class, [&](int cls, int32_t v, int32_t prev) {
        coded += 1;
        nonzero += v != 0;
        over127 += mag_of(v) > 127;
        max_mag = std::max(max_mag, mag_of(v));
        const double esc = escape_bits(v);
        for (int m = 0; m < 4; ++m) {
          const auto [ctx, sym] = slot(m, v, prev);
          const bool sign = models[m].sign_op && v != 0;
          bits[m] += len[m][(size_t{uint32_t(cls)} * models[m].contexts + ctx) * models[m].symbols + sym] + esc +
                     (sign ? 1 : 0);
          ops[m] += 1 + esc + (sign ? 1 : 0);
        }
      });
    }
    std::printf("%6.2f", delta);
    for (int m = 0; m < 4; ++m) std::printf(" %16.4f / %5.3f", bits[m] / elements, ops[m] / coded);
    std::printf("   %.3g / %.3f   |q| > 127: %.2g, max |q| %u\n", coded, nonzero / coded, over127 / coded, max_mag);
    EXPECT_GT(bits[0], 0);
  }
}

// The lane kernel executes a fixed budget of instructions per lock-step step
// of a group's 16 lanes (ncu, docs/BENCHMARKS.md "lane kernel's symbol
// search"), so its time follows the steps, not the bits. Most symbols are
// zero at useful steps (73 % at delta0 1). Here: the signed lane model
// (31 symbols per scale class, no context: streams=lanes2 as implemented)
// against the same model with R more symbols per class, "the lane's next
// 2^k symbols are zero" (k = 1 .. R, greedy longest run, the class of the
// run's first component), each refitted on the calibration pieces' symbols
// and scored on the test pieces (ideal code lengths of the coded components'
// payload, escapes' Exp-Golomb bits included). Columns: bits per element of
// K and V; rANS operations per coded symbol; half-warp steps (per group the
// most operations of any lane, summed) relative to lanes2's.
TEST_F(SeqGpuVariantsMeasure, LaneZeroRuns) {
  auto profile = Calibrated(SeqInputs::kSameHead);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const SeqProfile& p = *profile;
  ASSERT_FALSE(p.static_scale.empty());
  const uint32_t G = p.groups(), d = p.head_dim, T = kPiece;
  constexpr int kClasses = internal::kSeqStaticClasses;
  constexpr int kBase = internal::kSeqSignedSymbols;  // q = -14..14, two escapes
  constexpr int kMaxRuns = 4;                         // runs of 2, 4, 8, 16 zeros
  auto mag_of = [](int32_t v) { return static_cast<uint32_t>(v < 0 ? -int64_t{v} : v); };
  auto escape_ops = [&](int32_t v) {  // Exp-Golomb 0 of |q| - 15, one operation per bit
    const uint32_t m = mag_of(v);
    return m >= 15 ? 2 * std::floor(std::log2(double(m - 14))) + 1 : 0.0;
  };
  // One parsed token of a lane: (class, symbol, operations beyond the symbol's).
  struct Token {
    int cls, sym;
    double extra;
  };
  // Every lane's tokens of every group of q, with at most `runs` run symbols;
  // f(group, lane, token). Lanes as the format: coded component c on lane
  // c % lanes, a lane's symbols token-major.
  // Every group of q: f(g, its symbols, its components' classes, its coded components, its lanes).
  auto each_group = [&](const std::vector<int32_t>& q, int16_t step_class, auto&& f) {
    std::vector<int16_t> k(d);
    std::vector<uint32_t> coded;
    for (uint32_t g = 0; g < G; ++g) {
      internal::SeqLaneClasses(p, g, step_class, 128, k.data());
      const int32_t* qg = q.data() + size_t{g} * T * d;
      coded.clear();
      for (uint32_t i = 0; i < d; ++i) {
        bool any = false;
        for (uint32_t t = 0; t < T && !any; ++t) any = qg[size_t{t} * d + i] != 0;
        if (any) coded.push_back(i);
      }
      const uint32_t n = static_cast<uint32_t>(coded.size());
      f(g, qg, k, coded, std::min<uint32_t>(n, internal::kSeqLaneMax));
    }
  };
  auto each_token = [&](const std::vector<int32_t>& q, int16_t step_class, int runs, bool columns, auto&& f) {
    each_group(q, step_class, [&](uint32_t g, const int32_t* qg, const std::vector<int16_t>& k,
                                  const std::vector<uint32_t>& coded, uint32_t lanes) {
      const uint32_t n = static_cast<uint32_t>(coded.size());
      for (uint32_t j = 0; j < lanes; ++j) {
        std::vector<uint32_t> mine;  // the lane's components
        for (uint32_t c = j; c < n; c += lanes) mine.push_back(coded[c]);
        const size_t m = mine.size(), positions = m * T;
        // Token-major (the format's order), or component-major (a component's tokens in a row; runs
        // then stay within one component).
        auto comp_at = [&](size_t pos) { return columns ? mine[pos / T] : mine[pos % m]; };
        auto at = [&](size_t pos) {
          return columns ? qg[(pos % T) * d + mine[pos / T]] : qg[(pos / m) * d + mine[pos % m]];
        };
        for (size_t pos = 0; pos < positions;) {
          const int cls = internal::SeqLaneTable(k[comp_at(pos)], 0);
          int run = 0;
          for (int r = runs; r >= 1 && run == 0; --r) {
            const size_t len = size_t{1} << r;
            if (pos + len > positions || (columns && (pos + len - 1) / T != pos / T)) continue;
            bool zeros = true;
            for (size_t e = 0; e < len && zeros; ++e) zeros = at(pos + e) == 0;
            if (zeros) run = r;
          }
          if (run > 0) {
            f(g, j, Token{cls, kBase + run - 1, 0.0});
            pos += size_t{1} << run;
          } else {
            const int32_t v = at(pos);
            f(g, j, Token{cls, internal::SeqSignedSymbol(v), escape_ops(v)});
            pos += 1;
          }
        }
      }
    });
  };
  for (const bool columns : {false, true}) {
    std::printf(
        "lane zero runs, %s (same-head profile, calibration doc00-03 %zu pieces, scored on doc04-07 %zu "
        "pieces): bits per element / rANS operations per coded symbol / half-warp steps vs lanes2\n",
        columns ? "component-major" : "token-major", cal_.size(), test_pieces_.size());
    std::printf("%6s", "delta");
    for (int runs = 0; runs <= kMaxRuns; ++runs) std::printf(" %27s%d", "runs up to ", runs == 0 ? 0 : 1 << runs);
    std::printf("\n");
    for (float delta : {0.25f, 0.5f, 1.0f, 2.0f}) {
      const int16_t step_class = internal::SeqStepClass(delta);
      std::vector<std::vector<int32_t>> cal_q, test_q;
      for (const Chunk& c : cal_) cal_q.push_back(Symbols(p, c, delta));
      for (const Chunk& c : test_pieces_) test_q.push_back(Symbols(p, c, delta));
      double elements = 0, coded_symbols = 0;
      for (const Chunk& c : test_pieces_) elements += 2.0 * c.shape.elements();
      std::printf("%6.2f", delta);
      double base_steps = 0;
      for (int runs = 0; runs <= kMaxRuns; ++runs) {
        const int symbols = kBase + runs;
        std::vector<double> counts(size_t(kClasses) * symbols, 0.5);  // add-1/2
        for (const auto& q : cal_q) {
          each_token(q, step_class, runs, columns,
                     [&](uint32_t, uint32_t, const Token& tk) { counts[size_t(tk.cls) * symbols + tk.sym] += 1; });
        }
        std::vector<double> len(counts.size());
        for (size_t r = 0; r < counts.size(); r += symbols) {
          double total = 0;
          for (int s2 = 0; s2 < symbols; ++s2) total += counts[r + s2];
          for (int s2 = 0; s2 < symbols; ++s2) len[r + s2] = -std::log2(counts[r + s2] / total);
        }
        double bits = 0, ops = 0, steps = 0, coded = 0;
        for (const auto& q : test_q) {
          std::vector<double> lane_ops(size_t{G} * internal::kSeqLaneMax, 0);
          each_token(q, step_class, runs, columns, [&](uint32_t g, uint32_t j, const Token& tk) {
            bits += len[size_t(tk.cls) * symbols + tk.sym] + tk.extra;
            ops += 1 + tk.extra;
            lane_ops[size_t{g} * internal::kSeqLaneMax + j] += 1 + tk.extra;
            coded += tk.sym >= kBase ? double(1u << (tk.sym - kBase + 1)) : 1.0;
          });
          for (uint32_t g = 0; g < G; ++g) {
            steps += *std::max_element(lane_ops.begin() + size_t{g} * internal::kSeqLaneMax,
                                       lane_ops.begin() + size_t{g + 1} * internal::kSeqLaneMax);
          }
        }
        if (runs == 0) {
          base_steps = steps;
          coded_symbols = coded;
        }
        EXPECT_EQ(coded, coded_symbols);  // every parse covers every coded symbol once
        std::printf(" %13.4f / %5.3f / %5.3f", bits / elements, ops / coded, steps / base_steps);
      }
      std::printf("\n");
    }
  }
  // Run-level coding per component column (component-major within the lane):
  // per non-zero symbol the zeros before it (run 0 .. kRuns - 1, kRuns: an
  // escape with the Exp-Golomb 0 code of run - kRuns, kRuns + 1: the column's
  // end after its last non-zero) and then its value (the signed alphabet
  // without zero); every model per scale class. The same sequence without
  // redundancy, so with i.i.d. symbols per class the same ideal size.
  constexpr int kRuns = 16, kValues = kBase - 1;
  auto value_symbol = [&](int32_t v) {
    const int s0 = internal::SeqSignedSymbol(v);
    return s0 > internal::kSeqSignedZero ? s0 - 1 : s0;
  };
  auto eg_ops = [](uint32_t e) { return 2 * std::floor(std::log2(double(e + 1))) + 1; };
  // f(group, lane, is_value, class, symbol, extra operations).
  auto each_run_token = [&](const std::vector<int32_t>& q, int16_t step_class, bool joint, auto&& f) {
    each_group(q, step_class, [&](uint32_t g, const int32_t* qg, const std::vector<int16_t>& k,
                                  const std::vector<uint32_t>& coded, uint32_t lanes) {
      const uint32_t n = static_cast<uint32_t>(coded.size());
      for (uint32_t c = 0; c < n; ++c) {
        const uint32_t i = coded[c], j = c % lanes;
        const int cls = internal::SeqLaneTable(k[i], 0);
        uint32_t run = 0;
        for (uint32_t t = 0; t < T; ++t) {
          const int32_t v = qg[size_t{t} * d + i];
          if (v == 0) {
            ++run;
            continue;
          }
          if (joint) {  // one symbol: min(run, 3) x (-3 .. -1, 1 .. 3, big -, big +)
            const uint32_t m = mag_of(v);
            const int level = m >= 4 ? (v < 0 ? 6 : 7) : (v < 0 ? 3 - int(m) : 2 + int(m));
            double extra = (run >= 3 ? eg_ops(run - 3) : 0.0) + (m >= 4 ? eg_ops(m - 4) : 0.0);
            f(g, j, false, cls, int(std::min<uint32_t>(run, 3)) * 8 + level, extra);
          } else {
            if (run < uint32_t{kRuns}) {
              f(g, j, false, cls, static_cast<int>(run), 0.0);
            } else {
              f(g, j, false, cls, kRuns, eg_ops(run - kRuns));
            }
            f(g, j, true, cls, value_symbol(v), escape_ops(v));
          }
          run = 0;
        }
        if (run > 0) f(g, j, false, cls, joint ? 32 : kRuns + 1, 0.0);  // the column's end
      }
    });
  };
  for (const bool joint : {false, true}) {
    // joint: one symbol per non-zero, min(run, 3) x (-3 .. -1, 1 .. 3, larger negative, larger positive),
    // then Exp-Golomb 0 bits for run - 3 and |q| - 4; symbol 32 ends the column.
    const int run_symbols = joint ? 33 : kRuns + 2;
    std::printf(
        "run-level coding per component column, %s: bits per element / rANS operations per coded "
        "symbol / half-warp steps vs lanes2\n",
        joint ? "(run, level) joint" : "run then level");
    for (float delta : {0.25f, 0.5f, 1.0f, 2.0f}) {
      const int16_t step_class = internal::SeqStepClass(delta);
      std::vector<double> run_counts(size_t(kClasses) * run_symbols, 0.5),
          value_counts(size_t(kClasses) * kValues, 0.5);
      for (const Chunk& c : cal_) {
        each_run_token(
            Symbols(p, c, delta), step_class, joint, [&](uint32_t, uint32_t, bool is_value, int cls, int sym, double) {
              (is_value ? value_counts[size_t(cls) * kValues + sym] : run_counts[size_t(cls) * run_symbols + sym]) += 1;
            });
      }
      auto lengths = [](const std::vector<double>& counts, int symbols) {
        std::vector<double> len(counts.size());
        for (size_t r = 0; r < counts.size(); r += symbols) {
          double total = 0;
          for (int s2 = 0; s2 < symbols; ++s2) total += counts[r + s2];
          for (int s2 = 0; s2 < symbols; ++s2) len[r + s2] = -std::log2(counts[r + s2] / total);
        }
        return len;
      };
      const std::vector<double> run_len = lengths(run_counts, run_symbols), value_len = lengths(value_counts, kValues);
      double bits = 0, ops = 0, steps = 0, base_steps = 0, coded = 0, elements = 0;
      for (const Chunk& c : test_pieces_) {
        elements += 2.0 * c.shape.elements();
        const std::vector<int32_t> q = Symbols(p, c, delta);
        std::vector<double> lane_ops(size_t{G} * internal::kSeqLaneMax, 0), base_ops(lane_ops.size(), 0);
        each_run_token(
            q, step_class, joint, [&](uint32_t g, uint32_t j, bool is_value, int cls, int sym, double extra) {
              bits += (is_value ? value_len[size_t(cls) * kValues + sym] : run_len[size_t(cls) * run_symbols + sym]) +
                      extra;
              ops += 1 + extra;
              lane_ops[size_t{g} * internal::kSeqLaneMax + j] += 1 + extra;
            });
        each_token(q, step_class, 0, false, [&](uint32_t g, uint32_t j, const Token& tk) {
          base_ops[size_t{g} * internal::kSeqLaneMax + j] += 1 + tk.extra;
          coded += 1;
        });
        for (uint32_t g = 0; g < G; ++g) {
          const auto lo = size_t{g} * internal::kSeqLaneMax, hi = lo + internal::kSeqLaneMax;
          steps += *std::max_element(lane_ops.begin() + lo, lane_ops.begin() + hi);
          base_steps += *std::max_element(base_ops.begin() + lo, base_ops.begin() + hi);
        }
      }
      std::printf("%6.2f %13.4f / %5.3f / %5.3f\n", delta, bits / elements, ops / coded, steps / base_steps);
      EXPECT_GT(bits, 0);
    }
  }
}

}  // namespace
}  // namespace seqkv
