#include <algorithm>
#include <charconv>
#include <cmath>
#include <mutex>
#include <shared_mutex>

#include "builtin_codecs.h"
#include "seqkv/codec/codec.h"

namespace seqkv {

namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

bool IsValidToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsNameChar);
}

}  // namespace

std::string CodecSpec::ToString() const {
  std::string out = name;
  char sep = ':';
  for (const auto& [key, value] : params) {
    out += sep;
    out += key;
    out += '=';
    out += value;
    sep = ',';
  }
  return out;
}

Result<CodecSpec> ParseCodecSpec(std::string_view text) {
  CodecSpec spec;
  size_t colon = text.find(':');
  spec.name = std::string(text.substr(0, colon));
  if (!IsValidToken(spec.name)) {
    return InvalidArgument("codec spec '" + std::string(text) + "': bad codec name");
  }
  if (colon == std::string_view::npos) return spec;
  std::string_view rest = text.substr(colon + 1);
  if (rest.empty()) return InvalidArgument("codec spec '" + std::string(text) + "': empty parameter list");
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view("") : item.substr(eq + 1);
    if (!IsValidToken(key) || (eq != std::string_view::npos && !IsValidToken(value))) {
      return InvalidArgument("codec spec '" + std::string(text) + "': bad parameter '" +
                             std::string(item) + "' (want key=value)");
    }
    if (eq == std::string_view::npos) value = "1";  // bare flag, e.g. "seq:lossless"
    if (!spec.params.emplace(std::string(key), std::string(value)).second) {
      return InvalidArgument("codec spec '" + std::string(text) + "': parameter '" +
                             std::string(key) + "' given twice");
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
    if (rest.empty()) return InvalidArgument("codec spec '" + std::string(text) + "': trailing comma");
  }
  return spec;
}

Result<int64_t> SpecInt(const CodecSpec& spec, const std::string& key, int64_t default_value,
                        int64_t min_value, int64_t max_value) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return default_value;
  int64_t value = 0;
  const std::string& s = it->second;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size()) {
    return InvalidArgument("codec " + spec.name + ": " + key + "=" + s + " is not an integer");
  }
  if (value < min_value || value > max_value) {
    return InvalidArgument("codec " + spec.name + ": " + key + "=" + s + " out of range [" +
                           std::to_string(min_value) + ", " + std::to_string(max_value) + "]");
  }
  return value;
}

Result<double> SpecDouble(const CodecSpec& spec, const std::string& key, double default_value,
                          double min_value, double max_value) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return default_value;
  const std::string& s = it->second;
  double value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(value)) {
    return InvalidArgument("codec " + spec.name + ": " + key + "=" + s + " is not a number");
  }
  if (value < min_value || value > max_value) {
    return InvalidArgument("codec " + spec.name + ": " + key + "=" + s + " out of range");
  }
  return value;
}

Status SpecCheckKeys(const CodecSpec& spec, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : spec.params) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string names;
      for (auto a : allowed) names += (names.empty() ? "" : ", ") + std::string(a);
      return InvalidArgument("codec " + spec.name + ": unknown parameter '" + key + "' (known: " +
                             (names.empty() ? "none" : names) + ")");
    }
  }
  return Status::Ok();
}

struct CodecRegistry::Impl {
  mutable std::shared_mutex mu;
  struct Entry {
    CodecId id;
    CodecFactory factory;
  };
  std::map<std::string, Entry, std::less<>> by_name;
};

CodecRegistry::CodecRegistry() : impl_(std::make_shared<Impl>()) {}

CodecRegistry& CodecRegistry::Default() {
  static CodecRegistry* registry = [] {
    auto* r = new CodecRegistry();
    Status s;
    s = r->Register("raw", CodecId::kRaw, internal::MakeRawCodec);
    s = r->Register("lossless", CodecId::kLossless, internal::MakeLosslessCodec);
    s = r->Register("turboquant", CodecId::kTurboQuant, internal::MakeTurboQuantCodec);
    s = r->Register("kivi", CodecId::kKivi, internal::MakeKiviCodec);
    s = r->Register("tokens", CodecId::kTokens, internal::MakeTokensCodec);
    s = r->Register("seq", CodecId::kSeq, internal::MakeSeqCodec);
    (void)s;
    return r;
  }();
  return *registry;
}

Status CodecRegistry::Register(std::string name, CodecId id, CodecFactory factory) {
  if (!IsValidToken(name)) return InvalidArgument("bad codec name '" + name + "'");
  std::unique_lock lock(impl_->mu);
  for (const auto& [n, e] : impl_->by_name) {
    if (e.id == id) return AlreadyExists("codec id " + std::to_string(int(id)) + " already used by " + n);
  }
  if (!impl_->by_name.emplace(name, Impl::Entry{id, std::move(factory)}).second) {
    return AlreadyExists("codec '" + name + "' already registered");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Codec>> CodecRegistry::Create(std::string_view text) const {
  SEQKV_ASSIGN_OR_RETURN(CodecSpec spec, ParseCodecSpec(text));
  CodecFactory factory;
  {
    std::shared_lock lock(impl_->mu);
    auto it = impl_->by_name.find(spec.name);
    if (it == impl_->by_name.end()) {
      std::string names;
      for (const auto& [n, e] : impl_->by_name) names += (names.empty() ? "" : ", ") + n;
      return NotFound("unknown codec '" + spec.name + "' (known: " + names + ")");
    }
    factory = it->second.factory;
  }
  return factory(spec);
}

std::vector<std::string> CodecRegistry::Names() const {
  std::shared_lock lock(impl_->mu);
  std::vector<std::string> out;
  for (const auto& [n, e] : impl_->by_name) out.push_back(n);
  return out;
}

Result<std::string> CodecRegistry::NameOf(CodecId id) const {
  std::shared_lock lock(impl_->mu);
  for (const auto& [n, e] : impl_->by_name) {
    if (e.id == id) return n;
  }
  return NotFound("unknown codec id " + std::to_string(int(id)));
}

Result<std::unique_ptr<Codec>> MakeCodec(std::string_view spec) {
  return CodecRegistry::Default().Create(spec);
}

}  // namespace seqkv
