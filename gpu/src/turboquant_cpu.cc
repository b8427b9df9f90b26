#include "turboquant_cpu.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"

namespace seqkv::gpu::internal {

namespace {

std::string SpecOf(const TurboQuantParams& params) {
  return "turboquant:bits=" + std::to_string(params.bits) + ",outliers=0,seed=" + std::to_string(params.seed);
}

}  // namespace

Status CpuDecodeItem(const TurboQuantDecodeArgs& args, const TurboQuantDecodeItem& item) {
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(SpecOf(item.params)));
  const SectionView sections[4] = {
      {1, {item.k_norms, item.k_norms_bytes}},
      {2, {item.k_codes, item.k_codes_bytes}},
      {3, {item.v_norms, item.v_norms_bytes}},
      {4, {item.v_codes, item.v_codes_bytes}},
  };
  Chunk chunk;
  chunk.shape = item.shape;
  chunk.dtype = DType::kBF16;
  chunk.tokens.assign(item.shape.tokens, 0);
  SEQKV_RETURN_IF_ERROR(codec->Decode(sections, &chunk));

  const KvShape& s = item.shape;
  const uint64_t row_bytes = uint64_t{s.head_dim} * 2;
  const std::vector<uint8_t>* tensors[2] = {&chunk.k, &chunk.v};
  if (args.destination == KvDestination::kContiguous) {
    uint8_t* outs[2] = {static_cast<uint8_t*>(item.k_out), static_cast<uint8_t*>(item.v_out)};
    for (int kv = 0; kv < 2; ++kv) {
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(outs[kv] + (lh * item.out_tokens + item.token_offset) * row_bytes,
                    tensors[kv]->data() + lh * s.tokens * row_bytes, s.tokens * row_bytes);
      }
    }
    return Status::Ok();
  }
  // Paged: check every block id first, so a bad table writes nothing.
  const uint32_t bs = args.block_size;
  for (uint64_t t = 0; t < s.tokens; ++t) {
    const int32_t blk = item.block_table[(item.token_offset + t) / bs];
    if (blk < 0 || static_cast<uint32_t>(blk) >= args.num_blocks) {
      return OutOfRange("turboquant gpu: block table entry outside [0, num_blocks)");
    }
  }
  for (uint32_t l = 0; l < s.layers; ++l) {
    auto* cache = static_cast<uint8_t*>(item.layer_caches[l]);
    for (uint64_t t = 0; t < s.tokens; ++t) {
      const uint64_t pos = item.token_offset + t;
      const uint64_t blk = static_cast<uint64_t>(item.block_table[pos / bs]);
      for (int kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < s.kv_heads; ++h) {
          const uint64_t dst = (((blk * 2 + kv) * bs + pos % bs) * s.kv_heads + h) * row_bytes;
          const uint64_t src = ((uint64_t{l} * s.kv_heads + h) * s.tokens + t) * row_bytes;
          std::memcpy(cache + dst, tensors[kv]->data() + src, row_bytes);
        }
      }
    }
  }
  return Status::Ok();
}

Status CpuEncodeItem(const TurboQuantEncodeItem& item) {
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(SpecOf(item.params)));
  const KvShape& s = item.shape;
  const uint64_t row_bytes = uint64_t{s.head_dim} * 2;
  Chunk chunk;
  chunk.shape = s;
  chunk.dtype = DType::kBF16;
  chunk.tokens.assign(s.tokens, 0);
  const uint8_t* ins[2] = {static_cast<const uint8_t*>(item.k_in), static_cast<const uint8_t*>(item.v_in)};
  std::vector<uint8_t>* tensors[2] = {&chunk.k, &chunk.v};
  for (int kv = 0; kv < 2; ++kv) {
    tensors[kv]->resize(chunk.TensorBytes());
    for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
      std::memcpy(tensors[kv]->data() + lh * s.tokens * row_bytes,
                  ins[kv] + (lh * item.in_tokens + item.token_offset) * row_bytes, s.tokens * row_bytes);
    }
  }
  std::vector<Section> sections;
  SEQKV_RETURN_IF_ERROR(codec->Encode(chunk, &sections));
  if (sections.size() != 4) return Internal("turboquant gpu: reference wrote " + std::to_string(sections.size()) + " sections");
  uint8_t* outs[4] = {item.k_norms, item.k_codes, item.v_norms, item.v_codes};
  const uint64_t expected[4] = {TurboQuantNormBytes(s), TurboQuantCodeBytes(s, item.params.bits),
                                TurboQuantNormBytes(s), TurboQuantCodeBytes(s, item.params.bits)};
  for (int i = 0; i < 4; ++i) {
    if (sections[i].data.size() != expected[i]) return Internal("turboquant gpu: unexpected section size");
    std::memcpy(outs[i], sections[i].data.data(), expected[i]);
  }
  return Status::Ok();
}

}  // namespace seqkv::gpu::internal
