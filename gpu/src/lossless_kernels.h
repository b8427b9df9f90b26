// Private to gpu/: launch interface of the lossless:coder=rans kernels.
// Included by host code (g++, C++20) and the .cu (nvcc, C++17): plain types.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqkv::gpu::internal {

inline constexpr int kLlWarpsPerBlock = 8;  // rANS blocks (one per warp) per CTA
inline constexpr int kLlThreads = kLlWarpsPerBlock * 32;

enum LlDeviceStatus : int32_t {
  kLlOk = 0,
  kLlDataLoss = 1,          // DATA_LOSS: a corrupt coded section
  kLlBlockOutOfRange = 2,   // OUT_OF_RANGE: block table entry
};

// One chunk of a batch. Built on the host.
struct LlDesc {
  // Decode inputs.
  const uint8_t* coded[2];
  uint64_t coded_bytes[2];
  const uint8_t* raw[2];
  // Decode: contiguous destinations or the paged caches; encode: the same as sources.
  void* tensors[2];
  void* const* layer_caches;
  const int32_t* block_table;
  // Encode outputs.
  uint8_t* out_coded[2];
  uint8_t* out_raw[2];
  uint64_t outer_tokens;  // token dimension of the contiguous tensors
  uint64_t token_offset;
  uint32_t layers, heads, tokens, head_dim;
  uint32_t blocks_per_layer;  // rANS blocks of one layer of one tensor
  uint32_t status_index;
  uint32_t first_unit;   // prefix over items of CTAs (units) of the launch
  uint32_t first_layer;  // prefix over items of layers (meta / tables index)
  uint32_t first_block;  // prefix over items of rANS blocks of one tensor
};

struct LlLaunch {
  const LlDesc* descs;  // device
  uint32_t count;
  uint32_t warps;             // warps per CTA of the block kernels (decode: 1..8; encode: 8)
  uint32_t total_units;       // CTAs of the block kernels
  uint32_t total_layers;      // sum of layers
  uint32_t total_blocks;      // sum over items of blocks of one tensor
  // Workspace arrays (device):
  uint32_t* meta;    // decode: per (item, tensor, layer) table offset, per (item, tensor) directory offset
  uint16_t* freqs;   // encode: per (item, tensor, layer) 256 frequencies
  uint32_t* words;   // encode: per (item, tensor, block) word count, then byte offset of the block
  uint64_t* sizes;   // encode: per (item, tensor) coded section size
  // Encode: the source layout (paged: the items' layer_caches and block_table).
  bool src_paged;
  uint32_t src_block_size, src_num_blocks;
  int32_t* statuses;
};

// Units (CTAs) an item needs: one per (tensor, layer, group of `warps` blocks).
inline uint32_t LlUnitsOf(uint32_t layers, uint32_t blocks_per_layer, uint32_t warps) {
  return 2 * layers * ((blocks_per_layer + warps - 1) / warps);
}

// Warps per decode CTA: enough for the largest layer's blocks, at most
// kLlWarpsPerBlock (a CTA expands one frequency table: small layers get small
// CTAs, so no warp waits idle beside the ones decoding).
inline uint32_t LlDecodeWarps(uint32_t max_blocks_per_layer) {
  uint32_t w = 1;
  while (w < max_blocks_per_layer && w < static_cast<uint32_t>(kLlWarpsPerBlock)) w <<= 1;
  return w;
}

cudaError_t LaunchLlDecode(const LlLaunch& launch, bool paged, uint32_t block_size, uint32_t num_blocks,
                           cudaStream_t stream);
cudaError_t LaunchLlEncode(const LlLaunch& launch, cudaStream_t stream);

}  // namespace seqkv::gpu::internal
