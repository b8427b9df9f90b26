// lossless:coder=rans GPU bench: encode and decode (contiguous and vLLM-paged)
// of many 256-token chunks through seqkv::gpu::LosslessGpu, against the
// measured device-to-device copy bandwidth (bytes read + written) as the
// ceiling. Built and run by bench/gpu/run.sh on the GPU machine; prints a
// table last, and an E2E line for bench/gpu/prefill_recompute.py.
//
// Data: Llama-3-8B shapes from random bf16 (N(0,1) with a few 4x channels:
// exponent entropy close to real KV's); the tinyllama shape from the dev KV
// dumps when $SEQKV_SHARED_DIR/kvdata/dev is there (256-token pieces of the
// real caches, tiled), else random. Times: CUDA events around the whole API
// call, 3 warm-ups, median of 15 (back-to-back calls, per call).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "bench_util.h"
#include "seqkv/gpu/lossless.h"

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
  double ms, single_ms, out_gb, moved_gb, floor_ms, bits;
};
std::vector<Row> rows;

template <typename F>
void Measure(const std::string& name, cudaStream_t stream, F&& f, double out_bytes, double moved_bytes,
             double copy_gbps, double bits) {
  const double single = MedianMs(stream, f, Timing{kWarmup, kRepeats, 1});
  const double ms = MedianMs(stream, f, Timing{kWarmup, kRepeats, 8});
  rows.push_back({name, ms, single, out_bytes / 1e9, moved_bytes / 1e9, moved_bytes / 1e9 / copy_gbps * 1e3, bits});
}

// One slab of [tokens][D] bf16 values per (layer, head) pattern: random, or
// the dev dumps' rows (all layers and heads of a dump, concatenated).
std::vector<uint16_t> SourceRows(uint32_t D, uint64_t rows_wanted, bool* real) {
  *real = false;
  std::vector<uint16_t> out;
  const char* shared = std::getenv("SEQKV_SHARED_DIR");
  if (shared && D == 64) {
    for (int i = 0; i < 8 && out.size() < rows_wanted * D; ++i) {
      const std::string path = std::string(shared) + "/kvdata/dev/doc0" + std::to_string(i) + ".safetensors";
      if (!std::filesystem::exists(path)) break;
      auto dump = ReadKvDump(path);
      if (!dump.ok() || dump->chunk.dtype != DType::kBF16 || dump->chunk.shape.head_dim != D) break;
      for (const std::vector<uint8_t>* t : {&dump->chunk.k, &dump->chunk.v}) {
        const uint16_t* p = reinterpret_cast<const uint16_t*>(t->data());
        out.insert(out.end(), p, p + t->size() / 2);
      }
      *real = true;
    }
  }
  if (out.empty()) {
    std::mt19937_64 rng(42);
    std::normal_distribution<float> normal(0.f, 1.f);
    out.resize(rows_wanted * D);
    for (uint64_t i = 0; i < out.size(); ++i) {
      float x = normal(rng) * ((i % D) % 16 == 3 ? 4.f : 1.f);
      uint32_t b;
      std::memcpy(&b, &x, 4);
      out[i] = static_cast<uint16_t>((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
    }
  }
  return out;
}

enum class Mode { kAll, kPagedOnly };

void RunShape(const char* name, KvShape shape, uint32_t chunks, double copy_gbps, cudaStream_t stream,
              const LosslessGpu& ll, Mode mode) {
  const uint32_t L = shape.layers, H = shape.kv_heads, D = shape.head_dim, T = shape.tokens;
  const uint64_t total_tokens = uint64_t{chunks} * T;
  const uint64_t tensor_bytes = uint64_t{L} * H * total_tokens * D * 2;
  bool real = false;
  const std::vector<uint16_t> slab = SourceRows(D, std::min<uint64_t>(total_tokens * H * L, 1 << 20), &real);
  uint8_t* src[2];
  for (int kv = 0; kv < 2; ++kv) {
    src[kv] = static_cast<uint8_t*>(DeviceAlloc(tensor_bytes));
    const uint64_t slab_bytes = slab.size() * 2;
    // K from the slab's start, V from its middle: different data.
    const uint64_t shift = kv ? (slab.size() / 2 / D) * D * 2 : 0;
    std::vector<uint8_t> rotated(slab_bytes);
    std::memcpy(rotated.data(), reinterpret_cast<const uint8_t*>(slab.data()) + shift, slab_bytes - shift);
    std::memcpy(rotated.data() + slab_bytes - shift, slab.data(), shift);
    for (uint64_t o = 0; o < tensor_bytes; o += slab_bytes) {
      CHECK_CUDA(cudaMemcpy(src[kv] + o, rotated.data(), std::min(slab_bytes, tensor_bytes - o), cudaMemcpyHostToDevice));
    }
  }
  const uint64_t n = shape.elements();
  // Sections 256-byte aligned (a store that lays sections out so; the tests
  // cover unaligned ones).
  const uint64_t cap = (LosslessMaxCodedBytes(shape) + 255) / 256 * 256;
  const uint64_t stride = 2 * (cap + n);  // per chunk: K coded, K raw, V coded, V raw
  auto* sections = static_cast<uint8_t*>(DeviceAlloc(stride * chunks));

  std::vector<LosslessEncodeItem> enc(chunks);
  for (uint32_t c = 0; c < chunks; ++c) {
    LosslessEncodeItem& it = enc[c];
    it.shape = shape;
    it.k_in = src[0];
    it.v_in = src[1];
    it.in_tokens = total_tokens;
    it.token_offset = uint64_t{c} * T;
    uint8_t* base = sections + stride * c;
    it.coded[0] = base;
    it.raw[0] = base + cap;
    it.coded[1] = base + cap + n;
    it.raw[1] = base + 2 * cap + n;
  }
  LosslessEncodeArgs eargs;
  eargs.items = enc;
  CHECK_OK(ll.CanImplement(eargs));
  const uint64_t ews = ll.WorkspaceBytes(eargs);
  void* eworkspace = DeviceAlloc(ews);
  std::vector<Status> statuses;
  std::vector<uint64_t> sizes;
  CHECK_OK(ll.Encode(eargs, eworkspace, ews, stream, &statuses));
  CHECK_OK(ll.CollectStatuses(eworkspace, stream, &statuses, &sizes));
  for (const Status& s : statuses) CHECK_OK(s);
  uint64_t coded_total = 0;
  for (uint64_t s : sizes) coded_total += s;
  const double bits = 8.0 * (coded_total + 2.0 * n * chunks) / (2.0 * n * chunks);
  const std::string tag = std::string(name) + (real ? " (dev KV)" : " (random)");
  if (mode == Mode::kAll) {
    Measure(tag + " encode", stream, [&] { CHECK_OK(ll.Encode(eargs, eworkspace, ews, stream, &statuses)); },
            2.0 * tensor_bytes, 2.0 * tensor_bytes + double(coded_total) + 2.0 * n * chunks, copy_gbps, bits);
    CHECK_OK(ll.CollectStatuses(eworkspace, stream, &statuses));

    // Chunk 1's sections equal the CPU reference's.
    Chunk ch;
    ch.shape = shape;
    ch.dtype = DType::kBF16;
    ch.tokens.assign(T, 1);
    const uint64_t row = uint64_t{D} * 2;
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<uint8_t>& t = kv ? ch.v : ch.k;
      t.resize(ch.TensorBytes());
      for (uint64_t lh = 0; lh < uint64_t{L} * H; ++lh) {
        CHECK_CUDA(cudaMemcpy(&t[lh * T * row], src[kv] + (lh * total_tokens + T) * row, T * row, cudaMemcpyDeviceToHost));
      }
    }
    auto codec = MakeCodec("lossless:coder=rans");
    CHECK_OK(codec.status());
    std::vector<Section> ref;
    CHECK_OK((*codec)->Encode(ch, &ref));
    bool same = true;
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<uint8_t> coded(sizes[2 + kv]), raw(n);
      CHECK_CUDA(cudaMemcpy(coded.data(), enc[1].coded[kv], coded.size(), cudaMemcpyDeviceToHost));
      CHECK_CUDA(cudaMemcpy(raw.data(), enc[1].raw[kv], n, cudaMemcpyDeviceToHost));
      same = same && coded == ref[2 * kv].data && raw == ref[2 * kv + 1].data;
    }
    std::printf("%s: chunk 1 GPU encode %s the CPU reference; %.3f bits/element\n", tag.c_str(), same ? "==" : "!=",
                bits);
    if (!same) std::exit(1);
  }

  std::vector<LosslessDecodeItem> dec(chunks);
  uint64_t coded_read = 0;
  for (uint32_t c = 0; c < chunks; ++c) {
    LosslessDecodeItem& it = dec[c];
    it.shape = shape;
    for (int kv = 0; kv < 2; ++kv) {
      it.coded[kv] = enc[c].coded[kv];
      it.coded_bytes[kv] = sizes[2 * c + kv];
      it.raw[kv] = enc[c].raw[kv];
      it.raw_bytes[kv] = n;
      coded_read += sizes[2 * c + kv];
    }
    it.token_offset = uint64_t{c} * T;
  }
  const double moved = 2.0 * tensor_bytes + double(coded_read) + 2.0 * n * chunks;
  uint8_t* out[2] = {static_cast<uint8_t*>(DeviceAlloc(tensor_bytes)), static_cast<uint8_t*>(DeviceAlloc(tensor_bytes))};
  if (mode == Mode::kAll) {
    for (LosslessDecodeItem& it : dec) {
      it.k_out = out[0];
      it.v_out = out[1];
      it.out_tokens = total_tokens;
    }
    LosslessDecodeArgs cargs;
    cargs.items = dec;
    const uint64_t dws = ll.WorkspaceBytes(cargs);
    void* dworkspace = DeviceAlloc(dws);
    CHECK_CUDA(cudaMemset(out[0], 0xFF, tensor_bytes));
    CHECK_CUDA(cudaMemset(out[1], 0xFF, tensor_bytes));
    Measure(tag + " decode contiguous", stream, [&] { CHECK_OK(ll.Decode(cargs, dworkspace, dws, stream, &statuses)); },
            2.0 * tensor_bytes, moved, copy_gbps, bits);
    CHECK_OK(ll.CollectStatuses(dworkspace, stream, &statuses));
    for (const Status& s : statuses) CHECK_OK(s);
    // Every decoded byte equals the source.
    std::vector<uint8_t> a(tensor_bytes), b(tensor_bytes);
    bool exact = true;
    for (int kv = 0; kv < 2; ++kv) {
      CHECK_CUDA(cudaMemcpy(a.data(), out[kv], tensor_bytes, cudaMemcpyDeviceToHost));
      CHECK_CUDA(cudaMemcpy(b.data(), src[kv], tensor_bytes, cudaMemcpyDeviceToHost));
      exact = exact && a == b;
    }
    std::printf("%s: GPU decode of all %u chunks %s the source\n", tag.c_str(), chunks, exact ? "==" : "!=");
    if (!exact) std::exit(1);
    CHECK_CUDA(cudaFree(dworkspace));
  }
  CHECK_CUDA(cudaFree(out[0]));
  CHECK_CUDA(cudaFree(out[1]));

  // vLLM's paged layout: block 16, a random block table.
  const seqkv::bench::PagedCache cache(L, H, D, total_tokens, 16, 7);
  const auto pargs = cache.PagedArgs<LosslessDecodeArgs>(dec, ll);
  const uint64_t pws = ll.WorkspaceBytes(pargs);
  void* pworkspace = DeviceAlloc(pws);
  Measure(tag + " decode paged", stream, [&] { CHECK_OK(ll.Decode(pargs, pworkspace, pws, stream, &statuses)); },
          2.0 * tensor_bytes, moved, copy_gbps, bits);
  CHECK_OK(ll.CollectStatuses(pworkspace, stream, &statuses));
  for (const Status& s : statuses) CHECK_OK(s);
  // Spot check: chunk 1, first and last layer, against the source.
  uint64_t diff = 0;
  const uint64_t row = uint64_t{D} * 2;
  std::vector<uint8_t> got(row), want(row);
  for (uint32_t l : {0u, L - 1}) {
    for (uint32_t t = 0; t < T; ++t) {
      const uint64_t s = T + t;
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < H; ++h) {
          const uint64_t at = cache.RowOffset(s, kv, h);
          CHECK_CUDA(cudaMemcpy(got.data(), static_cast<uint8_t*>(cache.layers[l]) + at, row, cudaMemcpyDeviceToHost));
          CHECK_CUDA(cudaMemcpy(want.data(), src[kv] + ((uint64_t{l} * H + h) * total_tokens + s) * row, row,
                                cudaMemcpyDeviceToHost));
          diff += got != want;
        }
      }
    }
  }
  std::printf("%s: paged decode, chunk 1 rows differing from the source: %llu\n", tag.c_str(),
              static_cast<unsigned long long>(diff));
  if (diff) std::exit(1);
  CHECK_CUDA(cudaFree(pworkspace));
  CHECK_CUDA(cudaFree(eworkspace));
  CHECK_CUDA(cudaFree(sections));
  CHECK_CUDA(cudaFree(src[0]));
  CHECK_CUDA(cudaFree(src[1]));
}

}  // namespace

int main() {
  auto ll = LosslessGpu::CreateFor(Backend::kCuda);
  CHECK_OK(ll.status());
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const uint64_t copy_bytes = uint64_t{2} << 30;
  void* a = DeviceAlloc(copy_bytes);
  void* b = DeviceAlloc(copy_bytes);
  CHECK_CUDA(cudaMemset(a, 0x3C, copy_bytes));
  const double copy_ms =
      MedianMs(stream, [&] { CHECK_CUDA(cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, stream)); },
               Timing{kWarmup, kRepeats, 1});
  const double copy_gbps = 2.0 * copy_bytes / 1e9 / (copy_ms / 1e3);
  std::printf("cudaMemcpy D2D: %.3f ms for 2 GiB -> %.0f GB/s (read + write)\n", copy_ms, copy_gbps);
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));

  const KvShape llama = {32, 8, 256, 128};
  RunShape("llama3-8b lossless", llama, 96, copy_gbps, stream, *ll, Mode::kAll);
  RunShape("tinyllama lossless", {6, 2, 256, 64}, 4096, copy_gbps, stream, *ll, Mode::kAll);
  const size_t first_e2e = rows.size();
  RunShape("e2e-8k lossless", llama, 32, copy_gbps, stream, *ll, Mode::kPagedOnly);

  std::printf("\n%-42s %8s %8s %6s %9s %10s %9s %8s\n", "API call", "ms", "1-call", "bits", "out GB/s", "moved GB/s",
              "floor ms", "of floor");
  for (const Row& r : rows) {
    std::printf("%-42s %8.3f %8.3f %6.2f %9.0f %10.0f %9.3f %7.0f%%\n", r.name.c_str(), r.ms, r.single_ms, r.bits,
                r.out_gb / (r.ms / 1e3), r.moved_gb / (r.ms / 1e3), r.floor_ms, 100.0 * r.floor_ms / r.ms);
  }
  std::printf("ms: back-to-back calls, per call (median of %d samples of 8); 1-call: one call on an idle stream\n",
              kRepeats);
  std::printf("ceiling: cudaMemcpy D2D %.0f GB/s; floor = (bytes read + written) / ceiling; bits: coded bits/element\n",
              copy_gbps);
  for (size_t i = first_e2e; i < rows.size(); ++i) {
    std::printf("E2E\t%s\t%.4f\t%.4f\t%.4f\n", "e2e-8k lossless decode paged", rows[i].ms, rows[i].single_ms, rows[i].floor_ms);
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
