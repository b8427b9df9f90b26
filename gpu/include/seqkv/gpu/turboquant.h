// Batched TurboQuant decode and encode on the GPU, with the codec's CPU
// reference behind the same API when no GPU is present (docs/gpu.md).
//
// Protocol (CUTLASS / nvCOMP style): CanImplement -> workspace size ->
// Decode/Encode(args, workspace, stream) on caller-owned memory and stream,
// then CollectStatuses for one Status per chunk.
//
// Memory: every pointer in the items is "device memory" of the backend:
// cudaMalloc'ed memory on kCuda, ordinary host memory on kCpu. Allocate /
// CopyIn / CopyOut below do the right thing for either, so callers never
// branch on the backend. Pointers need no alignment; 16-byte-aligned sections,
// rows and caches take the fastest path (docs/gpu.md: unaligned code sections
// decode at ~60 % of the memory floor instead of ~73 %).
//
// Scope (first version): bf16 tensors, integer widths bits = 1..4 without the
// outlier split (outliers=0), padded head_dim d' = NextPowerOfTwo(head_dim) in
// [32, 1024]. Anything else fails CanImplement / that chunk's status with
// UNIMPLEMENTED (the CPU reference still decodes it through seqkv::DecodeChunk).
//
// Exactness (tests/gpu/turboquant_gpu_test.cc checks both):
//   * Encode writes byte-identical sections to the CPU reference (indices and
//     fp16 norms): same float operations in the same order, no FMA contraction,
//     the norm's double sum in channel order.
//   * Decode reproduces the CPU reference's bf16 output; the documented
//     tolerance is 1 bf16 ulp per element (the kernels are written to be exact,
//     and on the H200 they measured exact: docs/gpu.md).
//
// Thread safety: a TurboQuantGpu is immutable; calls on different workspaces
// and streams may run concurrently. One workspace serves one call at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu {

// The codec parameters a GPU kernel needs, read from a chunk's spec.
struct TurboQuantParams {
  int bits = 4;                // 1..4
  uint32_t seed = 0x5EED5EEDu; // the codec's default
};

// Parses "turboquant:bits=B,outliers=0,seed=S". UNIMPLEMENTED for the outlier
// split or a half-step width; INVALID_ARGUMENT for anything not turboquant.
Result<TurboQuantParams> ParseTurboQuantSpec(std::string_view spec);

// Section sizes of one tensor (K or V) for a shape at `bits` (no split).
uint64_t TurboQuantNormBytes(const KvShape& shape);
uint64_t TurboQuantCodeBytes(const KvShape& shape, int bits);


struct TurboQuantDecodeItem {
  TurboQuantParams params;
  KvShape shape;  // from the chunk header; the chunk's dtype must be bf16
  // The chunk's four sections (header table order: K norms, K codes, V norms,
  // V codes) and their lengths, which are checked against the shape.
  const uint8_t* k_norms = nullptr;
  uint64_t k_norms_bytes = 0;
  const uint8_t* k_codes = nullptr;
  uint64_t k_codes_bytes = 0;
  const uint8_t* v_norms = nullptr;
  uint64_t v_norms_bytes = 0;
  const uint8_t* v_codes = nullptr;
  uint64_t v_codes_bytes = 0;

  uint64_t token_offset = 0;
  // kContiguous.
  void* k_out = nullptr;
  void* v_out = nullptr;
  uint64_t out_tokens = 0;  // >= token_offset + shape.tokens
  // kPaged. layer_caches is an array (in backend memory) of shape.layers
  // pointers; block_table holds >= ceil((token_offset + tokens) / block_size)
  // entries; each entry used must be in [0, num_blocks) (checked on the
  // device: OUT_OF_RANGE for that chunk).
  void* const* layer_caches = nullptr;
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
};

struct TurboQuantDecodeArgs {
  KvDestination destination = KvDestination::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged: blocks in each layer's cache
  std::span<const TurboQuantDecodeItem> items;
};

// Fills the section pointers of an item from a parsed header and the chunk's
// bytes at `chunk_base` (backend memory; the header describes the same bytes).
// Checks the codec id, the dtype (bf16) and the spec.
Result<TurboQuantDecodeItem> MakeDecodeItem(const ChunkHeader& header, const uint8_t* chunk_base);

struct TurboQuantEncodeItem {
  TurboQuantParams params;
  KvShape shape;  // of the chunk to produce
  // The source; the chunk's token t is sequence token token_offset + t.
  // kContiguous: K and V, each [layers, kv_heads, in_tokens, head_dim] bf16.
  // kPaged: vLLM's cache through the block table (as in TurboQuantDecodeItem).
  uint64_t token_offset = 0;
  const void* k_in = nullptr;  // kContiguous
  const void* v_in = nullptr;
  uint64_t in_tokens = 0;
  const void* const* layer_caches = nullptr;  // kPaged
  const int32_t* block_table = nullptr;
  uint64_t block_table_entries = 0;
  // Outputs: TurboQuantNormBytes / TurboQuantCodeBytes each.
  uint8_t* k_norms = nullptr;
  uint8_t* k_codes = nullptr;
  uint8_t* v_norms = nullptr;
  uint8_t* v_codes = nullptr;
};

struct TurboQuantEncodeArgs {
  KvLayout source = KvLayout::kContiguous;
  uint32_t block_size = 16;  // kPaged
  uint32_t num_blocks = 0;   // kPaged
  std::span<const TurboQuantEncodeItem> items;
};

class TurboQuantGpu {
 public:
  // The backend is chosen once, here: kCuda when ProbeDevices() finds a
  // device in a CUDA build, else kCpu.
  static TurboQuantGpu Create();
  // A given backend; FAILED_PRECONDITION when kCuda is not available.
  static Result<TurboQuantGpu> CreateFor(Backend backend);

  Backend backend() const { return backend_; }

  // Whole-batch checks (destination fields, item count). Per-chunk problems
  // are not errors here: they come back as that chunk's status.
  Status CanImplement(const TurboQuantDecodeArgs& args) const;
  Status CanImplement(const TurboQuantEncodeArgs& args) const;
  uint64_t WorkspaceBytes(const TurboQuantDecodeArgs& args) const;
  uint64_t WorkspaceBytes(const TurboQuantEncodeArgs& args) const;

  // Enqueues the batch on `stream` (a cudaStream_t; nullptr = the legacy
  // default stream). On kCuda this returns before the kernels finish; the
  // inputs, outputs and workspace must stay valid until the stream reaches
  // that point. `statuses` gets one entry per item: the host-side checks
  // (lengths, shape, parameters); call CollectStatuses to add what the device
  // found. A chunk whose status is not OK may have written part of its own
  // destination region, never anything outside it. On kCpu the call is
  // synchronous and runs the codec's reference. The returned Status is
  // non-OK only for whole-batch failures (workspace too small, a CUDA error).
  Status Decode(const TurboQuantDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses) const;
  Status Encode(const TurboQuantEncodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses) const;

  // Waits for `stream` and merges the device-side per-chunk results of the
  // last Decode/Encode on `workspace` into `statuses` (the vector that call
  // filled). Device findings: a stored norm that is negative, Inf or NaN
  // (DATA_LOSS), a block table entry out of range (OUT_OF_RANGE), a
  // non-finite input or a norm beyond fp16 (INVALID_ARGUMENT).
  Status CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses) const;

  // Backend memory helpers (cudaMalloc/cudaMemcpy on kCuda, new/memcpy on kCpu).
  Result<void*> Allocate(uint64_t bytes) const;
  void Free(void* p) const;
  Status CopyIn(void* dst, const void* host_src, uint64_t bytes) const;
  Status CopyOut(void* host_dst, const void* src, uint64_t bytes) const;
  Status Fill(void* dst, uint8_t value, uint64_t bytes) const;

 private:
  explicit TurboQuantGpu(Backend backend) : backend_(backend) {}
  Backend backend_;
};

}  // namespace seqkv::gpu
