// Batched decode of the sequential codec's group streams (the entropy stage of
// "seq lossy", docs/format.md: "Group stream") on the GPU, with the codec's
// CPU reference (seqkv::internal::SeqDecodeGroup) behind the same API when no
// GPU is present (docs/gpu.md, "Sequential codec: group-stream entropy decode").
//
// Protocol (as TurboQuantGpu): CanImplement -> WorkspaceBytes -> Decode(args,
// workspace, stream) on caller-owned memory and stream, then CollectStatuses
// for one Status per item.
//
// Memory: every pointer in the items is "device memory" of the backend:
// cudaMalloc'ed memory on kCuda, ordinary host memory on kCpu. Allocate /
// CopyIn / CopyOut / Fill below do the right thing for either. No alignment is
// needed.
//
// Scope: fresh model state only, i.e. the group streams of a chunk that is
// not parent-conditioned (header flag *needs parent* clear). A
// parent-conditioned chunk's streams start from the models its parent ended
// with; decoding them here would read them with fresh models and (almost
// always) fail with DATA_LOSS or, worse, succeed with wrong symbols. The caller
// must not pass them (seqkv::DecodeChunk with the parent decodes them on the CPU).
//
// Exactness: the output q is bit-identical to SeqDecodeGroup's (integer
// arithmetic only), and every stream gets the same accept / reject decision:
// DATA_LOSS for everything SeqDecodeGroup rejects (truncated header, bad
// bitmap padding, bad lane count, bad rANS state, odd word bytes, words
// missing or left over, final state mismatch, an escape that is too long or
// too large, a coded component with no non-zero symbol). The kernel never
// reads outside [stream, stream + stream_bytes) and writes only q_out[0 ..
// tokens * dim). An item whose status is not OK may have written any part of
// its own q_out (the CPU reference zero-fills it first and may have written
// some symbols too).
//
// Thread safety: a SeqEntropyGpu is immutable; calls on different workspaces
// and streams may run concurrently. One workspace serves one call at a time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"  // Backend and backend memory, shared with TurboQuantGpu and LosslessGpu

namespace seqkv::gpu {

// One group stream: symbols q[tokens][dim] (int32) of one (layer, kv, head).
struct SeqEntropyItem {
  const uint8_t* stream = nullptr;  // the group stream's bytes
  uint64_t stream_bytes = 0;
  uint32_t tokens = 0;
  uint32_t dim = 0;          // 1 .. kSeqEntropyMaxDim
  int32_t* q_out = nullptr;  // [tokens][dim]
};

inline constexpr uint32_t kSeqEntropyMaxDim = 1024;

// Which CUDA kernel decodes (both give the same output; docs/gpu.md has the
// measurements). kAuto picks by batch size; the others are for benchmarks and
// tests. Ignored on kCpu.
enum class SeqEntropyKernel {
  kAuto,
  // One thread per group stream; the adaptive models live in the workspace
  // (global memory, L2-resident). Any number of streams in flight.
  kGlobalModels,
  // One thread per group stream; the models live in shared memory (a few
  // streams per block). Lower latency per symbol, fewer streams in flight.
  kSharedModels,
};

struct SeqEntropyDecodeArgs {
  std::span<const SeqEntropyItem> items;
  SeqEntropyKernel kernel = SeqEntropyKernel::kAuto;
};

class SeqEntropyGpu {
 public:
  // kCuda when ProbeDevices() finds a device in a CUDA build, else kCpu.
  static SeqEntropyGpu Create();
  // A given backend; FAILED_PRECONDITION when kCuda is not available.
  static Result<SeqEntropyGpu> CreateFor(Backend backend);

  Backend backend() const { return backend_; }

  // Whole-batch checks (item count). Per-item problems come back as that
  // item's status.
  Status CanImplement(const SeqEntropyDecodeArgs& args) const;
  // Bytes of workspace Decode needs for `args` (0 on kCpu). Depends on the
  // items' dims and count and on the kernel that will run.
  uint64_t WorkspaceBytes(const SeqEntropyDecodeArgs& args) const;

  // Enqueues the batch on `stream` (a cudaStream_t; nullptr = the legacy
  // default stream). On kCuda this returns before the kernel finishes; the
  // streams, outputs and workspace must stay valid until the stream reaches
  // that point. `statuses` gets one entry per item: the host-side checks
  // (null pointers, dim range: INVALID_ARGUMENT); CollectStatuses adds what the
  // device found (DATA_LOSS). On kCpu the call is synchronous and runs
  // SeqDecodeGroup. The returned Status is non-OK only for whole-batch
  // failures (workspace too small, a CUDA error).
  Status Decode(const SeqEntropyDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                std::vector<Status>* statuses) const;

  // Waits for `stream` and merges the device-side results of the last Decode
  // on `workspace` into `statuses` (the vector that call filled).
  Status CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses) const;

  // Backend memory helpers (cudaMalloc/cudaMemcpy on kCuda, new/memcpy on kCpu).
  // (seqkv/gpu/backend.h's helpers for this backend.)
  Result<void*> Allocate(uint64_t bytes) const { return BackendAllocate(backend_, bytes); }
  void Free(void* p) const { BackendFree(backend_, p); }
  Status CopyIn(void* dst, const void* host_src, uint64_t bytes) const {
    return BackendCopyIn(backend_, dst, host_src, bytes);
  }
  Status CopyOut(void* host_dst, const void* src, uint64_t bytes) const {
    return BackendCopyOut(backend_, host_dst, src, bytes);
  }
  Status Fill(void* dst, uint8_t value, uint64_t bytes) const {
    return BackendFill(backend_, dst, value, bytes);
  }

 private:
  explicit SeqEntropyGpu(Backend backend) : backend_(backend) {}
  Backend backend_;
};

}  // namespace seqkv::gpu
