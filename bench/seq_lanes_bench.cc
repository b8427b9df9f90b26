// The seq codec's lane-stream coders on the CPU, one core: decode and encode
// of one group (256 tokens x 128 components, ~1.2 bits per element, the
// synthetic symbols of bench/seq_symbols.h, as the GPU decode bench's)
// as signed lane streams (streams=lanes2) and split lane streams (lanes3),
// under a static model fitted to those symbols. Compare the two in one run,
// interleaved, since the development VM's speed drifts:
//
//   build/bench/seq_lanes_bench --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "seq_lanes.h"
#include "seq_lossy_core.h"
#include "seq_symbols.h"
#include "seqkv/codec/seq_profile.h"

namespace {

namespace si = seqkv::internal;
constexpr uint32_t kTokens = 256, kDim = 128;

// The symbols, a static model fitted to them (classes from each component's
// mean |q|) and its tables.
struct Setup {
  std::vector<int32_t> q;
  std::vector<int16_t> classes;
  si::SeqStaticTables tables;
};

const Setup& TheSetup() {
  static const Setup setup = [] {
    Setup s;
    s.q = seqkv::bench::SyntheticSeqSymbols(kTokens, kDim, 7);
    std::vector<int16_t> scale(kDim);
    for (uint32_t i = 0; i < kDim; ++i) {
      double mean = 0;
      for (uint32_t t = 0; t < kTokens; ++t) mean += std::abs(double(s.q[size_t{t} * kDim + i])) / kTokens;
      scale[i] = mean > 0 ? si::SeqLog2Sixteenths(mean) : si::kSeqStaticScaleNone;
    }
    std::vector<uint64_t> counts(size_t{si::kSeqStaticClasses} * si::kSeqLaneContexts * si::kSeqLaneSymbols, 1);
    std::vector<uint64_t> signed_counts(size_t{si::kSeqStaticClasses} * si::kSeqSignedSymbols, 1);
    si::SeqAddStaticCounts(s.q.data(), kTokens, kDim, scale.data(), 0, 128, counts.data(), signed_counts.data());
    seqkv::SeqProfile p;
    p.static_freq = si::SeqStaticFreqs(counts);
    p.signed_freq = si::SeqStaticFreqs(signed_counts, si::kSeqSignedSymbols);
    s.tables = si::MakeSeqStaticTables(p);
    s.classes.resize(kDim);
    for (uint32_t i = 0; i < kDim; ++i) s.classes[i] = static_cast<int16_t>(si::SeqLaneClass(scale[i], 0, 128));
    return s;
  }();
  return setup;
}

void Decode(benchmark::State& state, si::SeqLaneModel model) {
  const Setup& s = TheSetup();
  const std::vector<uint8_t> stream = si::SeqEncodeLaneGroup(s.q.data(), kTokens, kDim, s.tables, s.classes.data(), model);
  std::vector<int32_t> q(s.q.size());
  for (auto _ : state) {
    const seqkv::Status st = si::SeqDecodeLaneGroup(stream, kTokens, kDim, s.tables, s.classes.data(), q.data(), model);
    if (!st.ok() || q != s.q) {
      state.SkipWithError("the stream did not decode to its symbols");
      return;
    }
    benchmark::DoNotOptimize(q.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t{kTokens} * kDim);
  state.counters["bits_per_symbol"] = 8.0 * double(stream.size()) / double(s.q.size());
}

void Encode(benchmark::State& state, si::SeqLaneModel model) {
  const Setup& s = TheSetup();
  for (auto _ : state) {
    std::vector<uint8_t> stream = si::SeqEncodeLaneGroup(s.q.data(), kTokens, kDim, s.tables, s.classes.data(), model);
    benchmark::DoNotOptimize(stream.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t{kTokens} * kDim);
}

BENCHMARK_CAPTURE(Decode, lanes2, si::SeqLaneModel::kSigned)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(Decode, lanes3, si::SeqLaneModel::kSplit)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(Encode, lanes2, si::SeqLaneModel::kSigned)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(Encode, lanes3, si::SeqLaneModel::kSplit)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
