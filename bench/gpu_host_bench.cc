// The GPU APIs' host-side item loops on the CPU backend: SeqEncodeGpu::Encode
// and SeqDecodeGpu::Decode on kCpu run the codec's reference per item on up to
// host_threads() threads. 8 chunks of 128 tokens of the dev dump doc00, a
// profile calibrated on it without a model, `seq:delta=0.7` (signed lane
// streams); the benchmark's argument is the host threads.
//
//   build/bench/gpu_host_bench
//
// Data: the tests' dev dumps (test::DevDump: $SEQKV_SHARED_DIR, else
// ../shared beside the source tree).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/seq_decode.h"
#include "seqkv/gpu/seq_encode.h"
#include "util/test_util.h"

namespace {

using seqkv::Chunk;

constexpr uint32_t kChunks = 8, kTokens = 128;

[[noreturn]] void Fail(const seqkv::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  std::exit(1);
}

struct Setup {
  std::shared_ptr<const seqkv::SeqProfile> profile;
  std::shared_ptr<const seqkv::Codec> codec;
  std::vector<Chunk> chunks;
  std::vector<std::vector<uint8_t>> encoded;
};

const Setup& Data() {
  static Setup setup = [] {
    const std::string path = seqkv::test::DevDump("doc00.safetensors");
    if (path.empty()) Fail(seqkv::NotFound("no dev dumps (SEQKV_SHARED_DIR or ../shared)"));
    auto dump = seqkv::ReadKvDump(path);
    if (!dump.ok()) Fail(dump.status());
    auto profile = seqkv::CalibrateSeqProfile({dump->chunk}, seqkv::SeqCalibrateOptions{}, nullptr);
    if (!profile.ok()) Fail(profile.status());
    Setup s;
    s.profile = std::make_shared<const seqkv::SeqProfile>(std::move(*profile));
    seqkv::SeqResources::Default().AddProfile(s.profile);
    auto codec = seqkv::MakeCodec("seq:delta=0.7,profile=" + s.profile->Id());
    if (!codec.ok()) Fail(codec.status());
    s.codec = std::move(*codec);
    for (uint32_t c = 0; c < kChunks; ++c) {
      Chunk piece = seqkv::test::SliceTokens(dump->chunk, c * kTokens, kTokens);
      auto bytes = seqkv::EncodeChunk(piece, *s.codec);
      if (!bytes.ok()) Fail(bytes.status());
      s.encoded.push_back(std::move(*bytes));
      s.chunks.push_back(std::move(piece));
    }
    return s;
  }();
  return setup;
}

void BM_CpuEncode(benchmark::State& state) {
  const Setup& d = Data();
  auto enc = seqkv::gpu::SeqEncodeGpu::CreateFor(seqkv::gpu::Backend::kCpu, d.codec);
  if (!enc.ok()) Fail(enc.status());
  enc->SetHostThreads(static_cast<uint32_t>(state.range(0)));
  std::vector<seqkv::gpu::SeqEncodeItem> items(kChunks);
  std::vector<std::vector<uint8_t>> outs(kChunks);
  uint64_t bytes = 0;
  for (uint32_t c = 0; c < kChunks; ++c) {
    const Chunk& ch = d.chunks[c];
    seqkv::gpu::SeqEncodeItem& it = items[c];
    it.shape = ch.shape;
    it.rope = ch.rope;
    it.first_position = ch.first_position;
    it.tokens = ch.tokens;
    it.k_in = ch.k.data();
    it.v_in = ch.v.data();
    it.in_tokens = ch.shape.tokens;
    outs[c].resize(seqkv::gpu::SeqEncodeMaxBytes(ch.shape));
    it.out = outs[c].data();
    bytes += ch.k.size() + ch.v.size();
  }
  seqkv::gpu::SeqEncodeArgs args;
  args.items = items;
  std::vector<uint8_t> ws(enc->WorkspaceBytes(args));
  std::vector<seqkv::Status> statuses;
  std::vector<std::vector<uint8_t>> chunks;
  for (auto _ : state) {
    if (auto s = enc->Encode(args, ws.data(), ws.size(), nullptr, &statuses); !s.ok()) Fail(s);
    if (auto s = enc->Finish(args, ws.data(), nullptr, &statuses, &chunks); !s.ok()) Fail(s);
    for (const seqkv::Status& s : statuses) {
      if (!s.ok()) Fail(s);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_CpuDecode(benchmark::State& state) {
  const Setup& d = Data();
  auto dec = seqkv::gpu::SeqDecodeGpu::CreateFor(seqkv::gpu::Backend::kCpu, d.profile);
  if (!dec.ok()) Fail(dec.status());
  dec->SetHostThreads(static_cast<uint32_t>(state.range(0)));
  std::vector<seqkv::gpu::SeqDecodeItem> items;
  std::vector<std::vector<uint8_t>> outs(2 * kChunks);
  uint64_t bytes = 0;
  for (uint32_t c = 0; c < kChunks; ++c) {
    auto header = seqkv::ParseChunkHeader(d.encoded[c]);
    if (!header.ok()) Fail(header.status());
    auto item = seqkv::gpu::MakeSeqDecodeItem(*header, d.encoded[c], d.encoded[c].data(), *d.profile);
    if (!item.ok()) Fail(item.status());
    outs[2 * c].resize(d.chunks[c].k.size());
    outs[2 * c + 1].resize(d.chunks[c].v.size());
    item->k_out = outs[2 * c].data();
    item->v_out = outs[2 * c + 1].data();
    item->out_tokens = kTokens;
    bytes += outs[2 * c].size() + outs[2 * c + 1].size();
    items.push_back(std::move(*item));
  }
  seqkv::gpu::SeqDecodeArgs args;
  args.items = items;
  std::vector<uint8_t> ws(dec->WorkspaceBytes(args));
  std::vector<seqkv::Status> statuses;
  for (auto _ : state) {
    if (auto s = dec->Decode(args, ws.data(), ws.size(), nullptr, &statuses); !s.ok()) Fail(s);
    if (auto s = dec->CollectStatuses(ws.data(), nullptr, &statuses); !s.ok()) Fail(s);
    for (const seqkv::Status& s : statuses) {
      if (!s.ok()) Fail(s);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

BENCHMARK(BM_CpuEncode)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CpuDecode)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
