// Encodings of what the store persists: RocksDB keys, chunk records
// (versioned little-endian binary) and namespace fields (JSON).
// docs/store.md describes the layout.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"
#include "seqkv/server/tier.h"

namespace seqkv::server::internal {

inline constexpr char kNamespacePrefix = 'N';
inline constexpr char kChunkRecordPrefix = 'C';
inline constexpr size_t kChunkRecordKeyBytes = 1 + 16 + 16;
inline constexpr size_t kChunkPayloadKeyBytes = 16 + 16;

void AppendKey(const Key128& key, std::string* out);
Key128 ReadKey(std::string_view bytes);  // bytes.size() >= 16

// Inverse of ChunkRecordKey; InvalidArgument if malformed.
Result<ChunkAddress> ParseChunkRecordKey(std::string_view key);

std::string EncodeChunkRecord(const ChunkRecord& record);
// Fills every field but ns and key (which come from the RocksDB key).
// DataLoss if the value is malformed.
Result<ChunkRecord> DecodeChunkRecord(std::string_view value);

std::string EncodeNamespaceFields(const NamespaceFields& fields);
Result<NamespaceFields> DecodeNamespaceFields(std::string_view value);

}  // namespace seqkv::server::internal
