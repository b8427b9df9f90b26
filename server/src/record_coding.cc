#include "record_coding.h"

#include <cstring>
#include <nlohmann/json.hpp>

namespace seqkv::server::internal {
namespace {

constexpr uint8_t kRecordVersion = 1;
constexpr uint8_t kHasParent = 1;

template <typename T>
void PutLe(T value, std::string* out) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// Bounds-checked little-endian reader; ok() turns false on overrun.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  template <typename T>
  T Le() {
    if (data_.size() - pos_ < sizeof(T) || !ok_) {
      ok_ = false;
      return T{};
    }
    T value{};
    for (size_t i = 0; i < sizeof(T); ++i) {
      value |= static_cast<T>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += sizeof(T);
    return value;
  }
  std::string_view Bytes(size_t n) {
    if (data_.size() - pos_ < n || !ok_) {
      ok_ = false;
      return {};
    }
    std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  bool ok() const { return ok_; }
  bool done() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

void AppendKey(const Key128& key, std::string* out) {
  uint8_t bytes[16];
  key.ToBytes(bytes);
  out->append(reinterpret_cast<const char*>(bytes), sizeof bytes);
}

Key128 ReadKey(std::string_view bytes) {
  return Key128::FromBytes(reinterpret_cast<const uint8_t*>(bytes.data()));
}

Result<ChunkAddress> ParseChunkRecordKey(std::string_view key) {
  if (key.size() != kChunkRecordKeyBytes || key[0] != kChunkRecordPrefix) {
    return InvalidArgument("not a chunk record key (" + std::to_string(key.size()) + " bytes)");
  }
  return ChunkAddress{ReadKey(key.substr(1, 16)), ReadKey(key.substr(17, 16))};
}

std::string EncodeChunkRecord(const ChunkRecord& r) {
  std::string out;
  out.reserve(96 + r.codec_spec.size());
  PutLe<uint8_t>(kRecordVersion, &out);
  PutLe<uint8_t>(r.parent ? kHasParent : 0, &out);
  if (r.parent) AppendKey(*r.parent, &out);
  PutLe<uint32_t>(r.depth, &out);
  PutLe<uint64_t>(r.size_bytes, &out);
  PutLe<uint64_t>(r.raw_kv_bytes, &out);
  PutLe<uint32_t>(r.pins, &out);
  PutLe<uint64_t>(r.puts, &out);
  PutLe<uint32_t>(r.shape.layers, &out);
  PutLe<uint32_t>(r.shape.kv_heads, &out);
  PutLe<uint32_t>(r.shape.tokens, &out);
  PutLe<uint32_t>(r.shape.head_dim, &out);
  PutLe<uint8_t>(static_cast<uint8_t>(r.dtype), &out);
  PutLe<uint16_t>(r.codec_id, &out);
  PutLe<uint32_t>(r.flags, &out);
  PutLe<uint64_t>(r.first_position, &out);
  PutLe<uint64_t>(r.header_bytes, &out);
  PutLe<uint32_t>(r.sections, &out);
  PutLe<uint16_t>(static_cast<uint16_t>(r.codec_spec.size()), &out);
  out.append(r.codec_spec);
  return out;
}

Result<ChunkRecord> DecodeChunkRecord(std::string_view value) {
  Reader in(value);
  ChunkRecord r;
  uint8_t version = in.Le<uint8_t>();
  if (in.ok() && version != kRecordVersion) {
    return DataLoss("chunk record version " + std::to_string(version) + " unknown");
  }
  uint8_t flags = in.Le<uint8_t>();
  if ((flags & ~kHasParent) != 0) return DataLoss("chunk record has unknown flags");
  if (flags & kHasParent) {
    std::string_view parent = in.Bytes(16);
    if (in.ok()) r.parent = ReadKey(parent);
  }
  r.depth = in.Le<uint32_t>();
  r.size_bytes = in.Le<uint64_t>();
  r.raw_kv_bytes = in.Le<uint64_t>();
  r.pins = in.Le<uint32_t>();
  r.puts = in.Le<uint64_t>();
  r.shape.layers = in.Le<uint32_t>();
  r.shape.kv_heads = in.Le<uint32_t>();
  r.shape.tokens = in.Le<uint32_t>();
  r.shape.head_dim = in.Le<uint32_t>();
  uint8_t dtype = in.Le<uint8_t>();
  r.codec_id = in.Le<uint16_t>();
  r.flags = in.Le<uint32_t>();
  r.first_position = in.Le<uint64_t>();
  r.header_bytes = in.Le<uint64_t>();
  r.sections = in.Le<uint32_t>();
  uint16_t spec_len = in.Le<uint16_t>();
  std::string_view spec = in.Bytes(spec_len);
  if (!in.ok() || !in.done()) return DataLoss("chunk record truncated or malformed");
  if (!IsValidDType(dtype)) return DataLoss("chunk record has unknown dtype");
  if ((r.depth == 0) != !r.parent) return DataLoss("chunk record depth and parent disagree");
  r.dtype = static_cast<DType>(dtype);
  r.codec_spec.assign(spec);
  return r;
}

std::string EncodeNamespaceFields(const NamespaceFields& f) {
  nlohmann::json j = {
      {"model_name", f.model_name},     {"model_config_hash", f.model_config_hash},
      {"kv_dtype", f.kv_dtype},         {"kv_layout", f.kv_layout},
      {"tp_rank", f.tp_rank},           {"tp_size", f.tp_size},
      {"chunk_tokens", f.chunk_tokens}, {"codec_spec", f.codec_spec},
      {"tenant_salt", f.tenant_salt},
  };
  return j.dump();
}

Result<NamespaceFields> DecodeNamespaceFields(std::string_view value) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("namespace record is not a JSON object");
  NamespaceFields f;
  try {
    f.model_name = j.at("model_name").get<std::string>();
    f.model_config_hash = j.at("model_config_hash").get<std::string>();
    f.kv_dtype = j.at("kv_dtype").get<std::string>();
    f.kv_layout = j.at("kv_layout").get<std::string>();
    f.tp_rank = j.at("tp_rank").get<uint32_t>();
    f.tp_size = j.at("tp_size").get<uint32_t>();
    f.chunk_tokens = j.at("chunk_tokens").get<uint32_t>();
    f.codec_spec = j.at("codec_spec").get<std::string>();
    f.tenant_salt = j.at("tenant_salt").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(std::string("namespace record malformed: ") + e.what());
  }
  return f;
}

}  // namespace seqkv::server::internal

namespace seqkv::server {

std::string ChunkPayloadKey(const ChunkAddress& address) {
  std::string out;
  out.reserve(internal::kChunkPayloadKeyBytes);
  internal::AppendKey(address.ns, &out);
  internal::AppendKey(address.key, &out);
  return out;
}

std::string ChunkRecordKey(const ChunkAddress& address) {
  std::string out(1, internal::kChunkRecordPrefix);
  internal::AppendKey(address.ns, &out);
  internal::AppendKey(address.key, &out);
  return out;
}

std::string NamespaceRecordKey(const Key128& id) {
  std::string out(1, internal::kNamespacePrefix);
  internal::AppendKey(id, &out);
  return out;
}

}  // namespace seqkv::server
