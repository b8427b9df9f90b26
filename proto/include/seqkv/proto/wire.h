// Conversions between seqkv types and the wire types of seqkv/v1/seqkv.proto,
// shared by the gRPC service (server/src/rpc/) and the client. Proto types
// stop here: nothing below server/ or client/ sees them.
//
// All functions are pure and thread-safe. Decoders return InvalidArgument
// naming the offending field.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/repeated_ptr_field.h>
#include <grpcpp/support/status.h>

#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"
#include "seqkv/v1/seqkv.pb.h"

namespace seqkv::wire {

// Default cap on one gRPC message, both directions (server and client).
inline constexpr int kDefaultMaxMessageBytes = 64 << 20;
// Default data bytes per Put/Get frame (well under the message cap).
inline constexpr uint32_t kDefaultFrameBytes = 4 << 20;
// Most keys one batched request may carry.
inline constexpr int kMaxKeysPerRequest = 1 << 16;

// 16 bytes, big-endian (Key128::ToBytes).
std::string KeyToBytes(const Key128& key);
// InvalidArgument "<field>: a key is 16 bytes, got N" on any other length.
Result<Key128> KeyFromBytes(std::string_view bytes, std::string_view field);
// Empty bytes = unset.
Result<std::optional<Key128>> OptionalKeyFromBytes(std::string_view bytes, std::string_view field);
// Also rejects more than kMaxKeysPerRequest keys.
Result<std::vector<Key128>> KeysFromBytes(const google::protobuf::RepeatedPtrField<std::string>& keys,
                                          std::string_view field);
void KeysToBytes(std::span<const Key128> keys, google::protobuf::RepeatedPtrField<std::string>* out);

// Field-for-field copies; no defaults are filled in (the id depends on every
// field, so the server hashes exactly what the client sent).
void NamespaceToProto(const NamespaceFields& fields, v1::NamespaceFields* out);
NamespaceFields NamespaceFromProto(const v1::NamespaceFields& proto);

// Status <-> gRPC status and per-item status (codes are numerically equal).
grpc::Status ToGrpc(const Status& status);
Status FromGrpc(const grpc::Status& status);
void ToItemStatus(const Status& status, v1::ItemStatus* out);
Status FromItemStatus(const v1::ItemStatus& item);

}  // namespace seqkv::wire
