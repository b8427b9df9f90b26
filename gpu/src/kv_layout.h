// Private to gpu/: the engine layouts on the host side, shared by every codec
// API. Items are any struct with the destination fields of
// TurboQuantDecodeItem (token_offset, k_out, v_out, out_tokens, layer_caches,
// block_table, block_table_entries) or the source fields of an encode item
// (k_in, v_in, in_tokens, token_offset, layer_caches, block_table,
// block_table_entries).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu::internal {

// A paged layout's host checks: the cache and table given, and the table
// covering tokens up to `end`.
template <typename Item>
Status CheckBlockTable(const char* who, uint32_t block_size, const Item& item, uint64_t end) {
  if (!item.layer_caches || !item.block_table) return InvalidArgument(std::string(who) + ": null paged cache");
  const uint64_t blocks_needed = (end + block_size - 1) / block_size;
  if (item.block_table_entries < blocks_needed) {
    return OutOfRange(std::string(who) + ": block table has " + std::to_string(item.block_table_entries) +
                      " entries, tokens up to " + std::to_string(end) + " need " + std::to_string(blocks_needed));
  }
  return Status::Ok();
}

// The destination checks a host can make before launching (`who` names the API in messages).
template <typename Item>
Status CheckDestination(const char* who, KvDestination destination, uint32_t block_size, const Item& item,
                        uint32_t tokens) {
  const uint64_t end = item.token_offset + tokens;
  if (end > UINT32_MAX) return OutOfRange(std::string(who) + ": token positions must stay below 2^32");
  if (destination == KvDestination::kContiguous) {
    if (!item.k_out || !item.v_out) return InvalidArgument(std::string(who) + ": null output");
    if (item.out_tokens < end) {
      return OutOfRange(std::string(who) + ": tokens [" + std::to_string(item.token_offset) + ", " +
                        std::to_string(end) + ") past out_tokens " + std::to_string(item.out_tokens));
    }
    return Status::Ok();
  }
  return CheckBlockTable(who, block_size, item, end);
}

// The rows of a chunk of shape `s` in a vLLM-paged layout (CPU backend):
// checks every block id first (OUT_OF_RANGE "<who>: block table entry outside
// [0, num_blocks)", so a bad table touches nothing), then calls
// row(layer, kv, cache_offset, chunk_offset) for every (layer, token, kv,
// head): the byte offsets of one head_dim row in the layer's cache and in
// the chunk's tensor [layers, kv_heads, tokens, head_dim].
template <typename Item, typename Row>
Status ForEachPagedRow(const char* who, const KvShape& s, const Item& item, uint32_t bs, uint32_t num_blocks,
                       Row&& row) {
  const uint64_t row_bytes = uint64_t{s.head_dim} * 2;
  for (uint64_t t = 0; t < s.tokens; ++t) {
    const int32_t blk = item.block_table[(item.token_offset + t) / bs];
    if (blk < 0 || static_cast<uint32_t>(blk) >= num_blocks) {
      return OutOfRange(std::string(who) + ": block table entry outside [0, num_blocks)");
    }
  }
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (uint64_t t = 0; t < s.tokens; ++t) {
      const uint64_t pos = item.token_offset + t;
      const uint64_t blk = static_cast<uint64_t>(item.block_table[pos / bs]);
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < s.kv_heads; ++h) {
          row(l, kv, (((blk * 2 + kv) * bs + pos % bs) * s.kv_heads + h) * row_bytes,
              ((uint64_t{l} * s.kv_heads + h) * s.tokens + t) * row_bytes);
        }
      }
    }
  }
  return Status::Ok();
}

// Copies a decoded bf16 chunk (host memory, CPU backend) into the item's destination.
template <typename Item>
Status ScatterDecoded(const char* who, KvDestination destination, uint32_t block_size, uint32_t num_blocks,
                      const Item& item, const Chunk& chunk) {
  const KvShape& s = chunk.shape;
  const uint64_t row_bytes = uint64_t{s.head_dim} * 2;
  const std::vector<uint8_t>* tensors[2] = {&chunk.k, &chunk.v};
  if (destination == KvDestination::kContiguous) {
    uint8_t* outs[2] = {static_cast<uint8_t*>(item.k_out), static_cast<uint8_t*>(item.v_out)};
    for (int kv = 0; kv < 2; ++kv) {
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(outs[kv] + (lh * item.out_tokens + item.token_offset) * row_bytes,
                    tensors[kv]->data() + lh * s.tokens * row_bytes, s.tokens * row_bytes);
      }
    }
    return Status::Ok();
  }
  return ForEachPagedRow(who, s, item, block_size, num_blocks,
                         [&](uint32_t l, uint32_t kv, uint64_t cache_at, uint64_t chunk_at) {
                           std::memcpy(static_cast<uint8_t*>(item.layer_caches[l]) + cache_at,
                                       tensors[kv]->data() + chunk_at, row_bytes);
                         });
}

// The source checks a host can make before launching an encode: contiguous
// k_in / v_in holding the chunk's tokens, or a paged cache whose block table
// covers them.
template <typename Item>
Status CheckSource(const char* who, KvLayout source, uint32_t block_size, const Item& item, uint32_t tokens) {
  const uint64_t end = item.token_offset + tokens;
  if (end > UINT32_MAX) return OutOfRange(std::string(who) + ": token positions must stay below 2^32");
  if (source == KvLayout::kContiguous) {
    if (!item.k_in || !item.v_in) return InvalidArgument(std::string(who) + ": null input");
    if (item.in_tokens < end) return OutOfRange(std::string(who) + ": chunk tokens past in_tokens");
    return Status::Ok();
  }
  if (block_size == 0) return InvalidArgument(std::string(who) + ": paged source needs block_size and num_blocks");
  return CheckBlockTable(who, block_size, item, end);
}

// A bf16 chunk of `shape` gathered from the item's source (host memory, CPU
// backend): contiguous k_in / v_in, or the paged caches (OUT_OF_RANGE for a
// block table entry outside [0, num_blocks)). Token ids are zero.
template <typename Item>
Result<Chunk> GatherInput(const KvShape& shape, const Item& item, KvLayout source = KvLayout::kContiguous,
                          uint32_t block_size = 16, uint32_t num_blocks = 0) {
  const uint64_t row_bytes = uint64_t{shape.head_dim} * 2;
  Chunk chunk;
  chunk.shape = shape;
  chunk.dtype = DType::kBF16;
  chunk.tokens.assign(shape.tokens, 0);
  std::vector<uint8_t>* tensors[2] = {&chunk.k, &chunk.v};
  for (int kv = 0; kv < 2; ++kv) tensors[kv]->resize(chunk.TensorBytes());
  if (source == KvLayout::kContiguous) {
    const uint8_t* ins[2] = {static_cast<const uint8_t*>(item.k_in), static_cast<const uint8_t*>(item.v_in)};
    for (int kv = 0; kv < 2; ++kv) {
      for (uint64_t lh = 0; lh < uint64_t{shape.layers} * shape.kv_heads; ++lh) {
        std::memcpy(tensors[kv]->data() + lh * shape.tokens * row_bytes,
                    ins[kv] + (lh * item.in_tokens + item.token_offset) * row_bytes, shape.tokens * row_bytes);
      }
    }
    return chunk;
  }
  SEQKV_RETURN_IF_ERROR(ForEachPagedRow("paged source", shape, item, block_size, num_blocks,
                                        [&](uint32_t l, uint32_t kv, uint64_t cache_at, uint64_t chunk_at) {
                                          std::memcpy(tensors[kv]->data() + chunk_at,
                                                      static_cast<const uint8_t*>(item.layer_caches[l]) + cache_at,
                                                      row_bytes);
                                        }));
  return chunk;
}

}  // namespace seqkv::gpu::internal
