// Tests of the turboquant codec (codec/src/turboquant_codec.cc) and of its
// building blocks, the Lloyd–Max tables and the randomized Hadamard rotation.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

// Private headers of codec/ (the tables and the rotation are tested directly).
#include "../../codec/src/hadamard.h"
#include "../../codec/src/lloyd_max.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

using test::EncodeDecode;
using test::Floats;
using test::Make;
using test::RelativeMse;
using test::RoundTrip;

using internal::GaussianCodebook;
using internal::RandomizedHadamard;

// D_mse = E||x - x_hat||^2 for ||x|| = 1 from the paper (Table/Thm. 1), B = 1..4.
constexpr double kPaperMse[] = {0.36, 0.117, 0.03, 0.009};


// [1, 1, tokens, d] fp32 chunk whose K and V rows are random unit vectors.
Chunk UnitVectors(uint32_t d, uint32_t tokens, uint64_t seed) {
  Chunk c = test::RandomChunk({1, 1, tokens, d}, DType::kFP32, seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (auto* tensor : {&c.k, &c.v}) {
    std::vector<float> x(c.shape.elements());
    for (uint32_t t = 0; t < tokens; ++t) {
      double sq = 0;
      for (uint32_t j = 0; j < d; ++j) {
        x[t * d + j] = normal(rng);
        sq += double{x[t * d + j]} * x[t * d + j];
      }
      for (uint32_t j = 0; j < d; ++j) x[t * d + j] = static_cast<float>(x[t * d + j] / std::sqrt(sq));
    }
    FromFloat(c.dtype, x.data(), x.size(), tensor->data());
  }
  return c;
}


// Bits of all sections the codec writes for chunk (no container header).
double SectionBits(const std::string& spec, const Chunk& chunk) {
  std::vector<Section> sections;
  EXPECT_TRUE(Make(spec)->Encode(chunk, &sections).ok());
  double bits = 0;
  for (const Section& s : sections) bits += 8.0 * s.data.size();
  return bits;
}

// Mean over all K and V vectors of ||x - x_hat||^2.
double MeanSquaredError(const Chunk& a, const Chunk& b) {
  double err = 0;
  for (int kv = 0; kv < 2; ++kv) {
    auto x = Floats(a, kv ? a.v : a.k);
    auto y = Floats(b, kv ? b.v : b.k);
    for (size_t i = 0; i < x.size(); ++i) err += (double{x[i]} - y[i]) * (double{x[i]} - y[i]);
  }
  return err / (2.0 * a.shape.vectors());
}

TEST(LloydMaxTest, TablesMatchSolver) {
  // Max (1960) for 1..4 bits; 5 bits by numerical integration of the table.
  const double known_mse[] = {0.3634, 0.1175, 0.03455, 0.009497, 0.002505};
  for (int bits = 1; bits <= internal::kGaussianCodebookMaxBits; ++bits) {
    const auto solution = internal::SolveGaussianLloydMax(bits);
    const GaussianCodebook& book = internal::StandardNormalCodebook(bits);
    ASSERT_EQ(book.bits, bits);
    for (int i = 0; i < (1 << bits); ++i) {
      EXPECT_NEAR(book.centroids[i], solution.centroids[i], 1e-6) << "bits " << bits << " centroid " << i;
    }
    for (int i = 0; i + 1 < (1 << bits); ++i) {
      EXPECT_NEAR(book.thresholds[i], solution.thresholds[i], 1e-6) << "bits " << bits << " threshold " << i;
      EXPECT_LT(book.centroids[i], book.thresholds[i]);
      EXPECT_LT(book.thresholds[i], book.centroids[i + 1]);
    }
    EXPECT_NEAR(solution.mse, known_mse[bits - 1], 2e-3 * known_mse[bits - 1]) << "bits " << bits;
  }
}

TEST(LloydMaxTest, QuantizeToCellIsTheCellContainingTheValue) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  for (int bits = 1; bits <= internal::kGaussianCodebookMaxBits; ++bits) {
    const GaussianCodebook& book = internal::StandardNormalCodebook(bits);
    for (int i = 0; i < 2000; ++i) {
      float v = normal(rng);
      uint32_t expected = 0;
      while (expected + 1 < (1u << bits) && book.thresholds[expected] <= v) ++expected;
      ASSERT_EQ(internal::QuantizeToCell(book, v), expected) << "bits " << bits << " v " << v;
    }
    EXPECT_EQ(internal::QuantizeToCell(book, book.thresholds[0]), 1u);  // a threshold goes up
  }
}

TEST(HadamardTest, RotationIsOrthogonalAndInvertible) {
  for (uint32_t n : {1u, 2u, 8u, 64u, 128u, 4096u}) {
    RandomizedHadamard rotation(n, 42);
    std::mt19937 rng(n);
    std::normal_distribution<float> normal;
    std::vector<float> x(n), y;
    double norm = 0;
    for (float& v : x) {
      v = normal(rng);
      norm += double{v} * v;
    }
    y = x;
    rotation.Forward(y.data());
    double rotated_norm = 0;
    for (float v : y) rotated_norm += double{v} * v;
    EXPECT_NEAR(rotated_norm, norm, 1e-5 * norm) << n;
    rotation.Inverse(y.data());
    for (uint32_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], x[i], 1e-5) << n;
  }
  EXPECT_EQ(internal::NextPowerOfTwo(1), 1u);
  EXPECT_EQ(internal::NextPowerOfTwo(80), 128u);
  EXPECT_EQ(internal::NextPowerOfTwo(128), 128u);
}

TEST(HadamardTest, SpikeIsSpreadEvenly) {
  RandomizedHadamard rotation(64, 1);
  std::vector<float> x(64, 0.0f);
  x[5] = 1.0f;
  rotation.Forward(x.data());
  for (float v : x) EXPECT_FLOAT_EQ(std::fabs(v), 0.125f);
}

TEST(TurboQuantTest, DistortionOfUnitVectorsMatchesPaper) {
  for (uint32_t d : {128u, 64u}) {
    const Chunk chunk = UnitVectors(d, 2048, d);
    for (int bits = 1; bits <= 4; ++bits) {
      RoundTrip rt = EncodeDecode("turboquant:bits=" + std::to_string(bits), chunk);
      const double mse = MeanSquaredError(chunk, rt.decoded);
      std::printf("d=%u bits=%d D_mse=%.5f (paper %.3f)\n", d, bits, mse, kPaperMse[bits - 1]);
      EXPECT_NEAR(mse, kPaperMse[bits - 1], 0.2 * kPaperMse[bits - 1]) << "d " << d << " bits " << bits;
    }
  }
}

TEST(TurboQuantTest, DeterministicAcrossCallsInstancesAndThreads) {
  const Chunk chunk = test::RandomChunk({2, 2, 50, 64}, DType::kBF16, 3);
  for (const char* spec : {"turboquant:bits=2", "turboquant:bits=3.5"}) {
    auto a = Make(spec), b = Make(spec);
    auto first = EncodeChunk(chunk, *a);
    auto second = EncodeChunk(chunk, *a);
    auto other = EncodeChunk(chunk, *b);
    ASSERT_TRUE(first.ok() && second.ok() && other.ok());
    EXPECT_EQ(*first, *second) << spec;
    EXPECT_EQ(*first, *other) << spec;
    std::vector<uint8_t> from_thread[2];
    std::thread t0([&] { from_thread[0] = EncodeChunk(chunk, *a).value(); });
    std::thread t1([&] { from_thread[1] = EncodeChunk(chunk, *a).value(); });
    t0.join();
    t1.join();
    EXPECT_EQ(from_thread[0], *first);
    EXPECT_EQ(from_thread[1], *first);
  }
  // A different seed is a different rotation, hence different codes.
  auto seeded = Make("turboquant:bits=2,seed=7");
  EXPECT_NE(EncodeChunk(chunk, *seeded).value(), EncodeChunk(chunk, *Make("turboquant:bits=2")).value());
}

TEST(TurboQuantTest, RoundTripThroughContainerForEveryDtype) {
  for (DType dtype : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    const Chunk chunk = test::RandomChunk({2, 3, 40, 64}, dtype, 11);
    RoundTrip rt = EncodeDecode("turboquant:bits=4", chunk);
    const Chunk& out = rt.decoded;
    EXPECT_EQ(out.shape, chunk.shape);
    EXPECT_EQ(out.dtype, dtype);
    EXPECT_EQ(out.tokens, chunk.tokens);
    EXPECT_EQ(out.first_position, chunk.first_position);
    ASSERT_EQ(out.k.size(), chunk.k.size());
    ASSERT_EQ(out.v.size(), chunk.v.size());
    EXPECT_LT(RelativeMse(Floats(chunk, chunk.k), Floats(out, out.k)), 0.02) << DTypeName(dtype);
    EXPECT_LT(RelativeMse(Floats(chunk, chunk.v), Floats(out, out.v)), 0.02) << DTypeName(dtype);
  }
}

TEST(TurboQuantTest, BitsPerElement) {
  const Chunk chunk = test::RandomChunk({6, 2, 1024, 64}, DType::kBF16, 5);
  const double elements = 2.0 * chunk.shape.elements();
  for (int bits = 1; bits <= 4; ++bits) {
    RoundTrip rt = EncodeDecode("turboquant:bits=" + std::to_string(bits), chunk);
    const double bpe = rt.bytes * 8.0 / elements;
    std::printf("bits=%d: %.4f bits/element\n", bits, bpe);
    EXPECT_NEAR(bpe, bits + 16.0 / 64, 0.02) << bits;
  }
  for (double bits : {2.5, 3.5}) {
    char spec[64];
    std::snprintf(spec, sizeof spec, "turboquant:bits=%.1f", bits);
    RoundTrip rt = EncodeDecode(spec, chunk);
    const double bpe = rt.bytes * 8.0 / elements;
    // Two fp16 norms per vector, a 64-bit mask per (layer, head) of 1024 tokens.
    std::printf("%s: %.4f bits/element\n", spec, bpe);
    EXPECT_NEAR(bpe, bits + 32.0 / 64 + 1.0 / 1024, 0.02) << spec;
  }
}

TEST(TurboQuantTest, OutlierSplitLiesBetweenItsTwoWidths) {
  // RandomChunk gives every 16th channel 4x the scale: outlier channels.
  const Chunk chunk = test::RandomChunk({2, 2, 256, 64}, DType::kFP32, 9);
  for (int b = 1; b <= 4; ++b) {
    auto mse = [&](const std::string& spec) {
      RoundTrip rt = EncodeDecode(spec, chunk);
      return MeanSquaredError(chunk, rt.decoded);
    };
    const double lower = mse("turboquant:bits=" + std::to_string(b));
    const double split = mse("turboquant:bits=" + std::to_string(b) + ".5");
    // outliers >= head_dim: every channel at B + 1 bits (5 bits for B = 4).
    const double upper = mse("turboquant:bits=" + std::to_string(b) + ",outliers=64");
    if (b < 4) {
      EXPECT_EQ(upper, mse("turboquant:bits=" + std::to_string(b + 1)));
    }
    std::printf("B=%d: mse %.4f, split %.4f, B+1 %.4f\n", b, lower, split, upper);
    EXPECT_LT(split, lower) << b;
    EXPECT_GT(split, upper) << b;
  }
  // Four outlier channels at 2 bits + 1: better than plain 2 bits at a tiny cost.
  const double plain = MeanSquaredError(chunk, EncodeDecode("turboquant:bits=2", chunk).decoded);
  const double four = MeanSquaredError(chunk, EncodeDecode("turboquant:bits=2,outliers=4", chunk).decoded);
  EXPECT_LT(four, plain);
}

TEST(TurboQuantTest, OutlierMaskHoldsTheLargestChannels) {
  // RandomChunk gives channels 3, 19, 35 and 51 of 64 four times the scale.
  const Chunk chunk = test::RandomChunk({1, 2, 300, 64}, DType::kBF16, 10);
  std::vector<Section> sections;
  ASSERT_TRUE(Make("turboquant:bits=2,outliers=4")->Encode(chunk, &sections).ok());
  ASSERT_EQ(sections.size(), 6u);
  for (uint32_t type : {5u, 6u}) {  // K masks, V masks
    ASSERT_EQ(sections[type - 1].type, type);
    ASSERT_EQ(sections[type - 1].data.size(), 2u * 64 / 8);
    for (size_t head = 0; head < 2; ++head) {
      uint64_t mask = 0;
      std::memcpy(&mask, sections[type - 1].data.data() + 8 * head, 8);
      EXPECT_EQ(mask, (1ull << 3) | (1ull << 19) | (1ull << 35) | (1ull << 51)) << type << " " << head;
    }
  }
}

TEST(TurboQuantTest, SpecIsCanonical) {
  const std::pair<const char*, const char*> cases[] = {
      {"turboquant:bits=3", "turboquant:bits=3,outliers=0,seed=1592614637"},
      {"turboquant", "turboquant:bits=4,outliers=0,seed=1592614637"},
      {"turboquant:bits=2.5", "turboquant:bits=2.5,outliers=half,seed=1592614637"},
      {"turboquant:bits=2,outliers=half", "turboquant:bits=2.5,outliers=half,seed=1592614637"},
      {"turboquant:bits=3.5,outliers=16", "turboquant:bits=3,outliers=16,seed=1592614637"},
      {"turboquant:bits=4.0,seed=9", "turboquant:bits=4,outliers=0,seed=9"},
      {"turboquant:bits=4.5", "turboquant:bits=4.5,outliers=half,seed=1592614637"},
  };
  for (const auto& [in, canonical] : cases) {
    auto codec = Make(in);
    ASSERT_TRUE(codec);
    EXPECT_EQ(codec->Spec(), canonical) << in;
    EXPECT_EQ(codec->id(), CodecId::kTurboQuant);
    auto again = Make(codec->Spec());
    ASSERT_TRUE(again);
    EXPECT_EQ(again->Spec(), canonical);
  }
  // bits=2.5 and bits=2,outliers=half encode identically.
  const Chunk chunk = test::RandomChunk({1, 2, 20, 64}, DType::kBF16, 1);
  EXPECT_EQ(EncodeChunk(chunk, *Make("turboquant:bits=2.5")).value(),
            EncodeChunk(chunk, *Make("turboquant:bits=2,outliers=half")).value());
}

TEST(TurboQuantTest, BadSpecsAreRejected) {
  for (const char* spec :
       {"turboquant:bits=0", "turboquant:bits=7", "turboquant:bits=abc", "turboquant:bits=5",
        "turboquant:bits=2.25", "turboquant:bits=0.5", "turboquant:bits=-1", "turboquant:bits=nan",
        "turboquant:foo=1", "turboquant:bits=2,group=32", "turboquant:outliers=-1",
        "turboquant:outliers=many", "turboquant:outliers=5000", "turboquant:seed=-1",
        "turboquant:seed=4294967296", "turboquant:seed=x"}) {
    auto codec = MakeCodec(spec);
    ASSERT_FALSE(codec.ok()) << spec;
    EXPECT_EQ(codec.status().code(), StatusCode::kInvalidArgument) << spec << ": " << codec.status().ToString();
  }
}

// Encodes with the codec directly and decodes a modified section list.
class SectionTamperTest : public ::testing::Test {
 protected:
  void Encode(const std::string& spec, const KvShape& shape) {
    codec_ = Make(spec);
    chunk_ = test::RandomChunk(shape, DType::kBF16, 4);
    ASSERT_TRUE(codec_->Encode(chunk_, &sections_).ok());
  }
  Status Decode(const std::vector<Section>& sections) const {
    std::vector<SectionView> views;
    for (const Section& s : sections) views.push_back({s.type, s.data});
    Chunk out;
    out.shape = chunk_.shape;
    out.dtype = chunk_.dtype;
    out.tokens = chunk_.tokens;
    return codec_->Decode(views, &out);
  }
  std::unique_ptr<Codec> codec_;
  Chunk chunk_;
  std::vector<Section> sections_;
};

TEST_F(SectionTamperTest, TurboQuantTruncatedOrCorruptSectionsAreDataLoss) {
  for (const char* spec : {"turboquant:bits=3", "turboquant:bits=2.5"}) {
    Encode(spec, {2, 2, 9, 64});
    ASSERT_TRUE(Decode(sections_).ok()) << spec;
    const size_t count = sections_.size();
    EXPECT_EQ(count, std::string(spec).find(".5") != std::string::npos ? 6u : 4u);
    for (size_t i = 0; i < count; ++i) {
      auto shorter = sections_;
      shorter[i].data.pop_back();
      EXPECT_EQ(Decode(shorter).code(), StatusCode::kDataLoss) << spec << " section " << i;
      auto longer = sections_;
      longer[i].data.push_back(0);
      EXPECT_EQ(Decode(longer).code(), StatusCode::kDataLoss) << spec << " section " << i;
      auto emptied = sections_;
      emptied[i].data.clear();
      EXPECT_EQ(Decode(emptied).code(), StatusCode::kDataLoss) << spec << " section " << i;
      auto retyped = sections_;
      retyped[i].type = 99;
      EXPECT_EQ(Decode(retyped).code(), StatusCode::kDataLoss) << spec << " section " << i;
    }
    auto missing = sections_;
    missing.pop_back();
    EXPECT_EQ(Decode(missing).code(), StatusCode::kDataLoss);
    auto extra = sections_;
    extra.push_back(sections_[0]);
    EXPECT_EQ(Decode(extra).code(), StatusCode::kDataLoss);
    auto bad_norm = sections_;
    bad_norm[0].data[1] = 0x7C;  // first K norm -> +Inf
    EXPECT_EQ(Decode(bad_norm).code(), StatusCode::kDataLoss);
    bad_norm[0].data[1] = 0x80;  // negative
    EXPECT_EQ(Decode(bad_norm).code(), StatusCode::kDataLoss);
  }
  // Split: a mask with the wrong number of channels set.
  Encode("turboquant:bits=2.5", {1, 1, 9, 64});
  auto bad_mask = sections_;
  bad_mask[4].data[0] ^= 1;
  EXPECT_EQ(Decode(bad_mask).code(), StatusCode::kDataLoss);
  // Codes whose last byte has padding bits set: 1 vector of d = 1 at 3 bits leaves 5.
  Encode("turboquant:bits=3", {1, 1, 1, 1});
  auto padded = sections_;
  padded[1].data.back() |= 0x80;
  EXPECT_EQ(Decode(padded).code(), StatusCode::kDataLoss);
}

TEST(TurboQuantTest, NonPowerOfTwoHeadDim) {
  const Chunk unit = UnitVectors(80, 1024, 80);
  for (int bits = 1; bits <= 4; ++bits) {
    RoundTrip rt = EncodeDecode("turboquant:bits=" + std::to_string(bits), unit);
    const double mse = MeanSquaredError(unit, rt.decoded);
    const double bpe = SectionBits("turboquant:bits=" + std::to_string(bits), unit) / (2.0 * unit.shape.elements());
    std::printf("d=80 bits=%d D_mse=%.5f, %.3f bits/element\n", bits, mse, bpe);
    EXPECT_LT(mse, 1.2 * kPaperMse[bits - 1]);
    EXPECT_DOUBLE_EQ(bpe, (bits * 128.0 + 16) / 80);
  }
  for (const char* spec : {"turboquant:bits=2.5", "turboquant:bits=1,outliers=3", "turboquant:bits=3,outliers=80"}) {
    const Chunk chunk = test::RandomChunk({2, 1, 33, 80}, DType::kFP16, 2);
    RoundTrip rt = EncodeDecode(spec, chunk);
    EXPECT_LT(RelativeMse(Floats(chunk, chunk.k), Floats(rt.decoded, rt.decoded.k)), 0.4) << spec;
  }
  // Tiny head dims.
  for (uint32_t d : {1u, 2u, 3u}) {
    Chunk chunk = test::RandomChunk({1, 1, 5, d}, DType::kBF16, d);
    chunk.rope = {};
    RoundTrip rt = EncodeDecode("turboquant:bits=2.5", chunk);
    EXPECT_EQ(rt.decoded.k.size(), chunk.k.size()) << d;
  }
}

TEST(TurboQuantTest, ZeroVectorsAndBadInputs) {
  Chunk chunk = test::RandomChunk({1, 1, 4, 64}, DType::kFP32, 6);
  std::fill(chunk.k.begin(), chunk.k.end(), 0);
  RoundTrip rt = EncodeDecode("turboquant:bits=2", chunk);
  for (float x : Floats(rt.decoded, rt.decoded.k)) EXPECT_EQ(x, 0.0f);

  auto codec = Make("turboquant:bits=2");
  std::vector<Section> sections;
  Chunk bad = test::RandomChunk({1, 1, 4, 64}, DType::kFP32, 6);
  const float nan = std::nanf("");
  std::memcpy(bad.v.data() + 8, &nan, 4);
  EXPECT_EQ(codec->Encode(bad, &sections).code(), StatusCode::kInvalidArgument);
  bad = test::RandomChunk({1, 1, 4, 64}, DType::kFP32, 6);
  const float huge = 1e5f;  // norm beyond fp16
  std::memcpy(bad.k.data(), &huge, 4);
  EXPECT_EQ(codec->Encode(bad, &sections).code(), StatusCode::kInvalidArgument);
}

TEST(TurboQuantTest, RealDumpRelativeMse) {
  const std::string path = test::DevDump("doc00.safetensors");
  ASSERT_TRUE(!path.empty() && std::filesystem::exists(path)) << "missing " << path;
  auto dump = ReadKvDump(path);
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  const Chunk& chunk = dump->chunk;
  const auto k = Floats(chunk, chunk.k), v = Floats(chunk, chunk.v);
  const double raw_mb = 2.0 * chunk.TensorBytes() / 1e6;
  for (const char* spec : {"turboquant:bits=1", "turboquant:bits=2", "turboquant:bits=3", "turboquant:bits=4",
                           "turboquant:bits=2.5", "turboquant:bits=3.5"}) {
    auto codec = Make(spec);
    ASSERT_NE(codec, nullptr);
    const test::TimedRoundTrip rt = test::BestOfRuns(*codec, chunk, 3);
    ASSERT_TRUE(rt.ok) << spec;
    const double rel_k = RelativeMse(k, Floats(rt.decoded, rt.decoded.k));
    const double rel_v = RelativeMse(v, Floats(rt.decoded, rt.decoded.v));
    const double bpe = rt.bytes.size() * 8.0 / (2.0 * chunk.shape.elements());
    std::printf("%-22s %.3f bits/elem  rel MSE K %.5f V %.5f  encode %.0f MB/s decode %.0f MB/s\n", spec, bpe,
                rel_k, rel_v, raw_mb / rt.encode_s, raw_mb / rt.decode_s);
    const double b = std::atof(std::strchr(spec, '=') + 1);
    if (b == std::floor(b)) {
      // The rotation makes the relative error close to D_mse whatever the data.
      const double paper = kPaperMse[static_cast<int>(b) - 1];
      EXPECT_GT(rel_k, 0.5 * paper) << spec;
      EXPECT_LT(rel_k, 1.5 * paper) << spec;
      EXPECT_GT(rel_v, 0.5 * paper) << spec;
      EXPECT_LT(rel_v, 1.5 * paper) << spec;
    } else {
      const double lower = kPaperMse[static_cast<int>(b)], upper = kPaperMse[static_cast<int>(b) - 1];
      EXPECT_LT(rel_k, upper) << spec;
      EXPECT_LT(rel_v, upper) << spec;
      EXPECT_GT(rel_k, 0.5 * lower) << spec;
      EXPECT_GT(rel_v, 0.5 * lower) << spec;
    }
  }
}

}  // namespace
}  // namespace seqkv
