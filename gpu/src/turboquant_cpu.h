// Private to gpu/: the CPU path of TurboQuantGpu, one item at a time through
// the codec's reference implementation (codec/src/turboquant_codec.cc via the
// public Codec interface). Items have passed the host-side checks.
#pragma once

#include "seqkv/gpu/turboquant.h"

namespace seqkv::gpu::internal {

Status CpuDecodeItem(const TurboQuantDecodeArgs& args, const TurboQuantDecodeItem& item);
Status CpuEncodeItem(const TurboQuantEncodeArgs& args, const TurboQuantEncodeItem& item);

}  // namespace seqkv::gpu::internal
