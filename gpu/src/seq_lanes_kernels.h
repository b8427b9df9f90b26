// Private to gpu/: launch interface of the seq codec's lane-stream decode
// (streams=lanes and lanes2; codec/src/seq_lanes.h, docs/format.md "Lane streams").
// Included by host code (g++, C++20) and the .cu (nvcc, C++17): plain types.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqkv::gpu::internal {

// A lane kernel's finding for an item (in SeqDecodeGpu's per-item status
// array, beside SdDeviceStatus): DATA_LOSS, the stream is not a valid lane
// stream (anything SeqDecodeLaneGroup rejects).
inline constexpr int32_t kSlCorrupt = 3;
// SlLaunch::half_symbols: a symbol term q * step outside FP16's range
// (FAILED_PRECONDITION, as kSdHalfRange: the same code). A corrupt stream's
// kSlCorrupt replaces it.
inline constexpr int32_t kSlHalfRange = 4;

// One group stream of a batch, 16 bytes (what is the same for every group
// of a chunk is its SlItem's: a third of the bytes uploaded per call of
// the old 48-byte descriptor). Built on the host.
struct SlDesc {
  const uint8_t* stream;
  uint32_t stream_bytes;  // SeqDecodeGpu takes streams under 4 GiB
  uint8_t code;           // the group's step code
  uint8_t pad[3];
};

// One chunk of a launch: the launch's descs [k G, (k + 1) G) are chunk k's
// groups 0..G-1 in order (G = SlLaunch::groups).
struct SlItem {
  int32_t* q;  // [G][tokens][dim] (workspace); magnitude model: zero beforehand
  uint32_t tokens;
  uint32_t status_index;  // the item's entry of the status array
  float delta0;           // the chunk's global step
  int16_t step_class;     // the chunk's
  uint16_t pad;
};

struct SlLaunch {
  const SlDesc* descs;  // device
  uint32_t count;       // descs: a multiple of groups
  uint32_t dim;
  const SlItem* items;        // device: count / groups of them
  uint32_t groups;            // G, the profile's groups (for the profile's scales: group g's)
  const double* multipliers;  // device: SeqMultiplier of every code, [256]
  const uint16_t* cum;    // device: [kSeqStaticClasses][3][kSeqLaneRowStride] cumulative frequencies, or
                          // with signed_model [kSeqStaticClasses][kSeqSignedRowStride]
  const int16_t* scale;   // device: the profile's static_scale [G][dim]
  int32_t* statuses;      // per item; a corrupt stream sets kSlCorrupt (first finding kept)
  bool signed_model;      // streams=lanes2: every desc is a signed lane stream, and
  const void* signed_search;  // device: SeqSignedSearchBytes (cumulative rows u16 [161][32], then buckets u8 [161][128])
  uint32_t threads;       // signed model: threads per block, 128 or 256 (0: 256); the magnitude model: 128
  // Signed model only: q holds FP16 operands of the f16 dense stage instead
  // of int32 symbols, [tokens][dim] uint16 at each group's q (the first half
  // of its int32 symbols' place): the bits of round-to-nearest-even FP16
  // of float(q) * float(step_base), step_base = double(delta0) *
  // multipliers[code] as the CPU's SeqStepBase (HalfOperand: SdLayerH16Kernel's
  // conversion, moved here: half the bytes written and read, and no
  // conversion in the dense stage). The components' step scales are in the
  // FP16 basis (SdLaunch::basis_h), not in the operand.
  bool half_symbols;
};

// Split lane streams (streams=lanes3; seq_split_lanes_kernels.cu): every
// desc a split lane stream, the signed model's search tables in
// signed_search (cum unused), q or FP16 operands as with lanes2 (half_symbols),
// and every symbol stored (nothing cleared beforehand). Head sizes up to
// kSplitMaxDim (a lane's components in one 32-bit mask).
inline constexpr uint32_t kSplitMaxDim = 512;
cudaError_t LaunchSplitLaneDecode(const SlLaunch& launch, cudaStream_t stream);

// Decodes every group stream of the launch into its q (or its FP16
// operands, half_symbols). The magnitude model's
// kernel stores only non-zero symbols, so q must be all zero beforehand; the
// signed model's kernel clears each group's q itself (all of it, whatever
// the stream holds).
cudaError_t LaunchSlDecode(const SlLaunch& launch, cudaStream_t stream);

}  // namespace seqkv::gpu::internal
