// Bench-only prototype (not used by the library): the f16 dense stage's
// products on Hopper's wgmma against mma.sync, the products alone, so that a
// GPU run tells (1) which shared-memory descriptor layout wgmma reads as we
// mean it, and (2) how much faster the products of the dense stage's tiles
// could be before anyone rewrites SdLayerH16Kernel (docs/gpu.md, "Where the
// seq codec's speed goals stand").
//
// The work is the FP16 kernel's at head size 128: a CTA per 128-token tile,
// C[128][128] = A[128][384] * B[384][128] (A: a tile's 256 feature columns and
// 128 symbol columns, FP16; B: the group's predictor and basis rows, FP16),
// float32 sums, C stored as FP16; 1024 tiles per launch (an 8K context's
// 32 chunks x 16 groups x 2 tiles), 16 groups' weights, one launch per layer.
// Both kernels stage 64-column chunks three deep with cp.async, 256 threads,
// two CTAs per SM:
//   * MmaKernel: the current kernel's mainloop (8 warps of 64 x 32, ldmatrix,
//     mma.sync m16n8k16), rows padded for conflict-free ldmatrix;
//   * WgmmaKernel: two warpgroups of 64 x 128 (wgmma m64n128k16, operands from
//     shared memory through matrix descriptors, no swizzle), the chunk's 8x8
//     core matrices stored as 128 contiguous bytes each. Which descriptor
//     field (LBO or SBO) holds the K-direction stride, and whether B is
//     better K-major (the weights transposed on the host) or MN-major (as
//     stored, transposed by wgmma), are the variants the run checks.
// Every variant is checked against a CPU float reference on a few tiles
// before it is timed; a variant that does not match is reported, not timed.
//
// Usage (GPU machine, codec-only CUDA build with bench/gpu/bench.cmake):
//   wgmma_proto_bench [LAYERS=32]
// Needs sm_90a (wgmma); the target is built for it alone.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "seq_dense_device.cuh"

#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace {

constexpr uint32_t TM = 128;  // tokens per tile
constexpr uint32_t N = 128;   // head size: output channels
constexpr uint32_t K = 384;   // 2 * N feature columns + N symbol columns
constexpr uint32_t KC = 64;   // columns per chunk
constexpr uint32_t kStages = 3;
constexpr uint32_t kThreads = 256;
constexpr uint32_t kGroups = 16;  // distinct weight sets (8 heads x K, V)
constexpr uint32_t kChunks = K / KC;

using seqkv::gpu::internal::dense::CopyAsync16;
using seqkv::gpu::internal::dense::CopyCommit;
using seqkv::gpu::internal::dense::CopyWait;
using seqkv::gpu::internal::dense::MmaStepF16;

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The chunks' pipeline both kernels share: chunk ci + kStages - 1 issued
// (issue(ci)) before chunk ci is waited for and consumed (consume(ci): it
// synchronizes the CTA itself).
template <typename Issue, typename Consume>
__device__ __forceinline__ void ForEachChunk(Issue&& issue, Consume&& consume) {
  for (uint32_t ci = 0; ci + 1 < kStages; ++ci) issue(ci);
  for (uint32_t ci = 0; ci < kChunks; ++ci) {
    if (ci + kStages - 1 < kChunks) {
      issue(ci + kStages - 1);
    } else {
      CopyCommit();
    }
    CopyWait<kStages - 1>();
    consume(ci);
  }
}

// ---- mma.sync: the current FP16 kernel's mainloop ----

constexpr uint32_t kAS = KC + 8;  // A row stride, halves (144 bytes: conflict-free ldmatrix)
constexpr uint32_t kBS = N + 8;   // B row stride, halves
constexpr uint32_t kMmaStage = (TM * kAS + KC * kBS) * 2;

// a: [tiles][TM][K]; b: [kGroups][K][N]; c: [tiles][TM][N].
__global__ void __launch_bounds__(kThreads, 2) MmaKernel(const __half* a, const __half* b, __half* c) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t tile = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const __half* at = a + uint64_t{tile} * TM * K;
  const __half* bt = b + uint64_t{tile % kGroups} * K * N;
  auto a_of = [&](uint32_t s) { return reinterpret_cast<__half*>(smem + s * kMmaStage); };
  auto b_of = [&](uint32_t s) { return a_of(s) + TM * kAS; };
  auto issue = [&](uint32_t ci) {
    const uint32_t st = ci % kStages, c0 = ci * KC;
#pragma unroll
    for (uint32_t i = 0; i < 4; ++i) {
      const uint32_t p = tid + i * kThreads, r = p / 8, j = p % 8;
      CopyAsync16(a_of(st) + r * kAS + j * 8, at + uint64_t{r} * K + c0 + j * 8);
      const uint32_t kr = p / 16, n8 = p % 16;
      CopyAsync16(b_of(st) + kr * kBS + n8 * 8, bt + uint64_t{c0 + kr} * N + n8 * 8);
    }
    CopyCommit();
  };
  const uint32_t m0 = (warp / 4) * 64, n0 = (warp % 4) * 32;
  float acc[4][4][4] = {};
  ForEachChunk(issue, [&](uint32_t ci) {
    __syncthreads();
    const auto* as = reinterpret_cast<const uint16_t*>(a_of(ci % kStages));
    const auto* bs = reinterpret_cast<const uint16_t*>(b_of(ci % kStages));
#pragma unroll
    for (uint32_t ks = 0; ks < KC; ks += 16) MmaStepF16(acc, as, kAS, bs, kBS, m0, n0, ks, lane);
    __syncthreads();
  });
  __half* ct = c + uint64_t{tile} * TM * N;
  const uint32_t gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (uint32_t m = 0; m < 4; ++m) {
#pragma unroll
    for (uint32_t n = 0; n < 4; ++n) {
      const uint32_t row = m0 + m * 16 + gq, col = n0 + n * 8 + 2 * tq;
      *reinterpret_cast<__half2*>(ct + row * N + col) = __floats2half2_rn(acc[m][n][0], acc[m][n][1]);
      *reinterpret_cast<__half2*>(ct + (row + 8) * N + col) = __floats2half2_rn(acc[m][n][2], acc[m][n][3]);
    }
  }
}

// ---- wgmma ----
//
// A chunk in shared memory: 8x8 core matrices of 16-bit elements, each 128
// contiguous bytes (8 rows of 16 bytes). A (K-major, rows = tokens): core
// (m8, k8) at (k8 * 16 + m8) * 128, so 128 bytes between core matrices along
// M and 2048 along K. B, MN-major (as the weights are stored, rows = k, 16
// bytes = 8 channels): core (k8, n8) at (k8 * 16 + n8) * 128; B, K-major (the
// weights transposed, rows = channels, 16 bytes = 8 k): core (n8, k8) at
// (k8 * 16 + n8) * 128. Either way: 128 bytes along M or N, 2048 along K.
constexpr uint32_t kCore = 128;
constexpr uint32_t kMnStride = kCore;      // bytes between core matrices along M or N
constexpr uint32_t kKStride = 16 * kCore;  // bytes between core matrices along K (16 of them along M or N)
constexpr uint32_t kWgStage = 2 * KC * N * 2;  // A then B, 16 KB each

// What a variant puts in the descriptors' two stride fields.
struct Variant {
  const char* name;
  bool b_k_major;   // B transposed on the host (wgmma's trans-b 0) or as stored (trans-b 1)
  bool a_lbo_is_k;  // A: LBO = the K-direction stride (else SBO)
  bool b_lbo_is_k;
};

// A shared-memory matrix descriptor (no swizzle): start address, leading
// and stride byte offsets, each >> 4.
__device__ __forceinline__ uint64_t MatrixDesc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t{(addr & 0x3FFFF) >> 4} | (uint64_t{(lbo & 0x3FFFF) >> 4} << 16) |
         (uint64_t{(sbo & 0x3FFFF) >> 4} << 32);
}

__device__ __forceinline__ void WgFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgWaitAll() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// The generic proxy's shared-memory writes (cp.async, st.shared) made visible
// to the async proxy that wgmma reads through.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accumulator accesses across the wgmma
// fences and waits.
__device__ __forceinline__ void FenceAcc(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D (64 x 128, float) += A (64 x 16) * B (16 x 128), both from shared memory.
template <int kTransB>
__device__ __forceinline__ void Wgmma(float (&d)[64], uint64_t da, uint64_t db) {
  const uint32_t accumulate = 1;  // scale-d: D = A * B + D
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
      "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
      "%62, %63}, %64, %65, p, 1, 1, 0, %67;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]),
        "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]),
        "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate), "n"(kTransB));
}

// a: [tiles][TM][K]; b: [kGroups][K][N] (MN-major) or [kGroups][N][K]
// (K-major, kBKMajor); c: [tiles][TM][N].
template <bool kBKMajor>
__global__ void __launch_bounds__(kThreads, 2)
    WgmmaKernel(const __half* a, const __half* b, __half* c, bool a_lbo_is_k, bool b_lbo_is_k) {
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t tile = blockIdx.x, tid = threadIdx.x, wg = tid / 128, lane = tid % 32,
                 warp = (tid % 128) / 32;
  const __half* at = a + uint64_t{tile} * TM * K;
  const __half* bt = b + uint64_t{tile % kGroups} * K * N;
  auto a_of = [&](uint32_t s) { return smem + s * kWgStage; };
  auto b_of = [&](uint32_t s) { return a_of(s) + KC * N * 2; };
  auto issue = [&](uint32_t ci) {
    const uint32_t st = ci % kStages, c0 = ci * KC;
#pragma unroll
    for (uint32_t i = 0; i < 4; ++i) {
      const uint32_t p = tid + i * kThreads;
      {  // A: row r, columns j * 8 .. j * 8 + 7 of the chunk
        const uint32_t r = p / 8, j = p % 8;
        CopyAsync16(a_of(st) + (j * 16 + r / 8) * kCore + (r % 8) * 16, at + uint64_t{r} * K + c0 + j * 8);
      }
      if (kBKMajor) {  // channel n, k j * 8 .. j * 8 + 7 of the chunk
        const uint32_t n = p / 8, j = p % 8;
        CopyAsync16(b_of(st) + (j * 16 + n / 8) * kCore + (n % 8) * 16, bt + uint64_t{n} * K + c0 + j * 8);
      } else {  // k row kr of the chunk, channels n8 * 8 .. n8 * 8 + 7
        const uint32_t kr = p / 16, n8 = p % 16;
        CopyAsync16(b_of(st) + ((kr / 8) * 16 + n8) * kCore + (kr % 8) * 16,
                    bt + uint64_t{c0 + kr} * N + n8 * 8);
      }
    }
    CopyCommit();
  };
  const uint32_t a_lbo = a_lbo_is_k ? kKStride : kMnStride, a_sbo = a_lbo_is_k ? kMnStride : kKStride;
  const uint32_t b_lbo = b_lbo_is_k ? kKStride : kMnStride, b_sbo = b_lbo_is_k ? kMnStride : kKStride;
  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.0f;
  ForEachChunk(issue, [&](uint32_t ci) {
    FenceProxyAsync();
    __syncthreads();
    const uint32_t as = SmemAddr(a_of(ci % kStages)) + wg * 8 * kMnStride;  // this warpgroup's 64 rows
    const uint32_t bs = SmemAddr(b_of(ci % kStages));
    FenceAcc(d);
    WgFence();
#pragma unroll
    for (uint32_t s = 0; s < KC / 16; ++s) {  // k16 steps: two core matrices along K each
      Wgmma<kBKMajor ? 0 : 1>(d, MatrixDesc(as + 2 * s * kKStride, a_lbo, a_sbo),
                              MatrixDesc(bs + 2 * s * kKStride, b_lbo, b_sbo));
    }
    WgCommit();
    WgWaitAll();
    FenceAcc(d);
    __syncthreads();  // every warpgroup done with this stage before it is refilled
  });
  // The accumulators: warp w of the warpgroup holds rows 16 w .. 16 w + 15;
  // d[4 j .. 4 j + 3] are channels 8 j + 2 (lane % 4) (+1), rows lane / 4 and +8.
  __half* ct = c + uint64_t{tile} * TM * N;
  const uint32_t row = wg * 64 + warp * 16 + lane / 4;
#pragma unroll
  for (uint32_t j = 0; j < 16; ++j) {
    const uint32_t col = 8 * j + 2 * (lane % 4);
    *reinterpret_cast<__half2*>(ct + row * N + col) = __floats2half2_rn(d[4 * j], d[4 * j + 1]);
    *reinterpret_cast<__half2*>(ct + (row + 8) * N + col) = __floats2half2_rn(d[4 * j + 2], d[4 * j + 3]);
  }
}

// ---- host ----

struct Device {
  __half *a = nullptr, *b = nullptr, *bt = nullptr, *c = nullptr;
};

// Largest |GPU - CPU| over the first `tiles` tiles, relative to the reference's rms.
double CheckTiles(const Device& dev, uint32_t tiles, const std::vector<__half>& a,
                  const std::vector<__half>& b) {
  std::vector<__half> c(uint64_t{tiles} * TM * N);
  CHECK_CUDA(cudaMemcpy(c.data(), dev.c, c.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  double worst = 0, sum2 = 0;
  uint64_t n = 0;
  std::vector<float> ref(N);
  for (uint32_t t = 0; t < tiles; ++t) {
    const __half* bg = b.data() + uint64_t{t % kGroups} * K * N;
    for (uint32_t r = 0; r < TM; ++r) {
      std::fill(ref.begin(), ref.end(), 0.0f);
      const __half* ar = a.data() + (uint64_t{t} * TM + r) * K;
      for (uint32_t k = 0; k < K; ++k) {
        const float x = __half2float(ar[k]);
        for (uint32_t j = 0; j < N; ++j) ref[j] += x * __half2float(bg[uint64_t{k} * N + j]);
      }
      for (uint32_t j = 0; j < N; ++j) {
        const double g = __half2float(c[(uint64_t{t} * TM + r) * N + j]);
        worst = std::max(worst, std::abs(g - ref[j]));
        sum2 += double{ref[j]} * ref[j];
        ++n;
      }
    }
  }
  return worst / std::sqrt(sum2 / n);
}

template <typename Launch>
double MedianMs(Launch&& launch, int repeats) {
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  launch();  // warm-up
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    CHECK_CUDA(cudaEventRecord(e0));
    launch();
    CHECK_CUDA(cudaEventRecord(e1));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float x = 0;
    CHECK_CUDA(cudaEventElapsedTime(&x, e0, e1));
    ms.push_back(x);
  }
  CHECK_CUDA(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = argc > 1 ? std::atoi(argv[1]) : 32;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("wgmma_proto_bench: no GPU\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::printf("wgmma_proto_bench: needs sm_90 (this GPU is sm_%d%d)\n", prop.major, prop.minor);
    return 0;
  }
  constexpr uint32_t kTiles = 1024, kCheckTiles = 6;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<__half> a(uint64_t{kTiles} * TM * K), b(uint64_t{kGroups} * K * N), bt(b.size());
  for (auto& x : a) x = __float2half(u(rng));
  for (auto& x : b) x = __float2half(u(rng) * 0.25f);
  for (uint32_t g = 0; g < kGroups; ++g) {  // bt[g][n][k] = b[g][k][n]
    for (uint32_t k = 0; k < K; ++k) {
      for (uint32_t n = 0; n < N; ++n) bt[(uint64_t{g} * N + n) * K + k] = b[(uint64_t{g} * K + k) * N + n];
    }
  }
  Device dev;
  CHECK_CUDA(cudaMalloc(&dev.a, a.size() * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&dev.b, b.size() * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&dev.bt, bt.size() * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&dev.c, uint64_t{kTiles} * TM * N * sizeof(__half)));
  CHECK_CUDA(cudaMemcpy(dev.a, a.data(), a.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dev.b, b.data(), b.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dev.bt, bt.data(), bt.size() * sizeof(__half), cudaMemcpyHostToDevice));

  const size_t mma_smem = kStages * kMmaStage, wg_smem = kStages * kWgStage;
  CHECK_CUDA(cudaFuncSetAttribute(MmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(mma_smem)));
  CHECK_CUDA(
      cudaFuncSetAttribute(WgmmaKernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wg_smem)));
  CHECK_CUDA(
      cudaFuncSetAttribute(WgmmaKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wg_smem)));
  const double flop = 2.0 * kTiles * TM * N * K * layers;
  auto report = [&](const char* name, double ms, double base_ms) {
    std::printf("%-44s %9.3f ms %8.2f us/layer %7.1f TFLOP/s %6.2fx\n", name, ms, ms * 1e3 / layers,
                flop / (ms * 1e-3) / 1e12, base_ms > 0 ? base_ms / ms : 1.0);
  };

  // mma.sync first: the baseline, and a check of the reference itself.
  CHECK_CUDA(cudaMemset(dev.c, 0, uint64_t{kTiles} * TM * N * sizeof(__half)));
  MmaKernel<<<kCheckTiles, kThreads, mma_smem>>>(dev.a, dev.b, dev.c);
  CHECK_CUDA(cudaDeviceSynchronize());
  const double mma_err = CheckTiles(dev, kCheckTiles, a, b);
  std::printf("mma.sync: max |GPU - CPU| / rms %.2e (%s)\n", mma_err, mma_err < 1e-2 ? "ok" : "WRONG");
  const double mma_ms = MedianMs(
      [&] {
        for (int l = 0; l < layers; ++l) MmaKernel<<<kTiles, kThreads, mma_smem>>>(dev.a, dev.b, dev.c);
      },
      5);

  const Variant variants[] = {
      {"wgmma, B MN-major, LBO = K stride (A, B)", false, true, true},
      {"wgmma, B MN-major, A LBO = K, B SBO = K", false, true, false},
      {"wgmma, B MN-major, A SBO = K, B LBO = K", false, false, true},
      {"wgmma, B MN-major, SBO = K stride (A, B)", false, false, false},
      {"wgmma, B K-major, LBO = K stride (A, B)", true, true, true},
      {"wgmma, B K-major, A LBO = K, B SBO = K", true, true, false},
      {"wgmma, B K-major, A SBO = K, B LBO = K", true, false, true},
      {"wgmma, B K-major, SBO = K stride (A, B)", true, false, false},
  };
  std::printf("\n%-44s %12s %11s %15s %7s\n", "kernel (1024 tiles x layers)", "total", "per layer", "",
              "speed-up");
  report("mma.sync m16n8k16 (the current mainloop)", mma_ms, 0);
  for (const Variant& v : variants) {
    auto launch = [&](uint32_t tiles) {
      if (v.b_k_major) {
        WgmmaKernel<true><<<tiles, kThreads, wg_smem>>>(dev.a, dev.bt, dev.c, v.a_lbo_is_k, v.b_lbo_is_k);
      } else {
        WgmmaKernel<false><<<tiles, kThreads, wg_smem>>>(dev.a, dev.b, dev.c, v.a_lbo_is_k, v.b_lbo_is_k);
      }
    };
    CHECK_CUDA(cudaMemset(dev.c, 0, uint64_t{kTiles} * TM * N * sizeof(__half)));
    launch(kCheckTiles);
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {  // a fault ends the context: report and stop
      std::printf("%-44s kernel failed: %s\n", v.name, cudaGetErrorString(e));
      return 1;
    }
    const double err = CheckTiles(dev, kCheckTiles, a, b);
    if (err >= 1e-2) {
      std::printf("%-44s does not match the reference (max |GPU - CPU| / rms %.2e): not timed\n", v.name,
                  err);
      continue;
    }
    const double ms = MedianMs(
        [&] {
          for (int l = 0; l < layers; ++l) launch(kTiles);
        },
        5);
    char name[96];
    std::snprintf(name, sizeof(name), "%s (err %.1e)", v.name, err);
    report(name, ms, mma_ms);
  }
  CHECK_CUDA(cudaFree(dev.a));
  CHECK_CUDA(cudaFree(dev.b));
  CHECK_CUDA(cudaFree(dev.bt));
  CHECK_CUDA(cudaFree(dev.c));
  return 0;
}
