// Shared by the GPU benches (bench/gpu/*_bench.cc): fail-fast checks, device
// allocation and event timing. Header-only; the benches build with CUDA only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "seqkv/codec/seq_profile.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

#define CHECK_CUDA(expr)                                                                         \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)
#define CHECK_OK(expr)                                                                          \
  do {                                                                                          \
    ::seqkv::Status s_ = (expr);                                                                \
    if (!s_.ok()) {                                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, s_.ToString().c_str()); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

namespace seqkv::bench {

// A seq codec profile of the model's shape with random predictors (the
// arithmetic per element is the real one; the values do not change the
// work). The basis: random Gaussian rows (enough for a decode, which only
// multiplies by it) or, `orthonormal`, signed Hadamard rows (an encode's
// closed loop stays stable; d a power of two).
inline std::shared_ptr<const SeqProfile> SyntheticSeqProfile(uint32_t L, uint32_t H, uint32_t d, SeqInputs inputs,
                                                              bool orthonormal, float step_scale = 0.05f) {
  SeqProfile p;
  p.layers = L;
  p.kv_heads = H;
  p.head_dim = d;
  p.inputs = inputs;
  p.pre_rope_keys = true;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  const uint64_t G = p.groups(), F = p.features();
  p.predictor.resize(G * F * d);
  for (float& w : p.predictor) w = 0.5f * n(rng) / std::sqrt(float(F));
  p.basis.resize(G * d * d);
  if (orthonormal) {
    const float norm = 1.0f / std::sqrt(float(d));
    for (uint64_t g = 0; g < G; ++g) {
      for (uint32_t i = 0; i < d; ++i) {
        const float sign = (rng() & 1) ? 1.0f : -1.0f;
        for (uint32_t j = 0; j < d; ++j) {
          p.basis[(g * d + i) * d + j] = ((__builtin_popcount(i & j) & 1) ? -sign : sign) * norm;
        }
      }
    }
  } else {
    for (float& w : p.basis) w = n(rng) / std::sqrt(float(d));
  }
  p.step_scale.assign(G * d, step_scale);
  p.sensitivity.assign(G, 1.0f);
  CHECK_OK(p.Validate());
  return std::make_shared<const SeqProfile>(std::move(p));
}

inline void* DeviceAlloc(uint64_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  return p;
}

struct Timing {
  int warmup = 3;
  int repeats = 15;
  // 1: one call on an idle stream per sample (host work included); > 1:
  // back-to-back calls, so host work overlaps the previous call's kernels
  // (the steady-state cost per call).
  int calls_per_sample = 1;
};

// Median milliseconds per call of f, timed with CUDA events on `stream`.
template <typename F>
double MedianMs(cudaStream_t stream, F&& f, Timing t = {}) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < t.warmup; ++i) f();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int i = 0; i < t.repeats; ++i) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    for (int c = 0; c < t.calls_per_sample; ++c) f();
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float elapsed = 0;
    CHECK_CUDA(cudaEventElapsedTime(&elapsed, a, b));
    ms.push_back(elapsed / t.calls_per_sample);
  }
  CHECK_CUDA(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  return ms[ms.size() / 2];
}

// vLLM's paged cache for a sequence of `tokens` tokens on the device: per
// layer one [num_blocks, 2, block_size, heads, head_dim] bf16 tensor, an
// array of the layer pointers, and a shuffled block table. Freed at scope exit.
struct PagedCache {
  uint32_t block_size = 16;
  uint32_t num_blocks = 0;
  uint32_t heads = 0, head_dim = 0;
  uint64_t layer_bytes = 0;
  std::vector<int32_t> table;  // host copy
  int32_t* table_dev = nullptr;
  std::vector<void*> layers;   // device pointers
  void** layers_dev = nullptr;

  PagedCache(uint32_t L, uint32_t H, uint32_t D, uint64_t tokens, uint32_t block, uint64_t seed)
      : block_size(block), num_blocks(static_cast<uint32_t>((tokens + block - 1) / block)), heads(H), head_dim(D) {
    table.resize(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937_64(seed));
    table_dev = static_cast<int32_t*>(DeviceAlloc(table.size() * 4));
    CHECK_CUDA(cudaMemcpy(table_dev, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    layer_bytes = uint64_t{num_blocks} * 2 * block_size * H * D * 2;
    layers.resize(L);
    for (void*& p : layers) p = DeviceAlloc(layer_bytes);
    layers_dev = static_cast<void**>(DeviceAlloc(L * sizeof(void*)));
    CHECK_CUDA(cudaMemcpy(layers_dev, layers.data(), L * sizeof(void*), cudaMemcpyHostToDevice));
  }
  ~PagedCache() {
    for (void* p : layers) cudaFree(p);
    cudaFree(layers_dev);
    cudaFree(table_dev);
  }
  PagedCache(const PagedCache&) = delete;
  PagedCache& operator=(const PagedCache&) = delete;

  // Points decode items (any API's) at this cache.
  template <typename Item>
  void Point(std::vector<Item>& items) const {
    for (Item& it : items) {
      it.k_out = it.v_out = nullptr;
      it.layer_caches = layers_dev;
      it.block_table = table_dev;
      it.block_table_entries = table.size();
    }
  }
  // A paged decode's arguments (any API's Args) with `items` pointed at this
  // cache, checked by gpu.CanImplement.
  template <typename Args, typename Item, typename Gpu>
  Args PagedArgs(std::vector<Item>& items, const Gpu& gpu) const {
    Point(items);
    Args args;
    args.destination = seqkv::gpu::KvDestination::kPaged;
    args.block_size = block_size;
    args.num_blocks = num_blocks;
    args.items = items;
    CHECK_OK(gpu.CanImplement(args));
    return args;
  }
  // Byte offset in a layer's tensor of sequence token s, tensor kv, head h.
  uint64_t RowOffset(uint64_t s, uint32_t kv, uint32_t h) const {
    const uint64_t blk = static_cast<uint64_t>(table[s / block_size]);
    return (((blk * 2 + kv) * block_size + s % block_size) * heads + h) * head_dim * 2;
  }
};

}  // namespace seqkv::bench
