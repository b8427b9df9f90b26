// Server configuration from a YAML file (keys documented in docs/store.md).
//
// Only main() reads files and flags; the store itself takes StoreOptions.
// Unknown keys are an error (InvalidArgument naming the key), so a typo in a
// config file never silently falls back to a default.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "seqkv/codec/status.h"
#include "seqkv/server/store.h"

namespace seqkv::server {

struct ServerConfig {
  std::string listen = "127.0.0.1:50051";         // gRPC address
  std::string metrics_listen = "127.0.0.1:9464";  // Prometheus /metrics; "" = off
  std::string log_level = "info";                 // trace, debug, info, warn, error, critical, off
  StoreOptions store;
};

// Parses YAML text. Missing keys keep their defaults. Byte sizes accept an
// integer or a string with a unit: "512MiB", "16GiB", "1.5GB", "4096".
// InvalidArgument on malformed YAML, unknown keys, or bad values.
Result<ServerConfig> ParseConfig(std::string_view yaml_text);

// Reads and parses a YAML file. NotFound if it cannot be read.
Result<ServerConfig> LoadConfig(const std::string& path);

// "1GiB" -> 1073741824. Units: B, K/KB (1000), KiB (1024), M/MB, MiB, G/GB,
// GiB, T/TB, TiB (case-insensitive). InvalidArgument otherwise.
Result<uint64_t> ParseByteSize(std::string_view text);

// The configuration as YAML (every key, for --print-config and docs).
std::string ConfigToYaml(const ServerConfig& config);

}  // namespace seqkv::server
