// seq: the sequential codec family (docs/format.md, "seq"). One registry
// entry, one codec id (6); the spec's keys pick the mode:
//   lossless=1          -> seq:lossless (seq_lossless_codec.cc)
//   anything else       -> the lossy modes (seq_lossy_codec.cc): bits=, kl=,
//                          delta= with a codec profile (seq_profile.h).
#include "builtin_codecs.h"

namespace seqkv::internal {

Result<std::unique_ptr<Codec>> MakeSeqCodec(const CodecSpec& spec) {
  auto it = spec.params.find("lossless");
  if (it != spec.params.end()) {
    SEQKV_ASSIGN_OR_RETURN(int64_t lossless, SpecInt(spec, "lossless", 0, 0, 1));
    if (lossless == 1) return MakeSeqLosslessCodec(spec);
  }
  return MakeSeqLossyCodec(spec);
}

}  // namespace seqkv::internal
