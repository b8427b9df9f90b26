// Seq group-stream entropy decode bench: thousands of group streams (256
// tokens each) through seqkv::gpu::SeqEntropyGpu, both CUDA kernels, at
// Llama-3-8B (dim 128) and TinyLlama-like (dim 64) shapes, with symbols of the
// real codec's statistics at ~1.5 bits/element (mostly |q| <= 2, magnitudes
// falling with the component index as the KLT components' do).
// Built and run on the GPU machine (bench/gpu/targets.cmake); prints a table last.
//
// Times are CUDA events around the whole API call (descriptor build and
// upload, the kernel), 2 warm-ups, median of 7. "out GB/s" counts the decoded
// output as 2 bytes (bf16) per symbol, what the codec's later stages turn the
// symbols into; the kernel itself writes int32 q.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../seq_symbols.h"
#include "bench_util.h"
#include "seq_lossy_core.h"
#include "seqkv/gpu/seq_entropy.h"

using namespace seqkv;
using namespace seqkv::gpu;
using seqkv::bench::Timing;

namespace {

constexpr int kWarmup = 2;
constexpr int kRepeats = 7;
constexpr uint32_t kTokens = 256;
constexpr uint32_t kDistinct = 64;  // distinct group streams per shape, replicated to the batch size

// Symbols like the codec's at ~1.5 bits/element: bench/seq_symbols.h's, with
// a little correlation with the previous token and escapes up to |q| = 214.
std::vector<int32_t> RealisticSymbols(uint32_t dim, uint64_t seed) {
  return seqkv::bench::SyntheticSeqSymbols(kTokens, dim, seed, {/*prev_boost=*/1.6, /*escape_span=*/200});
}

struct Row {
  std::string name;
  uint32_t groups;
  double ms;
  double gsym_per_s;
  double out_gbps;  // 2 bytes per symbol
  double in_gb;     // compressed bytes read
  double bits_per_symbol;
};
std::vector<Row> rows;

void RunShape(const char* name, uint32_t dim, const std::vector<uint32_t>& batch_sizes, cudaStream_t stream,
              const SeqEntropyGpu& se) {
  // Distinct streams, encoded by the codec.
  std::vector<std::vector<int32_t>> sym(kDistinct);
  std::vector<std::vector<uint8_t>> streams(kDistinct);
  uint64_t compressed = 0;
  for (uint32_t k = 0; k < kDistinct; ++k) {
    sym[k] = RealisticSymbols(dim, 1000 + k);
    streams[k] = internal::SeqEncodeGroup(sym[k].data(), kTokens, dim);
    compressed += streams[k].size();
  }
  const double bits = 8.0 * compressed / (double(kDistinct) * kTokens * dim);
  size_t small = 0;
  for (const auto& q : sym)
    small += std::count_if(q.begin(), q.end(), [](int32_t v) { return std::abs(v) <= 2; });
  std::printf("%s: dim %u, %u tokens: %.3f bits/symbol, %.1f%% of |q| <= 2\n", name, dim, kTokens, bits,
              100.0 * small / (double(kDistinct) * kTokens * dim));

  // CPU reference speed, one thread, for scale.
  {
    std::vector<int32_t> out(size_t{kTokens} * dim);
    const auto t0 = std::chrono::steady_clock::now();
    for (uint32_t k = 0; k < kDistinct; ++k)
      CHECK_OK(internal::SeqDecodeGroup(streams[k], kTokens, dim, out.data()));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: CPU SeqDecodeGroup, one thread: %.1f Msymbols/s\n", name,
                kDistinct * double(kTokens) * dim / s / 1e6);
  }

  const uint32_t max_groups = *std::max_element(batch_sizes.begin(), batch_sizes.end());
  // Every group its own copy of a stream (no sharing of input lines).
  std::vector<uint64_t> offset(max_groups + 1, 0);
  for (uint32_t g = 0; g < max_groups; ++g) offset[g + 1] = offset[g] + streams[g % kDistinct].size();
  std::vector<uint8_t> host_in(offset[max_groups]);
  for (uint32_t g = 0; g < max_groups; ++g) {
    std::memcpy(host_in.data() + offset[g], streams[g % kDistinct].data(), streams[g % kDistinct].size());
  }
  uint8_t* in = nullptr;
  CHECK_CUDA(cudaMalloc(&in, host_in.size()));
  CHECK_CUDA(cudaMemcpy(in, host_in.data(), host_in.size(), cudaMemcpyHostToDevice));
  const uint64_t per_group = uint64_t{kTokens} * dim;
  int32_t* q = nullptr;
  CHECK_CUDA(cudaMalloc(&q, max_groups * per_group * 4));

  for (uint32_t groups : batch_sizes) {
    std::vector<SeqEntropyItem> items(groups);
    for (uint32_t g = 0; g < groups; ++g) {
      items[g] = {in + offset[g], offset[g + 1] - offset[g], kTokens, dim, q + g * per_group};
    }
    for (SeqEntropyKernel kernel : {SeqEntropyKernel::kGlobalModels, SeqEntropyKernel::kSharedModels}) {
      const char* kname = kernel == SeqEntropyKernel::kGlobalModels ? "global" : "shared";
      SeqEntropyDecodeArgs args;
      args.items = items;
      args.kernel = kernel;
      CHECK_OK(se.CanImplement(args));
      const uint64_t ws_bytes = se.WorkspaceBytes(args);
      void* ws = nullptr;
      CHECK_CUDA(cudaMalloc(&ws, std::max<uint64_t>(ws_bytes, 1)));
      std::vector<Status> statuses;
      CHECK_CUDA(cudaMemset(q, 0x5A, groups * per_group * 4));
      const double ms = seqkv::bench::MedianMs(
          stream, [&] { CHECK_OK(se.Decode(args, ws, ws_bytes, stream, &statuses)); }, Timing{kWarmup, kRepeats, 1});
      CHECK_OK(se.CollectStatuses(ws, stream, &statuses));
      for (const Status& s : statuses) CHECK_OK(s);
      // Spot check: the first and last groups equal the encoder's symbols.
      std::vector<int32_t> got(per_group);
      for (uint32_t g : {0u, groups - 1}) {
        CHECK_CUDA(cudaMemcpy(got.data(), q + g * per_group, per_group * 4, cudaMemcpyDeviceToHost));
        if (got != sym[g % kDistinct]) {
          std::printf("%s %s: group %u differs from the encoder's symbols\n", name, kname, g);
          std::exit(1);
        }
      }
      CHECK_CUDA(cudaFree(ws));
      const double symbols = double(groups) * per_group;
      Row r;
      r.name = std::string(name) + " " + kname;
      r.groups = groups;
      r.ms = ms;
      r.gsym_per_s = symbols / (ms / 1e3) / 1e9;
      r.out_gbps = 2.0 * symbols / (ms / 1e3) / 1e9;
      r.in_gb = double(offset[groups]) / 1e9;
      r.bits_per_symbol = bits;
      rows.push_back(r);
      std::printf("%-18s %6u groups: %8.3f ms  %7.2f Gsym/s  %7.1f GB/s out (bf16)  %.4f GB in\n",
                  r.name.c_str(), groups, ms, r.gsym_per_s, r.out_gbps, r.in_gb);
    }
  }
  CHECK_CUDA(cudaFree(in));
  CHECK_CUDA(cudaFree(q));
}

}  // namespace

int main() {
  auto se = SeqEntropyGpu::CreateFor(Backend::kCuda);
  CHECK_OK(se.status());
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB, %zu KB shared memory per block (opt-in)\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, prop.sharedMemPerBlockOptin >> 10);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  // Llama-3-8B: 512 groups per 256-token chunk (32 layers x 2 x 8 heads), so
  // 512 .. 32768 groups = 1 .. 64 chunks. TinyLlama-like: 24 groups per chunk.
  RunShape("llama3-8b d128", 128, {512, 2048, 8192, 32768}, stream, *se);
  RunShape("tinyllama d64", 64, {512, 2048, 8192, 32768}, stream, *se);
  CHECK_CUDA(cudaStreamDestroy(stream));

  std::printf("\n%-18s %7s %10s %9s %12s %9s %6s\n", "kernel", "groups", "ms", "Gsym/s", "out GB/s bf16",
              "in GB", "bits");
  for (const Row& r : rows) {
    std::printf("%-18s %7u %10.3f %9.2f %12.1f %9.4f %6.3f\n", r.name.c_str(), r.groups, r.ms, r.gsym_per_s,
                r.out_gbps, r.in_gb, r.bits_per_symbol);
  }
  return 0;
}
