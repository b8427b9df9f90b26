// Namespace ids and chunk keys. docs/keys.md is normative; keep both in step
// (tests/proto/keys_test.cc pins the test vectors).
#include "seqkv/proto/keys.h"

#include <bit>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "seqkv/codec/codec.h"

namespace seqkv {
namespace {

// Version tag that opens every namespace encoding; bump it (never reuse) if
// the field list ever changes, so old and new ids cannot collide.
constexpr std::string_view kNamespaceTag = "seqkv.namespace.v1";
constexpr size_t kMaxFieldBytes = 1024;

void PutU32(uint32_t value, std::vector<uint8_t>* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(value >> (8 * i)));
}

void PutString(std::string_view value, std::vector<uint8_t>* out) {
  PutU32(static_cast<uint32_t>(value.size()), out);
  out->insert(out->end(), value.begin(), value.end());
}

Key128 FromXxh(const XXH128_hash_t& h) { return Key128{h.high64, h.low64}; }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string Key128::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[i] = kDigits[(hi >> (60 - 4 * i)) & 0xF];
    out[16 + i] = kDigits[(lo >> (60 - 4 * i)) & 0xF];
  }
  return out;
}

Result<Key128> Key128::FromHex(std::string_view hex) {
  if (hex.size() != 32) {
    return InvalidArgument("key must be 32 hex digits, got " + std::to_string(hex.size()) + " characters");
  }
  Key128 key;
  for (size_t i = 0; i < 32; ++i) {
    int d = HexDigit(hex[i]);
    if (d < 0) return InvalidArgument("key has a non-hex character at position " + std::to_string(i));
    uint64_t& word = i < 16 ? key.hi : key.lo;
    word = (word << 4) | static_cast<uint64_t>(d);
  }
  return key;
}

void Key128::ToBytes(uint8_t out[16]) const {
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    out[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
}

Key128 Key128::FromBytes(const uint8_t in[16]) {
  Key128 key;
  for (int i = 0; i < 8; ++i) {
    key.hi = (key.hi << 8) | in[i];
    key.lo = (key.lo << 8) | in[8 + i];
  }
  return key;
}

std::vector<uint8_t> EncodeNamespaceFields(const NamespaceFields& f) {
  std::vector<uint8_t> out;
  out.reserve(64 + f.model_name.size() + f.model_config_hash.size() + f.codec_spec.size() +
              f.tenant_salt.size());
  PutString(kNamespaceTag, &out);
  PutString(f.model_name, &out);
  PutString(f.model_config_hash, &out);
  PutString(f.kv_dtype, &out);
  PutString(f.kv_layout, &out);
  PutU32(f.tp_rank, &out);
  PutU32(f.tp_size, &out);
  PutU32(f.chunk_tokens, &out);
  PutString(f.codec_spec, &out);
  PutString(f.tenant_salt, &out);
  return out;
}

Key128 NamespaceId(const NamespaceFields& fields) {
  std::vector<uint8_t> bytes = EncodeNamespaceFields(fields);
  return FromXxh(XXH3_128bits_withSeed(bytes.data(), bytes.size(), 0));
}

std::string ModelFingerprint(std::span<const uint8_t> config_json) {
  return FromXxh(XXH3_128bits_withSeed(config_json.data(), config_json.size(), 0)).ToHex();
}

Status ValidateNamespace(const NamespaceFields& f) {
  if (f.model_name.empty()) return InvalidArgument("namespace: model_name is empty");
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"model_name", &f.model_name},
        {"model_config_hash", &f.model_config_hash},
        {"kv_dtype", &f.kv_dtype},
        {"kv_layout", &f.kv_layout},
        {"codec_spec", &f.codec_spec},
        {"tenant_salt", &f.tenant_salt}}) {
    if (value->size() > kMaxFieldBytes) {
      return InvalidArgument(std::string("namespace: ") + name + " is longer than " +
                             std::to_string(kMaxFieldBytes) + " bytes");
    }
  }
  if (f.kv_dtype != "bf16" && f.kv_dtype != "fp16" && f.kv_dtype != "fp32") {
    return InvalidArgument("namespace: kv_dtype must be bf16, fp16 or fp32, got '" + f.kv_dtype + "'");
  }
  if (f.kv_layout != "lhtd") {
    return InvalidArgument("namespace: kv_layout must be 'lhtd', got '" + f.kv_layout + "'");
  }
  if (f.tp_size == 0) return InvalidArgument("namespace: tp_size must be at least 1");
  if (f.tp_rank >= f.tp_size) {
    return InvalidArgument("namespace: tp_rank " + std::to_string(f.tp_rank) + " must be below tp_size " +
                           std::to_string(f.tp_size));
  }
  if (f.chunk_tokens < 1 || f.chunk_tokens > (1u << 20)) {
    return InvalidArgument("namespace: chunk_tokens must be in [1, 1048576], got " +
                           std::to_string(f.chunk_tokens));
  }
  if (f.codec_spec.empty()) return InvalidArgument("namespace: codec_spec is empty");
  Result<CodecSpec> spec = ParseCodecSpec(f.codec_spec);
  if (!spec.ok()) return spec.status().WithContext("namespace: codec_spec");
  return Status::Ok();
}

Key128 NextChunkKey(const Key128& previous, std::span<const int32_t> chunk_token_ids) {
  XXH3_state_t state;
  XXH3_128bits_reset_withSeed(&state, 0);
  uint8_t prev[16];
  previous.ToBytes(prev);
  XXH3_128bits_update(&state, prev, sizeof prev);
  // int32 little-endian each: the in-memory layout on little-endian hosts.
  static_assert(std::endian::native == std::endian::little, "keys.cc assumes a little-endian host");
  XXH3_128bits_update(&state, chunk_token_ids.data(), chunk_token_ids.size_bytes());
  return FromXxh(XXH3_128bits_digest(&state));
}

std::vector<Key128> ChunkKeys(const Key128& namespace_id, std::span<const int32_t> tokens,
                              uint32_t chunk_tokens) {
  std::vector<Key128> keys;
  if (chunk_tokens == 0) return keys;
  size_t full = tokens.size() / chunk_tokens;
  keys.reserve(full);
  Key128 previous = namespace_id;
  for (size_t i = 0; i < full; ++i) {
    previous = NextChunkKey(previous, tokens.subspan(i * chunk_tokens, chunk_tokens));
    keys.push_back(previous);
  }
  return keys;
}

}  // namespace seqkv
