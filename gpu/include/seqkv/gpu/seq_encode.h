// Batched encode of the sequential codec's lossy chunks on the GPU (the
// prefill side), with the codec's CPU reference behind the same API when no
// GPU is present (docs/gpu.md, "Sequential codec: encode").
//
// Protocol, as the other codec APIs: Create -> CanImplement -> WorkspaceBytes
// -> Encode(args, workspace, stream) -> Finish, which waits for the stream and
// returns each item's chunk, framed (format.h): the same bytes as
// seqkv::EncodeChunk(chunk, codec) on the CPU.
//
// Pipeline per batch: per layer one launch that reads the layer's bf16 K and V
// (RoPE undone on the keys when the profile codes keys before RoPE), predicts
// every group from the previous layer's reconstruction, transforms the
// residual with the group's KLT, quantizes, and reconstructs as the decoder
// will (the closed loop); then one thread per component runs its adaptive
// models (lane streams, streams=lanes: prices the class shifts with the
// profile's static model), one thread per rANS lane codes the lane's symbols,
// and the lanes' words are merged into the group streams, written as layer
// sections into the caller's output buffers.
//
// Exactness: every float operation is the CPU reference's (codec/src/
// seq_lossy_core.cc) in its order without FMA contraction, so the symbols,
// the streams and the reconstruction are the reference's bit for bit; the
// encoder's proxy (an informational field) is summed in the reference's fixed
// tile order (SeqGroupSse). tests/gpu/seq_encode_gpu_test.cc compares chunks
// byte for byte.
//
// Rate control: with bits= or kl= the step of each chunk is searched as the
// CPU encoder searches it (SeqRateSearch), a round of trial encodes at a time
// for the whole batch, so Encode waits on the stream once per round (3-6
// typically); with delta=X it only enqueues.
//
// Scope: lossy seq specs (delta=, bits=, kl= with deadzone=, krate=, vrate=,
// lrate=, maxbits=, fallback=, streams=adaptive|lanes|lanes2|lanes3, arith=float|int12;
// on kCuda arith=int12 needs head_dim 64 or 128: its dense stage runs as exact
// integer sums on int8 tensor cores); profiles without layer 0 from the model; no
// parent-conditioned chunks; bf16 input in the contiguous or the vLLM-paged
// layout. A kl= budget that needs the codec's seq:lossless fallback fails with
// UNIMPLEMENTED (FAILED_PRECONDITION with fallback=none); an item whose
// streams would not fit in SeqEncodeMaxBytes (more than 16 bits per element)
// fails with RESOURCE_EXHAUSTED: encode those on the CPU (seqkv::EncodeChunk).
//
// Thread safety: calls on one SeqEncodeGpu are serialized by the caller (it
// keeps a device RoPE table and the last batch's bookkeeping).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu {

// Bytes an item's output buffer must hold: the layer sections when every group
// stream takes at most 16 bits per element.
uint64_t SeqEncodeMaxBytes(const KvShape& shape);

struct SeqEncodeItem {
  KvShape shape;                  // of the chunk to produce (the profile's layers, heads, head_dim)
  RopeParams rope;                // the chunk's header fields
  uint64_t first_position = 0;
  std::span<const int32_t> tokens;  // host memory: the chunk's token ids (shape.tokens)
  // The source in backend memory; the chunk's token t is sequence token
  // token_offset + t. kContiguous: K and V, each [layers, kv_heads,
  // in_tokens, head_dim] bf16. kPaged: vLLM's cache, per layer [num_blocks,
  // 2, block_size, kv_heads, head_dim] bf16, through the block table.
  uint64_t token_offset = 0;
  const void* k_in = nullptr;  // kContiguous
  const void* v_in = nullptr;
  uint64_t in_tokens = 0;
  const void* const* layer_caches = nullptr;  // kPaged
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
  // Backend memory of SeqEncodeMaxBytes(shape) bytes: the layer sections.
  uint8_t* out = nullptr;
};

struct SeqEncodeArgs {
  KvLayout source = KvLayout::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged
  std::span<const SeqEncodeItem> items;
};

class SeqEncodeGpu {
 public:
  // `codec` is a lossy seq codec made by seqkv::MakeCodec ("seq:delta=...");
  // the encoder keeps it (its profile, spec and flags). kCuda when
  // ProbeDevices() finds a device in a CUDA build, else kCpu.
  static Result<SeqEncodeGpu> Create(std::shared_ptr<const Codec> codec);
  // FAILED_PRECONDITION when kCuda is not available; UNIMPLEMENTED for a spec
  // or profile outside the scope above; INVALID_ARGUMENT for another codec.
  static Result<SeqEncodeGpu> CreateFor(Backend backend, std::shared_ptr<const Codec> codec);

  SeqEncodeGpu(SeqEncodeGpu&&) noexcept;
  SeqEncodeGpu& operator=(SeqEncodeGpu&&) noexcept;
  ~SeqEncodeGpu();

  Backend backend() const;

  Status CanImplement(const SeqEncodeArgs& args) const;
  uint64_t WorkspaceBytes(const SeqEncodeArgs& args) const;

  // Enqueues the batch on `stream` (a cudaStream_t; nullptr = the legacy
  // default stream); `statuses` gets the host-side checks, one per item. On
  // kCpu the call is synchronous and runs the codec's reference, the items on
  // up to host_threads() host threads.
  Status Encode(const SeqEncodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses);

  // Waits for `stream`, merges the device's findings and rate control's
  // outcomes into `statuses` (RESOURCE_EXHAUSTED: an item's streams did not
  // fit; OUT_OF_RANGE: a block table entry outside [0, num_blocks);
  // UNIMPLEMENTED / FAILED_PRECONDITION: the kl= budget needs the lossless
  // fallback) and, for every item
  // that succeeded, frames its chunk into (*chunks)[i] (host memory; empty for
  // a failed item). `args` must be the batch given to the last Encode.
  // On kCuda each item's sections come down on their own (pinned memory) and
  // the item is framed on one of up to host_threads() host threads as soon
  // as its download is complete, so framing overlaps the downloads and the
  // other items' framing.
  Status Finish(const SeqEncodeArgs& args, const void* workspace, void* stream, std::vector<Status>* statuses,
                std::vector<std::vector<uint8_t>>* chunks);

  // Host threads Finish (and kCpu's Encode, which encodes the items on them)
  // may use, the calling thread one of them: 1 runs everything on the calling
  // thread; 0 restores the default, the smaller of 8 and the machine's
  // hardware threads.
  void SetHostThreads(uint32_t threads);
  uint32_t host_threads() const;

 private:
  struct Impl;
  explicit SeqEncodeGpu(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace seqkv::gpu
