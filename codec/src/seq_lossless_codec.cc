// seq:lossless: bit-exact coding of KV by sequential prediction and context
// mixing (seq_lossless_model.h), one adaptive binary rANS stream per
// (layer group, K/V). bf16 only; fp16 and fp32 chunks are coded exactly as
// `lossless:level=19,order=0` codes them (same sections), so every dtype
// round-trips. docs/format.md, "seq", is the normative description.
#include "builtin_codecs.h"
#include "seq_lossless_model.h"

namespace seqkv::internal {

namespace {

class SeqLosslessCodec final : public Codec {
 public:
  explicit SeqLosslessCodec(std::unique_ptr<Codec> planes) : planes_(std::move(planes)) {}

  CodecId id() const override { return CodecId::kSeq; }
  std::string Spec() const override { return "seq:lossless=1"; }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    if (chunk.dtype != DType::kBF16) return planes_->Encode(chunk, sections);
    std::vector<std::vector<uint8_t>> streams = EncodeSeqLosslessBf16(chunk);
    for (size_t i = 0; i < streams.size(); ++i) {
      sections->push_back({static_cast<uint32_t>(i + 1), std::move(streams[i])});
    }
    return Status::Ok();
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    if (chunk->dtype != DType::kBF16) return planes_->Decode(sections, chunk);
    const SeqLosslessLayout layout = SeqLosslessLayoutFor(chunk->shape);
    if (sections.size() != 2 * size_t{layout.groups}) return DataLoss("seq: wrong number of sections");
    std::vector<std::span<const uint8_t>> streams;
    for (size_t i = 0; i < sections.size(); ++i) {
      if (sections[i].type != i + 1) return DataLoss("seq: unexpected section type");
      streams.push_back(sections[i].data);
    }
    return DecodeSeqLosslessBf16(streams, chunk);
  }

 private:
  std::unique_ptr<Codec> planes_;  // fp16 / fp32
};

}  // namespace

Result<std::unique_ptr<Codec>> MakeSeqLosslessCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {"lossless"}));
  CodecSpec planes_spec;
  planes_spec.name = "lossless";
  planes_spec.params = {{"level", "19"}, {"order", "0"}};
  SEQKV_ASSIGN_OR_RETURN(auto planes, MakeLosslessCodec(planes_spec));
  return std::unique_ptr<Codec>(new SeqLosslessCodec(std::move(planes)));
}

}  // namespace seqkv::internal
