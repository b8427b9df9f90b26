// tokens: the token-only tier. A chunk keeps its token ids (coded in the
// header, see token_coding.cc) and no KV; decoding says "recompute needed"
// and DecodeTokens returns the ids, so the engine can run a prefill.
#include "builtin_codecs.h"

namespace seqkv::internal {

namespace {

class TokensCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kTokens; }
  std::string Spec() const override { return "tokens"; }
  bool StoresKv() const override { return false; }

  Status Encode(const Chunk&, std::vector<Section>*) const override { return Status::Ok(); }
  Status Decode(std::span<const SectionView>, Chunk*) const override {
    return FailedPrecondition("recompute needed: token-only chunk");
  }
};

}  // namespace

Result<std::unique_ptr<Codec>> MakeTokensCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {}));
  return std::unique_ptr<Codec>(new TokensCodec());
}

}  // namespace seqkv::internal
