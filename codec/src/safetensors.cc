#include "seqkv/codec/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace seqkv {

namespace {

using json = nlohmann::json;

// Element size of a safetensors dtype; 0 if unknown.
size_t ElementSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

Result<DType> KvDTypeOf(const std::string& st) {
  if (st == "BF16") return DType::kBF16;
  if (st == "F16") return DType::kFP16;
  if (st == "F32") return DType::kFP32;
  return InvalidArgument("KV tensors must be BF16, F16 or F32, not " + st);
}

std::string SafetensorsDType(DType d) {
  switch (d) {
    case DType::kBF16: return "BF16";
    case DType::kFP16: return "F16";
    case DType::kFP32: return "F32";
  }
  return "F32";
}

}  // namespace

Result<SafetensorsFile> ParseSafetensors(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8) return InvalidArgument("safetensors: file shorter than 8 bytes");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{bytes[i]} << (8 * i);
  if (header_len > kMaxSafetensorsHeader || header_len > bytes.size() - 8) {
    return InvalidArgument("safetensors: header length " + std::to_string(header_len) + " does not fit the file");
  }
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("safetensors: header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) return InvalidArgument("safetensors: header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_start;
  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return InvalidArgument("safetensors: __metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) return InvalidArgument("safetensors: metadata value '" + m.key() + "' is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() || !entry["shape"].is_array() ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return InvalidArgument("safetensors: tensor '" + name + "' has a malformed entry");
    }
    Tensor t;
    t.dtype = entry["dtype"].get<std::string>();
    size_t esize = ElementSize(t.dtype);
    if (esize == 0) return InvalidArgument("safetensors: tensor '" + name + "' has unknown dtype " + t.dtype);
    uint64_t count = 1;
    for (const json& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return InvalidArgument("safetensors: tensor '" + name + "' has a bad shape");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && count > (uint64_t{1} << 40) / dim) {
        return InvalidArgument("safetensors: tensor '" + name + "' is too large");
      }
      count *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return InvalidArgument("safetensors: tensor '" + name + "' has bad offsets");
    }
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return InvalidArgument("safetensors: tensor '" + name + "' lies outside the file (truncated?)");
    }
    if (end - begin != count * esize) {
      return InvalidArgument("safetensors: tensor '" + name + "' size does not match its shape");
    }
    ranges.emplace_back(begin, end);
    t.data.assign(bytes.begin() + data_start + begin, bytes.begin() + data_start + end);
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return InvalidArgument("safetensors: tensors overlap");
  }
  return file;
}

std::vector<uint8_t> SerializeSafetensors(const SafetensorsFile& file) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& [name, t] : file.tensors) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

Result<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path);
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0) return Internal("cannot read " + path);
  in.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) return Internal("cannot read " + path);
  return bytes;
}

Status WriteFileBytes(const std::string& path, std::span<const uint8_t> bytes) {
  // Write to a temporary name and rename, so a reader never sees half a file.
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Unavailable("cannot create " + tmp);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) return Unavailable("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Unavailable("cannot rename " + tmp + " to " + path);
  return Status::Ok();
}

Result<SafetensorsFile> ReadSafetensors(const std::string& path) {
  SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto file = ParseSafetensors(bytes);
  if (!file.ok()) return file.status().WithContext(path);
  return file;
}

Status WriteSafetensors(const std::string& path, const SafetensorsFile& file) {
  return WriteFileBytes(path, SerializeSafetensors(file));
}

Result<KvDump> ReadKvDump(const std::string& path) {
  KvDump dump;
  SEQKV_ASSIGN_OR_RETURN(dump.file, ReadSafetensors(path));
  auto& tensors = dump.file.tensors;
  auto missing = [&](const char* n) { return tensors.find(n) == tensors.end(); };
  if (missing("tokens") || missing("k") || missing("v")) {
    return InvalidArgument(path + ": a KV dump needs tensors 'tokens', 'k' and 'v'");
  }
  const Tensor& tok = tensors["tokens"];
  const Tensor& k = tensors["k"];
  const Tensor& v = tensors["v"];
  if (k.shape.size() != 4 || k.shape != v.shape || k.dtype != v.dtype) {
    return InvalidArgument(path + ": 'k' and 'v' must have the same 4-d shape [layers, kv_heads, tokens, head_dim] and dtype");
  }
  if (tok.shape.size() != 1 || tok.shape[0] != k.shape[2] || (tok.dtype != "I32" && tok.dtype != "I64")) {
    return InvalidArgument(path + ": 'tokens' must be I32 or I64 of shape [tokens] matching k");
  }
  Chunk& c = dump.chunk;
  SEQKV_ASSIGN_OR_RETURN(c.dtype, KvDTypeOf(k.dtype));
  for (int64_t d : k.shape) {
    if (d <= 0 || d > int64_t{kMaxTokens}) return InvalidArgument(path + ": bad k shape");
  }
  c.shape = {static_cast<uint32_t>(k.shape[0]), static_cast<uint32_t>(k.shape[1]),
             static_cast<uint32_t>(k.shape[2]), static_cast<uint32_t>(k.shape[3])};
  c.tokens.resize(c.shape.tokens);
  size_t tsize = tok.dtype == "I32" ? 4 : 8;
  for (uint32_t i = 0; i < c.shape.tokens; ++i) {
    int64_t id = 0;
    for (size_t b = 0; b < tsize; ++b) id |= int64_t{tok.data[i * tsize + b]} << (8 * b);
    if (tsize == 4) id = static_cast<int32_t>(static_cast<uint32_t>(id));
    if (id < 0 || id > INT32_MAX) return InvalidArgument(path + ": token id out of range");
    c.tokens[i] = static_cast<int32_t>(id);
  }
  c.k = k.data;
  c.v = v.data;
  c.rope = {RopeStyle::kNone, 10000.0, 0};
  if (auto it = dump.file.metadata.find("rope"); it != dump.file.metadata.end()) {
    try {
      json rope = json::parse(it->second);
      c.rope.theta = rope.value("theta", 10000.0);
      SEQKV_ASSIGN_OR_RETURN(c.rope.style, ParseRopeStyle(rope.value("style", std::string("none"))));
      c.rope.dim = rope.value("head_dim", static_cast<uint32_t>(c.shape.head_dim));
      c.first_position = rope.value("first_position", uint64_t{0});
    } catch (const std::exception& e) {
      return InvalidArgument(path + ": metadata 'rope' is not valid JSON: " + e.what());
    }
  }
  Status s = c.Validate();
  if (!s.ok()) return s.WithContext(path);
  return dump;
}

SafetensorsFile KvDumpToSafetensors(const Chunk& chunk, const SafetensorsFile& base) {
  SafetensorsFile out = base;
  int64_t T = chunk.shape.tokens;
  std::vector<int64_t> shape = {chunk.shape.layers, chunk.shape.kv_heads, T, chunk.shape.head_dim};
  Tensor tok{"I32", {T}, {}};
  tok.data.resize(static_cast<size_t>(T) * 4);
  for (int64_t i = 0; i < T; ++i) {
    uint32_t id = static_cast<uint32_t>(chunk.tokens[i]);
    for (int b = 0; b < 4; ++b) tok.data[i * 4 + b] = static_cast<uint8_t>(id >> (8 * b));
  }
  out.tensors["tokens"] = std::move(tok);
  out.tensors["k"] = Tensor{SafetensorsDType(chunk.dtype), shape, chunk.k};
  out.tensors["v"] = Tensor{SafetensorsDType(chunk.dtype), shape, chunk.v};
  // Per-token tensors of another length (e.g. logprob of a longer dump) no longer line up.
  for (auto it = out.tensors.begin(); it != out.tensors.end();) {
    bool per_token = it->second.shape.size() == 1 && it->first != "tokens";
    if (per_token && it->second.shape[0] != T) {
      it = out.tensors.erase(it);
    } else {
      ++it;
    }
  }
  json rope = {{"theta", chunk.rope.theta},
               {"style", std::string(RopeStyleName(chunk.rope.style))},
               {"head_dim", chunk.rope.dim},
               {"first_position", chunk.first_position}};
  out.metadata["rope"] = rope.dump();
  return out;
}

}  // namespace seqkv
