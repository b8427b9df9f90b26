// Private to gpu/: launch interface of the seq codec's GPU encoder (dense
// closed loop per layer, entropy coding per group stream, packing into layer
// sections). Included by host code (g++, C++20) and the .cu (nvcc, C++17):
// plain types only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "seq_int12.h"

namespace seqkv::gpu::internal {

enum SqDeviceStatus : int32_t {
  kSqOk = 0,
  kSqOverflow = 1,          // a group stream over the limit: RESOURCE_EXHAUSTED
  kSqBlockOutOfRange = 2,   // a block table entry outside [0, num_blocks): OUT_OF_RANGE
};

#ifdef __CUDACC__
#define SEQKV_SQ_HD __host__ __device__
#else
#define SEQKV_SQ_HD
#endif

// Tokens one CTA of the dense stage quantizes (each thread: one channel).
inline constexpr uint32_t kSqTileTokens = 16;  // 32 measured slower (39 vs 35 ms, 8K context)
// Tokens per partial squared-error sum (kSeqSseTile of the CPU reference).
inline constexpr uint32_t kSqSseTile = 16;
static_assert(kSqTileTokens % kSqSseTile == 0, "whole partial sums per CTA");

// CTAs per item and layer: one per (kv, head, tile of kSqTileTokens tokens,
// or kInt12TileTokens for arith=int12).
inline uint32_t SqCtasOf(uint32_t heads, uint32_t tokens, bool int12 = false) {
  const uint32_t tile = int12 ? kInt12TileTokens : kSqTileTokens;
  return 2 * heads * ((tokens + tile - 1) / tile);
}

// Per group: lane word counts, final states and operation counts, for up to
// 16 lanes (adaptive streams use 8, lane streams 16).
inline constexpr uint32_t kSqLaneSlots = 16;
// The largest group-stream header by stream kind: adaptive streams
// (bitmap, lane byte, 8 rANS states); lane streams (streams=lanes, lanes2:
// bitmap, lane byte, shift byte, 16 states); split lane streams (lanes3:
// bitmap, shift byte, 16 states, 15 LEB128 word counts of at most 5 bytes).
enum SqHeaderKind : uint32_t { kSqAdaptiveHeader = 0, kSqLaneHeader = 1, kSqSplitHeader = 2 };
SEQKV_SQ_HD inline uint32_t SqMaxHeaderBytes(uint32_t dim, uint32_t kind = kSqAdaptiveHeader) {
  return kind == kSqSplitHeader ? (dim + 7) / 8 + 1 + 4 * 16 + 5 * 15
         : kind == kSqLaneHeader ? (dim + 7) / 8 + 2 + 4 * 16
                                 : (dim + 7) / 8 + 1 + 4 * 8;
}
// Words a group's arena holds: every stream within the limit of
// SeqEncodeMaxBytes (the largest header + 16 bits per element) fits.
SEQKV_SQ_HD inline uint64_t SqArenaWords(uint32_t tokens, uint32_t dim) {
  return uint64_t{tokens} * dim + SqMaxHeaderBytes(dim, kSqSplitHeader) / 2 + 1;
}

// One chunk of a batch. Built on the host; arrays are workspace.
struct SqDesc {
  const uint16_t* in[2];       // contiguous source: K, V bf16 [layers][H][in_tokens][d]
  uint64_t in_tokens;
  const void* const* layer_caches;  // paged source: per layer [num_blocks][2][block_size][H][d]
  const int32_t* block_table;
  uint64_t token_offset;
  uint64_t first_position;     // RoPE position of token 0
  int32_t* q;                  // [G][T][d] symbols
  float* xhat[2];              // two layers of reconstruction, each [2][H][T][d]
  double* sse_part;            // [G][T / kSqSseTile][d] partial squared errors
  double* sse;                 // [G]
  uint64_t* cost;              // [G] estimated code length (SeqEstimateGroupCost's units)
  const double* step_base;     // [G] double(delta0) * multiplier
  uint32_t* ops;               // [G][T][d] adaptive streams: the magnitude symbols' start | freq << 16;
                               // lane streams: the lanes' words (SqLaneWriteKernel), 2 per element
  int16_t* rank;               // [G][d] rank among the coded components, -1: not coded
  uint32_t* coded;             // [G] coded components
  uint32_t* lane_words;        // [G][kSqLaneSlots] words per rANS lane
  uint32_t* lane_states;       // [G][kSqLaneSlots] final rANS states
  uint32_t* lane_ops;          // [G][kSqLaneSlots] lane streams: rANS operations per lane (the model kernel's)
  int8_t* shift;               // [G] lane streams: the class shift
  uint16_t* arena_words;       // [G][arena_cap] each lane's words, in emission order
  uint32_t* arena_keys;        // [G][arena_cap] and their keys (lane streams in one pass: the operation masks)
  uint64_t arena_cap;          // SqArenaWords(tokens, d)
  uint32_t* stream_bytes;      // [G]
  uint64_t* dst;               // [G] where each stream goes in `out`
  uint64_t* section_bytes;     // [layers]
  uint8_t* out;                // the item's output: the layer sections
  float rho;                   // rounding offset
  int16_t step_class;          // lane streams: SeqStepClass(delta0) of this trial
  uint32_t tokens;
  uint32_t rotate_keys;        // 1: undo RoPE on this chunk's keys
  uint32_t status_index;
  uint32_t first_cta;          // prefix over items of CTAs per layer launch
  uint32_t first_group;        // prefix over items of groups
  // arith=int12: one layer's coding-domain input and prediction, each
  // [2][H][T][d] (the quant kernel forms the residual x - pred itself); per
  // layer and block (kv, head) the largest finite |x| (float bits) of the
  // residual (rmax) and of the reconstruction (max_bits), [layers][2][H],
  // zeroed before each trial's layers.
  float* xin;
  float* pred;
  uint32_t* rmax;
  uint32_t* max_bits;
};

struct SqLaunch {
  const SqDesc* descs;  // device
  uint32_t count;
  uint32_t total_ctas;   // per layer launch
  uint32_t item_ctas;    // each item's CTAs per layer launch when all items have the same, else 0
  uint32_t total_groups;
  uint32_t layers, heads, head_dim, features;
  uint32_t inputs;  // 0 mean, 1 same head, 2 all heads (SeqInputs)
  const float* predictor;  // device: the profile's arrays
  const float* basis;      // [G][d][d]
  const float* basis_t;    // [G][d][d] transposed
  const float* step_scale;
  const uint32_t* cost_table;  // SeqCostTable()
  // Lane streams (streams=lanes): the profile's static model and step codes.
  bool lanes;
  bool signed_lanes;            // streams=lanes2 and lanes3: the tables below are the signed model's
  bool split;                   // streams=lanes3: lane j codes components j, j + 16, ..., each lane its own words
  const uint32_t* static_cost;  // [161][3][16] code lengths (SeqStaticTables::cost), or signed_cost [161][31]
  // Per entry of the static model's cumulative rows (SeqStaticTables::cum,
  // [161][3][kSeqLaneRowStride], or signed_cum, [161][32]), 16 bytes: start
  // | freq << 16 of symbol s, then SeqRansReciprocal(freq) as low and high
  // words, then 0 (all 0 past a row's symbols).
  const uint32_t* static_entry;
  const int16_t* static_scale;  // [G][d]
  const uint8_t* mult_code;     // [G]
  uint32_t rope_style;  // 1 rotate_half, 2 interleaved
  uint32_t rotary_dim;
  const float* rope_cos;
  const float* rope_sin;
  bool paged;  // the source layout
  uint32_t block_size, num_blocks;
  int32_t* statuses;
  // arith=int12: the dense stage on int8 tensor cores, exact (two launches
  // per layer); the operands' int8 halves (device_tables.h, Int12Tables).
  bool int12;
  const int8_t* w_i8;
  const int8_t* u_i8;
  const int8_t* v_i8;
  const int32_t* fixed_exp;  // [G][3]: ew, ev, eu
};

// Quantizes and reconstructs layer `layer` of every chunk (after layer - 1).
// arith=int12 needs a profile that Int12Fits (else cudaErrorInvalidValue).
cudaError_t LaunchSqLayer(const SqLaunch& launch, uint32_t layer, cudaStream_t stream);
// Runs the models over every group's symbols (each symbol's start and
// frequency), ranks the coded components, and per group sums the squared
// error and the estimated code length (what rate control needs of a trial).
// Lane streams: prices every class shift with the static model, keeps the
// cheapest (SeqEstimateLaneGroupCost's choice) and counts each lane's rANS
// operations (the lane kernels look the symbols' intervals up themselves).
cudaError_t LaunchSqModels(const SqLaunch& launch, cudaStream_t stream);
// Counts each rANS lane's words (after LaunchSqModels); lane-stream groups
// whose words fit the one-pass layout are coded here, words and all.
cudaError_t LaunchSqLaneCounts(const SqLaunch& launch, cudaStream_t stream);
// Lays out the layer sections in each item's output, then codes the other
// lanes again writing their words, and merges them into the streams.
cudaError_t LaunchSqPack(const SqLaunch& launch, cudaStream_t stream);

}  // namespace seqkv::gpu::internal
