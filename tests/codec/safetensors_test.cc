#include "seqkv/codec/safetensors.h"

#include <gtest/gtest.h>

#include "util/test_util.h"

namespace seqkv {
namespace {

TEST(SafetensorsTest, RealDumpReadsAndWritesBack) {
  std::string path = test::DevDump("doc00.safetensors");
  ASSERT_FALSE(path.empty()) << "../shared/kvdata/dev is missing";
  auto dump = ReadKvDump(path);
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  const Chunk& c = dump->chunk;
  EXPECT_EQ(c.shape, (KvShape{6, 2, 1024, 64}));
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.rope.style, RopeStyle::kRotateHalf);
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.rope.dim, 64u);
  EXPECT_EQ(c.tokens.size(), 1024u);
  EXPECT_TRUE(dump->file.tensors.count("logprob"));

  auto bytes = SerializeSafetensors(KvDumpToSafetensors(c, dump->file));
  auto again = ParseSafetensors(bytes);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->tensors.at("k").data, c.k);
  EXPECT_EQ(again->tensors.at("logprob").data, dump->file.tensors.at("logprob").data);
  EXPECT_EQ(again->metadata.at("model"), dump->file.metadata.at("model"));
}

TEST(SafetensorsTest, MalformedFilesAreClearErrors) {
  SafetensorsFile f;
  f.tensors["x"] = Tensor{"F32", {2, 2}, std::vector<uint8_t>(16, 1)};
  auto good = SerializeSafetensors(f);
  ASSERT_TRUE(ParseSafetensors(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(ParseSafetensors(std::span<const uint8_t>(good.data(), n)).ok()) << n;
  }
  auto with_header = [](const std::string& h) {
    std::vector<uint8_t> b(8);
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(uint64_t{h.size()} >> (8 * i));
    b.insert(b.end(), h.begin(), h.end());
    b.resize(b.size() + 16);
    return b;
  };
  for (const char* h : {"{", "[]", R"({"x":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}})",
                        R"({"x":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})",
                        R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                        R"({"x":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})",
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"}) {
    auto r = ParseSafetensors(with_header(h));
    EXPECT_FALSE(r.ok()) << h;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << h;
  }
}

TEST(SafetensorsTest, NotAKvDump) {
  std::string dir = test::TempDir("st");
  SafetensorsFile f;
  f.tensors["k"] = Tensor{"BF16", {1, 1, 2, 2}, std::vector<uint8_t>(8)};
  ASSERT_TRUE(WriteSafetensors(dir + "/x.safetensors", f).ok());
  auto r = ReadKvDump(dir + "/x.safetensors");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadKvDump(dir + "/missing.safetensors").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace seqkv
