// Shared pieces of the store commands of seqkvctl (store_commands.cc,
// store_kv_commands.cc): the --server option, connecting, the namespace
// flags, and formatting. Private to seqkvctl.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "seqkv/client/client.h"
#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"

namespace seqkv::ctl {

// Options shared by every store command. One instance lives for the whole
// program (CLI11 callbacks run after parsing).
struct StoreCtl {
  std::string global_server = "127.0.0.1:50051";  // seqkvctl --server
  std::string server;                              // <command> --server (wins if set)
  bool json = false;
  int* exit_code = nullptr;

  // Connects to the chosen server (deadline and retries from the defaults).
  Result<std::unique_ptr<client::Client>> Connect() const;
  // Prints the error to stderr and sets the exit code (1; 2 for bad input).
  void Fail(const Status& status) const;
};

// Adds `--server` and `--json` to a store subcommand.
void AddCommonOptions(CLI::App* command, StoreCtl* ctl);

// The flags that choose a namespace for a KV dump.
struct NamespaceFlags {
  std::string model_dir;  // its config.json is fingerprinted
  std::string model_name; // default: basename of model_dir
  std::string codec = "lossless";
  std::string tenant;
  uint32_t chunk_tokens = kDefaultChunkTokens;
  uint32_t tp_rank = 0;
  uint32_t tp_size = 1;
  std::vector<std::string> profiles;  // seq codec profiles (side information)

  void AddTo(CLI::App* command);
  // The canonical namespace for KV of `dtype` ("bf16", ...).
  Result<NamespaceFields> Resolve(std::string_view dtype) const;
};

nlohmann::json NamespaceJson(const NamespaceFields& fields);
std::string HumanBytes(uint64_t bytes);
// "123", "64KiB", "1.5GiB", "2GB" -> bytes (units as in the server's config).
Result<uint64_t> ParseSize(std::string_view text);
// Progress line on stderr, rewritten in place when stderr is a terminal.
void Progress(const std::string& line, bool done);

// Registered by store_commands.cc.
void RegisterKvCommands(CLI::App& app, StoreCtl* ctl);
void RegisterLookupCommand(CLI::App& app, StoreCtl* ctl);

}  // namespace seqkv::ctl
