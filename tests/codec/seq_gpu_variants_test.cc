// What a GPU-oriented variant of the seq codec's entropy stage would cost in
// size, measured on the dev dumps (docs/gpu.md, "Sequential codec: the whole
// decode"). Not a format: a measurement, only with SEQKV_MEASURE=1.
//
// Symbols: a same-head profile calibrated (no model) on 256-token pieces of
// doc00-03, the codec's own closed loop (SeqEncodeLoop) on pieces of doc04-07
// at fixed steps. Compared, in bits per element of K and V:
//   adaptive      the format as it is (SeqEstimateGroupBits: adaptive models,
//                 8 interleaved lanes sharing one word stream)
//   static        per (group, component, context) frequencies fitted on the
//                 calibration pieces and kept in the profile (no per-chunk
//                 cost), so a decoder needs no model updates: a lookup table
//   + 32 lanes    either, with 32 independent lane streams (a warp per group):
//                 24 more rANS states and a u16 length per lane per group
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../../codec/src/seq_lossy_core.h"
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

TEST(SeqGpuVariantsMeasure, StaticModelsAndIndependentLanes) {
  if (!std::getenv("SEQKV_MEASURE")) GTEST_SKIP() << "set SEQKV_MEASURE=1";
  if (test::DevDump("doc07.safetensors").empty()) GTEST_SKIP() << "no ../shared/kvdata/dev";
  const std::vector<Chunk> cal = Pieces({0, 1, 2, 3});
  const std::vector<Chunk> test_pieces = Pieces({4, 5, 6, 7});
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kSameHead;
  auto profile = CalibrateSeqProfile(cal, o, nullptr);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const SeqProfile& p = *profile;
  const uint32_t G = p.groups(), d = p.head_dim, T = kPiece;
  const double elements_per_piece = 2.0 * p.layers * p.kv_heads * T * d;
  std::printf("seq entropy variants: same-head profile on 256-token pieces of doc00-03 (%zu), scored on doc04-07 "
              "(%zu)\n", cal.size(), test_pieces.size());
  std::printf("%6s %10s %10s %18s %16s\n", "delta", "adaptive", "static", "adaptive+32 lanes", "static+32 lanes");
  for (float delta : {0.5f, 1.0f, 2.0f}) {
    // Static models: counts per (group, component, context, class) on the calibration pieces.
    std::vector<double> counts(size_t{G} * d * kSeqContexts * kSeqSymbols, 0.5);  // add-1/2
    for (const Chunk& c : cal) {
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
    for (const Chunk& c : test_pieces) {
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
    const double n = elements_per_piece * test_pieces.size();
    std::printf("%6.2f %10.4f %10.4f %18.4f %16.4f\n", delta, adaptive / n, stat / n, (adaptive + lanes_extra) / n,
                (stat + lanes_extra) / n);
    EXPECT_GT(adaptive, 0);
  }
}

}  // namespace
}  // namespace seqkv
