// Batched decode of the sequential codec's lossy chunks on the GPU, straight
// into the engine's layout, with the codec's CPU reference behind the same API
// when no GPU is present (docs/gpu.md, "Sequential codec: the whole decode").
//
// Pipeline per batch: the group streams through SeqEntropyGpu, or for
// streams=lanes chunks through the lane kernel (int32 symbols in the
// workspace), then per layer one launch that predicts every group from
// the previous layer's reconstruction, adds the dequantized KLT components,
// keeps the reconstruction for the next layer and writes bf16 K (RoPE applied
// when the profile codes keys before RoPE) and V to the destination.
//
// Exactness: arith=int12 chunks are exact on every path (integer sums on
// int8 tensor cores on kCuda; docs/gpu.md, "arith=int12 on int8 tensor
// cores"). For float chunks, with SeqDenseMath::kExact every float operation
// is the CPU reference's (codec/src/seq_lossy_core.cc, engine_rope.cc), in the same
// order, without FMA contraction: the output is the same bf16 as
// seqkv::DecodeChunk's, bit for bit (tests/gpu/seq_decode_gpu_test.cc). The
// tensor-core maths (SeqDenseMath) compute the same sums on tensor cores:
// the symbols are the same, the bf16 output within the tolerance that
// docs/gpu.md ("Sequential codec: the dense stage on tensor cores")
// documents and the tests check.
//
// Scope: bf16 chunks of the profile given at Create, lossy mode, layer 0 coded
// (profiles calibrated without a model), adaptive or lane streams (lane
// chunks, the default, never continue a parent). MakeSeqDecodeItem answers
// UNIMPLEMENTED for a lossless-fallback chunk or a chunk whose layer 0 comes
// from the model, and FAILED_PRECONDITION for a parent-conditioned chunk or
// another profile's chunk: decode those with seqkv::DecodeChunk on the CPU.
// On kCuda, Decode answers UNIMPLEMENTED (that item's status) for an
// arith=int12 chunk whose head size is not 64 or 128.
//
// Memory: the workspace holds the symbols (4 bytes per element of the batch),
// two layers of float reconstructions and, for arith=int12 chunks, a word per
// layer and (kv, head); WorkspaceBytes says how much.
//
// Thread safety: Decode calls on one SeqDecodeGpu are serialized by the
// caller (the object keeps a device RoPE table that grows with the positions
// it has seen); different objects are independent.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu {

struct SeqDecodeItem {
  KvShape shape;
  RopeParams rope;
  uint64_t first_position = 0;
  float delta0 = 0;                 // the chunk's global step
  std::vector<uint8_t> mult_code;   // [G] step-multiplier codes
  // The group streams, [layer][kv][head], in backend memory. On kCuda a lane
  // stream (streams=lanes, lanes2, lanes3) is under 4 GiB (its length is 32
  // bits on the device; a longer one makes the item INVALID_ARGUMENT).
  std::vector<const uint8_t*> streams;
  std::vector<uint64_t> stream_bytes;
  // How the streams are coded: lane streams (streams=lanes, lanes2: the
  // profile's static magnitude or signed model, a half-warp per group) take
  // step_class, the chunk's.
  SeqStreamCoding coding = SeqStreamCoding::kAdaptive;
  int16_t step_class = 0;
  // The chunk's dense arithmetic (arith=; docs/format.md). kInt12 chunks
  // decode exactly on every path, whatever SeqDecodeArgs::math says: on kCuda
  // with integer sums on int8 tensor cores (head sizes 64 and 128; others
  // are UNIMPLEMENTED there, decode them on the CPU).
  SeqArith arith = SeqArith::kFloat;

  // Destination, as in TurboQuantDecodeItem.
  uint64_t token_offset = 0;
  void* k_out = nullptr;  // kContiguous
  void* v_out = nullptr;
  uint64_t out_tokens = 0;
  void* const* layer_caches = nullptr;  // kPaged
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
};

// How the dense stage (prediction and reconstruction) computes its sums on
// kCuda. kCpu always runs the reference (exact).
enum class SeqDenseMath {
  // The reference's float32 operations in its order: DecodeChunk's bytes.
  kExact,
  // Tensor cores, every product as three TF32 products (hi*hi + hi*lo +
  // lo*hi, float32 sums): float32-like accuracy, bf16 output within the
  // documented tolerance of DecodeChunk's (one bf16 ulp on the few elements
  // that differ, measured). Runs kExact for head sizes other than 64 and 128.
  kTensorTf32x3,
  // Tensor cores, one TF32 product per term: its documented tolerance is
  // wider; the same head sizes.
  kTensorTf32,
  // Tensor cores with FP16 operands (features, q * the chunk's step base,
  // weights with the basis times its step scales; float32 sums): TF32's
  // significand, half the operand bytes, the fastest. FP16's
  // range bounds it: a chunk with a value of magnitude >= 65520 on the way
  // gets FAILED_PRECONDITION (decode it with another math), and a profile
  // with such a weight refuses the call. The same head sizes.
  kTensorF16,
};

struct SeqDecodeArgs {
  SeqDenseMath math = SeqDenseMath::kExact;
  KvDestination destination = KvDestination::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged
  std::span<const SeqDecodeItem> items;
};

// An item from a parsed header, the chunk's bytes on the host (for the small
// tables: parameters, stream lengths) and the same bytes in backend memory
// (`chunk_in_backend`; may equal host_chunk.data() on kCpu). Checks the codec,
// the profile, the flags and the parameters as the CPU decoder does.
Result<SeqDecodeItem> MakeSeqDecodeItem(const ChunkHeader& header, std::span<const uint8_t> host_chunk,
                                        const uint8_t* chunk_in_backend, const SeqProfile& profile);

class SeqDecodeGpu {
 public:
  // Uploads the profile (predictors, KLT bases, step scales) to the backend.
  // kCuda when ProbeDevices() finds a device in a CUDA build, else kCpu.
  static Result<SeqDecodeGpu> Create(std::shared_ptr<const SeqProfile> profile);
  // FAILED_PRECONDITION when kCuda is not available.
  static Result<SeqDecodeGpu> CreateFor(Backend backend, std::shared_ptr<const SeqProfile> profile);

  SeqDecodeGpu(SeqDecodeGpu&&) noexcept;
  SeqDecodeGpu& operator=(SeqDecodeGpu&&) noexcept;
  ~SeqDecodeGpu();

  Backend backend() const;

  Status CanImplement(const SeqDecodeArgs& args) const;
  uint64_t WorkspaceBytes(const SeqDecodeArgs& args) const;

  // Enqueues the batch on `stream` (a cudaStream_t; nullptr = the legacy
  // default stream); `statuses` gets the host-side checks, one per item. On
  // kCpu the call is synchronous and runs the codec's reference, the items on
  // up to host_threads() host threads.
  Status Decode(const SeqDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses);

  // Host threads kCpu's Decode may use (the calling thread is one of them):
  // 1 decodes every item on the calling thread; 0 restores the default, the
  // smaller of 8 and the machine's hardware threads.
  void SetHostThreads(uint32_t threads);
  uint32_t host_threads() const;

  // Waits for `stream` and merges the device's findings (a corrupt group
  // stream: DATA_LOSS; a block table entry: OUT_OF_RANGE) into `statuses`.
  Status CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses) const;

 private:
  struct Impl;
  explicit SeqDecodeGpu(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace seqkv::gpu
