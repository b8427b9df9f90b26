// Tests of the kivi codec (codec/src/kivi_codec.cc).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

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

// The largest |x - x_hat| allowed for a group with range [lo, hi]: half a step
// of the fp16-rounded scale, whose rounding (and that of the min) can stretch
// the range by a couple of fp16 ulps; plus float rounding.
double Bound(float lo, float hi, int bits) {
  const double levels = (1 << bits) - 1;
  const double fp16_ulp = std::max(std::fabs(lo), std::fabs(hi)) / 1024.0 + 6e-8;
  const double scale = (hi - lo + 2 * fp16_ulp) / levels * (1 + 1.0 / 1024) + 6e-8;
  return scale / 2 + 1e-6 * std::max(std::fabs(lo), std::fabs(hi)) + 1e-7;
}

// Checks every element of K (per-channel groups of `group` tokens) and V
// (per-token groups of `vgroup` channels) against its group's bound.
void ExpectWithinBound(const Chunk& in, const Chunk& out, int bits, uint32_t group, uint32_t vgroup) {
  const KvShape& s = in.shape;
  const uint32_t d = s.head_dim;
  const auto k = Floats(in, in.k), k_hat = Floats(out, out.k);
  const auto v = Floats(in, in.v), v_hat = Floats(out, out.v);
  const uint32_t vg = vgroup == 0 ? d : std::min(vgroup, d);
  int failures = 0;
  for (uint64_t slab = 0; slab < uint64_t{s.layers} * s.kv_heads; ++slab) {
    const uint64_t base = slab * s.tokens * d;
    for (uint32_t t0 = 0; t0 < s.tokens; t0 += group) {
      const uint32_t t1 = std::min(s.tokens, t0 + group);
      for (uint32_t c = 0; c < d; ++c) {
        float lo = INFINITY, hi = -INFINITY;
        for (uint32_t t = t0; t < t1; ++t) {
          lo = std::min(lo, k[base + t * d + c]);
          hi = std::max(hi, k[base + t * d + c]);
        }
        for (uint32_t t = t0; t < t1; ++t) {
          const uint64_t i = base + t * d + c;
          if (std::fabs(k[i] - k_hat[i]) > Bound(lo, hi, bits) && ++failures < 5) {
            ADD_FAILURE() << "K[" << i << "] " << k[i] << " -> " << k_hat[i] << " range [" << lo << ", " << hi << "]";
          }
        }
      }
    }
    for (uint32_t t = 0; t < s.tokens; ++t) {
      for (uint32_t c0 = 0; c0 < d; c0 += vg) {
        const uint64_t row = base + t * d;
        const uint32_t c1 = std::min(d, c0 + vg);
        const auto [lo, hi] = std::minmax_element(&v[row + c0], &v[row + c1]);
        for (uint32_t c = c0; c < c1; ++c) {
          if (std::fabs(v[row + c] - v_hat[row + c]) > Bound(*lo, *hi, bits) && ++failures < 5) {
            ADD_FAILURE() << "V[" << row + c << "] " << v[row + c] << " -> " << v_hat[row + c];
          }
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(KiviTest, ErrorWithinHalfAStep) {
  for (int bits : {1, 2, 3, 4, 8}) {
    for (auto [group, vgroup] : {std::pair{32u, 0u}, std::pair{7u, 16u}, std::pair{1u, 5u}}) {
      const Chunk chunk = test::RandomChunk({2, 2, 70, 64}, DType::kFP32, bits * 100 + group);
      const std::string spec = "kivi:bits=" + std::to_string(bits) + ",group=" + std::to_string(group) +
                               ",vgroup=" + std::to_string(vgroup);
      RoundTrip rt = EncodeDecode(spec, chunk);
      ASSERT_EQ(rt.decoded.k.size(), chunk.k.size()) << spec;
      ExpectWithinBound(chunk, rt.decoded, bits, group, vgroup);
    }
  }
}

TEST(KiviTest, ConstantAndTinyGroups) {
  Chunk chunk = test::RandomChunk({1, 1, 40, 8}, DType::kFP32, 1);
  std::vector<float> k(chunk.shape.elements(), 0.3f), v(chunk.shape.elements(), -2.0f);
  k[5] = 1e-9f;  // a group of {0.3, 1e-9}
  FromFloat(chunk.dtype, k.data(), k.size(), chunk.k.data());
  FromFloat(chunk.dtype, v.data(), v.size(), chunk.v.data());
  RoundTrip rt = EncodeDecode("kivi:bits=2", chunk);
  const auto k_hat = Floats(rt.decoded, rt.decoded.k), v_hat = Floats(rt.decoded, rt.decoded.v);
  for (float x : v_hat) EXPECT_EQ(x, -2.0f);  // exact in fp16: scale 0
  for (size_t i = 0; i < k.size(); ++i) EXPECT_NEAR(k_hat[i], k[i], Bound(0.0f, 0.3f, 2)) << i;
  ExpectWithinBound(chunk, rt.decoded, 2, 32, 0);
}

TEST(KiviTest, DeterministicAcrossCallsInstancesAndThreads) {
  const Chunk chunk = test::RandomChunk({2, 2, 50, 64}, DType::kBF16, 3);
  auto a = Make("kivi:bits=2"), b = Make("kivi:bits=2");
  auto first = EncodeChunk(chunk, *a).value();
  EXPECT_EQ(EncodeChunk(chunk, *a).value(), first);
  EXPECT_EQ(EncodeChunk(chunk, *b).value(), first);
  std::vector<uint8_t> from_thread[2];
  std::thread t0([&] { from_thread[0] = EncodeChunk(chunk, *a).value(); });
  std::thread t1([&] { from_thread[1] = EncodeChunk(chunk, *a).value(); });
  t0.join();
  t1.join();
  EXPECT_EQ(from_thread[0], first);
  EXPECT_EQ(from_thread[1], first);
}

TEST(KiviTest, RoundTripThroughContainerForEveryDtype) {
  for (DType dtype : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    const Chunk chunk = test::RandomChunk({3, 2, 45, 64}, dtype, 8);
    RoundTrip rt = EncodeDecode("kivi:bits=4", chunk);
    const Chunk& out = rt.decoded;
    EXPECT_EQ(out.shape, chunk.shape);
    EXPECT_EQ(out.dtype, dtype);
    EXPECT_EQ(out.tokens, chunk.tokens);
    ASSERT_EQ(out.k.size(), chunk.k.size());
    ASSERT_EQ(out.v.size(), chunk.v.size());
    EXPECT_LT(RelativeMse(Floats(chunk, chunk.k), Floats(out, out.k)), 0.01) << DTypeName(dtype);
    EXPECT_LT(RelativeMse(Floats(chunk, chunk.v), Floats(out, out.v)), 0.02) << DTypeName(dtype);
  }
}

TEST(KiviTest, BitsPerElement) {
  const Chunk chunk = test::RandomChunk({6, 2, 1024, 64}, DType::kBF16, 5);
  for (auto [bits, expected] : {std::pair{4, 4.75}, std::pair{2, 2.75}}) {
    RoundTrip rt = EncodeDecode("kivi:bits=" + std::to_string(bits), chunk);
    const double bpe = rt.bytes * 8.0 / (2.0 * chunk.shape.elements());
    std::printf("kivi bits=%d: %.4f bits/element\n", bits, bpe);
    EXPECT_NEAR(bpe, expected, 0.02);
  }
}

TEST(KiviTest, PartialLastGroups) {
  // 45 tokens = 32 + 13; 64 channels in value groups of 24 = 24 + 24 + 16.
  const Chunk chunk = test::RandomChunk({1, 3, 45, 64}, DType::kFP32, 12);
  RoundTrip rt = EncodeDecode("kivi:bits=3,vgroup=24", chunk);
  ExpectWithinBound(chunk, rt.decoded, 3, 32, 24);
  // Fewer tokens than a group, an odd head_dim.
  Chunk small = test::RandomChunk({2, 1, 5, 7}, DType::kFP32, 13);
  small.rope = {};
  rt = EncodeDecode("kivi:bits=2", small);
  ExpectWithinBound(small, rt.decoded, 2, 32, 0);
}

TEST(KiviTest, SpecIsCanonical) {
  const std::pair<const char*, const char*> cases[] = {
      {"kivi", "kivi:bits=4,group=32,vgroup=0"},
      {"kivi:bits=2", "kivi:bits=2,group=32,vgroup=0"},
      {"kivi:vgroup=16,group=64,bits=8", "kivi:bits=8,group=64,vgroup=16"},
  };
  for (const auto& [in, canonical] : cases) {
    auto codec = Make(in);
    ASSERT_TRUE(codec);
    EXPECT_EQ(codec->Spec(), canonical);
    EXPECT_EQ(codec->id(), CodecId::kKivi);
    EXPECT_EQ(Make(codec->Spec())->Spec(), canonical);
  }
}

TEST(KiviTest, BadSpecsAreRejected) {
  for (const char* spec : {"kivi:bits=0", "kivi:bits=9", "kivi:bits=abc", "kivi:bits=2.5", "kivi:group=0",
                           "kivi:group=-3", "kivi:vgroup=-1", "kivi:vgroup=5000", "kivi:foo=1",
                           "kivi:bits=2,seed=1"}) {
    auto codec = MakeCodec(spec);
    ASSERT_FALSE(codec.ok()) << spec;
    EXPECT_EQ(codec.status().code(), StatusCode::kInvalidArgument) << spec << ": " << codec.status().ToString();
  }
}

TEST(KiviTest, NonFiniteAndOutOfRangeInputsAreRejected) {
  auto codec = Make("kivi:bits=4");
  std::vector<Section> sections;
  for (float bad : {std::nanf(""), INFINITY, -INFINITY, 1e6f}) {
    Chunk chunk = test::RandomChunk({1, 1, 8, 16}, DType::kFP32, 2);
    std::memcpy(chunk.v.data() + 12, &bad, 4);
    EXPECT_EQ(codec->Encode(chunk, &sections).code(), StatusCode::kInvalidArgument) << bad;
    chunk = test::RandomChunk({1, 1, 8, 16}, DType::kFP32, 2);
    std::memcpy(chunk.k.data() + 12, &bad, 4);
    EXPECT_EQ(codec->Encode(chunk, &sections).code(), StatusCode::kInvalidArgument) << bad;
  }
}

Status DecodeSections(const Codec& codec, const Chunk& like, const std::vector<Section>& sections) {
  std::vector<SectionView> views;
  for (const Section& s : sections) views.push_back({s.type, s.data});
  Chunk out;
  out.shape = like.shape;
  out.dtype = like.dtype;
  out.tokens = like.tokens;
  return codec.Decode(views, &out);
}

TEST(KiviTest, TruncatedOrCorruptSectionsAreDataLoss) {
  auto codec = Make("kivi:bits=3");
  const Chunk chunk = test::RandomChunk({2, 2, 33, 11}, DType::kBF16, 4);  // 3 * 1452 bits: 4 padding bits
  std::vector<Section> sections;
  ASSERT_TRUE(codec->Encode(chunk, &sections).ok());
  ASSERT_EQ(sections.size(), 4u);
  ASSERT_TRUE(DecodeSections(*codec, chunk, sections).ok());
  for (size_t i = 0; i < sections.size(); ++i) {
    auto shorter = sections;
    shorter[i].data.pop_back();
    EXPECT_EQ(DecodeSections(*codec, chunk, shorter).code(), StatusCode::kDataLoss) << i;
    auto longer = sections;
    longer[i].data.push_back(0);
    EXPECT_EQ(DecodeSections(*codec, chunk, longer).code(), StatusCode::kDataLoss) << i;
    auto retyped = sections;
    retyped[i].type = 7;
    EXPECT_EQ(DecodeSections(*codec, chunk, retyped).code(), StatusCode::kDataLoss) << i;
  }
  auto missing = sections;
  missing.pop_back();
  EXPECT_EQ(DecodeSections(*codec, chunk, missing).code(), StatusCode::kDataLoss);
  auto padded = sections;
  padded[1].data.back() |= 0x80;
  EXPECT_EQ(DecodeSections(*codec, chunk, padded).code(), StatusCode::kDataLoss);
  for (size_t section : {0u, 2u}) {
    auto corrupt = sections;
    corrupt[section].data[1] = 0x7E;  // min -> NaN
    EXPECT_EQ(DecodeSections(*codec, chunk, corrupt).code(), StatusCode::kDataLoss) << section;
    corrupt = sections;
    corrupt[section].data[7] |= 0x80;  // second group's scale negative
    EXPECT_EQ(DecodeSections(*codec, chunk, corrupt).code(), StatusCode::kDataLoss) << section;
  }
}

TEST(KiviTest, RealDumpRelativeMse) {
  const std::string path = test::DevDump("doc00.safetensors");
  ASSERT_TRUE(!path.empty() && std::filesystem::exists(path)) << "missing " << path;
  auto dump = ReadKvDump(path);
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  const Chunk& chunk = dump->chunk;
  const auto k = Floats(chunk, chunk.k), v = Floats(chunk, chunk.v);
  const double raw_mb = 2.0 * chunk.TensorBytes() / 1e6;
  for (const char* spec : {"kivi:bits=2", "kivi:bits=4"}) {
    auto codec = Make(spec);
    ASSERT_NE(codec, nullptr);
    const test::TimedRoundTrip rt = test::BestOfRuns(*codec, chunk, 3);
    ASSERT_TRUE(rt.ok) << spec;
    const double rel_k = RelativeMse(k, Floats(rt.decoded, rt.decoded.k));
    const double rel_v = RelativeMse(v, Floats(rt.decoded, rt.decoded.v));
    const double bpe = rt.bytes.size() * 8.0 / (2.0 * chunk.shape.elements());
    std::printf("%-12s %.3f bits/elem  rel MSE K %.5f V %.5f  encode %.0f MB/s decode %.0f MB/s\n", spec, bpe,
                rel_k, rel_v, raw_mb / rt.encode_s, raw_mb / rt.decode_s);
    // Uniform B-bit steps: error variance ~ range^2 / (12 * 4^B); loose sanity bounds.
    const double limit = std::strstr(spec, "bits=4") ? 0.02 : 0.3;
    EXPECT_LT(rel_k, limit) << spec;
    EXPECT_LT(rel_v, limit) << spec;
    EXPECT_GT(rel_k, 0.0) << spec;
  }
}

}  // namespace
}  // namespace seqkv
