#include "turboquant_cpu.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kv_layout.h"
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

  return ScatterDecoded("turboquant gpu", args.destination, args.block_size, args.num_blocks, item, chunk);
}

Status CpuEncodeItem(const TurboQuantEncodeArgs& args, const TurboQuantEncodeItem& item) {
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(SpecOf(item.params)));
  const KvShape& s = item.shape;
  SEQKV_ASSIGN_OR_RETURN(Chunk chunk, GatherInput(s, item, args.source, args.block_size, args.num_blocks));
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
