// The YAML config loader. docs/store.md lists every key; keep them in step.
#include "seqkv/server/config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <variant>
#include <vector>

namespace seqkv::server {
namespace {

// One config key: where it lives and how to parse it.
struct Field {
  const char* name;
  std::variant<std::string*, bool*, uint64_t*> target;  // uint64_t: a byte size
};

std::vector<Field> TopFields(ServerConfig* c) {
  return {{"listen", &c->listen}, {"metrics_listen", &c->metrics_listen}, {"log_level", &c->log_level}};
}

std::vector<Field> StoreFields(StoreOptions* s) {
  return {
      {"data_dir", &s->data_dir},
      {"create_if_missing", &s->create_if_missing},
      {"dram_budget_bytes", &s->dram_budget_bytes},
      {"disk_budget_bytes", &s->disk_budget_bytes},
      {"max_chunk_bytes", &s->max_chunk_bytes},
      {"sync_writes", &s->sync_writes},
      {"cache_on_put", &s->cache_on_put},
      {"check_first_position", &s->check_first_position},
      {"verify_dram_reads", &s->verify_dram_reads},
      {"rocksdb_write_buffer_bytes", &s->rocksdb_write_buffer_bytes},
      {"rocksdb_block_cache_bytes", &s->rocksdb_block_cache_bytes},
      {"rocksdb_min_blob_bytes", &s->rocksdb_min_blob_bytes},
  };
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Status SetField(const Field& field, const YAML::Node& value, const std::string& path) {
  if (!value.IsScalar()) return InvalidArgument("config: " + path + " must be a scalar");
  const std::string text = value.Scalar();
  if (auto* s = std::get_if<std::string*>(&field.target)) {
    **s = text;
  } else if (auto* b = std::get_if<bool*>(&field.target)) {
    std::string v = Lower(text);
    if (v == "true" || v == "yes" || v == "on") {
      **b = true;
    } else if (v == "false" || v == "no" || v == "off") {
      **b = false;
    } else {
      return InvalidArgument("config: " + path + " must be true or false, got '" + text + "'");
    }
  } else {
    Result<uint64_t> bytes = ParseByteSize(text);
    if (!bytes.ok()) return bytes.status().WithContext("config: " + path);
    **std::get_if<uint64_t*>(&field.target) = *bytes;
  }
  return Status::Ok();
}

// Applies a YAML map to `fields`; unknown keys (other than `nested`) fail.
Status ApplyMap(const YAML::Node& map, const std::vector<Field>& fields, const std::string& prefix,
                const std::string& nested = "") {
  if (!map.IsMap())
    return InvalidArgument("config: " + (prefix.empty() ? "top level" : prefix) + " must be a mapping");
  for (const auto& entry : map) {
    const std::string key = entry.first.Scalar();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (!nested.empty() && key == nested) continue;
    const Field* field = nullptr;
    for (const Field& f : fields) {
      if (key == f.name) field = &f;
    }
    if (field == nullptr) {
      std::string known;
      for (const Field& f : fields) known += (known.empty() ? "" : ", ") + std::string(f.name);
      if (!nested.empty()) known += ", " + nested;
      return InvalidArgument("config: unknown key '" + path + "' (known: " + known + ")");
    }
    SEQKV_RETURN_IF_ERROR(SetField(*field, entry.second, path));
  }
  return Status::Ok();
}

Status ValidateConfig(const ServerConfig& c) {
  static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                                 "error", "critical", "off"};
  bool level_ok = false;
  for (std::string_view level : kLevels) level_ok = level_ok || c.log_level == level;
  if (!level_ok) {
    return InvalidArgument(
        "config: log_level must be trace, debug, info, warn, error, critical "
        "or off, got '" +
        c.log_level + "'");
  }
  if (c.listen.empty()) return InvalidArgument("config: listen is empty");
  if (c.store.data_dir.empty()) return InvalidArgument("config: store.data_dir is empty");
  if (c.store.max_chunk_bytes == 0) return InvalidArgument("config: store.max_chunk_bytes is 0");
  if (c.store.disk_budget_bytes == 0) return InvalidArgument("config: store.disk_budget_bytes is 0");
  return Status::Ok();
}

}  // namespace

Result<uint64_t> ParseByteSize(std::string_view text) {
  size_t begin = 0;
  size_t end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  text = text.substr(begin, end - begin);
  size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return InvalidArgument("byte size '" + std::string(text) + "' has no number");
  double number = 0;
  {
    std::istringstream in{std::string(text.substr(0, digits))};
    in >> number;
    if (!in || !in.eof()) return InvalidArgument("byte size '" + std::string(text) + "' is malformed");
  }
  std::string unit = Lower(text.substr(digits));
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  static const std::pair<std::string_view, double> kUnits[] = {
      {"", 1},
      {"b", 1},
      {"k", 1e3},
      {"kb", 1e3},
      {"kib", 1024.0},
      {"m", 1e6},
      {"mb", 1e6},
      {"mib", 1048576.0},
      {"g", 1e9},
      {"gb", 1e9},
      {"gib", 1073741824.0},
      {"t", 1e12},
      {"tb", 1e12},
      {"tib", 1099511627776.0},
  };
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    double bytes = number * scale;
    if (!std::isfinite(bytes) || bytes >= 18446744073709551615.0) {
      return InvalidArgument("byte size '" + std::string(text) + "' is too large");
    }
    if (bytes != std::floor(bytes)) {
      return InvalidArgument("byte size '" + std::string(text) + "' is not a whole number of bytes");
    }
    return static_cast<uint64_t>(bytes);
  }
  return InvalidArgument("byte size '" + std::string(text) +
                         "' has an unknown unit (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)");
}

Result<ServerConfig> ParseConfig(std::string_view yaml_text) {
  ServerConfig config;
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    if (root.IsNull()) return config;  // empty file: all defaults
    SEQKV_RETURN_IF_ERROR(ApplyMap(root, TopFields(&config), "", "store"));
    if (YAML::Node store = root["store"]; store && !store.IsNull()) {
      SEQKV_RETURN_IF_ERROR(ApplyMap(store, StoreFields(&config.store), "store"));
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("config: malformed YAML: ") + e.what());
  }
  SEQKV_RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

Result<ServerConfig> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("config: cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  Result<ServerConfig> config = ParseConfig(text.str());
  if (!config.ok()) return config.status().WithContext(path);
  return config;
}

std::string ConfigToYaml(const ServerConfig& config) {
  ServerConfig copy = config;
  YAML::Emitter out;
  auto emit = [&](const Field& f) {
    out << YAML::Key << f.name << YAML::Value;
    if (auto* s = std::get_if<std::string*>(&f.target)) {
      out << **s;
    } else if (auto* b = std::get_if<bool*>(&f.target)) {
      out << **b;
    } else {
      out << **std::get_if<uint64_t*>(&f.target);
    }
  };
  out << YAML::BeginMap;
  for (const Field& f : TopFields(&copy)) emit(f);
  out << YAML::Key << "store" << YAML::Value << YAML::BeginMap;
  for (const Field& f : StoreFields(&copy.store)) emit(f);
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace seqkv::server
