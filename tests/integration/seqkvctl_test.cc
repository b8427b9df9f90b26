// seqkvctl's store commands against the real seqkv-server, on the dev KV
// dumps of ../shared (skipped when they are absent).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "server_process.h"
#include "util/test_util.h"

namespace seqkv::test {
namespace {

using json = nlohmann::json;

// Runs a command; its stdout and exit code.
std::string RunCommand(const std::string& command, int* exit_code) {
  std::string out;
  FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) {
    *exit_code = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = pclose(pipe);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

class SeqkvctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DevDump("doc00.safetensors").empty()) GTEST_SKIP() << "../shared/kvdata not available";
    ServerProcessOptions options;
    options.data_dir = TempDir("seqkvctl") + "/data";
    auto started = ServerProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value();
    model_ = SharedDir() + "/models/tinyllama-12m";
  }
  json Ctl(const std::string& args, int expected_exit = 0) {
    int code = 0;
    std::string out = RunCommand(std::string(SEQKVCTL_BIN) + " --server " + server_->address() + " " + args, &code);
    EXPECT_EQ(code, expected_exit) << args << "\n" << out;
    json j = json::parse(out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << args << " printed no JSON:\n" << out;
    return j;
  }

  std::unique_ptr<ServerProcess> server_;
  std::string model_;
};

TEST_F(SeqkvctlTest, PutGetStatsRoundTrip) {
  const std::string doc0 = DevDump("doc00.safetensors"), doc1 = DevDump("doc01.safetensors");
  json put = Ctl("kv put --json --model " + model_ + " " + doc0 + " " + doc1);
  EXPECT_EQ(put["chunks"], 8);
  EXPECT_EQ(put["stored"], 8);
  put = Ctl("kv put --json --no-skip --model " + model_ + " " + doc0);  // deduplicated by the server
  EXPECT_EQ(put["stored"], 0);
  EXPECT_EQ(put["already_present"], 4);

  const std::string out = TempDir("seqkvctl-out") + "/doc00.safetensors";
  json got = Ctl("kv get --json --compare --model " + model_ + " --out " + out + " " + doc0);
  EXPECT_EQ(got["tokens"], 1024);
  EXPECT_EQ(got["bit_exact"], true);
  EXPECT_TRUE(std::filesystem::exists(out));

  json lookup = Ctl("lookup --json --model " + model_ + " " + doc0 + " " + DevDump("doc02.safetensors"));
  ASSERT_EQ(lookup.size(), 2u);
  EXPECT_EQ(lookup[0]["prefix_chunks"], 4);
  EXPECT_EQ(lookup[1]["prefix_chunks"], 0);

  json stats = Ctl("stats --json");
  for (const char* field : {"logical_bytes", "physical_bytes", "chunks", "lookup_tokens", "hit_tokens"}) {
    EXPECT_TRUE(stats.contains(field)) << field;
  }
  EXPECT_EQ(stats["chunks"], 8);
  EXPECT_GT(stats["logical_bytes"].get<uint64_t>(), stats["physical_bytes"].get<uint64_t>());
  EXPECT_GT(stats["compression_ratio"].get<double>(), 1.0);

  json inspect = Ctl("inspect " + lookup[0]["keys"][1].get<std::string>());
  EXPECT_EQ(inspect["depth"], 1);
  EXPECT_EQ(inspect["first_position"], 256);

  json namespaces = Ctl("namespaces --json");
  ASSERT_EQ(namespaces.size(), 1u);
  EXPECT_EQ(namespaces[0]["fields"]["model_name"], "tinyllama-12m");

  json evicted = Ctl("evict --json");
  EXPECT_EQ(evicted["chunks"], 8);
  Ctl("compact --json");
  json missing = Ctl("kv get --json --model " + model_ + " " + doc0, /*expected_exit=*/1);
  EXPECT_EQ(missing["chunks"], 0);
}

// The sequential codec from the command line: calibrate a profile, code with
// it, store parent-conditioned chunks and read them back.
TEST_F(SeqkvctlTest, SeqProfileFromCalibrateToTheStore) {
  const std::string dir = TempDir("seqkvctl-seq");
  const std::string profile = dir + "/tiny.sqkp";
  json cal = Ctl("codec calibrate --json --no-sensitivity --model " + model_ + " --out " + profile + " --in " +
                 DevDump("doc00.safetensors") + " " + DevDump("doc05.safetensors"));
  EXPECT_EQ(cal["layer0_from_model"], true);
  EXPECT_EQ(cal["tokens"], 2048);
  EXPECT_EQ(cal["static_model"], true);  // what lane streams need
  EXPECT_EQ(cal["signed_model"], true);  // and signed lane streams (the default)
  EXPECT_GT(cal["bytes"]["static_model"].get<uint64_t>(), 0u);
  ASSERT_TRUE(std::filesystem::exists(profile));
  const std::string doc = DevDump("doc02.safetensors");
  json rt = Ctl("codec roundtrip --json --codec seq:bits=2 --profile " + profile + " --model " + model_ + " --in " + doc);
  EXPECT_NEAR(rt["bits_per_element"].get<double>(), 2.0, 0.05);
  EXPECT_EQ(rt["seq"]["layer_bits_per_element"].size(), 6u);
  // The canonical spec names the stream coding: lane streams, the default with a fresh profile.
  EXPECT_EQ(rt["codec"], "seq:bits=2,deadzone=0.5,profile=" + cal["id"].get<std::string>() + ",streams=lanes2");
  // Without the profile: a clear usage error, exit code 2.
  int code = 0;
  RunCommand(std::string(SEQKVCTL_BIN) + " codec roundtrip --codec seq:bits=2 --in " + doc, &code);
  EXPECT_EQ(code, 2);

  // --profile before the dump positionals takes one value.
  const std::string ns = " --model " + model_ + " --codec seq:bits=2 --profile " + profile + " ";
  json put = Ctl("kv put --json" + ns + doc);
  EXPECT_EQ(put["stored"], 4);
  const std::string out = dir + "/back.safetensors";
  json got = Ctl("kv get --json" + ns + "--out " + out + " " + doc);
  EXPECT_EQ(got["tokens"], 1024);
  json again = Ctl("codec eval --json --quality --model " + model_ + " --profile " + profile + " --in " + doc +
                   " --codecs seq:bits=2");
  ASSERT_EQ(again["codecs"].size(), 1u);
  EXPECT_LT(again["codecs"][0]["kl_nats"].get<double>(), 0.05);
}

TEST_F(SeqkvctlTest, UnreachableServerIsAnError) {
  int code = 0;
  RunCommand(std::string(SEQKVCTL_BIN) + " --server 127.0.0.1:1 stats", &code);
  EXPECT_EQ(code, 1);
}

}  // namespace
}  // namespace seqkv::test
