// Tests of the rANS coders (codec/src/rans.cc): round trips, closeness to
// the empirical entropy, hostile streams and tables, determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../../codec/src/rans.h"

namespace seqkv::internal {
namespace {

std::vector<uint32_t> Skewed(size_t n, uint32_t alphabet, double decay, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> w(alphabet);
  for (uint32_t s = 0; s < alphabet; ++s) w[s] = std::pow(decay, s);
  std::discrete_distribution<uint32_t> dist(w.begin(), w.end());
  std::vector<uint32_t> out(n);
  for (auto& x : out) x = dist(rng);
  return out;
}

std::vector<uint64_t> Counts(const std::vector<uint32_t>& symbols, uint32_t alphabet) {
  std::vector<uint64_t> c(alphabet);
  for (uint32_t s : symbols) ++c[s];
  return c;
}

double EntropyBytes(const std::vector<uint64_t>& counts) {
  double total = 0, bits = 0;
  for (uint64_t c : counts) total += c;
  for (uint64_t c : counts) {
    if (c) bits -= c * std::log2(c / total);
  }
  return bits / 8;
}

TEST(RansTest, StaticRoundTripsAcrossLanesAndScales) {
  for (int lanes : {1, 2, 7, 32, 64}) {
    for (int scale : {8, 12, 15, 16}) {
      for (double decay : {0.3, 0.9, 1.0}) {
        auto symbols = Skewed(5000 + lanes, 200, decay, lanes * 100 + scale);
        auto table = BuildRansTable(Counts(symbols, 200), scale);
        ASSERT_TRUE(table.ok()) << table.status().ToString();
        auto bytes = RansEncode(symbols, *table, lanes);
        ASSERT_TRUE(bytes.ok());
        std::vector<uint32_t> back(symbols.size());
        ASSERT_TRUE(RansDecode(*bytes, *table, lanes, back).ok());
        EXPECT_EQ(back, symbols) << lanes << " lanes, scale " << scale;
      }
    }
  }
}

TEST(RansTest, EdgeCases) {
  // One symbol only: frequency 2^scale, zero bits per symbol.
  std::vector<uint32_t> same(1000, 3);
  auto table = BuildRansTable(Counts(same, 5), 12);
  ASSERT_TRUE(table.ok());
  auto bytes = RansEncode(same, *table, 4);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size(), 16u);  // just the four lane states
  std::vector<uint32_t> back(1000);
  ASSERT_TRUE(RansDecode(*bytes, *table, 4, back).ok());
  EXPECT_EQ(back, same);
  // Empty input.
  auto empty = RansEncode({}, *table, 32);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(RansDecode(*empty, *table, 32, {}).ok());
  // A symbol not in the table.
  std::vector<uint32_t> bad = {0};
  EXPECT_FALSE(RansEncode(bad, *table, 1).ok());
  // More symbols than slots.
  std::vector<uint64_t> many(300, 1);
  EXPECT_FALSE(BuildRansTable(many, 8).ok());
  EXPECT_TRUE(BuildRansTable(many, 9).ok());
  EXPECT_FALSE(BuildRansTable(std::vector<uint64_t>(10, 0), 12).ok());
}

TEST(RansTest, WithinOnePercentOfEntropy) {
  for (double decay : {0.5, 0.8, 0.97}) {
    auto symbols = Skewed(1 << 20, 256, decay, 42);
    auto counts = Counts(symbols, 256);
    auto table = BuildRansTable(counts, 15);
    ASSERT_TRUE(table.ok());
    auto bytes = RansEncode(symbols, *table, 32);
    ASSERT_TRUE(bytes.ok());
    std::vector<uint8_t> serialized;
    SerializeRansTable(*table, &serialized);
    const double entropy = EntropyBytes(counts);
    const double size = static_cast<double>(bytes->size() + serialized.size());
    EXPECT_LT(size, entropy * 1.01) << "decay " << decay;
    EXPECT_GT(size, entropy * 0.999);
  }
}

TEST(RansTest, TableSerializationRoundTripsAndRejectsGarbage) {
  std::vector<uint64_t> counts(1000, 0);
  counts[0] = 5;
  counts[17] = 100;
  counts[500] = 1;
  counts[999] = 7;
  auto table = BuildRansTable(counts, 12);
  ASSERT_TRUE(table.ok());
  std::vector<uint8_t> bytes;
  SerializeRansTable(*table, &bytes);
  EXPECT_LT(bytes.size(), 20u);
  ByteReader r(bytes);
  auto back = ParseRansTable(&r, 1000);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->freq, table->freq);
  EXPECT_EQ(r.remaining(), 0u);
  ByteReader small(bytes);
  EXPECT_FALSE(ParseRansTable(&small, 999).ok());  // alphabet over the caller's bound
  for (size_t n = 0; n < bytes.size(); ++n) {
    ByteReader cut(std::span<const uint8_t>(bytes).first(n));
    EXPECT_FALSE(ParseRansTable(&cut, 1000).ok()) << n;
  }
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(rng() % 24);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    ByteReader jr(junk);
    (void)ParseRansTable(&jr, 1 << 16);
  }
}

TEST(RansTest, EveryTruncationAndMostFlipsAreDetected) {
  auto symbols = Skewed(3000, 40, 0.85, 9);
  auto table = BuildRansTable(Counts(symbols, 40), 12);
  ASSERT_TRUE(table.ok());
  for (int lanes : {1, 32}) {
    auto bytes = RansEncode(symbols, *table, lanes);
    ASSERT_TRUE(bytes.ok());
    std::vector<uint32_t> out(symbols.size());
    for (size_t n = 0; n < bytes->size(); ++n) {
      EXPECT_FALSE(RansDecode(std::span<const uint8_t>(*bytes).first(n), *table, lanes, out).ok()) << n;
    }
    int detected = 0, total = 0;
    for (size_t i = 0; i < bytes->size(); ++i) {
      auto bad = *bytes;
      bad[i] ^= static_cast<uint8_t>(1u << (i % 8));
      Status s = RansDecode(bad, *table, lanes, out);
      ++total;
      if (!s.ok()) {
        EXPECT_EQ(s.code(), StatusCode::kDataLoss);
        ++detected;
      }
      for (uint32_t x : out) ASSERT_LT(x, 40u);  // undetected: still valid symbols
    }
    EXPECT_GT(detected, total * 9 / 10) << lanes;
    // Too many symbols asked for: runs out of words, no overread.
    std::vector<uint32_t> more(symbols.size() * 2);
    EXPECT_FALSE(RansDecode(*bytes, *table, lanes, more).ok());
  }
}

TEST(RansTest, Deterministic) {
  auto symbols = Skewed(10000, 64, 0.9, 1);
  auto t1 = BuildRansTable(Counts(symbols, 64), 14);
  auto t2 = BuildRansTable(Counts(symbols, 64), 14);
  ASSERT_TRUE(t1.ok() && t2.ok());
  EXPECT_EQ(t1->freq, t2->freq);
  EXPECT_EQ(*RansEncode(symbols, *t1, 32), *RansEncode(symbols, *t2, 32));
}

TEST(BinaryRansTest, RoundTripsAndCostsTheModelEntropy) {
  std::mt19937_64 rng(3);
  const int n = 200000;
  std::vector<int> bits(n);
  std::vector<uint32_t> probs(n);
  double ideal = 0;
  for (int i = 0; i < n; ++i) {
    probs[i] = 1 + rng() % 65535;
    const double p1 = probs[i] / 65536.0;
    bits[i] = (rng() % 65536) < probs[i] ? 1 : 0;
    ideal -= std::log2(bits[i] ? p1 : 1 - p1);
  }
  BinaryRansEncoder enc;
  for (int i = 0; i < n; ++i) enc.Put(bits[i], probs[i]);
  auto bytes = enc.Finish();
  EXPECT_LT(bytes.size() * 8.0, ideal * 1.01 + 64);
  BinaryRansDecoder dec(bytes);
  for (int i = 0; i < n; ++i) ASSERT_EQ(dec.Get(probs[i]), bits[i]) << i;
  EXPECT_TRUE(dec.Finish().ok());
  // Truncation is always caught; extreme probabilities are clamped.
  for (size_t cut : {size_t{0}, size_t{3}, bytes.size() / 2, bytes.size() - 2}) {
    BinaryRansDecoder d(std::span<const uint8_t>(bytes).first(cut));
    for (int i = 0; i < n; ++i) (void)d.Get(probs[i]);
    EXPECT_FALSE(d.Finish().ok()) << cut;
  }
  BinaryRansEncoder e2;
  e2.Put(1, 0);
  e2.Put(0, 65536);
  auto b2 = e2.Finish();
  BinaryRansDecoder d2(b2);
  EXPECT_EQ(d2.Get(0), 1);
  EXPECT_EQ(d2.Get(65536), 0);
  EXPECT_TRUE(d2.Finish().ok());
}

}  // namespace
}  // namespace seqkv::internal
