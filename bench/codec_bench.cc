// Codec throughput on the CPU, one core: encode and decode MB/s of raw KV for
// every built-in codec, on a real dump (../shared/kvdata/dev/doc00) when it
// exists and on a 256-token chunk of Llama-3-8B shape (random values).
//
//   build/bench/codec_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"

#ifndef SEQKV_SOURCE_DIR
#define SEQKV_SOURCE_DIR "."  // set by bench/CMakeLists.txt
#endif

namespace {

using seqkv::Chunk;

const Chunk& RealChunk() {
  static Chunk chunk = [] {
    std::string root = std::getenv("SEQKV_SOURCE_DIR") ? std::getenv("SEQKV_SOURCE_DIR") : SEQKV_SOURCE_DIR;
    auto dump = seqkv::ReadKvDump(root + "/../shared/kvdata/dev/doc00.safetensors");
    if (!dump.ok()) {
      std::fprintf(stderr, "%s\n", dump.status().ToString().c_str());
      std::exit(1);
    }
    return dump->chunk;
  }();
  return chunk;
}

const Chunk& LlamaChunk() {
  static Chunk chunk = [] {
    Chunk c;
    c.shape = {32, 8, 256, 128};
    c.dtype = seqkv::DType::kBF16;
    c.rope = {seqkv::RopeStyle::kRotateHalf, 500000.0, 128};
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal;
    c.tokens.resize(256);
    for (auto& t : c.tokens) t = static_cast<int32_t>(rng() % 128000);
    std::vector<float> f(c.shape.elements());
    for (auto* dst : {&c.k, &c.v}) {
      for (auto& x : f) x = normal(rng);
      dst->resize(f.size() * 2);
      seqkv::FromFloat(c.dtype, f.data(), f.size(), dst->data());
    }
    return c;
  }();
  return chunk;
}

void Encode(benchmark::State& state, const Chunk& (*chunk)(), const char* spec) {
  auto codec = seqkv::MakeCodec(spec);
  if (!codec.ok()) {
    state.SkipWithError(codec.status().ToString().c_str());
    return;
  }
  const Chunk& c = chunk();
  size_t out_bytes = 0;
  for (auto _ : state) {
    auto bytes = seqkv::EncodeChunk(c, **codec);
    out_bytes = bytes->size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * c.TensorBytes()));
  state.counters["bits_per_element"] = out_bytes * 8.0 / (2.0 * c.shape.elements());
}

void Decode(benchmark::State& state, const Chunk& (*chunk)(), const char* spec) {
  auto codec = seqkv::MakeCodec(spec);
  if (!codec.ok()) {
    state.SkipWithError(codec.status().ToString().c_str());
    return;
  }
  const Chunk& c = chunk();
  auto bytes = seqkv::EncodeChunk(c, **codec);
  for (auto _ : state) {
    auto out = seqkv::DecodeChunk(*bytes);
    if (!out.ok() && !seqkv::IsRecomputeNeeded(out.status())) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * c.TensorBytes()));
}


}  // namespace

BENCHMARK_CAPTURE(Encode, real/raw, RealChunk, "raw")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/raw, RealChunk, "raw")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/lossless, RealChunk, "lossless")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/lossless, RealChunk, "lossless")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/lossless19, RealChunk, "lossless:level=19")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/lossless19, RealChunk, "lossless:level=19")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/turboquant4, RealChunk, "turboquant:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/turboquant4, RealChunk, "turboquant:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/turboquant2, RealChunk, "turboquant:bits=2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/turboquant2, RealChunk, "turboquant:bits=2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/kivi4, RealChunk, "kivi:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/kivi4, RealChunk, "kivi:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/kivi2, RealChunk, "kivi:bits=2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, real/kivi2, RealChunk, "kivi:bits=2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, real/tokens, RealChunk, "tokens")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, llama8b/raw, LlamaChunk, "raw")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, llama8b/raw, LlamaChunk, "raw")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, llama8b/lossless, LlamaChunk, "lossless")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, llama8b/lossless, LlamaChunk, "lossless")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, llama8b/turboquant4, LlamaChunk, "turboquant:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, llama8b/turboquant4, LlamaChunk, "turboquant:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Encode, llama8b/kivi4, LlamaChunk, "kivi:bits=4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(Decode, llama8b/kivi4, LlamaChunk, "kivi:bits=4")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
