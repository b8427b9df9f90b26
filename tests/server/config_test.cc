// The YAML config loader: defaults, every key, byte sizes, clear errors.
#include "seqkv/server/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "util/test_util.h"

namespace seqkv::server {
namespace {

TEST(ConfigTest, EmptyTextGivesDefaults) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->store.data_dir, StoreOptions().data_dir);
  EXPECT_EQ(c->store.dram_budget_bytes, StoreOptions().dram_budget_bytes);
}

TEST(ConfigTest, ParsesEveryKey) {
  auto c = ParseConfig(R"(
listen: 0.0.0.0:7000
metrics_listen: ""
log_level: debug
store:
  data_dir: /var/lib/seqkv
  create_if_missing: false
  dram_budget_bytes: 512MiB
  disk_budget_bytes: 2TB
  max_chunk_bytes: 1048576
  sync_writes: no
  cache_on_put: false
  check_first_position: false
  verify_dram_reads: true
  rocksdb_write_buffer_bytes: 32 MiB
  rocksdb_block_cache_bytes: 1.5GiB
  rocksdb_min_blob_bytes: 4KiB
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "0.0.0.0:7000");
  EXPECT_EQ(c->metrics_listen, "");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->store.data_dir, "/var/lib/seqkv");
  EXPECT_FALSE(c->store.create_if_missing);
  EXPECT_EQ(c->store.dram_budget_bytes, 512ull << 20);
  EXPECT_EQ(c->store.disk_budget_bytes, 2000000000000ull);
  EXPECT_EQ(c->store.max_chunk_bytes, 1048576u);
  EXPECT_FALSE(c->store.sync_writes);
  EXPECT_FALSE(c->store.cache_on_put);
  EXPECT_FALSE(c->store.check_first_position);
  EXPECT_TRUE(c->store.verify_dram_reads);
  EXPECT_EQ(c->store.rocksdb_write_buffer_bytes, 32ull << 20);
  EXPECT_EQ(c->store.rocksdb_block_cache_bytes, 3ull << 29);
  EXPECT_EQ(c->store.rocksdb_min_blob_bytes, 4096u);
}

TEST(ConfigTest, UnknownKeysAreErrors) {
  auto c = ParseConfig("listen: x\nlisten_addr: y\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("listen_addr"), std::string::npos) << c.status().ToString();
  c = ParseConfig("store:\n  dram_budget: 1GiB\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("store.dram_budget"), std::string::npos);
}

TEST(ConfigTest, BadValuesAreErrors) {
  for (const char* text : {
           "log_level: loud\n",
           "store:\n  sync_writes: maybe\n",
           "store:\n  dram_budget_bytes: lots\n",
           "store:\n  dram_budget_bytes: 10 parsecs\n",
           "store:\n  max_chunk_bytes: 0\n",
           "store:\n  data_dir: [a, b]\n",
           "store: 5\n",
           "listen: [unclosed\n",
           "- a\n- b\n",
       }) {
    auto c = ParseConfig(text);
    EXPECT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ConfigTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("1KiB"), 1024u);
  EXPECT_EQ(*ParseByteSize("1kb"), 1000u);
  EXPECT_EQ(*ParseByteSize(" 16 GiB "), 16ull << 30);
  EXPECT_EQ(*ParseByteSize("0.5MiB"), 512u << 10);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("1.5B").ok());
  EXPECT_FALSE(ParseByteSize("1.2.3").ok());
  EXPECT_FALSE(ParseByteSize("99999999TiB").ok());
}

TEST(ConfigTest, LoadConfigReadsAFileAndRoundTrips) {
  EXPECT_EQ(LoadConfig("/nonexistent/seqkv.yaml").status().code(), StatusCode::kNotFound);
  ServerConfig config;
  config.listen = "127.0.0.1:6000";
  config.store.dram_budget_bytes = 12345;
  config.store.sync_writes = false;
  const std::string path = seqkv::test::TempDir("config") + "/seqkv.yaml";
  std::ofstream(path) << ConfigToYaml(config);
  auto loaded = LoadConfig(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->listen, "127.0.0.1:6000");
  EXPECT_EQ(loaded->store.dram_budget_bytes, 12345u);
  EXPECT_FALSE(loaded->store.sync_writes);
  EXPECT_EQ(ConfigToYaml(*loaded), ConfigToYaml(config));
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

}  // namespace
}  // namespace seqkv::server
