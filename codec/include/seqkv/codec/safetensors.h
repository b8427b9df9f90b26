// Reading and writing safetensors files (the format of ../shared/kvdata):
// 8-byte little-endian header length, a JSON header, then raw tensors.
//
// Reads validate the header length, JSON, dtypes, shapes and that every
// tensor lies inside the data area, without overlap.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"

namespace seqkv {

struct Tensor {
  std::string dtype;  // safetensors name: "BF16", "F16", "F32", "I32", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

inline constexpr uint64_t kMaxSafetensorsHeader = 100 << 20;

Result<SafetensorsFile> ParseSafetensors(std::span<const uint8_t> bytes);
Result<SafetensorsFile> ReadSafetensors(const std::string& path);
std::vector<uint8_t> SerializeSafetensors(const SafetensorsFile& file);
Status WriteSafetensors(const std::string& path, const SafetensorsFile& file);

// A KV dump: tensors `tokens` (I32 [T]), `k` and `v` ([L, H, T, D] in
// BF16/F16/F32), optional others (kept as they are); RoPE and first position
// from the `rope` metadata JSON when present.
struct KvDump {
  Chunk chunk;
  SafetensorsFile file;  // everything, for writing back with the same extras
};

Result<KvDump> ReadKvDump(const std::string& path);
// Builds a dump file from a chunk, keeping `base`'s other tensors and metadata.
SafetensorsFile KvDumpToSafetensors(const Chunk& chunk, const SafetensorsFile& base);

// Reads/writes whole files.
Result<std::vector<uint8_t>> ReadFileBytes(const std::string& path);
Status WriteFileBytes(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace seqkv
