// Seq codec GPU decode bench: whole lossy decodes (entropy stage, prediction,
// KLT reconstruction, RoPE, bf16) of batches of 256-token chunks through
// seqkv::gpu::SeqDecodeGpu into vLLM's paged layout, and the entropy stage
// alone on the same streams, so the time splits into its two stages.
// Built and run on the GPU machine by bench/gpu/run.sh; prints a table last
// and an E2E line for bench/gpu/prefill_recompute.py.
//
// Data: a synthetic profile of the model's shape (random predictors and
// bases: the arithmetic per element is the real one, the values do not change
// the work) and group streams coded by the codec's own SeqEncodeGroup from
// symbols with the real codec's statistics (~1.4 bits/element: mostly |q| <=
// 2, scale falling with the component index). The "lanes" rows code the same
// symbols as lane streams (streams=lanes) with a static model fitted on them,
// and time the lane kernel alone in place of SeqEntropyGpu; the "lanes2" rows
// as signed lane streams (streams=lanes2, the signed model fitted likewise). The "tc3" / "tc1" /
// "f16" rows decode the same batch with the dense stage on tensor cores
// (SeqDenseMath::kTensorTf32x3 / kTensorTf32 / kTensorF16); the "int12" rows decode
// arith=int12 chunks (exact, on int8 tensor cores). Chunk 1 of each row is decoded
// on the CPU backend too (the codec's reference functions) and compared:
// byte for byte for exact rows; for tensor-core rows the differing elements
// and the largest difference are printed (a difference over half the rms
// value fails the bench; SEQKV_BENCH_PROBE=1 only prints it, for timing
// probes that skip work on purpose). CUDA events around the whole API call, 2 warm-ups,
// median of 5. SEQKV_BENCH_MATHS=f16 (or a comma list of exact, tc3, tc1,
// f16) times only those maths' rows. SEQKV_BENCH_LARGE=32,256 runs only Llama-shape lane batches of
// those chunk counts (docs/BENCHMARKS.md: throughput against batch size).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../seq_symbols.h"
#include "bench_util.h"
#include "lane_proto.h"
#include "lane_proto_kernels.h"
#include "seq_lanes.h"
#include "seq_lanes_kernels.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/seq_decode.h"
#include "seqkv/gpu/seq_entropy.h"
#include "util/test_util.h"

using namespace seqkv;
using namespace seqkv::gpu;

constexpr seqkv::bench::Timing kTiming{2, 5, 1};

namespace {

constexpr uint32_t kTokens = 256;
constexpr uint32_t kDistinct = 48;  // distinct group streams, reused across groups and chunks

std::vector<int32_t> Symbols(uint32_t dim, uint64_t seed) {
  return seqkv::bench::SyntheticSeqSymbols(kTokens, dim, seed);
}

struct Row {
  std::string name;
  uint32_t chunks;
  double ms, entropy_ms, out_gb, bits;
  double steady_ms, host_ms;  // back-to-back calls' time per call; the call's own host time
  double two_ms;              // per call, two streams decoding at once (TimeMaths)
};
std::vector<Row> rows;

// A static model for the bench's symbols (step 1, code 128): per component
// SeqLog2Sixteenths of its mean |q|, and the tables of their counts.
void FitStaticModel(const std::vector<std::vector<int32_t>>& sets, uint32_t d, SeqProfile* p) {
  std::vector<double> mean(d, 0.0);
  for (const auto& q : sets) {
    for (size_t k = 0; k < q.size(); ++k) mean[k % d] += std::abs(double(q[k])) / (double(kTokens) * sets.size());
  }
  std::vector<int16_t> scale(d);
  for (uint32_t i = 0; i < d; ++i) {
    scale[i] = mean[i] > 0 ? seqkv::internal::SeqLog2Sixteenths(mean[i]) : seqkv::internal::kSeqStaticScaleNone;
  }
  p->static_scale.resize(size_t{p->groups()} * d);
  for (size_t k = 0; k < p->static_scale.size(); ++k) p->static_scale[k] = scale[k % d];
  std::vector<uint64_t> counts(
      size_t{seqkv::internal::kSeqStaticClasses} * seqkv::internal::kSeqLaneContexts * seqkv::internal::kSeqLaneSymbols,
      1);
  std::vector<uint64_t> signed_counts(size_t{seqkv::internal::kSeqStaticClasses} * seqkv::internal::kSeqSignedSymbols, 1);
  for (const auto& q : sets) {
    seqkv::internal::SeqAddStaticCounts(q.data(), kTokens, d, scale.data(), 0, 128, counts.data(), signed_counts.data());
  }
  p->static_freq = seqkv::internal::SeqStaticFreqs(counts);
  p->signed_freq = seqkv::internal::SeqStaticFreqs(signed_counts, seqkv::internal::kSeqSignedSymbols);
  CHECK_OK(p->Validate());
}

struct Math {
  SeqDenseMath math;
  const char* suffix;  // appended to the row's name
};
constexpr Math kExactOnly[] = {{SeqDenseMath::kExact, ""}};
constexpr Math kAllMaths[] = {{SeqDenseMath::kExact, ""},
                              {SeqDenseMath::kTensorTf32x3, " tc3"},
                              {SeqDenseMath::kTensorTf32, " tc1"},
                              {SeqDenseMath::kTensorF16, " f16"}};

// SEQKV_BENCH_MATHS (e.g. "f16" or "exact,tc1"): only these maths' rows of a
// batch (its suffix without the space; "exact" for the row without one, as
// the int12 batches' only row), to
// time or profile one math without the others (a row filter matches a
// batch's name, not its maths' suffixes). Unset: every math.
bool MathWanted(const Math& m) {
  const char* e = std::getenv("SEQKV_BENCH_MATHS");
  if (e == nullptr || *e == '\0') return true;
  std::string list = ",", name = ",";
  list.append(e).append(",");
  name.append(*m.suffix == '\0' ? "exact" : m.suffix + 1).append(",");
  return list.find(name) != std::string::npos;
}

// How a chunk decoded into the cache compares with the reference's bf16 K
// and V ([layers][heads][kTokens][d]).
struct Agreement {
  uint64_t differ = 0, elements = 0;
  double max_abs = 0, ref2 = 0, err2 = 0;
};

// The chunk at cache token s0: rows of `layers`, tokens 0, step, 2 step, ...
Agreement CompareChunk(const seqkv::bench::PagedCache& cache, uint32_t H, uint32_t d, uint64_t s0,
                       std::span<const uint32_t> layers, uint32_t step, const std::vector<uint8_t>& ref_k,
                       const std::vector<uint8_t>& ref_v) {
  Agreement a;
  std::vector<uint16_t> got(d);
  for (uint32_t l : layers) {
    for (uint32_t t = 0; t < kTokens; t += step) {
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < H; ++h) {
          CHECK_CUDA(cudaMemcpy(got.data(), static_cast<uint8_t*>(cache.layers[l]) + cache.RowOffset(s0 + t, kv, h),
                                uint64_t{d} * 2, cudaMemcpyDeviceToHost));
          const std::vector<uint8_t>& ref = kv ? ref_v : ref_k;
          for (uint32_t j = 0; j < d; ++j) {
            uint16_t r;
            std::memcpy(&r, &ref[(((uint64_t{l} * H + h) * kTokens + t) * d + j) * 2], 2);
            const double gf = Bf16ToFloat(got[j]), rf = Bf16ToFloat(r);
            ++a.elements;
            a.differ += got[j] != r;
            a.max_abs = std::max(a.max_abs, std::abs(gf - rf));
            a.ref2 += rf * rf;
            a.err2 += (gf - rf) * (gf - rf);
          }
        }
      }
    }
  }
  return a;
}

// What one bench row decodes, and how its output is checked.
struct Batch {
  const char* name;
  uint32_t chunks;
  double entropy_ms, out_gb, bits;
  const char* compared;                  // what `compare` compares, for the printed line
  std::function<Agreement()> compare;    // the output against the reference
};

// Times the batch's decode with every math (statuses must all be OK),
// prints the check and records a row per math. Exact: not one element may
// differ; tensor cores: a difference over half the rms value is a bug.
void TimeMaths(const Batch& b, std::span<const Math> maths, SeqDecodeGpu& gpu, SeqDecodeArgs args, void* ws,
               uint64_t ws_bytes, cudaStream_t stream) {
  // Two decodes at once: a second stream with its own workspace, decoding the
  // same batch into the same cache (the same bytes), so that one call's
  // entropy stage may run beside the other's dense stage.
  cudaStream_t stream2;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream2, cudaStreamNonBlocking));
  cudaEvent_t fork, join;
  CHECK_CUDA(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CHECK_CUDA(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  void* ws2 = nullptr;
  CHECK_CUDA(cudaMalloc(&ws2, ws_bytes));
  for (const Math& m : maths) {
    if (!MathWanted(m)) continue;
    args.math = m.math;
    std::vector<Status> statuses;
    const double ms =
        seqkv::bench::MedianMs(stream, [&] { CHECK_OK(gpu.Decode(args, ws, ws_bytes, stream, &statuses)); }, kTiming);
    // Steady state: four calls back to back, so each call's host work
    // (parsing, descriptors, uploads) overlaps the previous call's kernels.
    const double steady_ms = seqkv::bench::MedianMs(
        stream, [&] { CHECK_OK(gpu.Decode(args, ws, ws_bytes, stream, &statuses)); },
        seqkv::bench::Timing{1, 3, 4});
    // Two streams, four calls each, interleaved as a server would enqueue
    // them: the time per call.
    std::vector<Status> statuses2;
    const double two_ms = seqkv::bench::MedianMs(
                              stream,
                              [&] {
                                CHECK_CUDA(cudaEventRecord(fork, stream));
                                CHECK_CUDA(cudaStreamWaitEvent(stream2, fork));
                                for (int c = 0; c < 4; ++c) {
                                  CHECK_OK(gpu.Decode(args, ws, ws_bytes, stream, &statuses));
                                  CHECK_OK(gpu.Decode(args, ws2, ws_bytes, stream2, &statuses2));
                                }
                                CHECK_CUDA(cudaEventRecord(join, stream2));
                                CHECK_CUDA(cudaStreamWaitEvent(stream, join));
                              },
                              seqkv::bench::Timing{1, 3, 1}) /
                          8.0;
    CHECK_OK(gpu.CollectStatuses(ws2, stream2, &statuses2));
    for (const Status& st : statuses2) CHECK_OK(st);
    // The call's own host time: from an idle stream to Decode's return.
    std::vector<double> host;
    for (int i = 0; i < 5; ++i) {
      CHECK_CUDA(cudaStreamSynchronize(stream));
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_OK(gpu.Decode(args, ws, ws_bytes, stream, &statuses));
      host.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(host.begin(), host.end());
    CHECK_OK(gpu.CollectStatuses(ws, stream, &statuses));
    for (const Status& st : statuses) CHECK_OK(st);
    const Agreement a = b.compare();
    const std::string row = std::string(b.name) + m.suffix;
    const double rms = std::sqrt(a.ref2 / a.elements);
    std::printf("%s: %s elements differing from the CPU reference: %llu of %llu (max |diff| %.3g, rms diff %.3g, "
                "rms value %.3g)\n",
                row.c_str(), b.compared, static_cast<unsigned long long>(a.differ),
                static_cast<unsigned long long>(a.elements), a.max_abs, std::sqrt(a.err2 / a.elements), rms);
    if ((m.math == SeqDenseMath::kExact ? a.differ != 0 : a.max_abs > 0.5 * rms) &&
        std::getenv("SEQKV_BENCH_PROBE") == nullptr) {
      std::exit(1);
    }
    rows.push_back(
        {row, b.chunks, ms, b.entropy_ms, b.out_gb, b.bits, steady_ms, host[host.size() / 2], two_ms});
  }
  CHECK_CUDA(cudaFree(ws2));
  CHECK_CUDA(cudaEventDestroy(fork));
  CHECK_CUDA(cudaEventDestroy(join));
  CHECK_CUDA(cudaStreamDestroy(stream2));
}


// The bench's optional argument: only the batches whose name contains it run.
const char* g_filter = nullptr;
bool Wanted(const char* name) { return g_filter == nullptr || std::strstr(name, g_filter) != nullptr; }

// The lane-format prototype (lane_proto.h, bench-only) on the same symbols:
// each distinct set recoded with the same tables (the lanes2 stream's class
// shift), checked on the host, then the whole batch decoded on the GPU into
// its own q and compared with the lanes2 kernel's q (`q`, the same layout),
// timed at 512 and 256 threads per block. Exits when anything differs.
void ProtoLanes(const char* name, const std::vector<std::vector<int32_t>>& sets,
                const std::vector<std::vector<uint8_t>>& streams, const int16_t* classes,
                const seqkv::internal::SeqStaticTables& tables, const uint8_t* search, uint32_t chunks, uint32_t G,
                uint32_t d, const int32_t* q, double lanes2_ms, cudaStream_t stream) {
  namespace lp = seqkv::bench::lane_proto;
  if (d != 64 && d != 128) return;
  std::vector<uint8_t> all;
  std::vector<uint64_t> at(sets.size());
  uint64_t proto_bytes = 0, lanes2_bytes = 0;
  for (size_t k = 0; k < sets.size(); ++k) {
    const uint32_t bitmap = (d + 7) / 8;
    const int shift = streams[k].size() > bitmap + 1 ? static_cast<int8_t>(streams[k][bitmap + 1]) : 0;
    std::vector<uint8_t> table(d);
    for (uint32_t c = 0; c < d; ++c) table[c] = static_cast<uint8_t>(seqkv::internal::SeqLaneTable(classes[c], shift));
    const std::vector<uint8_t> blob = lp::Encode(sets[k].data(), kTokens, d, table.data(), tables.signed_cum.data());
    std::vector<int32_t> back(sets[k].size(), 7);
    const bool ok = d == 128 ? lp::Decode<8>(blob, kTokens, tables.signed_cum.data(), back.data())
                             : lp::Decode<4>(blob, kTokens, tables.signed_cum.data(), back.data());
    if (!ok || back != sets[k]) {
      std::printf("%s: the prototype's host round trip failed (set %zu)\n", name, k);
      std::exit(1);
    }
    at[k] = all.size();
    all.insert(all.end(), blob.begin(), blob.end());
    proto_bytes += blob.size();
    lanes2_bytes += streams[k].size();
  }
  uint8_t* dev = nullptr;
  CHECK_CUDA(cudaMalloc(&dev, all.size()));
  CHECK_CUDA(cudaMemcpy(dev, all.data(), all.size(), cudaMemcpyHostToDevice));
  const uint64_t q_elems = uint64_t{chunks} * G * kTokens * d;
  int32_t* q2 = nullptr;
  CHECK_CUDA(cudaMalloc(&q2, q_elems * 4));
  CHECK_CUDA(cudaMemset(q2, 0x55, q_elems * 4));
  std::vector<lp::Desc> descs;
  for (uint32_t c = 0; c < chunks; ++c) {
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t k = (c * 7 + g) % sets.size();  // as RunShape's items
      descs.push_back({dev + at[k], q2 + (uint64_t{c} * G + g) * kTokens * d});
    }
  }
  lp::Desc* dev_descs = nullptr;
  uint32_t* bad = nullptr;
  CHECK_CUDA(cudaMalloc(&dev_descs, descs.size() * sizeof(lp::Desc)));
  CHECK_CUDA(cudaMemcpy(dev_descs, descs.data(), descs.size() * sizeof(lp::Desc), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMalloc(&bad, 4));
  CHECK_CUDA(cudaMemset(bad, 0, 4));
  const auto count = static_cast<uint32_t>(descs.size());
  double ms[3];
  const uint32_t threads[3] = {512, 256, 257};
  for (int i = 0; i < 3; ++i) {
    ms[i] = seqkv::bench::MedianMs(stream, [&] {
      CHECK_CUDA(lp::LaunchDecode(dev_descs, count, kTokens, d, search, bad, stream, threads[i]));
    }, kTiming);
  }
  uint32_t flag = 0;
  CHECK_CUDA(cudaMemcpy(&flag, bad, 4, cudaMemcpyDeviceToHost));
  std::vector<int32_t> a(q_elems), b(q_elems);
  CHECK_CUDA(cudaMemcpy(a.data(), q, q_elems * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(b.data(), q2, q_elems * 4, cudaMemcpyDeviceToHost));
  const uint64_t differ = [&] {
    uint64_t n = 0;
    for (uint64_t i = 0; i < q_elems; ++i) n += a[i] != b[i] ? 1 : 0;
    return n;
  }();
  std::printf("%s: prototype lanes: %.3f ms at 512 threads per block, %.3f ms at 256, %.3f ms at 256 with 40 "
              "registers; lanes2 kernel %.3f ms (%.2fx); blobs %.1f %% of the lanes2 streams' bytes (u32 escapes, unpacked); invalid flag %u; "
              "symbols differing from the lanes2 kernel's: %llu of %llu\n",
              name, ms[0], ms[1], ms[2], lanes2_ms, lanes2_ms / std::min({ms[0], ms[1], ms[2]}), 100.0 * proto_bytes / lanes2_bytes,
              flag, static_cast<unsigned long long>(differ), static_cast<unsigned long long>(q_elems));
  CHECK_CUDA(cudaFree(dev));
  CHECK_CUDA(cudaFree(q2));
  CHECK_CUDA(cudaFree(dev_descs));
  CHECK_CUDA(cudaFree(bad));
  if (flag != 0 || differ != 0) std::exit(1);
}

void RunShape(const char* name, uint32_t L, uint32_t H, uint32_t d, SeqInputs inputs, uint32_t chunks,
              SeqStreamCoding kind, std::span<const Math> maths, cudaStream_t stream,
              SeqArith arith = SeqArith::kFloat) {
  if (!Wanted(name)) return;
  const bool lanes = IsLaneCoding(kind), signed_lanes = IsSignedLaneCoding(kind);
  const bool split = kind == SeqStreamCoding::kSplitLanes;
  const auto model = seqkv::internal::SeqLaneModelOf(kind);
  std::vector<std::vector<int32_t>> sets(kDistinct);
  for (uint32_t k = 0; k < kDistinct; ++k) sets[k] = Symbols(d, 100 + k);
  SeqProfile synthetic = *seqkv::bench::SyntheticSeqProfile(L, H, d, inputs, /*orthonormal=*/false);
  if (lanes) FitStaticModel(sets, d, &synthetic);
  auto profile = std::make_shared<const SeqProfile>(std::move(synthetic));
  auto gpu = SeqDecodeGpu::CreateFor(Backend::kCuda, profile);
  CHECK_OK(gpu.status());
  auto cpu = SeqDecodeGpu::CreateFor(Backend::kCpu, profile);
  CHECK_OK(cpu.status());
  const seqkv::internal::SeqStaticTables tables = seqkv::internal::MakeSeqStaticTables(*profile);
  std::vector<int16_t> classes(d);
  if (lanes) seqkv::internal::SeqLaneClasses(*profile, 0, 0, 128, classes.data());
  // Distinct streams in one device buffer (and a host copy for the CPU check).
  std::vector<std::vector<uint8_t>> streams(kDistinct);
  std::vector<uint8_t> all;
  std::vector<uint64_t> at(kDistinct);
  for (uint32_t k = 0; k < kDistinct; ++k) {
    const std::vector<int32_t>& q = sets[k];
    streams[k] = lanes ? seqkv::internal::SeqEncodeLaneGroup(q.data(), kTokens, d, tables, classes.data(), model)
                       : seqkv::internal::SeqEncodeGroup(q.data(), kTokens, d);
    at[k] = all.size();
    all.insert(all.end(), streams[k].begin(), streams[k].end());
  }
  uint8_t* dev_streams = nullptr;
  CHECK_CUDA(cudaMalloc(&dev_streams, all.size()));
  CHECK_CUDA(cudaMemcpy(dev_streams, all.data(), all.size(), cudaMemcpyHostToDevice));

  const uint32_t G = profile->groups();
  const uint64_t total_tokens = uint64_t{chunks} * kTokens;
  const seqkv::bench::PagedCache cache(L, H, d, total_tokens, 16, 3);

  std::vector<SeqDecodeItem> items(chunks);
  uint64_t coded = 0;
  for (uint32_t c = 0; c < chunks; ++c) {
    SeqDecodeItem& it = items[c];
    it.shape = {L, H, kTokens, d};
    it.rope = {RopeStyle::kRotateHalf, 500000.0, d};
    it.first_position = uint64_t{c} * kTokens;
    it.delta0 = 1.0f;
    it.mult_code.assign(G, 128);
    it.coding = kind;
    it.step_class = 0;
    it.arith = arith;
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t k = (c * 7 + g) % kDistinct;
      it.streams.push_back(dev_streams + at[k]);
      it.stream_bytes.push_back(streams[k].size());
      coded += streams[k].size();
    }
    it.token_offset = uint64_t{c} * kTokens;
  }
  const auto args = cache.PagedArgs<SeqDecodeArgs>(items, *gpu);
  const uint64_t ws_bytes = gpu->WorkspaceBytes(args);
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));

  // The entropy stage alone, on the same streams: SeqEntropyGpu, or the lane
  // kernel (gpu/src's launcher, with the profile's tables uploaded here).
  auto se = SeqEntropyGpu::CreateFor(Backend::kCuda);
  CHECK_OK(se.status());
  int32_t* q = nullptr;
  CHECK_CUDA(cudaMalloc(&q, uint64_t{chunks} * G * kTokens * d * 4));
  std::vector<SeqEntropyItem> eitems;
  std::vector<gpu::internal::SlDesc> lane_descs;
  std::vector<gpu::internal::SlItem> lane_items;  // step base 1.0: delta0 1, code 128 (2^0)
  for (uint32_t c = 0; c < chunks; ++c) {
    lane_items.push_back({q + uint64_t{c} * G * kTokens * d, kTokens, 0, 1.0f, 0, 0});
    for (uint32_t g = 0; g < G; ++g) {
      int32_t* out = q + (uint64_t{c} * G + g) * kTokens * d;
      eitems.push_back({items[c].streams[g], items[c].stream_bytes[g], kTokens, d, out});
      lane_descs.push_back({items[c].streams[g], static_cast<uint32_t>(items[c].stream_bytes[g]), 128, {}});
    }
  }
  SeqEntropyDecodeArgs eargs;
  eargs.items = eitems;
  const uint64_t lane_bytes = lane_descs.size() * sizeof(gpu::internal::SlDesc) +
                              lane_items.size() * sizeof(gpu::internal::SlItem) +
                              sizeof(seqkv::internal::SeqMultipliers());
  const uint64_t ews_bytes = lanes ? 256 + lane_bytes : se->WorkspaceBytes(eargs);
  void* ews = nullptr;
  CHECK_CUDA(cudaMalloc(&ews, std::max<uint64_t>(ews_bytes, 1)));
  double entropy_ms = 0;
  if (lanes) {
    uint16_t* cum = nullptr;
    int16_t* scale = nullptr;
    CHECK_CUDA(cudaMalloc(&cum, tables.cum.size() * 2));
    CHECK_CUDA(cudaMemcpy(cum, tables.cum.data(), tables.cum.size() * 2, cudaMemcpyHostToDevice));
    // The signed model's search tables, as SeqDecodeGpu uploads them.
    const std::vector<uint8_t> search_bytes = seqkv::internal::SeqSignedSearchBytes(tables);
    uint8_t* search = nullptr;
    CHECK_CUDA(cudaMalloc(&search, std::max<size_t>(search_bytes.size(), 1)));
    CHECK_CUDA(cudaMemcpy(search, search_bytes.data(), search_bytes.size(), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMalloc(&scale, profile->static_scale.size() * 2));
    CHECK_CUDA(cudaMemcpy(scale, profile->static_scale.data(), profile->static_scale.size() * 2,
                          cudaMemcpyHostToDevice));
    auto* status = static_cast<int32_t*>(ews);
    auto* descs = reinterpret_cast<gpu::internal::SlDesc*>(static_cast<uint8_t*>(ews) + 256);
    CHECK_CUDA(cudaMemset(status, 0, 4));
    CHECK_CUDA(cudaMemcpy(descs, lane_descs.data(), lane_descs.size() * sizeof(gpu::internal::SlDesc),
                          cudaMemcpyHostToDevice));
    auto* litems = reinterpret_cast<gpu::internal::SlItem*>(descs + lane_descs.size());
    CHECK_CUDA(cudaMemcpy(litems, lane_items.data(), lane_items.size() * sizeof(gpu::internal::SlItem),
                          cudaMemcpyHostToDevice));
    const std::array<double, 256>& mults = seqkv::internal::SeqMultipliers();
    auto* device_mults = reinterpret_cast<double*>(litems + lane_items.size());
    CHECK_CUDA(cudaMemcpy(device_mults, mults.data(), sizeof(mults), cudaMemcpyHostToDevice));
    gpu::internal::SlLaunch sl{descs,
                               static_cast<uint32_t>(lane_descs.size()),
                               d,
                               litems,
                               G,
                               device_mults,
                               cum,
                               scale,
                               status,
                               signed_lanes,
                               search,
                               /*threads=*/0,
                               /*half_symbols=*/false};
    // As SeqDecodeGpu runs it: the symbols cleared (the magnitude model; the
    // signed kernel clears them itself), then the kernel.
    const uint64_t q_bytes = uint64_t{chunks} * G * kTokens * d * 4;
    entropy_ms = seqkv::bench::MedianMs(stream, [&] {
      if (!signed_lanes) CHECK_CUDA(cudaMemsetAsync(q, 0, q_bytes, stream));
      CHECK_CUDA(split ? gpu::internal::LaunchSplitLaneDecode(sl, stream) : gpu::internal::LaunchSlDecode(sl, stream));
    }, kTiming);
    if (split) {  // the register bounds SEQKV_SPLIT_BLOCKS selects (SeqDecodeGpu's default: 4 blocks per SM
                  // at head size 128, else 3)
      const char* before = std::getenv("SEQKV_SPLIT_BLOCKS");
      const std::string saved = before != nullptr ? before : "";
      double ms[2];
      for (int b = 0; b < 2; ++b) {
        ::setenv("SEQKV_SPLIT_BLOCKS", b == 0 ? "0" : "3", 1);
        ms[b] = seqkv::bench::MedianMs(stream, [&] {
          CHECK_CUDA(gpu::internal::LaunchSplitLaneDecode(sl, stream));
        }, kTiming);
      }
      if (before != nullptr) {
        ::setenv("SEQKV_SPLIT_BLOCKS", saved.c_str(), 1);
      } else {
        ::unsetenv("SEQKV_SPLIT_BLOCKS");
      }
      // Into FP16 operands (the f16 maths' lane stage).
      gpu::internal::SlLaunch half = sl;
      half.half_symbols = true;
      const double half_ms = seqkv::bench::MedianMs(
          stream, [&] { CHECK_CUDA(gpu::internal::LaunchSplitLaneDecode(half, stream)); }, kTiming);
      std::printf(
          "%s: split lane stage %.3f ms (SEQKV_SPLIT_BLOCKS %s; default 4 blocks per SM at head size "
          "128, <= 32 registers, else 3), %.3f ms without a register bound, %.3f ms with 3 blocks "
          "(<= 40); into FP16 operands %.3f ms\n",
          name, entropy_ms, before != nullptr ? before : "unset", ms[0], ms[1], half_ms);
    } else if (signed_lanes) {  // the block size SeqDecodeGpu uses (256) against 128 threads
      gpu::internal::SlLaunch small = sl;
      small.threads = 128;
      const double small_ms = seqkv::bench::MedianMs(
          stream, [&] { CHECK_CUDA(gpu::internal::LaunchSlDecode(small, stream)); }, kTiming);
      std::printf("%s: lane stage %.3f ms with 256 threads per block, %.3f ms with 128\n", name, entropy_ms, small_ms);
    }
    int32_t code = 0;
    CHECK_CUDA(cudaMemcpy(&code, status, 4, cudaMemcpyDeviceToHost));
    if (code != 0) {
      std::printf("%s: the lane kernel alone found a corrupt stream\n", name);
      std::exit(1);
    }
    if (kind == SeqStreamCoding::kSignedLanes && arith == SeqArith::kFloat &&
        std::getenv("SEQKV_LANE_PROTO") != nullptr) {
      ProtoLanes(name, sets, streams, classes.data(), tables, search, chunks, G, d, q, entropy_ms, stream);
    }
    CHECK_CUDA(cudaFree(cum));
    CHECK_CUDA(cudaFree(search));
    CHECK_CUDA(cudaFree(scale));
  } else {
    std::vector<Status> est;
    entropy_ms =
        seqkv::bench::MedianMs(stream, [&] { CHECK_OK(se->Decode(eargs, ews, ews_bytes, stream, &est)); }, kTiming);
    CHECK_OK(se->CollectStatuses(ews, stream, &est));
  }

  // Chunk 1 on the CPU backend (host copies of its streams), the reference.
  SeqDecodeItem it = items[1];
  for (uint32_t g = 0; g < G; ++g) it.streams[g] = all.data() + (it.streams[g] - dev_streams);
  std::vector<uint8_t> ref_k(uint64_t{L} * H * kTokens * d * 2), ref_v(ref_k.size());
  it.layer_caches = nullptr;
  it.block_table = nullptr;
  it.k_out = ref_k.data();
  it.v_out = ref_v.data();
  it.out_tokens = kTokens;
  it.token_offset = 0;
  {
    SeqDecodeArgs one;
    one.items = std::span<const SeqDecodeItem>(&it, 1);
    std::vector<uint8_t> cws(cpu->WorkspaceBytes(one));
    std::vector<Status> cst;
    CHECK_OK(cpu->Decode(one, cws.data(), cws.size(), nullptr, &cst));
    CHECK_OK(cst[0]);
  }
  // Chunk 1 in the cache against the reference: rows of layers 0 and L-1.
  const uint32_t sampled[] = {0u, L - 1};
  const Batch b{name, chunks, entropy_ms, 2.0 * uint64_t{L} * H * total_tokens * d * 2 / 1e9,
                8.0 * coded / (2.0 * L * H * total_tokens * d), "chunk 1 sampled",
                [&] { return CompareChunk(cache, H, d, kTokens, sampled, 37, ref_k, ref_v); }};
  TimeMaths(b, maths, *gpu, args, ws, ws_bytes, stream);
  CHECK_CUDA(cudaFree(dev_streams));
  CHECK_CUDA(cudaFree(ws));
  CHECK_CUDA(cudaFree(ews));
  CHECK_CUDA(cudaFree(q));
}


// Real KV: the tinyllama dev dumps (../shared/kvdata/dev). A same-head
// profile calibrated on doc00-03 (its static models included), then doc04-07
// cut into 256-token chunks and coded by the codec itself (EncodeChunk, spec
// `spec`), 16 distinct chunks, each decoded `copies` times into its own place
// of a vLLM paged cache (the lane work depends on the data; which copy does
// not matter). Chunk 0 is compared with DecodeChunk's output, every element.
// The entropy stage is not timed apart here (0 in the table).
void RunRealDumps(const char* name, const std::string& spec, uint32_t copies, std::span<const Math> maths,
                  cudaStream_t stream) {
  if (!Wanted(name)) return;
  const std::string dir = seqkv::test::SharedDir();
  if (dir.empty() || seqkv::test::DevDump("doc00.safetensors").empty()) {
    std::printf("%s: no ../shared/kvdata/dev (SEQKV_SHARED_DIR): skipped\n", name);
    return;
  }
  auto read = [](int doc) {
    char file[32];
    std::snprintf(file, sizeof(file), "doc%02d.safetensors", doc);
    auto dump = ReadKvDump(seqkv::test::DevDump(file));
    CHECK_OK(dump.status());
    return dump->chunk;
  };
  static std::shared_ptr<const SeqProfile> profile;  // one calibration for every spec
  if (profile == nullptr) {
    std::vector<Chunk> cal;
    for (int doc = 0; doc < 4; ++doc) cal.push_back(read(doc));
    SeqCalibrateOptions o;
    o.inputs = SeqInputs::kSameHead;
    auto p = CalibrateSeqProfile(cal, o, nullptr);
    CHECK_OK(p.status());
    profile = std::make_shared<const SeqProfile>(std::move(*p));
    SeqResources::Default().AddProfile(profile);
  }
  auto codec = MakeCodec(spec);
  CHECK_OK(codec.status());
  std::vector<Chunk> pieces;
  std::vector<std::vector<uint8_t>> coded;
  uint64_t coded_bytes = 0;
  for (int doc = 4; doc < 8; ++doc) {
    const Chunk c = read(doc);
    for (uint32_t t0 = 0; t0 + kTokens <= c.shape.tokens; t0 += kTokens) {
      pieces.push_back(seqkv::test::SliceTokens(c, t0, kTokens));
      auto bytes = EncodeChunk(pieces.back(), **codec);
      CHECK_OK(bytes.status());
      coded_bytes += bytes->size();
      coded.push_back(std::move(*bytes));
    }
  }
  const KvShape shape = pieces[0].shape;
  const uint32_t L = shape.layers, H = shape.kv_heads, d = shape.head_dim;
  auto gpu = SeqDecodeGpu::CreateFor(Backend::kCuda, profile);
  CHECK_OK(gpu.status());
  std::vector<uint8_t*> dev(coded.size());
  std::vector<SeqDecodeItem> distinct;
  for (size_t i = 0; i < coded.size(); ++i) {
    CHECK_CUDA(cudaMalloc(&dev[i], coded[i].size()));
    CHECK_CUDA(cudaMemcpy(dev[i], coded[i].data(), coded[i].size(), cudaMemcpyHostToDevice));
    auto header = ParseChunkHeader(coded[i]);
    CHECK_OK(header.status());
    auto item = MakeSeqDecodeItem(*header, coded[i], dev[i], *profile);
    CHECK_OK(item.status());
    distinct.push_back(std::move(*item));
  }
  const uint32_t chunks = static_cast<uint32_t>(distinct.size()) * copies;
  const seqkv::bench::PagedCache cache(L, H, d, uint64_t{chunks} * kTokens, 16, 5);
  std::vector<SeqDecodeItem> items;
  for (uint32_t c = 0; c < chunks; ++c) {
    items.push_back(distinct[c % distinct.size()]);
    items.back().out_tokens = kTokens;
    items.back().token_offset = uint64_t{c} * kTokens;
  }
  const auto args = cache.PagedArgs<SeqDecodeArgs>(items, *gpu);
  const uint64_t ws_bytes = gpu->WorkspaceBytes(args);
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  auto ref = DecodeChunk(coded[0]);
  CHECK_OK(ref.status());
  std::vector<uint32_t> every_layer(L);
  std::iota(every_layer.begin(), every_layer.end(), 0u);
  const Batch b{name, chunks, 0.0, 2.0 * uint64_t{L} * H * chunks * kTokens * d * 2 / 1e9,
                8.0 * coded_bytes / (2.0 * pieces.size() * shape.elements()), "chunk 0 (every row)",
                [&] { return CompareChunk(cache, H, d, 0, every_layer, 1, ref->k, ref->v); }};
  TimeMaths(b, maths, *gpu, args, ws, ws_bytes, stream);
  CHECK_CUDA(cudaFree(ws));
  for (uint8_t* p : dev) CHECK_CUDA(cudaFree(p));
}

}  // namespace

int main(int argc, char** argv) {
  // An optional argument: run only the batches whose name contains it (e.g.
  // "lanes2 int12"; a batch's rows are its maths).
  if (argc > 1) g_filter = argv[1];
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  // SEQKV_BENCH_LARGE=N[,N...]: only Llama-3-8B-shape lane batches of N
  // chunks (N = 256: a 64K-token batch, 8 GiB out, ~26 GiB of workspace),
  // every math, to see how throughput scales with the batch.
  if (const char* large = std::getenv("SEQKV_BENCH_LARGE")) {
    for (const char* p = large; *p != '\0';) {
      const uint32_t n = static_cast<uint32_t>(std::strtoul(p, nullptr, 10));
      if (n == 0) break;
      const std::string name = "llama lanes x" + std::to_string(n);
      RunShape(name.c_str(), 32, 8, 128, SeqInputs::kSameHead, n, SeqStreamCoding::kLanes, kAllMaths, stream);
      const std::string name2 = "llama lanes2 x" + std::to_string(n);
      RunShape(name2.c_str(), 32, 8, 128, SeqInputs::kSameHead, n, SeqStreamCoding::kSignedLanes, kAllMaths,
               stream);
      while (*p != '\0' && *p != ',') ++p;
      if (*p == ',') ++p;
    }
  } else {
    // An 8K-token Llama-3-8B context (32 chunks, 1 GiB of bf16 K+V), same-head
    // predictors (the form that scales); the tinyllama shape with both.
    RunShape("e2e-8k seq same-head", 32, 8, 128, SeqInputs::kSameHead, 32, SeqStreamCoding::kAdaptive,
             kExactOnly, stream);
    RunShape("e2e-8k seq same-head lanes", 32, 8, 128, SeqInputs::kSameHead, 32, SeqStreamCoding::kLanes,
             kAllMaths, stream);
    RunShape("e2e-8k seq same-head lanes2", 32, 8, 128, SeqInputs::kSameHead, 32,
             SeqStreamCoding::kSignedLanes, kAllMaths, stream);
    // arith=int12 (exact integer sums on int8 tensor cores; the math does not apply).
    RunShape("e2e-8k seq same-head lanes2 int12", 32, 8, 128, SeqInputs::kSameHead, 32,
             SeqStreamCoding::kSignedLanes, kExactOnly, stream, SeqArith::kInt12);
    // Split lane streams (streams=lanes3): the same symbols, each lane on its own words.
    RunShape("e2e-8k seq same-head lanes3", 32, 8, 128, SeqInputs::kSameHead, 32,
             SeqStreamCoding::kSplitLanes, kAllMaths, stream);
    RunShape("e2e-8k seq same-head lanes3 int12", 32, 8, 128, SeqInputs::kSameHead, 32,
             SeqStreamCoding::kSplitLanes, kExactOnly, stream, SeqArith::kInt12);
    RunShape("tinyllama seq all-heads", 6, 2, 64, SeqInputs::kAllHeads, 512, SeqStreamCoding::kAdaptive,
             kAllMaths, stream);
    RunShape("tinyllama seq all-heads int12", 6, 2, 64, SeqInputs::kAllHeads, 512, SeqStreamCoding::kAdaptive,
             kExactOnly, stream, SeqArith::kInt12);
    RunShape("tinyllama seq same-head", 6, 2, 64, SeqInputs::kSameHead, 512, SeqStreamCoding::kAdaptive,
             kExactOnly, stream);
    RunShape("tinyllama seq same-head lanes", 6, 2, 64, SeqInputs::kSameHead, 512, SeqStreamCoding::kLanes,
             kAllMaths, stream);
    RunShape("tinyllama seq same-head lanes2", 6, 2, 64, SeqInputs::kSameHead, 512,
             SeqStreamCoding::kSignedLanes, kAllMaths, stream);
    RunShape("tinyllama seq same-head lanes2 int12", 6, 2, 64, SeqInputs::kSameHead, 512,
             SeqStreamCoding::kSignedLanes, kExactOnly, stream, SeqArith::kInt12);
    RunShape("tinyllama seq same-head lanes3", 6, 2, 64, SeqInputs::kSameHead, 512,
             SeqStreamCoding::kSplitLanes, kAllMaths, stream);
    RunRealDumps("tinyllama real lanes2 d=1", "seq:delta=1,streams=lanes2", 32, kAllMaths, stream);
    RunRealDumps("tinyllama real lanes2 d=0.5", "seq:delta=0.5,streams=lanes2", 32, kAllMaths, stream);
    RunRealDumps("tinyllama real lanes2 d=1 int12", "seq:delta=1,streams=lanes2,arith=int12", 32, kExactOnly,
                 stream);
    RunRealDumps("tinyllama real lanes3 d=1", "seq:delta=1,streams=lanes3", 32, kAllMaths, stream);
  }
  std::printf("\n%-32s %7s %6s %10s %11s %10s %9s %9s %10s %8s %10s %9s\n", "seq decode -> vLLM paged",
              "chunks", "bits", "total ms", "entropy ms", "dense ms", "out GB/s", "GB", "steady ms",
              "host ms", "2-strm ms", "2-str GB/s");
  for (const Row& r : rows) {
    std::printf("%-32s %7u %6.2f %10.3f %11.3f %10.3f %9.1f %9.3f %10.3f %8.3f %10.3f %9.1f\n",
                r.name.c_str(), r.chunks, r.bits, r.ms, r.entropy_ms, r.ms - r.entropy_ms,
                r.out_gb / (r.ms / 1e3), r.out_gb, r.steady_ms, r.host_ms, r.two_ms,
                r.out_gb / (r.two_ms / 1e3));
  }
  std::printf(
      "total: SeqDecodeGpu::Decode (entropy + dense), one call on an idle stream (its host work included);\n"
      "entropy: SeqEntropyGpu alone on the same streams; dense = total - entropy (prediction,\n"
      "reconstruction, RoPE, bf16 into the cache); steady: per call of four back to back (host work\n"
      "overlapping the previous call's kernels); host: the call's own time on the host (parse, uploads, "
      "launches);\n2-strm: per call of eight, four on each of two streams at once (own workspaces), and its\n"
      "output GB/s: the throughput of two contexts decoding together\n");
  if (std::getenv("SEQKV_BENCH_LARGE") == nullptr) {  // the end-to-end lines of bench/gpu/run.sh
    // (the bench's row, the E2E line's name)
    const std::pair<const char*, const char*> e2e[] = {
        {"e2e-8k seq same-head", "e2e-8k seq decode paged"},
        {"e2e-8k seq same-head lanes", "e2e-8k seq lanes decode paged"},
        {"e2e-8k seq same-head lanes tc3", "e2e-8k seq lanes decode paged tf32x3"},
        {"e2e-8k seq same-head lanes tc1", "e2e-8k seq lanes decode paged tf32"},
        {"e2e-8k seq same-head lanes f16", "e2e-8k seq lanes decode paged f16"},
        {"e2e-8k seq same-head lanes2", "e2e-8k seq lanes2 decode paged"},
        {"e2e-8k seq same-head lanes2 tc3", "e2e-8k seq lanes2 decode paged tf32x3"},
        {"e2e-8k seq same-head lanes2 tc1", "e2e-8k seq lanes2 decode paged tf32"},
        {"e2e-8k seq same-head lanes2 f16", "e2e-8k seq lanes2 decode paged f16"},
        {"e2e-8k seq same-head lanes2 int12", "e2e-8k seq lanes2 decode paged int12"},
        {"e2e-8k seq same-head lanes3", "e2e-8k seq lanes3 decode paged"},
        {"e2e-8k seq same-head lanes3 tc3", "e2e-8k seq lanes3 decode paged tf32x3"},
        {"e2e-8k seq same-head lanes3 tc1", "e2e-8k seq lanes3 decode paged tf32"},
        {"e2e-8k seq same-head lanes3 f16", "e2e-8k seq lanes3 decode paged f16"},
        {"e2e-8k seq same-head lanes3 int12", "e2e-8k seq lanes3 decode paged int12"},
    };
    for (const auto& [row, line] : e2e) {
      for (const Row& r : rows) {
        if (r.name == row) std::printf("E2E\t%s\t%.4f\t%.4f\t%.4f\n", line, r.ms, r.ms, 0.0);
      }
    }
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
