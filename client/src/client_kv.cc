// K/V-level and prefix-level calls: slicing host K/V into chunks, encoding
// with the namespace's codec, chain keys, and reassembly of a prefix.
#include <cstring>
#include <map>
#include <mutex>

#include "call.h"
#include "seqkv/client/client.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"

namespace seqkv::client {
namespace {

// Encoded bytes sent per Put stream by PutPrefix (bounds client memory).
constexpr uint64_t kPutBatchBytes = uint64_t{256} << 20;

// Codecs are immutable and thread-safe; building some is not free, so keep
// one per spec for the life of the process.
Result<std::shared_ptr<const Codec>> CachedCodec(const std::string& spec) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Codec>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(spec);
  if (it != cache.end()) return it->second;
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(spec));
  std::shared_ptr<const Codec> shared(std::move(codec));
  cache.emplace(spec, shared);
  return shared;
}

Status ValidateView(const KvView& kv) {
  SEQKV_RETURN_IF_ERROR(ValidateShape(kv.shape, kv.dtype));
  uint64_t bytes = kv.shape.elements() * DTypeSize(kv.dtype);
  if (kv.tokens.size() != kv.shape.tokens) {
    return InvalidArgument("kv: " + std::to_string(kv.tokens.size()) + " token ids for " +
                           std::to_string(kv.shape.tokens) + " tokens");
  }
  if (kv.k.size() != bytes || kv.v.size() != bytes) {
    return InvalidArgument("kv: K and V must be " + std::to_string(bytes) + " bytes each, got " +
                           std::to_string(kv.k.size()) + " and " + std::to_string(kv.v.size()));
  }
  return Status::Ok();
}

Status CheckAgainstNamespace(const NamespaceFields& fields, const KvView& kv) {
  SEQKV_RETURN_IF_ERROR(ValidateNamespace(fields));
  if (DTypeName(kv.dtype) != fields.kv_dtype) {
    return InvalidArgument("kv dtype " + std::string(DTypeName(kv.dtype)) + " differs from the namespace's " +
                           fields.kv_dtype);
  }
  return ValidateView(kv);
}

}  // namespace

Result<Chunk> SliceKv(const KvView& kv, uint32_t begin, uint32_t count) {
  SEQKV_RETURN_IF_ERROR(ValidateView(kv));
  if (uint64_t{begin} + count > kv.shape.tokens) return OutOfRange("SliceKv: tokens past the end of the view");
  Chunk out;
  out.shape = kv.shape;
  out.shape.tokens = count;
  out.dtype = kv.dtype;
  out.rope = kv.rope;
  out.first_position = kv.first_position + begin;
  out.tokens.assign(kv.tokens.begin() + begin, kv.tokens.begin() + begin + count);
  const size_t row = size_t{kv.shape.head_dim} * DTypeSize(kv.dtype);
  const size_t heads = size_t{kv.shape.layers} * kv.shape.kv_heads;
  for (auto [src, dst] : {std::pair{kv.k, &out.k}, std::pair{kv.v, &out.v}}) {
    dst->resize(heads * count * row);
    for (size_t h = 0; h < heads; ++h) {
      std::memcpy(dst->data() + h * count * row, src.data() + (h * kv.shape.tokens + begin) * row, count * row);
    }
  }
  return out;
}

Result<Chunk> ConcatChunks(std::span<const Chunk> chunks) {
  if (chunks.empty()) return InvalidArgument("ConcatChunks: no chunks");
  const Chunk& first = chunks.front();
  Chunk out;
  out.shape = first.shape;
  out.shape.tokens = 0;
  out.dtype = first.dtype;
  out.rope = first.rope;
  out.first_position = first.first_position;
  const KvShape base = out.shape;
  for (const Chunk& c : chunks) {
    KvShape s = c.shape;
    s.tokens = 0;
    if (!(s == base) || c.dtype != first.dtype || c.rope.style != first.rope.style ||
        c.rope.theta != first.rope.theta || c.rope.dim != first.rope.dim) {
      return InvalidArgument("ConcatChunks: chunks differ in shape, dtype or RoPE");
    }
    if (c.first_position != out.first_position + out.shape.tokens) {
      return InvalidArgument("ConcatChunks: chunk positions are not contiguous");
    }
    SEQKV_RETURN_IF_ERROR(c.Validate());
    out.shape.tokens += c.shape.tokens;
    out.tokens.insert(out.tokens.end(), c.tokens.begin(), c.tokens.end());
  }
  const size_t row = size_t{out.shape.head_dim} * DTypeSize(out.dtype);
  const size_t heads = size_t{out.shape.layers} * out.shape.kv_heads;
  out.k.resize(heads * out.shape.tokens * row);
  out.v.resize(out.k.size());
  size_t token_offset = 0;
  for (const Chunk& c : chunks) {
    size_t n = c.shape.tokens;
    for (size_t h = 0; h < heads; ++h) {
      size_t dst = (h * out.shape.tokens + token_offset) * row;
      std::memcpy(out.k.data() + dst, c.k.data() + h * n * row, n * row);
      std::memcpy(out.v.data() + dst, c.v.data() + h * n * row, n * row);
    }
    token_offset += n;
  }
  return out;
}

Result<std::vector<uint8_t>> Client::EncodeKv(const NamespaceFields& fields, const KvView& kv) {
  SEQKV_RETURN_IF_ERROR(CheckAgainstNamespace(fields, kv));
  if (kv.shape.tokens != fields.chunk_tokens) {
    return InvalidArgument("EncodeKv: a chunk has " + std::to_string(fields.chunk_tokens) + " tokens, got " +
                           std::to_string(kv.shape.tokens));
  }
  SEQKV_ASSIGN_OR_RETURN(auto codec, CachedCodec(fields.codec_spec));
  SEQKV_ASSIGN_OR_RETURN(Chunk chunk, SliceKv(kv, 0, kv.shape.tokens));
  return EncodeChunk(chunk, *codec);
}

Result<Chunk> Client::DecodeKv(std::span<const uint8_t> encoded, std::span<const int32_t> expected_tokens) {
  return DecodeKv(encoded, expected_tokens, nullptr, nullptr);
}

Result<Chunk> Client::DecodeKv(std::span<const uint8_t> encoded, std::span<const int32_t> expected_tokens,
                               const ChunkContext* parent, ChunkContext* next) {
  SEQKV_ASSIGN_OR_RETURN(Chunk chunk, DecodeChunk(encoded, parent, next));
  if (!expected_tokens.empty() &&
      (chunk.tokens.size() != expected_tokens.size() ||
       !std::equal(chunk.tokens.begin(), chunk.tokens.end(), expected_tokens.begin()))) {
    return DataLoss("DecodeKv: the chunk's token ids differ from the requested ones");
  }
  return chunk;
}

Result<PutPrefixResult> Client::PutPrefix(const NamespaceFields& fields, const KvView& kv,
                                          const PutPrefixOptions& options) {
  SEQKV_RETURN_IF_ERROR(CheckAgainstNamespace(fields, kv));
  if (kv.first_position != 0) {
    return InvalidArgument("PutPrefix: kv must start at position 0 (keys chain from the first token)");
  }
  SEQKV_ASSIGN_OR_RETURN(auto codec, CachedCodec(fields.codec_spec));
  PutPrefixResult result;
  result.keys = Keys(fields, kv.tokens);
  result.chunks = static_cast<uint32_t>(result.keys.size());
  if (result.chunks == 0) return result;
  const Key128 ns = NamespaceId(fields);

  uint32_t start = 0;
  if (options.skip_present) {
    Result<LookupResult> lookup = Lookup(ns, result.keys);
    if (lookup.ok()) {
      start = lookup->prefix_chunks;
    } else if (lookup.status().code() != StatusCode::kNotFound) {  // NotFound: namespace not yet registered
      return lookup.status();
    }
  }
  result.already_present = start;
  if (options.progress) options.progress(start, result.chunks);

  std::vector<std::vector<uint8_t>> encoded;
  std::vector<PutItem> items;
  uint64_t batch_bytes = 0;
  bool registered = false;
  uint32_t batch_first = start;
  auto flush = [&]() -> Status {
    if (items.empty()) return Status::Ok();
    SEQKV_ASSIGN_OR_RETURN(auto results, BatchPut(ns, items, registered ? nullptr : &fields));
    registered = true;
    for (size_t i = 0; i < results.size(); ++i) {
      if (!results[i].status.ok()) {
        return results[i].status.WithContext("chunk " + std::to_string(batch_first + i) + " of " +
                                             std::to_string(result.chunks));
      }
      if (results[i].deduplicated) {
        ++result.already_present;
      } else {
        ++result.stored;
      }
    }
    batch_first += static_cast<uint32_t>(items.size());
    if (options.progress) options.progress(batch_first, result.chunks);
    items.clear();
    encoded.clear();
    batch_bytes = 0;
    return Status::Ok();
  };
  encoded.reserve(result.chunks - start);
  ChunkContext context;  // of the chunk before, when parent-conditioned
  for (uint32_t i = start; i < result.chunks; ++i) {
    SEQKV_ASSIGN_OR_RETURN(Chunk chunk, SliceKv(kv, i * fields.chunk_tokens, fields.chunk_tokens));
    ChunkContext next;
    const bool chain = options.parent_conditioned;
    SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           EncodeChunk(chunk, *codec, chain && i > start ? &context : nullptr,
                                       chain ? &next : nullptr));
    context = std::move(next);
    result.sent_bytes += bytes.size();
    result.raw_bytes += chunk.k.size() + chunk.v.size();
    batch_bytes += bytes.size();
    encoded.push_back(std::move(bytes));
    PutItem item;
    item.key = result.keys[i];
    if (i > 0) item.parent = result.keys[i - 1];
    item.pin = options.pin;
    items.push_back(item);
    if (batch_bytes >= kPutBatchBytes) {
      for (size_t j = 0; j < items.size(); ++j) items[j].encoded = encoded[j];
      SEQKV_RETURN_IF_ERROR(flush());
    }
  }
  for (size_t j = 0; j < items.size(); ++j) items[j].encoded = encoded[j];
  SEQKV_RETURN_IF_ERROR(flush());
  return result;
}

Result<GetPrefixResult> Client::GetPrefix(const NamespaceFields& fields, std::span<const int32_t> tokens) {
  SEQKV_RETURN_IF_ERROR(ValidateNamespace(fields));
  GetPrefixResult result;
  std::vector<Key128> keys = Keys(fields, tokens);
  if (keys.empty()) return result;
  const Key128 ns = NamespaceId(fields);
  Result<LookupResult> lookup = Lookup(ns, keys);
  if (!lookup.ok()) {
    if (lookup.status().code() == StatusCode::kNotFound) return result;  // unknown namespace: nothing stored
    return lookup.status();
  }
  keys.resize(lookup->prefix_chunks);
  if (keys.empty()) return result;
  SEQKV_ASSIGN_OR_RETURN(auto items, BatchGet(ns, keys));
  std::vector<Chunk> chunks;
  chunks.reserve(items.size());
  ChunkContext context;  // of the chunk before (parent-conditioned chunks need it)
  for (size_t i = 0; i < items.size(); ++i) {
    // A chunk evicted (or found corrupt, or coded after another parent) since
    // the Lookup ends the prefix.
    if (!items[i].ok()) break;
    auto expected = tokens.subspan(i * fields.chunk_tokens, fields.chunk_tokens);
    ChunkContext next;
    Result<Chunk> chunk = DecodeKv(*items[i], expected, i > 0 ? &context : nullptr, &next);
    context = std::move(next);
    if (!chunk.ok()) break;
    chunks.push_back(std::move(chunk).value());
  }
  if (chunks.empty()) return result;
  SEQKV_ASSIGN_OR_RETURN(result.kv, ConcatChunks(chunks));
  result.chunks = static_cast<uint32_t>(chunks.size());
  return result;
}

}  // namespace seqkv::client
