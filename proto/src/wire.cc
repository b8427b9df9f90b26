#include "seqkv/proto/wire.h"

namespace seqkv::wire {

std::string KeyToBytes(const Key128& key) {
  uint8_t bytes[16];
  key.ToBytes(bytes);
  return std::string(reinterpret_cast<const char*>(bytes), sizeof bytes);
}

Result<Key128> KeyFromBytes(std::string_view bytes, std::string_view field) {
  if (bytes.size() != 16) {
    return InvalidArgument(std::string(field) + ": a key is 16 bytes, got " + std::to_string(bytes.size()));
  }
  return Key128::FromBytes(reinterpret_cast<const uint8_t*>(bytes.data()));
}

Result<std::optional<Key128>> OptionalKeyFromBytes(std::string_view bytes, std::string_view field) {
  if (bytes.empty()) return std::optional<Key128>();
  SEQKV_ASSIGN_OR_RETURN(Key128 key, KeyFromBytes(bytes, field));
  return std::optional<Key128>(key);
}

Result<std::vector<Key128>> KeysFromBytes(const google::protobuf::RepeatedPtrField<std::string>& keys,
                                          std::string_view field) {
  if (keys.size() > kMaxKeysPerRequest) {
    return InvalidArgument(std::string(field) + ": " + std::to_string(keys.size()) + " keys, at most " +
                           std::to_string(kMaxKeysPerRequest) + " per request");
  }
  std::vector<Key128> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    SEQKV_ASSIGN_OR_RETURN(Key128 key,
                           KeyFromBytes(keys.Get(i), std::string(field) + "[" + std::to_string(i) + "]"));
    out.push_back(key);
  }
  return out;
}

void KeysToBytes(std::span<const Key128> keys, google::protobuf::RepeatedPtrField<std::string>* out) {
  out->Reserve(out->size() + static_cast<int>(keys.size()));
  for (const Key128& key : keys) *out->Add() = KeyToBytes(key);
}

void NamespaceToProto(const NamespaceFields& f, v1::NamespaceFields* out) {
  out->set_model_name(f.model_name);
  out->set_model_config_hash(f.model_config_hash);
  out->set_kv_dtype(f.kv_dtype);
  out->set_kv_layout(f.kv_layout);
  out->set_tp_rank(f.tp_rank);
  out->set_tp_size(f.tp_size);
  out->set_chunk_tokens(f.chunk_tokens);
  out->set_codec_spec(f.codec_spec);
  out->set_tenant_salt(f.tenant_salt);
}

NamespaceFields NamespaceFromProto(const v1::NamespaceFields& p) {
  NamespaceFields f;
  f.model_name = p.model_name();
  f.model_config_hash = p.model_config_hash();
  f.kv_dtype = p.kv_dtype();
  f.kv_layout = p.kv_layout();
  f.tp_rank = p.tp_rank();
  f.tp_size = p.tp_size();
  f.chunk_tokens = p.chunk_tokens();
  f.codec_spec = p.codec_spec();
  f.tenant_salt = p.tenant_salt();
  return f;
}

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  int code = static_cast<int>(status.error_code());
  if (code <= 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) code = static_cast<int>(StatusCode::kUnknown);
  return Status(static_cast<StatusCode>(code), status.error_message());
}

void ToItemStatus(const Status& status, v1::ItemStatus* out) {
  out->set_code(static_cast<int32_t>(status.code()));
  out->set_message(status.message());
}

Status FromItemStatus(const v1::ItemStatus& item) {
  int code = item.code();
  if (code == 0) return Status::Ok();
  if (code < 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) code = static_cast<int>(StatusCode::kUnknown);
  return Status(static_cast<StatusCode>(code), item.message());
}

}  // namespace seqkv::wire
