// SeqEntropyGpu against the codec's SeqDecodeGroup, on both backends and both
// CUDA kernels: the CPU backend always runs; the CUDA cases skip cleanly
// without a GPU (label gpu).
//
// Contract checked here (seqkv/gpu/seq_entropy.h): q bit-identical to the
// reference on every stream it accepts, every element of q_out written
// (poisoned first), and the same accept / reject decision as the reference on
// corrupted, truncated and hand-made invalid streams (DATA_LOSS, no crash).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../../codec/src/seq_lossy_core.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/seq_entropy.h"
#include "util/test_util.h"

namespace seqkv::gpu {
namespace {

constexpr uint8_t kPoison = 0x5A;  // q = 0x5A5A5A5A, a value no decode of these streams produces

struct Group {
  std::vector<uint8_t> stream;
  uint32_t tokens = 0, dim = 0;
};

struct Param {
  Backend backend;
  SeqEntropyKernel kernel;
};

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  if (info.param.backend == Backend::kCpu) return "Cpu";
  switch (info.param.kernel) {
    case SeqEntropyKernel::kGlobalModels:
      return "CudaGlobal";
    case SeqEntropyKernel::kSharedModels:
      return "CudaShared";
    default:
      return "CudaAuto";
  }
}

// What a backend made of a batch: per group the status and the q it wrote.
struct Decoded {
  std::vector<Status> statuses;
  std::vector<std::vector<int32_t>> q;
};

class SeqEntropyGpuTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    auto se = SeqEntropyGpu::CreateFor(GetParam().backend);
    if (!se.ok()) GTEST_SKIP() << se.status().ToString();
    se_.emplace(*se);
  }
  const SeqEntropyGpu& se() const { return *se_; }

  // Uploads each stream into its own exactly-sized allocation (so a read past
  // the end is a read outside the allocation), poisons the outputs, decodes
  // the whole batch in one call and downloads the results.
  Decoded DecodeAll(const std::vector<Group>& groups) {
    Decoded out;
    std::vector<void*> allocations;
    std::vector<SeqEntropyItem> items(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      const Group& gr = groups[g];
      SeqEntropyItem& it = items[g];
      it.tokens = gr.tokens;
      it.dim = gr.dim;
      it.stream_bytes = gr.stream.size();
      if (!gr.stream.empty()) {
        auto p = se().Allocate(gr.stream.size());
        EXPECT_TRUE(p.ok());
        allocations.push_back(*p);
        EXPECT_TRUE(se().CopyIn(*p, gr.stream.data(), gr.stream.size()).ok());
        it.stream = static_cast<const uint8_t*>(*p);
      }
      const uint64_t q_bytes = uint64_t{gr.tokens} * gr.dim * 4;
      auto q = se().Allocate(q_bytes);
      EXPECT_TRUE(q.ok());
      allocations.push_back(*q);
      EXPECT_TRUE(se().Fill(*q, kPoison, q_bytes).ok());
      it.q_out = static_cast<int32_t*>(*q);
    }
    SeqEntropyDecodeArgs args;
    args.items = items;
    args.kernel = GetParam().kernel;
    EXPECT_TRUE(se().CanImplement(args).ok());
    const uint64_t ws_bytes = se().WorkspaceBytes(args);
    void* ws = nullptr;
    if (ws_bytes > 0) {
      auto p = se().Allocate(ws_bytes);
      EXPECT_TRUE(p.ok());
      ws = *p;
    }
    Status st = se().Decode(args, ws, ws_bytes, nullptr, &out.statuses);
    EXPECT_TRUE(st.ok()) << st.ToString();
    st = se().CollectStatuses(ws, nullptr, &out.statuses);
    EXPECT_TRUE(st.ok()) << st.ToString();
    out.q.resize(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      out.q[g].resize(size_t{groups[g].tokens} * groups[g].dim);
      EXPECT_TRUE(se().CopyOut(out.q[g].data(), items[g].q_out, out.q[g].size() * 4).ok());
    }
    se().Free(ws);
    for (void* p : allocations) se().Free(p);
    return out;
  }

  // Decodes the batch and checks it against SeqDecodeGroup, group by group:
  // the same verdict, and on success the same q. Returns the number of
  // groups the reference rejected.
  size_t CheckAgainstReference(const std::vector<Group>& groups, const std::string& what) {
    const Decoded got = DecodeAll(groups);
    EXPECT_EQ(got.statuses.size(), groups.size());
    size_t rejected = 0;
    for (size_t g = 0; g < groups.size() && g < got.statuses.size(); ++g) {
      const Group& gr = groups[g];
      std::vector<int32_t> want(size_t{gr.tokens} * gr.dim);
      const Status ref = internal::SeqDecodeGroup(gr.stream, gr.tokens, gr.dim, want.data());
      if (!ref.ok()) {
        ++rejected;
        EXPECT_EQ(ref.code(), StatusCode::kDataLoss);
        EXPECT_EQ(got.statuses[g].code(), StatusCode::kDataLoss)
            << what << " group " << g << ": reference says " << ref.ToString() << ", got "
            << got.statuses[g].ToString();
        continue;
      }
      if (!got.statuses[g].ok()) {
        ADD_FAILURE() << what << " group " << g << ": " << got.statuses[g].ToString();
        continue;
      }
      size_t diff = 0, first = SIZE_MAX;
      for (size_t k = 0; k < want.size(); ++k) {
        if (got.q[g][k] != want[k]) {
          ++diff;
          first = std::min(first, k);
        }
      }
      EXPECT_EQ(diff, 0u) << what << " group " << g << " (" << gr.tokens << "x" << gr.dim << "): " << diff
                          << " symbols differ, first at " << first << ": got "
                          << (first < want.size() ? got.q[g][first] : 0) << " want "
                          << (first < want.size() ? want[first] : 0);
    }
    return rejected;
  }

 private:
  std::optional<SeqEntropyGpu> se_;
};

// ------------------------------------------------------------ symbol sources

enum class Dist { kMostlyZero, kLaplacian, kEscapes, kAllZero, kOneComponent };

// Fresh random symbols; component statistics vary with the index as the
// codec's KLT components do (energy falling with i, some all zero).
std::vector<int32_t> RandomSymbols(Dist dist, uint32_t tokens, uint32_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int32_t> q(size_t{tokens} * dim, 0);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t i = 0; i < dim; ++i) {
      int64_t mag = 0;
      switch (dist) {
        case Dist::kMostlyZero:
          if (i % 7 != 2 && u(rng) < 0.04) mag = 1 + (u(rng) < 0.2);
          break;
        case Dist::kLaplacian: {
          const double scale = 2.5 * std::exp(-double(i) / (dim / 4.0));
          mag = static_cast<int64_t>(std::floor(-std::log(1 - u(rng)) * scale));
          break;
        }
        case Dist::kEscapes: {
          const double r = u(rng);
          if (r < 0.4)
            mag = 0;
          else if (r < 0.8)
            mag = 1 + static_cast<int64_t>(u(rng) * 16);  // 1..16: around the escape
          else if (r < 0.97)
            mag = 15 + static_cast<int64_t>(std::exp(u(rng) * 12));
          else
            mag = static_cast<int64_t>(u(rng) * ((int64_t{1} << 24) + 1));  // up to the maximum
          if (u(rng) < 0.01) mag = int64_t{1} << 24;
          break;
        }
        case Dist::kAllZero:
          break;
        case Dist::kOneComponent:
          if (i == dim / 2 && t == tokens - 1) mag = 3;
          break;
      }
      q[size_t{t} * dim + i] = static_cast<int32_t>(u(rng) < 0.5 ? -mag : mag);
    }
  }
  return q;
}

Group Encode(const std::vector<int32_t>& q, uint32_t tokens, uint32_t dim) {
  return {internal::SeqEncodeGroup(q.data(), tokens, dim), tokens, dim};
}

// ------------------------------------------------------------ hand-made streams
// A small encoder of raw rANS operations in the format's framing, for streams
// the codec's encoder never writes (coded components without a non-zero
// symbol, over-long escapes).
struct RawOp {
  uint32_t start, freq, lane;
};

std::vector<uint8_t> Frame(const std::vector<uint8_t>& bitmap, uint32_t lanes,
                           const std::vector<RawOp>& ops) {
  std::vector<uint8_t> out = bitmap;
  out.push_back(static_cast<uint8_t>(lanes));
  if (lanes == 0) return out;
  std::vector<uint32_t> x(lanes, 1u << 16);
  std::vector<uint16_t> words;
  for (size_t k = ops.size(); k-- > 0;) {
    const RawOp& op = ops[k];
    uint32_t& s = x[op.lane];
    if (s >= (uint64_t{op.freq} << 17)) {
      words.push_back(static_cast<uint16_t>(s));
      s >>= 16;
    }
    s = ((s / op.freq) << 15) + (s % op.freq) + op.start;
  }
  for (uint32_t v : x) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<uint8_t>(v >> (8 * b)));
  }
  for (size_t k = words.size(); k-- > 0;) {
    out.push_back(static_cast<uint8_t>(words[k]));
    out.push_back(static_cast<uint8_t>(words[k] >> 8));
  }
  return out;
}

// The format's symbol sequence for q over the `coded` components (which may
// include all-zero ones), with the first escape's Exp-Golomb prefix replaced
// by `escape_zeros` zero bits when >= 0 (then 24 one-bits of suffix).
std::vector<uint8_t> HandMade(const std::vector<int32_t>& q, uint32_t tokens, uint32_t dim,
                              const std::vector<uint32_t>& coded, int escape_zeros = -1) {
  const uint32_t lanes = std::min<uint32_t>(8, static_cast<uint32_t>(coded.size()));
  std::vector<uint8_t> bitmap((dim + 7) / 8, 0);
  for (uint32_t i : coded) bitmap[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  std::vector<internal::SeqAdaptiveModel> models(size_t{dim} * 3);
  std::vector<int32_t> prev(dim, 0);
  std::vector<RawOp> ops;
  constexpr uint32_t kHalf = 1u << 14;
  bool escape_done = false;
  for (uint32_t t = 0; t < tokens; ++t) {
    for (size_t c = 0; c < coded.size(); ++c) {
      const uint32_t i = coded[c], lane = static_cast<uint32_t>(c % lanes);
      const int32_t v = q[size_t{t} * dim + i];
      const uint32_t mag = static_cast<uint32_t>(std::abs(v));
      const int ctx = prev[i] == 0 ? 0 : (std::abs(prev[i]) == 1 ? 1 : 2);
      internal::SeqAdaptiveModel& m = models[size_t{i} * 3 + ctx];
      const int s = mag >= 15 ? 15 : static_cast<int>(mag);
      ops.push_back({m.Start(s), m.Freq(s), lane});
      m.Update(s);
      if (mag >= 15) {
        if (escape_zeros >= 0 && !escape_done) {
          escape_done = true;
          for (int b = 0; b < escape_zeros; ++b) ops.push_back({0, kHalf, lane});
          ops.push_back({kHalf, kHalf, lane});
          for (int b = 0; b < std::min(escape_zeros, 24); ++b) ops.push_back({kHalf, kHalf, lane});
        } else {
          const uint32_t e = mag - 15 + 1;
          const int k = std::bit_width(e) - 1;
          for (int b = 0; b < k; ++b) ops.push_back({0, kHalf, lane});
          ops.push_back({kHalf, kHalf, lane});
          for (int b = k - 1; b >= 0; --b) ops.push_back({((e >> b) & 1) ? kHalf : 0, kHalf, lane});
        }
      }
      if (mag != 0) ops.push_back({v < 0 ? kHalf : 0, kHalf, lane});
      prev[i] = v;
    }
  }
  return Frame(bitmap, lanes, ops);
}

// ------------------------------------------------------------ tests

TEST_P(SeqEntropyGpuTest, RandomSymbolsDecodeBitExact) {
  std::vector<Group> groups;
  uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  for (Dist dist :
       {Dist::kMostlyZero, Dist::kLaplacian, Dist::kEscapes, Dist::kAllZero, Dist::kOneComponent}) {
    for (uint32_t dim : {64u, 128u}) {
      for (uint32_t tokens : {1u, 16u, 256u}) {
        groups.push_back(Encode(RandomSymbols(dist, tokens, dim, ++seed), tokens, dim));
      }
    }
  }
  // Odd shapes: a partial bitmap byte, fewer coded components than lanes, no tokens.
  groups.push_back(Encode(RandomSymbols(Dist::kLaplacian, 33, 100, ++seed), 33, 100));
  groups.push_back(Encode(RandomSymbols(Dist::kEscapes, 40, 5, ++seed), 40, 5));
  groups.push_back(Encode(RandomSymbols(Dist::kMostlyZero, 7, 3, ++seed), 7, 3));
  groups.push_back(Encode({}, 0, 128));
  EXPECT_EQ(CheckAgainstReference(groups, "random"), 0u);
}

TEST_P(SeqEntropyGpuTest, ManyGroupsInOneBatch) {
  // Enough groups for several blocks of either kernel, mixed dims.
  std::vector<Group> groups;
  uint64_t seed = std::random_device{}();
  for (int g = 0; g < 300; ++g) {
    const uint32_t dim = g % 3 == 0 ? 64 : 128, tokens = 16 + g % 5;
    groups.push_back(Encode(RandomSymbols(g % 2 ? Dist::kLaplacian : Dist::kMostlyZero, tokens, dim, ++seed),
                            tokens, dim));
  }
  EXPECT_EQ(CheckAgainstReference(groups, "many"), 0u);
}

// Symbols of the real codec: a profile calibrated on a dev dump (no model),
// the closed loop at a step giving ~1-2 bits/element, every group's stream.
TEST_P(SeqEntropyGpuTest, RealKvStreamsDecodeBitExact) {
  const std::string path = test::DevDump("doc00.safetensors");
  if (path.empty() || !std::filesystem::exists(path)) GTEST_SKIP() << "no dev dumps (../shared/kvdata/dev)";
  auto dump = ReadKvDump(path);
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  const Chunk& chunk = dump->chunk;
  ASSERT_GE(chunk.shape.tokens, 256u);
  auto profile = CalibrateSeqProfile({chunk}, SeqCalibrateOptions{}, nullptr);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  const uint32_t T = chunk.shape.tokens, d = chunk.shape.head_dim;
  const std::vector<float> x = internal::SeqCodingDomain(chunk, profile->pre_rope_keys);
  std::vector<Group> groups;
  for (float delta0 : {0.5f, 1.0f, 2.0f}) {
    internal::SeqLoopParams params;
    params.delta0 = delta0;
    internal::SeqLoopResult res;
    internal::SeqEncodeLoop(*profile, T, x.data(), nullptr, params, &res);
    uint64_t bytes = 0;
    for (uint32_t g = 0; g < profile->groups(); ++g) {
      groups.push_back(Encode(
          std::vector<int32_t>(res.q.begin() + size_t{g} * T * d, res.q.begin() + size_t{g + 1} * T * d), T,
          d));
      bytes += groups.back().stream.size();
    }
    std::printf("doc00 (%u tokens, dim %u), delta0 %.1f: %.3f bits/element over %u groups\n", T, d, delta0,
                8.0 * bytes / (double(profile->groups()) * T * d), profile->groups());
  }
  EXPECT_EQ(CheckAgainstReference(groups, "real"), 0u);
}

TEST_P(SeqEntropyGpuTest, CorruptStreamsAreRejectedLikeTheReference) {
  uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::vector<Group> base = {Encode(RandomSymbols(Dist::kLaplacian, 12, 64, ++seed), 12, 64),
                             Encode(RandomSymbols(Dist::kEscapes, 9, 128, ++seed), 9, 128),
                             Encode(RandomSymbols(Dist::kMostlyZero, 20, 100, ++seed), 20, 100),
                             Encode(RandomSymbols(Dist::kAllZero, 4, 64, ++seed), 4, 64),
                             Encode(RandomSymbols(Dist::kLaplacian, 6, 5, ++seed), 6, 5)};
  std::vector<Group> bad;
  for (const Group& g : base) {
    // Every truncation, one extra byte and one extra word.
    for (size_t cut = 0; cut < g.stream.size(); ++cut) {
      bad.push_back({std::vector<uint8_t>(g.stream.begin(), g.stream.begin() + cut), g.tokens, g.dim});
    }
    for (size_t extra : {1u, 2u}) {
      Group longer = g;
      longer.stream.resize(g.stream.size() + extra, 0x00);
      bad.push_back(longer);
    }
    // Single bit flips everywhere in the header, random ones in the words.
    const size_t header = (g.dim + 7) / 8 + 1 + 4 * 8;
    for (size_t bit = 0; bit < 8 * std::min(header, g.stream.size()); ++bit) {
      Group f = g;
      f.stream[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      bad.push_back(f);
    }
    for (int k = 0; k < 200 && !g.stream.empty(); ++k) {
      Group f = g;
      const size_t at = rng() % f.stream.size();
      f.stream[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
      if (rng() % 4 == 0) f.stream[rng() % f.stream.size()] = static_cast<uint8_t>(rng());
      bad.push_back(f);
    }
    // The right stream read with the wrong shape.
    bad.push_back({g.stream, g.tokens + 1, g.dim});
    if (g.tokens > 1) bad.push_back({g.stream, g.tokens - 1, g.dim});
  }
  // Hand-made: a coded component with no non-zero symbol; escapes with 25
  // zeros (too long) and 24 zeros (magnitude past 2^24); and their valid twin.
  {
    const uint32_t T = 8, D = 64;
    std::vector<int32_t> q = RandomSymbols(Dist::kLaplacian, T, D, ++seed);
    std::vector<uint32_t> coded;
    for (uint32_t i = 0; i < D; ++i) {
      bool any = false;
      for (uint32_t t = 0; t < T; ++t) any |= q[size_t{t} * D + i] != 0;
      if (any) coded.push_back(i);
    }
    ASSERT_LT(coded.size(), D);
    const Group valid{HandMade(q, T, D, coded), T, D};
    ASSERT_EQ(valid.stream, internal::SeqEncodeGroup(q.data(), T, D)) << "the test's encoder is the codec's";
    bad.push_back(valid);
    std::vector<uint32_t> with_empty = coded;
    for (uint32_t i = 0; i < D; ++i) {
      if (std::find(coded.begin(), coded.end(), i) == coded.end()) {
        with_empty.push_back(i);
        break;
      }
    }
    std::sort(with_empty.begin(), with_empty.end());
    bad.push_back({HandMade(q, T, D, with_empty), T, D});
    q[3] = 20;  // an escape (token 0, component 3)
    if (std::find(coded.begin(), coded.end(), 3u) == coded.end()) {
      coded.push_back(3);
      std::sort(coded.begin(), coded.end());
    }
    bad.push_back({HandMade(q, T, D, coded, 25), T, D});
    bad.push_back({HandMade(q, T, D, coded, 24), T, D});
    bad.push_back({HandMade(q, T, D, coded, 23), T, D});
    bad.push_back({HandMade(q, T, D, coded), T, D});
  }
  // Bitmap bits past dim, a lane count off by one, a state below 2^16.
  {
    Group g = base[2];  // dim 100: the last bitmap byte has 4 spare bits
    g.stream[12] |= 0x80;
    bad.push_back(g);
    Group lanes = base[0];
    lanes.stream[8] = 7;
    bad.push_back(lanes);
    Group state = base[0];
    state.stream[9 + 2] = state.stream[9 + 3] = 0;
    bad.push_back(state);
  }
  const size_t rejected = CheckAgainstReference(bad, "corrupt");
  std::printf("%zu corrupted streams, %zu rejected by the reference\n", bad.size(), rejected);
  EXPECT_GT(rejected, bad.size() / 2);
}

TEST_P(SeqEntropyGpuTest, BadArgumentsAreItemErrors) {
  const Group g = Encode(RandomSymbols(Dist::kLaplacian, 4, 64, 7), 4, 64);
  auto stream = se().Allocate(g.stream.size());
  auto q = se().Allocate(4 * 64 * 4);
  ASSERT_TRUE(stream.ok() && q.ok());
  ASSERT_TRUE(se().CopyIn(*stream, g.stream.data(), g.stream.size()).ok());
  std::vector<SeqEntropyItem> items(4);
  for (SeqEntropyItem& it : items) {
    it = {static_cast<const uint8_t*>(*stream), g.stream.size(), 4, 64, static_cast<int32_t*>(*q)};
  }
  items[1].dim = 0;
  items[2].q_out = nullptr;
  items[3].stream = nullptr;
  SeqEntropyDecodeArgs args;
  args.items = items;
  args.kernel = GetParam().kernel;
  const uint64_t ws_bytes = se().WorkspaceBytes(args);
  void* ws = ws_bytes ? *se().Allocate(ws_bytes) : nullptr;
  std::vector<Status> st;
  if (ws_bytes > 0) {
    EXPECT_EQ(se().Decode(args, ws, ws_bytes - 1, nullptr, &st).code(), StatusCode::kInvalidArgument);
  }
  ASSERT_TRUE(se().Decode(args, ws, ws_bytes, nullptr, &st).ok());
  ASSERT_TRUE(se().CollectStatuses(ws, nullptr, &st).ok());
  ASSERT_EQ(st.size(), 4u);
  EXPECT_TRUE(st[0].ok()) << st[0].ToString();
  EXPECT_EQ(st[1].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st[2].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st[3].code(), StatusCode::kInvalidArgument);
  se().Free(ws);
  se().Free(*stream);
  se().Free(*q);
}

TEST(SeqEntropyGpuCreateTest, CreatePicksABackend) {
  const SeqEntropyGpu se = SeqEntropyGpu::Create();
  EXPECT_TRUE(se.backend() == Backend::kCpu || se.backend() == Backend::kCuda);
  EXPECT_TRUE(SeqEntropyGpu::CreateFor(Backend::kCpu).ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, SeqEntropyGpuTest,
                         ::testing::Values(Param{Backend::kCpu, SeqEntropyKernel::kAuto},
                                           Param{Backend::kCuda, SeqEntropyKernel::kGlobalModels},
                                           Param{Backend::kCuda, SeqEntropyKernel::kSharedModels},
                                           Param{Backend::kCuda, SeqEntropyKernel::kAuto}),
                         ParamName);

}  // namespace
}  // namespace seqkv::gpu
