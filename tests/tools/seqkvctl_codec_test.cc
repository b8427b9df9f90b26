// End-to-end tests of `seqkvctl codec ...`: the real binary on real dumps.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

using json = nlohmann::json;

struct CtlRun {
  int exit_code = -1;
  std::string out;
};

// Runs seqkvctl with args; stdout captured, stderr to a file we ignore.
CtlRun Ctl(const std::string& args) {
  std::string cmd = std::string(SEQKVCTL_PATH) + " " + args + " 2>/dev/null";
  CtlRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class SeqkvctlCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dump_ = test::DevDump("doc03.safetensors");
    ASSERT_FALSE(dump_.empty()) << "../shared/kvdata/dev is missing";
    dir_ = test::TempDir("ctl");
  }
  std::string dump_, dir_;
};

TEST_F(SeqkvctlCodecTest, RoundTripJsonHasTheDocumentedFields) {
  CtlRun r = Ctl("codec roundtrip --codec lossless --json --in " + dump_ + " --out " + dir_ + "/r.safetensors");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out);
  for (const char* f : {"bits_per_element", "ratio", "k_rel_mse", "v_rel_mse", "encode_mb_s", "decode_mb_s"}) {
    EXPECT_TRUE(j.contains(f)) << f;
  }
  EXPECT_EQ(j["k_rel_mse"].get<double>(), 0.0);
  EXPECT_TRUE(j["bit_exact"].get<bool>());
  EXPECT_GT(j["ratio"].get<double>(), 1.3);
  // The reconstruction keeps the input's tensors, shapes, dtype and metadata.
  auto in = ReadSafetensors(dump_);
  auto out = ReadSafetensors(dir_ + "/r.safetensors");
  ASSERT_TRUE(in.ok() && out.ok());
  for (const char* t : {"tokens", "k", "v", "logprob"}) {
    EXPECT_EQ(out->tensors.at(t).data, in->tensors.at(t).data) << t;
    EXPECT_EQ(out->tensors.at(t).shape, in->tensors.at(t).shape) << t;
    EXPECT_EQ(out->tensors.at(t).dtype, in->tensors.at(t).dtype) << t;
  }
  EXPECT_EQ(out->metadata.at("model"), in->metadata.at("model"));
}

TEST_F(SeqkvctlCodecTest, EncodeWritesExactlyTheContainerAndDecodeReadsItBack) {
  std::string chunk = dir_ + "/c.bin";
  CtlRun e = Ctl("codec encode --codec lossless --json --in " + dump_ + " --out " + chunk);
  ASSERT_EQ(e.exit_code, 0);
  json j = json::parse(e.out);
  EXPECT_EQ(j["bytes"].get<uint64_t>(), std::filesystem::file_size(chunk));
  auto bytes = ReadFileBytes(chunk);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(ParseChunkHeader(*bytes).ok());
  CtlRun d = Ctl("codec decode --in " + chunk + " --out " + dir_ + "/d.safetensors");
  ASSERT_EQ(d.exit_code, 0);
  auto a = ReadKvDump(dump_);
  auto b = ReadKvDump(dir_ + "/d.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->chunk.k, b->chunk.k);
  EXPECT_EQ(a->chunk.v, b->chunk.v);
  EXPECT_EQ(a->chunk.tokens, b->chunk.tokens);
}

TEST_F(SeqkvctlCodecTest, CorruptChunkFileIsAClearErrorAndWritesNothing) {
  std::string chunk = dir_ + "/c.bin";
  ASSERT_EQ(Ctl("codec encode --codec raw --in " + dump_ + " --out " + chunk).exit_code, 0);
  auto bytes = ReadFileBytes(chunk);
  ASSERT_TRUE(bytes.ok());
  (*bytes)[bytes->size() / 2] ^= 0x40;
  ASSERT_TRUE(WriteFileBytes(chunk, *bytes).ok());
  CtlRun d = Ctl("codec decode --in " + chunk + " --out " + dir_ + "/d.safetensors");
  EXPECT_NE(d.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/d.safetensors"));
}

TEST_F(SeqkvctlCodecTest, TokenTierReportsRecompute) {
  CtlRun r = Ctl("codec roundtrip --codec tokens --json --in " + dump_);
  ASSERT_EQ(r.exit_code, 0);
  json j = json::parse(r.out);
  EXPECT_TRUE(j["recompute_needed"].get<bool>());
  EXPECT_LT(j["bits_per_token"].get<double>(), 16.0);
}

TEST_F(SeqkvctlCodecTest, EvalOverAFolder) {
  std::string dir = test::SharedDir() + "/kvdata/dev";
  CtlRun r = Ctl("codec eval --json --in " + dir + " --codecs 'raw;lossless;tokens'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["files"].size(), 8u);
  ASSERT_EQ(j["codecs"].size(), 3u);
  EXPECT_NEAR(j["codecs"][0]["bits_per_element"].get<double>(), 16.0, 0.05);
  EXPECT_LT(j["codecs"][1]["bits_per_element"].get<double>(), 11.5);
}

// --chunk-tokens codes each dump as a client stores it, in chunks of that
// many tokens (here 300: three full chunks and a shorter last one): lossless
// stays exact and pays a little for the extra headers; a token tier chunk per
// piece still round-trips its ids.
TEST_F(SeqkvctlCodecTest, EvalInChunksAsAClientStoresThem) {
  std::filesystem::create_symlink(dump_, dir_ + "/doc03.safetensors");
  CtlRun whole = Ctl("codec eval --json --in " + dir_ + " --codecs 'lossless;tokens'");
  CtlRun parts = Ctl("codec eval --json --chunk-tokens 300 --per-file --in " + dir_ + " --codecs 'lossless;tokens'");
  ASSERT_EQ(whole.exit_code, 0) << whole.out;
  ASSERT_EQ(parts.exit_code, 0) << parts.out;
  json w = json::parse(whole.out), p = json::parse(parts.out);
  ASSERT_EQ(p["codecs"].size(), 2u);
  EXPECT_EQ(p["codecs"][0]["k_rel_mse"].get<double>(), 0.0);
  EXPECT_EQ(p["codecs"][0]["v_rel_mse"].get<double>(), 0.0);
  EXPECT_GT(p["codecs"][0]["bits_per_element"].get<double>(), w["codecs"][0]["bits_per_element"].get<double>());
  EXPECT_LT(p["codecs"][0]["bits_per_element"].get<double>(),
            w["codecs"][0]["bits_per_element"].get<double>() * 1.05);
  EXPECT_TRUE(p["codecs"][1]["recompute_needed"].get<bool>());
  EXPECT_NE(Ctl("codec eval --chunk-tokens 2000000 --in " + dir_ + " --codecs raw").exit_code, 0);
}

// The C++ CLI drives the Python quality tool: a lossless cache must give KL 0
// and agreement 1; a 1-bit TurboQuant cache must not.
TEST_F(SeqkvctlCodecTest, EvalQualityThroughTheModel) {
  std::filesystem::create_symlink(dump_, dir_ + "/doc03.safetensors");
  std::string model = test::SharedDir() + "/models/tinyllama-12m";
  CtlRun r = Ctl("codec eval --json --quality --model " + model + " --in " + dir_ +
              " --codecs 'lossless;turboquant:bits=1;tokens'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out);
  ASSERT_EQ(j["codecs"].size(), 3u);
  EXPECT_EQ(j["codecs"][0]["kl_nats"].get<double>(), 0.0);
  EXPECT_EQ(j["codecs"][0]["top1_agreement"].get<double>(), 1.0);
  EXPECT_GT(j["codecs"][1]["kl_nats"].get<double>(), 0.01);
  EXPECT_LT(j["codecs"][1]["top1_agreement"].get<double>(), 0.99);
  EXPECT_FALSE(j["codecs"][2].contains("kl_nats"));  // token tier: recompute, no KV to judge
}

TEST_F(SeqkvctlCodecTest, BadInputIsAClearError) {
  EXPECT_EQ(Ctl("codec roundtrip --codec nosuch --in " + dump_).exit_code, 2);
  EXPECT_EQ(Ctl("codec roundtrip --codec raw --in /nonexistent.safetensors").exit_code, 2);
  EXPECT_NE(Ctl("codec eval --in " + dir_ + " --codecs raw").exit_code, 0);  // empty folder
  EXPECT_NE(Ctl("codec eval --in " + dir_ + " --codecs raw --quality").exit_code, 0);  // no --model
}

}  // namespace
}  // namespace seqkv
