// What every batched GPU codec API shares (TurboQuantGpu, LosslessGpu): the
// backend, the engine layouts a decode writes into, and backend memory.
//
// Memory: the APIs take "backend memory": cudaMalloc'ed memory on kCuda,
// ordinary host memory on kCpu. The helpers below do the right thing for
// either, so callers never branch on the backend.
#pragma once

#include <cstdint>
#include <string_view>

#include "seqkv/codec/status.h"

namespace seqkv::gpu {

enum class Backend { kCpu, kCuda };

// What the APIs' Create() picks: kCuda when ProbeDevices() finds a device
// in a CUDA build, else kCpu.
Backend DefaultBackend();

// For the APIs' CreateFor(backend): OK for kCpu; for kCuda, when
// ProbeDevices() finds no device, FAILED_PRECONDITION "<api>: no CUDA
// device: <why>".
Status RequireBackend(Backend backend, std::string_view api);

enum class KvDestination {
  // Per chunk: K and V each [layers, kv_heads, out_tokens, head_dim] bf16;
  // the chunk's token t lands at token index token_offset + t.
  kContiguous,
  // vLLM's paged cache: per layer one tensor [num_blocks, 2, block_size,
  // kv_heads, head_dim] bf16 (2 = K, V); sequence token s = token_offset + t
  // lands in block block_table[s / block_size], slot s % block_size.
  kPaged,
};

// The same two layouts as an encoder's source (the item's k_in, v_in and
// in_tokens, or its layer_caches and block_table).
using KvLayout = KvDestination;

// cudaMalloc / cudaFree / cudaMemcpy / cudaMemset on kCuda; new / delete /
// memcpy / memset on kCpu. INTERNAL on kCuda in a build without CUDA.
Result<void*> BackendAllocate(Backend backend, uint64_t bytes);
void BackendFree(Backend backend, void* p);
Status BackendCopyIn(Backend backend, void* dst, const void* host_src, uint64_t bytes);
Status BackendCopyOut(Backend backend, void* host_dst, const void* src, uint64_t bytes);
Status BackendFill(Backend backend, void* dst, uint8_t value, uint64_t bytes);

}  // namespace seqkv::gpu
