// raw: K and V bytes as they are. Sections: 1 = K, 2 = V.
#include "builtin_codecs.h"

namespace seqkv::internal {

namespace {

class RawCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kRaw; }
  std::string Spec() const override { return "raw"; }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    sections->push_back({1, chunk.k});
    sections->push_back({2, chunk.v});
    return Status::Ok();
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    if (sections.size() != 2 || sections[0].type != 1 || sections[1].type != 2) {
      return DataLoss("raw: expected sections K and V");
    }
    uint64_t bytes = chunk->TensorBytes();
    if (sections[0].data.size() != bytes || sections[1].data.size() != bytes) {
      return DataLoss("raw: section sizes do not match the shape");
    }
    chunk->k.assign(sections[0].data.begin(), sections[0].data.end());
    chunk->v.assign(sections[1].data.begin(), sections[1].data.end());
    return Status::Ok();
  }
};

}  // namespace

Result<std::unique_ptr<Codec>> MakeRawCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {}));
  return std::unique_ptr<Codec>(new RawCodec());
}

}  // namespace seqkv::internal
