// Batched bit-exact decode and encode of `lossless:coder=rans` chunks on the
// GPU, with the codec's CPU reference behind the same API when no GPU is
// present (docs/gpu.md). Same protocol as TurboQuantGpu: CanImplement ->
// WorkspaceBytes -> Decode/Encode(args, workspace, stream) on caller-owned
// backend memory (backend.h) -> CollectStatuses.
//
// Format (docs/format.md, "lossless, coder=rans"): per tensor, section
// tensor*16 + 0 holds the exponent bytes coded with static rANS (one table
// per layer, independent 16384-symbol blocks of 32 interleaved states: one
// warp decodes one block in lockstep), section tensor*16 + 1 the
// sign-mantissa bytes as they are.
//
// Scope: bf16 chunks (fp16 and fp32 chunks decode through seqkv::DecodeChunk
// on the CPU); a layer of one tensor holds at most 2^31 elements.
//
// Exactness: decode writes exactly the original bf16 values; encode writes
// exactly the bytes of the CPU reference (tests/gpu/lossless_gpu_test.cc).
// Corrupt sections give that chunk DATA_LOSS, never an out-of-bounds read;
// the destination region of a failed chunk may be partly written.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu {

// Size of the raw (sign-mantissa) section of one tensor, and an upper bound
// of the coded (exponent) section: what Encode's outputs must hold.
uint64_t LosslessRawBytes(const KvShape& shape);
uint64_t LosslessMaxCodedBytes(const KvShape& shape);

struct LosslessDecodeItem {
  KvShape shape;  // from the chunk header; bf16
  // [0] = K, [1] = V: the coded exponent section and the raw section.
  const uint8_t* coded[2] = {nullptr, nullptr};
  uint64_t coded_bytes[2] = {0, 0};
  const uint8_t* raw[2] = {nullptr, nullptr};
  uint64_t raw_bytes[2] = {0, 0};

  // Destination, as in TurboQuantDecodeItem.
  uint64_t token_offset = 0;
  void* k_out = nullptr;  // kContiguous
  void* v_out = nullptr;
  uint64_t out_tokens = 0;
  void* const* layer_caches = nullptr;  // kPaged
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
};

struct LosslessDecodeArgs {
  KvDestination destination = KvDestination::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged
  std::span<const LosslessDecodeItem> items;
};

// Fills an item's section pointers from a parsed header and the chunk's bytes
// at `chunk_base` (backend memory). Checks codec, spec, dtype and sections.
Result<LosslessDecodeItem> MakeLosslessDecodeItem(const ChunkHeader& header, const uint8_t* chunk_base);

struct LosslessEncodeItem {
  KvShape shape;  // of the chunk to produce (bf16)
  // The source; the chunk's token t is sequence token token_offset + t.
  // kContiguous: K and V, each [layers, kv_heads, in_tokens, head_dim] bf16.
  // kPaged: vLLM's cache through the block table (as in LosslessDecodeItem).
  uint64_t token_offset = 0;
  const void* k_in = nullptr;  // kContiguous
  const void* v_in = nullptr;
  uint64_t in_tokens = 0;
  const void* const* layer_caches = nullptr;  // kPaged
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
  // Outputs: coded[i] holds LosslessMaxCodedBytes(shape), raw[i]
  // LosslessRawBytes(shape). The coded sizes come back from CollectStatuses.
  uint8_t* coded[2] = {nullptr, nullptr};
  uint8_t* raw[2] = {nullptr, nullptr};
};

struct LosslessEncodeArgs {
  KvLayout source = KvLayout::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged
  std::span<const LosslessEncodeItem> items;
};

class LosslessGpu {
 public:
  // kCuda when ProbeDevices() finds a device in a CUDA build, else kCpu.
  static LosslessGpu Create();
  // FAILED_PRECONDITION when kCuda is not available.
  static Result<LosslessGpu> CreateFor(Backend backend);

  Backend backend() const { return backend_; }

  Status CanImplement(const LosslessDecodeArgs& args) const;
  Status CanImplement(const LosslessEncodeArgs& args) const;
  uint64_t WorkspaceBytes(const LosslessDecodeArgs& args) const;
  uint64_t WorkspaceBytes(const LosslessEncodeArgs& args) const;

  // Enqueue on `stream` (a cudaStream_t; nullptr = the legacy default
  // stream); `statuses` gets the host-side checks, one per item. On kCpu the
  // call is synchronous and runs the codec's reference.
  Status Decode(const LosslessDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses) const;
  Status Encode(const LosslessEncodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses) const;

  // Waits for `stream` and merges the device's per-item findings into
  // `statuses` (DATA_LOSS: corrupt section; OUT_OF_RANGE: block table entry).
  // After Encode, `coded_bytes` (if given) gets 2 sizes per item (K, V) in
  // item order: the coded sections' lengths (0 for a failed item).
  Status CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses,
                         std::vector<uint64_t>* coded_bytes = nullptr) const;

 private:
  explicit LosslessGpu(Backend backend) : backend_(backend) {}
  Backend backend_;
  // Encode's sizes on kCpu (the CPU path has no workspace to keep them in).
  mutable std::vector<uint64_t> cpu_coded_bytes_;
};

}  // namespace seqkv::gpu
