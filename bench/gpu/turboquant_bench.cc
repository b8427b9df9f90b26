// TurboQuant GPU bench: decode (contiguous and vLLM-paged) and encode of many
// 256-token chunks through seqkv::gpu::TurboQuantGpu, against the measured
// device-to-device copy bandwidth (bytes read + written) as the ceiling.
// Built and run by bench/gpu/run.sh on the GPU machine; prints a table last.
//
// Times are CUDA events around the whole API call (host descriptor build, the
// descriptor upload and the kernels), 3 warm-ups, median of 15.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "bench_util.h"
#include "seqkv/gpu/turboquant.h"

using namespace seqkv;
using namespace seqkv::gpu;
using seqkv::bench::DeviceAlloc;
using seqkv::bench::MedianMs;
using seqkv::bench::Timing;

namespace {

constexpr int kWarmup = 3;
constexpr int kRepeats = 15;

struct Row {
  std::string name;
  double ms;         // back-to-back calls, per call
  double single_ms;  // one call on an idle stream
  double out_gb;      // decoded bf16 bytes (decode output / encode input), GB
  double moved_gb;    // bytes the kernel must read + write, GB
  double floor_ms;    // moved / copy bandwidth
};
std::vector<Row> rows;

template <typename F>
void Measure(const std::string& name, cudaStream_t stream, F&& f, double out_bytes, double moved_bytes,
             double copy_gbps) {
  const double single = MedianMs(stream, f, Timing{kWarmup, kRepeats, 1});
  const double ms = MedianMs(stream, f, Timing{kWarmup, kRepeats, 8});
  rows.push_back({name, ms, single, out_bytes / 1e9, moved_bytes / 1e9, moved_bytes / 1e9 / copy_gbps * 1e3});
}

// What RunShape measures. kAll: encode, decode contiguous, decode paged (and
// paged from sections at an odd offset when `unaligned`); kPagedOnly: encode
// once untimed, then decode paged (the end-to-end rows); kProfile: one encode
// and one paged decode call, untimed (for ncu).
enum class Mode { kAll, kPagedOnly, kProfile };

void RunShape(const char* name, KvShape chunk_shape, uint32_t chunks, int bits, double copy_gbps,
              cudaStream_t stream, const TurboQuantGpu& tq, Mode mode = Mode::kAll, bool unaligned = false) {
  const uint32_t L = chunk_shape.layers, H = chunk_shape.kv_heads, D = chunk_shape.head_dim, T = chunk_shape.tokens;
  const uint64_t total_tokens = uint64_t{chunks} * T;
  const uint64_t tensor_bytes = uint64_t{L} * H * total_tokens * D * 2;  // one of K, V (whole sequence)
  const uint64_t norm_bytes = TurboQuantNormBytes(chunk_shape);
  const uint64_t code_bytes = TurboQuantCodeBytes(chunk_shape, bits);
  const uint64_t section_bytes = 2 * (norm_bytes + code_bytes);  // per chunk

  // Source: random bf16 (N(0,1)-like, a few large channels), generated for one
  // slab and replicated (values never zero).
  std::vector<uint16_t> host(uint64_t{total_tokens} * D);
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (uint64_t i = 0; i < host.size(); ++i) {
    float x = normal(rng) * ((i % D) % 16 == 3 ? 4.f : 1.f);
    uint32_t bits32;
    std::memcpy(&bits32, &x, 4);
    host[i] = static_cast<uint16_t>((bits32 + 0x7FFF + ((bits32 >> 16) & 1)) >> 16);
  }
  uint8_t* src[2];
  for (int kv = 0; kv < 2; ++kv) {
    src[kv] = static_cast<uint8_t*>(DeviceAlloc(tensor_bytes));
    const uint64_t slab = host.size() * 2;
    for (uint64_t o = 0; o < tensor_bytes; o += slab) {
      CHECK_CUDA(cudaMemcpy(src[kv] + o, host.data(), slab, cudaMemcpyHostToDevice));
    }
  }
  // 16 spare bytes: the unaligned row places every chunk's sections 5 bytes
  // further, as a chunk header of odd length would.
  auto* sections = static_cast<uint8_t*>(DeviceAlloc(section_bytes * chunks + 16));

  // Encode every chunk from the contiguous sequence.
  std::vector<TurboQuantEncodeItem> enc(chunks);
  for (uint32_t c = 0; c < chunks; ++c) {
    TurboQuantEncodeItem& it = enc[c];
    it.params.bits = bits;
    it.shape = chunk_shape;
    it.k_in = src[0];
    it.v_in = src[1];
    it.in_tokens = total_tokens;
    it.token_offset = uint64_t{c} * T;
    uint8_t* base = sections + section_bytes * c;
    it.k_norms = base;
    it.k_codes = base + norm_bytes;
    it.v_norms = base + norm_bytes + code_bytes;
    it.v_codes = base + 2 * norm_bytes + code_bytes;
  }
  TurboQuantEncodeArgs eargs;
  eargs.items = enc;
  CHECK_OK(tq.CanImplement(eargs));
  const uint64_t ews = tq.WorkspaceBytes(eargs);
  void* eworkspace = DeviceAlloc(ews);
  std::vector<Status> statuses;
  const std::string tag = std::string(name) + " b" + std::to_string(bits);
  if (mode == Mode::kAll) {
    Measure(tag + " encode", stream, [&] { CHECK_OK(tq.Encode(eargs, eworkspace, ews, stream, &statuses)); },
            2.0 * tensor_bytes, 2.0 * tensor_bytes + double(section_bytes) * chunks, copy_gbps);
  } else {
    CHECK_OK(tq.Encode(eargs, eworkspace, ews, stream, &statuses));
  }
  CHECK_OK(tq.CollectStatuses(eworkspace, stream, &statuses));
  for (const Status& s : statuses) CHECK_OK(s);

  // Sanity: chunk 1's sections equal the CPU reference's.
  if (mode != Mode::kProfile) {
    Chunk ch;
    ch.shape = chunk_shape;
    ch.dtype = DType::kBF16;
    ch.tokens.assign(T, 1);
    const uint64_t row = uint64_t{D} * 2;
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<uint8_t>& t = kv ? ch.v : ch.k;
      t.resize(ch.TensorBytes());
      for (uint64_t lh = 0; lh < uint64_t{L} * H; ++lh) {
        CHECK_CUDA(cudaMemcpy(&t[lh * T * row], src[kv] + (lh * total_tokens + T) * row, T * row,
                              cudaMemcpyDeviceToHost));
      }
    }
    auto codec = MakeCodec("turboquant:bits=" + std::to_string(bits) + ",outliers=0,seed=1592614637");
    CHECK_OK(codec.status());
    std::vector<Section> ref;
    CHECK_OK((*codec)->Encode(ch, &ref));
    std::vector<uint8_t> got(section_bytes);
    CHECK_CUDA(cudaMemcpy(got.data(), sections + section_bytes, section_bytes, cudaMemcpyDeviceToHost));
    std::vector<uint8_t> want;
    for (const Section& s : ref) want.insert(want.end(), s.data.begin(), s.data.end());
    std::printf("%s: chunk 1 GPU encode %s the CPU reference (%zu bytes)\n", tag.c_str(),
                want == got ? "==" : "!=", got.size());
    if (want != got) std::exit(1);
  }

  // Decode into the contiguous [L, H, total_tokens, D] sequence.
  uint8_t* out[2] = {static_cast<uint8_t*>(DeviceAlloc(tensor_bytes)), static_cast<uint8_t*>(DeviceAlloc(tensor_bytes))};
  std::vector<TurboQuantDecodeItem> dec(chunks);
  for (uint32_t c = 0; c < chunks; ++c) {
    TurboQuantDecodeItem& it = dec[c];
    it.params.bits = bits;
    it.shape = chunk_shape;
    const uint8_t* base = sections + section_bytes * c;
    it.k_norms = base;
    it.k_norms_bytes = norm_bytes;
    it.k_codes = base + norm_bytes;
    it.k_codes_bytes = code_bytes;
    it.v_norms = base + norm_bytes + code_bytes;
    it.v_norms_bytes = norm_bytes;
    it.v_codes = base + 2 * norm_bytes + code_bytes;
    it.v_codes_bytes = code_bytes;
    it.token_offset = uint64_t{c} * T;
    it.k_out = out[0];
    it.v_out = out[1];
    it.out_tokens = total_tokens;
  }
  TurboQuantDecodeArgs cargs;
  cargs.items = dec;
  CHECK_OK(tq.CanImplement(cargs));
  const uint64_t dws = tq.WorkspaceBytes(cargs);
  void* dworkspace = DeviceAlloc(dws);
  const double moved = 2.0 * tensor_bytes + double(section_bytes) * chunks;
  if (mode == Mode::kAll) {
    Measure(tag + " decode contiguous", stream,
            [&] { CHECK_OK(tq.Decode(cargs, dworkspace, dws, stream, &statuses)); }, 2.0 * tensor_bytes, moved,
            copy_gbps);
  } else {
    CHECK_OK(tq.Decode(cargs, dworkspace, dws, stream, &statuses));
  }
  CHECK_OK(tq.CollectStatuses(dworkspace, stream, &statuses));
  for (const Status& s : statuses) CHECK_OK(s);

  // Spot check: the contiguous output of chunk 1 equals the CPU decode of its
  // sections (kept for the paged check below).
  const uint64_t row = uint64_t{D} * 2;
  std::vector<uint8_t> cpu_k, cpu_v;
  if (mode != Mode::kProfile) {
    std::vector<uint8_t> sec(section_bytes);
    CHECK_CUDA(cudaMemcpy(sec.data(), sections + section_bytes, section_bytes, cudaMemcpyDeviceToHost));
    TurboQuantDecodeItem it = dec[1];
    it.k_norms = sec.data();
    it.k_codes = sec.data() + norm_bytes;
    it.v_norms = sec.data() + norm_bytes + code_bytes;
    it.v_codes = sec.data() + 2 * norm_bytes + code_bytes;
    cpu_k.assign(uint64_t{L} * H * 2 * T * row, 0);
    cpu_v.assign(cpu_k.size(), 0);
    it.k_out = cpu_k.data();
    it.v_out = cpu_v.data();
    it.out_tokens = 2 * T;
    TurboQuantDecodeArgs one;
    one.items = std::span<const TurboQuantDecodeItem>(&it, 1);
    auto cpu = TurboQuantGpu::CreateFor(Backend::kCpu);
    std::vector<Status> st;
    CHECK_OK(cpu->Decode(one, nullptr, 0, nullptr, &st));
    CHECK_OK(st[0]);
    uint64_t diff = 0;
    std::vector<uint8_t> got(T * row);
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& ref = kv ? cpu_v : cpu_k;
      for (uint64_t lh = 0; lh < uint64_t{L} * H; ++lh) {
        CHECK_CUDA(cudaMemcpy(got.data(), out[kv] + (lh * total_tokens + T) * row, T * row, cudaMemcpyDeviceToHost));
        diff += std::memcmp(got.data(), &ref[(lh * 2 * T + T) * row], T * row) != 0;
      }
    }
    std::printf("%s: chunk 1 GPU decode vs CPU reference: %llu of %llu rows differ\n", tag.c_str(),
                static_cast<unsigned long long>(diff), static_cast<unsigned long long>(2ull * L * H));
  }
  CHECK_CUDA(cudaFree(out[0]));
  CHECK_CUDA(cudaFree(out[1]));

  // Decode into vLLM's paged layout: block 16, a random block table.
  const seqkv::bench::PagedCache cache(L, H, D, total_tokens, 16, rng());
  const auto pargs = cache.PagedArgs<TurboQuantDecodeArgs>(dec, tq);
  if (mode == Mode::kProfile) {
    CHECK_OK(tq.Decode(pargs, dworkspace, dws, stream, &statuses));
  } else {
    Measure(tag + " decode paged", stream,
            [&] { CHECK_OK(tq.Decode(pargs, dworkspace, dws, stream, &statuses)); }, 2.0 * tensor_bytes, moved,
            copy_gbps);
  }
  CHECK_OK(tq.CollectStatuses(dworkspace, stream, &statuses));
  for (const Status& s : statuses) CHECK_OK(s);
  // Spot check: chunk 1's rows in the paged cache (first and last layer)
  // equal the CPU reference.
  auto check_paged = [&](const char* what) {
    uint64_t diff = 0, rows = 0;
    std::vector<uint8_t> got(row);
    for (uint32_t l : {0u, L - 1}) {
      for (uint32_t t = 0; t < T; ++t) {
        const uint64_t s = T + t;  // chunk 1's sequence position
        for (int kv = 0; kv < 2; ++kv) {
          const std::vector<uint8_t>& ref = kv ? cpu_v : cpu_k;
          for (uint32_t h = 0; h < H; ++h) {
            const uint64_t at = cache.RowOffset(s, kv, h);
            CHECK_CUDA(cudaMemcpy(got.data(), static_cast<uint8_t*>(cache.layers[l]) + at, row, cudaMemcpyDeviceToHost));
            diff += std::memcmp(got.data(), &ref[((uint64_t{l} * H + h) * 2 * T + T + t) * row], row) != 0;
            ++rows;
          }
        }
      }
    }
    std::printf("%s: chunk 1 GPU decode %s vs CPU reference: %llu of %llu rows differ\n", tag.c_str(), what,
                static_cast<unsigned long long>(diff), static_cast<unsigned long long>(rows));
    if (diff != 0) std::exit(1);
  };
  if (mode != Mode::kProfile) check_paged("paged");
  if (unaligned) {
    // Sections 5 bytes past an aligned address (norms odd, codes unaligned):
    // what a chunk blob with an odd-length header gives.
    auto* moved_sections = static_cast<uint8_t*>(DeviceAlloc(section_bytes * chunks + 16));
    CHECK_CUDA(cudaMemcpy(moved_sections + 5, sections, section_bytes * chunks, cudaMemcpyDeviceToDevice));
    std::vector<TurboQuantDecodeItem> shifted = dec;
    for (TurboQuantDecodeItem& it : shifted) {
      const int64_t delta = (moved_sections + 5) - sections;
      it.k_norms += delta;
      it.k_codes += delta;
      it.v_norms += delta;
      it.v_codes += delta;
    }
    for (void* p : cache.layers) CHECK_CUDA(cudaMemset(p, 0xFF, cache.layer_bytes));
    TurboQuantDecodeArgs uargs = pargs;
    uargs.items = shifted;
    Measure(tag + " decode paged +5B", stream,
            [&] { CHECK_OK(tq.Decode(uargs, dworkspace, dws, stream, &statuses)); }, 2.0 * tensor_bytes, moved,
            copy_gbps);
    CHECK_OK(tq.CollectStatuses(dworkspace, stream, &statuses));
    for (const Status& s : statuses) CHECK_OK(s);
    check_paged("paged +5B");
    CHECK_CUDA(cudaFree(moved_sections));
  }

  CHECK_CUDA(cudaFree(dworkspace));
  CHECK_CUDA(cudaFree(eworkspace));
  CHECK_CUDA(cudaFree(sections));
  CHECK_CUDA(cudaFree(src[0]));
  CHECK_CUDA(cudaFree(src[1]));
}

}  // namespace

// Usage: turboquant_bench            the table (and the E2E lines that
//                                     bench/gpu/prefill_recompute.py reads)
//        turboquant_bench --profile  one Llama-3-8B encode and paged decode, untimed (for ncu)
int main(int argc, char** argv) {
  const bool profile = argc > 1 && std::strcmp(argv[1], "--profile") == 0;
  auto tq = TurboQuantGpu::CreateFor(Backend::kCuda);
  CHECK_OK(tq.status());
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const KvShape llama = {32, 8, 256, 128};
  if (profile) {
    RunShape("llama3-8b", llama, 96, 4, 1.0, stream, *tq, Mode::kProfile);
    CHECK_CUDA(cudaStreamDestroy(stream));
    return 0;
  }

  // Ceiling: device-to-device copy of 2 GiB, bytes read + written.
  const uint64_t copy_bytes = uint64_t{2} << 30;
  void* a = DeviceAlloc(copy_bytes);
  void* b = DeviceAlloc(copy_bytes);
  CHECK_CUDA(cudaMemset(a, 0x3C, copy_bytes));
  const double copy_ms = MedianMs(stream, [&] {
    CHECK_CUDA(cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbps = 2.0 * copy_bytes / 1e9 / (copy_ms / 1e3);
  std::printf("cudaMemcpy D2D: %.3f ms for 2 GiB -> %.0f GB/s (read + write)\n", copy_ms, copy_gbps);

  // Llama-3-8B: 32 layers, 8 KV heads, head_dim 128; 96 chunks of 256 tokens
  // (3.2 GB of decoded bf16 K+V). TinyLlama-like dev shape: 6 layers, 2 heads,
  // head_dim 64; 4096 chunks of 256 tokens (3.2 GB).
  for (int bits : {4, 2}) {
    RunShape("llama3-8b", llama, 96, bits, copy_gbps, stream, *tq, Mode::kAll, /*unaligned=*/bits == 4);
    RunShape("tinyllama", {6, 2, 256, 64}, 4096, bits, copy_gbps, stream, *tq);
  }

  // End to end: an 8K-token Llama-3-8B context (32 chunks of 256 tokens, 1 GiB
  // of bf16 K+V) decoded into the paged cache, and the plain bf16 copy of the
  // same 1 GiB (the floor for any codec).
  const size_t first_e2e = rows.size();
  const uint64_t context_bytes = uint64_t{1} << 30;
  Measure("e2e-8k bf16 copy", stream, [&] {
    CHECK_CUDA(cudaMemcpyAsync(b, a, context_bytes, cudaMemcpyDeviceToDevice, stream));
  }, double(context_bytes), 2.0 * context_bytes, copy_gbps);
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  for (int bits : {4, 3, 2}) {
    RunShape("e2e-8k", llama, 32, bits, copy_gbps, stream, *tq, Mode::kPagedOnly);
  }

  std::printf("\n%-30s %8s %8s %9s %10s %9s %8s %9s\n", "API call", "ms", "1-call", "out GB/s", "moved GB/s",
              "floor ms", "of floor", "1-call %");
  for (const Row& r : rows) {
    std::printf("%-30s %8.3f %8.3f %9.0f %10.0f %9.3f %7.0f%% %8.0f%%\n", r.name.c_str(), r.ms, r.single_ms,
                r.out_gb / (r.ms / 1e3), r.moved_gb / (r.ms / 1e3), r.floor_ms, 100.0 * r.floor_ms / r.ms,
                100.0 * r.floor_ms / r.single_ms);
  }
  std::printf("ms: back-to-back calls, per call (median of %d samples of 8); 1-call: one call on an idle stream\n",
              kRepeats);
  std::printf("ceiling: cudaMemcpy D2D %.0f GB/s; floor = (bytes read + written) / ceiling\n", copy_gbps);
  // Machine-readable lines for bench/gpu/prefill_recompute.py: name, ms, 1-call ms, floor ms.
  for (size_t i = first_e2e; i < rows.size(); ++i) {
    std::printf("E2E\t%s\t%.4f\t%.4f\t%.4f\n", rows[i].name.c_str(), rows[i].ms, rows[i].single_ms, rows[i].floor_ms);
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
