#include <gtest/gtest.h>

#include "seqkv/codec/codec.h"

namespace seqkv {
namespace {

TEST(CodecSpecTest, ParsesAndCanonicalises) {
  auto s = ParseCodecSpec("lossless:order=1,level=9");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->name, "lossless");
  EXPECT_EQ(s->ToString(), "lossless:level=9,order=1");
  auto bare = ParseCodecSpec("seq:lossless");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->params.at("lossless"), "1");
}

TEST(CodecSpecTest, RejectsMalformedSpecs) {
  for (const char* bad : {"", ":", "raw:", "raw:a=1,", "raw:a=1,a=2", "ra w", "raw:=3", "raw:a=", "x:a=b=c"}) {
    EXPECT_FALSE(ParseCodecSpec(bad).ok()) << bad;
  }
}

TEST(CodecRegistryTest, BuiltinsAreRegisteredAndRebuildFromTheirSpec) {
  auto names = CodecRegistry::Default().Names();
  for (const char* n : {"raw", "lossless", "turboquant", "kivi", "tokens"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  for (const char* spec : {"raw", "lossless", "lossless:level=19", "tokens"}) {
    auto c = MakeCodec(spec);
    ASSERT_TRUE(c.ok()) << spec;
    auto again = MakeCodec((*c)->Spec());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*again)->Spec(), (*c)->Spec());
    EXPECT_EQ((*again)->id(), (*c)->id());
  }
}

TEST(CodecRegistryTest, ClearErrors) {
  auto unknown = MakeCodec("zip");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("known:"), std::string::npos);
  EXPECT_EQ(MakeCodec("raw:level=3").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("lossless:level=30").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("lossless:level=x").status().code(), StatusCode::kInvalidArgument);
}

TEST(CodecRegistryTest, DuplicateRegistrationIsRefused) {
  auto s = CodecRegistry::Default().Register("raw", CodecId::kRaw, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace seqkv
