// Tests of the engine-exact float32 rotary tables (codec/src/engine_rope.h).
// The comparison with real dumps is in kv_model_test.cc.
#include "../../codec/src/engine_rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "util/test_util.h"

namespace seqkv::internal {
namespace {

using test::RandomFloats;

// Distance in float ulps (same sign assumed near the values tested).
int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return std::llabs(int64_t{ia} - ib);
}

TEST(EngineRopeTest, TablesFollowTheFloat32Recipe) {
  const RopeParams rope{RopeStyle::kRotateHalf, 10000.0, 64};
  const RopeTable table = MakeRopeTable(rope, 64, 0, 1024);
  ASSERT_EQ(table.rotary_dim, 64u);
  ASSERT_EQ(table.inv_freq.size(), 32u);
  ASSERT_EQ(table.cos.size(), 1024u * 64);
  for (uint32_t i = 0; i < 32; ++i) {
    // libm in double, rounded the same way: equal (the power is far from a tie).
    const float exponent = static_cast<float>(2 * i) / 64.0f;
    const float want = 1.0f / static_cast<float>(std::pow(10000.0, static_cast<double>(exponent)));
    EXPECT_EQ(table.inv_freq[i], want) << i;
  }
  EXPECT_EQ(table.inv_freq[0], 1.0f);
  int64_t worst = 0;
  for (uint32_t t = 0; t < 1024; ++t) {
    for (uint32_t i = 0; i < 32; ++i) {
      const float angle = static_cast<float>(t) * table.inv_freq[i];
      const float c = table.cos[t * 64 + i], s = table.sin[t * 64 + i];
      EXPECT_EQ(c, table.cos[t * 64 + i + 32]);  // emb = cat(freqs, freqs)
      EXPECT_EQ(s, table.sin[t * 64 + i + 32]);
      worst = std::max(worst, UlpDistance(c, static_cast<float>(std::cos(static_cast<double>(angle)))));
      worst = std::max(worst, UlpDistance(s, static_cast<float>(std::sin(static_cast<double>(angle)))));
    }
  }
  EXPECT_EQ(worst, 0) << "cos/sin differ from glibc's double cos/sin rounded to float";
  // Positions start at first_position.
  const RopeTable later = MakeRopeTable(rope, 64, 1000, 24);
  EXPECT_TRUE(std::equal(later.cos.begin(), later.cos.end(), table.cos.begin() + 1000 * 64));
  EXPECT_TRUE(std::equal(later.sin.begin(), later.sin.end(), table.sin.begin() + 1000 * 64));
}

TEST(EngineRopeTest, RotateHalfMatchesTheTorchFormula) {
  const RopeParams rope{RopeStyle::kRotateHalf, 500000.0, 128};
  const uint32_t d = 128, T = 9, h = 64;
  const RopeTable table = MakeRopeTable(rope, d, 77, T);
  auto x = RandomFloats(size_t{T} * d, 1);
  auto y = x;
  ApplyRope(table, RopeStyle::kRotateHalf, y.data());
  for (uint32_t t = 0; t < T; ++t) {
    const float* c = &table.cos[t * d];
    const float* s = &table.sin[t * d];
    const float* xr = &x[t * d];
    for (uint32_t i = 0; i < h; ++i) {
      float first = xr[i] * c[i];
      float second = -xr[i + h] * s[i];
      EXPECT_EQ(y[t * d + i], first + second);
      first = xr[i + h] * c[i + h];
      second = xr[i] * s[i + h];
      EXPECT_EQ(y[t * d + i + h], first + second);
    }
  }
  // Undo brings it back to within float rounding.
  UndoRope(table, RopeStyle::kRotateHalf, y.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-5f) << i;
}

TEST(EngineRopeTest, InterleavedIsRotateHalfOnPermutedChannels) {
  const uint32_t d = 64, T = 5;
  const RopeTable half = MakeRopeTable({RopeStyle::kRotateHalf, 10000.0, d}, d, 3, T);
  const RopeTable inter = MakeRopeTable({RopeStyle::kInterleaved, 10000.0, d}, d, 3, T);
  auto x = RandomFloats(size_t{T} * d, 2);
  // Channel 2i of the interleaved layout is channel i of rotate-half; 2i+1 is i+32.
  std::vector<float> xi(x.size());
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < d / 2; ++i) {
      xi[t * d + 2 * i] = x[t * d + i];
      xi[t * d + 2 * i + 1] = x[t * d + i + d / 2];
    }
  }
  ApplyRope(half, RopeStyle::kRotateHalf, x.data());
  ApplyRope(inter, RopeStyle::kInterleaved, xi.data());
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < d / 2; ++i) {
      EXPECT_EQ(xi[t * d + 2 * i], x[t * d + i]);
      EXPECT_EQ(xi[t * d + 2 * i + 1], x[t * d + i + d / 2]);
    }
  }
}

TEST(EngineRopeTest, PartialRotaryAndNoneLeaveChannelsAlone) {
  const uint32_t d = 96, T = 4;
  const RopeTable table = MakeRopeTable({RopeStyle::kRotateHalf, 10000.0, 32}, d, 0, T);
  EXPECT_EQ(table.rotary_dim, 32u);
  EXPECT_EQ(table.cos.size(), size_t{T} * 32);
  auto x = RandomFloats(size_t{T} * d, 3);
  auto y = x;
  ApplyRope(table, RopeStyle::kRotateHalf, y.data());
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t c = 32; c < d; ++c) EXPECT_EQ(y[t * d + c], x[t * d + c]);
    if (t > 0) {
      EXPECT_NE(y[t * d + 1], x[t * d + 1]);
    }
  }
  // The rotation's frequencies come from the rotary dimension, not head_dim.
  EXPECT_EQ(table.inv_freq[1], MakeRopeTable({RopeStyle::kRotateHalf, 10000.0, 32}, 32, 0, 1).inv_freq[1]);

  for (RopeParams none :
       {RopeParams{RopeStyle::kNone, 10000.0, 64}, RopeParams{RopeStyle::kRotateHalf, 10000.0, 0},
        RopeParams{RopeStyle::kRotateHalf, 10000.0, 128}, RopeParams{RopeStyle::kRotateHalf, 0.0, 64}}) {
    const RopeTable identity = MakeRopeTable(none, 64, 0, 2);
    EXPECT_EQ(identity.rotary_dim, 0u);
    auto z = RandomFloats(128, 4), z0 = z;
    ApplyRope(identity, none.style, z.data());
    EXPECT_EQ(z, z0);
    UndoRope(identity, none.style, z.data());
    EXPECT_EQ(z, z0);
  }
  // kNone at apply time leaves data alone whatever the table.
  auto z = RandomFloats(size_t{T} * d, 5), z0 = z;
  ApplyRope(table, RopeStyle::kNone, z.data());
  EXPECT_EQ(z, z0);
}

}  // namespace
}  // namespace seqkv::internal
