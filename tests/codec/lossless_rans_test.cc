// lossless:coder=rans: bit-exact round trips on every dtype and odd shapes,
// the plane coder's own edge cases, corruption always DATA_LOSS, and the
// size on the dev dumps against zstd.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../../codec/src/lossless_rans.h"
#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

using internal::kLrBlockSymbols;
using internal::kLrTotal;
using internal::LrDecodePlane;
using internal::LrEncodePlane;
using internal::LrNormalize;

TEST(LosslessRansTest, NormalizeSumsToTheTotalAndKeepsEverySymbol) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    uint64_t counts[256] = {};
    uint64_t total = 0;
    const int present = 1 + static_cast<int>(rng() % 256);
    for (int s = 0; s < present; ++s) {
      // Skewed: one dominant symbol and many rare ones (the overshoot case).
      const uint64_t c = s == 0 ? 1 + rng() % 1000000 : 1 + rng() % (trial % 2 ? 3 : 5000);
      counts[(s * 37 + trial) % 256] += c;
      total += c;
    }
    uint32_t f[256];
    LrNormalize(counts, total, f);
    uint32_t sum = 0;
    for (int s = 0; s < 256; ++s) {
      EXPECT_EQ(f[s] > 0, counts[s] > 0) << s;
      sum += f[s];
    }
    EXPECT_EQ(sum, kLrTotal);
  }
}

std::vector<uint8_t> RoundTripPlane(const std::vector<uint8_t>& sym, uint32_t layers) {
  const uint64_t per_layer = sym.size() / layers;
  std::vector<uint8_t> coded = LrEncodePlane(sym.data(), layers, per_layer);
  EXPECT_LE(coded.size(), internal::LrMaxPlaneBytes(layers, per_layer));
  std::vector<uint8_t> out(sym.size(), 0xAB);
  Status s = LrDecodePlane(coded, layers, per_layer, out.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, sym);
  return coded;
}

TEST(LosslessRansTest, PlaneRoundTripsAtBlockEdges) {
  std::mt19937 rng(11);
  for (uint64_t per_layer : {uint64_t{1}, uint64_t{31}, uint64_t{32}, uint64_t{33}, uint64_t{kLrBlockSymbols - 1},
                             uint64_t{kLrBlockSymbols}, uint64_t{kLrBlockSymbols + 1}, uint64_t{3 * kLrBlockSymbols + 77}}) {
    for (uint32_t layers : {1u, 3u}) {
      std::vector<uint8_t> sym(per_layer * layers);
      std::geometric_distribution<int> geo(0.3);
      for (auto& v : sym) v = static_cast<uint8_t>(120 + std::min(geo(rng), 100));
      RoundTripPlane(sym, layers);
    }
  }
  // One symbol only (frequency 2048: no words at all), every byte value, and
  // a uniform plane (8 bits: about one word per two symbols).
  RoundTripPlane(std::vector<uint8_t>(50000, 7), 2);
  std::vector<uint8_t> all(256 * 100);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i * 101);
  RoundTripPlane(all, 1);
  std::vector<uint8_t> uniform(100000);
  for (auto& v : uniform) v = static_cast<uint8_t>(rng());
  std::vector<uint8_t> coded = RoundTripPlane(uniform, 4);
  EXPECT_LT(coded.size(), uniform.size() * 1.05);  // 4 tables of 256 symbols: 3 KB of the 4 %
}

TEST(LosslessRansTest, CorruptionIsDataLossNeverACrash) {
  std::mt19937 rng(3);
  std::vector<uint8_t> sym(2 * kLrBlockSymbols + 500);
  std::geometric_distribution<int> geo(0.25);
  for (auto& v : sym) v = static_cast<uint8_t>(110 + std::min(geo(rng), 60));
  const uint64_t per_layer = sym.size() / 2;
  const std::vector<uint8_t> coded = LrEncodePlane(sym.data(), 2, per_layer);
  std::vector<uint8_t> out(sym.size());
  int caught = 0, wrong = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> bad = coded;
    if (trial % 3 == 0) {
      bad.resize(rng() % bad.size());
    } else {
      const size_t at = rng() % bad.size();
      bad[at] = static_cast<uint8_t>(bad[at] ^ (1u << (rng() % 8)));
    }
    Status s = LrDecodePlane(bad, 2, per_layer, out.data());
    if (!s.ok()) {
      EXPECT_EQ(s.code(), StatusCode::kDataLoss);
      ++caught;
    } else if (out != sym) {
      ++wrong;  // a flip the format cannot see (the container checksum does)
    }
  }
  std::printf("corruptions caught by the plane decoder: %d / 2000 (decoded wrong: %d)\n", caught, wrong);
  EXPECT_GT(caught, 1900);
}

TEST(LosslessRansTest, ChunksRoundTripBitExactOnEveryDtype) {
  for (DType dt : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    for (KvShape shape : {KvShape{1, 1, 1, 8}, KvShape{3, 2, 17, 64}, KvShape{2, 4, 300, 128}}) {
      Chunk c = test::RandomChunk(shape, dt, 5);
      test::RoundTrip rt = test::EncodeDecode("lossless:coder=rans", c);
      EXPECT_EQ(rt.decoded.k, c.k);
      EXPECT_EQ(rt.decoded.v, c.v);
    }
  }
  auto codec = test::Make("lossless:coder=rans");
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->Spec(), "lossless:coder=rans");
  EXPECT_EQ(MakeCodec("lossless:coder=rans,level=3").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("lossless:coder=lz4").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeCodec("lossless:coder=zstd,level=5").ok());
}

// Prints the sizes behind docs/format.md (runs everywhere, under a second).
TEST(LosslessRansTest, DevDumpsRoundTripAndMatchZstdLevel3) {
  if (test::DevDump("doc00.safetensors").empty()) GTEST_SKIP() << "no ../shared/kvdata/dev";
  double rans_sum = 0, zstd_sum = 0;
  int files = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string path = test::DevDump("doc0" + std::to_string(i) + ".safetensors");
    if (path.empty()) break;
    auto dump = ReadKvDump(path);
    ASSERT_TRUE(dump.ok()) << dump.status().ToString();
    const Chunk& c = dump->chunk;
    test::RoundTrip rans = test::EncodeDecode("lossless:coder=rans", c);
    test::RoundTrip zstd = test::EncodeDecode("lossless", c);
    EXPECT_EQ(rans.decoded.k, c.k);
    EXPECT_EQ(rans.decoded.v, c.v);
    const double elems = 2.0 * c.shape.elements();
    const double rans_bits = 8.0 * rans.bytes / elems, zstd_bits = 8.0 * zstd.bytes / elems;
    std::printf("doc0%d: lossless:coder=rans %.3f bits/element, lossless (zstd-3) %.3f\n", i, rans_bits, zstd_bits);
    // The order-0 exponent entropy per layer is 2.58-2.61 bits and the
    // sign-mantissa byte 7.97 (measured 2026-11-29).
    EXPECT_LT(rans_bits, 10.8);
    rans_sum += rans_bits;
    zstd_sum += zstd_bits;
    ++files;
  }
  std::printf("mean over %d dumps: coder=rans %.3f, zstd-3 %.3f bits/element\n", files, rans_sum / files,
              zstd_sum / files);
  EXPECT_LT(rans_sum / files, zstd_sum / files + 0.05);
}

}  // namespace
}  // namespace seqkv
