#include "store_ctl.h"

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "codec_eval.h"
#include "seqkv/codec/safetensors.h"

namespace seqkv::ctl {

Result<std::unique_ptr<client::Client>> StoreCtl::Connect() const {
  client::ClientOptions options;
  options.address = server.empty() ? global_server : server;
  options.connect_timeout = std::chrono::milliseconds(3000);
  options.max_retries = 2;
  return client::Client::Connect(options);
}

void StoreCtl::Fail(const Status& status) const {
  std::cerr << "error: " << status.ToString() << "\n";
  if (exit_code != nullptr) *exit_code = status.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

void AddCommonOptions(CLI::App* command, StoreCtl* ctl) {
  command->add_option("--server", ctl->server, "seqkv-server address HOST:PORT (default: seqkvctl --server)");
  command->add_flag("--json", ctl->json, "machine-readable JSON on stdout");
}

void NamespaceFlags::AddTo(CLI::App* command) {
  command->add_option("--model", model_dir, "model directory; its config.json fingerprints the namespace")
      ->required()
      ->check(CLI::ExistingDirectory);
  command->add_option("--model-name", model_name, "model name (default: the model directory's name)");
  command->add_option("--codec", codec, "codec spec of the namespace")->default_str("lossless");
  command->add_option("--tenant", tenant, "tenant salt (default: shared across tenants)");
  command->add_option("--chunk-tokens", chunk_tokens, "tokens per chunk")->default_str("256");
  command->add_option("--tp-rank", tp_rank, "tensor-parallel rank")->default_str("0");
  command->add_option("--tp-size", tp_size, "tensor-parallel size")->default_str("1");
  command->add_option("--profile", profiles,
                      "codec profile (from `codec calibrate`) for seq codecs; the model is then loaded too")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

Result<NamespaceFields> NamespaceFlags::Resolve(std::string_view dtype) const {
  namespace fs = std::filesystem;
  // Side information first: the codec spec is checked against what is loaded.
  if (!profiles.empty()) SEQKV_RETURN_IF_ERROR(LoadSideInfo(profiles, model_dir, /*quiet=*/true));
  fs::path config = fs::path(model_dir) / "config.json";
  Result<std::vector<uint8_t>> bytes = ReadFileBytes(config.string());
  if (!bytes.ok()) return bytes.status().WithContext("reading " + config.string());
  NamespaceFields fields;
  fields.model_name = model_name;
  if (fields.model_name.empty()) {
    fs::path dir = fs::path(model_dir).lexically_normal();
    fields.model_name = (dir.has_filename() ? dir.filename() : dir.parent_path().filename()).string();
  }
  fields.model_config_hash = ModelFingerprint(*bytes);
  fields.kv_dtype = std::string(dtype);
  fields.tp_rank = tp_rank;
  fields.tp_size = tp_size;
  fields.chunk_tokens = chunk_tokens;
  fields.codec_spec = codec;
  fields.tenant_salt = tenant;
  return client::Client::Canonicalize(fields);
}

nlohmann::json NamespaceJson(const NamespaceFields& f) {
  return {{"model_name", f.model_name},   {"model_config_hash", f.model_config_hash},
          {"kv_dtype", f.kv_dtype},       {"kv_layout", f.kv_layout},
          {"tp_rank", f.tp_rank},         {"tp_size", f.tp_size},
          {"chunk_tokens", f.chunk_tokens}, {"codec_spec", f.codec_spec},
          {"tenant_salt", f.tenant_salt}};
}

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.2f %s", value, kUnits[unit]);
  return buf;
}

Result<uint64_t> ParseSize(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return InvalidArgument("size '" + std::string(text) + "' does not start with a number");
  double number = std::strtod(std::string(text.substr(0, i)).c_str(), nullptr);
  std::string unit;
  for (char c : text.substr(i)) {
    if (c != ' ') unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb") scale = 1e3;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "m" || unit == "mb") scale = 1e6;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb") scale = 1e9;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb") scale = 1e12;
  else if (unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  else return InvalidArgument("size '" + std::string(text) + "': unknown unit '" + unit + "'");
  return static_cast<uint64_t>(std::llround(number * scale));
}

void Progress(const std::string& line, bool done) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  static auto last = std::chrono::steady_clock::time_point();
  auto now = std::chrono::steady_clock::now();
  if (tty) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), done ? "\n" : "");
  } else if (done || now - last >= std::chrono::seconds(1)) {
    // Not a terminal (a log file): whole lines, at most one a second while running.
    std::fprintf(stderr, "%s\n", line.c_str());
    last = now;
  }
  std::fflush(stderr);
}

}  // namespace seqkv::ctl
