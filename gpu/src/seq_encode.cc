// SeqEncodeGpu: the settings from the codec, item checks, the CPU path (the
// codec itself) and the CUDA path (per layer one dense launch, then the
// entropy and packing launches), and the framing of the chunks.
#include "seqkv/gpu/seq_encode.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "device_tables.h"
#include "gpu_util.h"
#include "host_threads.h"
#include "kv_layout.h"
#include "seq_int12.h"
#include "seq_lanes.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/seq_profile.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>

#include "seq_decode_kernels.h"
#include "seq_encode_kernels.h"
#endif

namespace seqkv::gpu {

namespace {

constexpr char kWho[] = "seq gpu encode";
constexpr char kLosslessFallback[] =
    "seq gpu encode: the kl budget cannot be met lossily; the codec falls back to seq:lossless, which encodes on the "
    "CPU (seqkv::EncodeChunk)";
constexpr char kBadBlock[] = "seq gpu encode: block table entry outside [0, num_blocks)";
constexpr char kTooManyBits[] =
    "seq gpu encode: a group stream takes more than 16 bits per element; encode this chunk on the CPU";

// The largest group-stream header of a stream coding: bitmap, lane byte, the
// rANS states (lane streams: and the shift byte; split lane streams: bitmap,
// shift byte, states and the lanes' LEB128 word counts, no lane byte).
uint32_t StreamHeaderBytes(uint32_t dim, SeqStreamCoding coding) {
  constexpr uint32_t kLanes = seqkv::internal::kSeqLaneMax;
  switch (coding) {
    case SeqStreamCoding::kSplitLanes: return (dim + 7) / 8 + 1 + 4 * kLanes + 5 * (kLanes - 1);
    case SeqStreamCoding::kLanes:
    case SeqStreamCoding::kSignedLanes: return (dim + 7) / 8 + 2 + 4 * kLanes;
    case SeqStreamCoding::kAdaptive: break;
  }
  return (dim + 7) / 8 + 1 + 4 * seqkv::internal::kSeqMaxLanes;
}

[[maybe_unused]] uint64_t Elements(const KvShape& s) {
  return uint64_t{s.layers} * s.kv_heads * s.tokens * s.head_dim;
}

// SqLaunch::static_entry from the static model's cumulative rows (`stride`
// entries each, the last holding 2^15): per symbol its interval and the
// reciprocal of its frequency, so the lane writer needs no division.
[[maybe_unused]] std::vector<uint32_t> StaticEntries(const std::vector<uint16_t>& cum, uint32_t stride) {
  std::vector<uint32_t> entries(cum.size() * 4, 0);
  for (size_t row = 0; row + stride <= cum.size(); row += stride) {
    for (uint32_t s = 0; s + 1 < stride; ++s) {
      const uint32_t start = cum[row + s], end = cum[row + s + 1];
      if (end <= start) break;  // past the row's symbols
      const uint64_t m = seqkv::internal::SeqRansReciprocal(end - start);
      uint32_t* e = entries.data() + (row + s) * 4;
      e[0] = start | (end - start) << 16;
      e[1] = static_cast<uint32_t>(m);
      e[2] = static_cast<uint32_t>(m >> 32);
    }
  }
  return entries;
}

uint64_t StatusBytes(size_t items) { return internal::AlignUp(items * sizeof(int32_t) + sizeof(int32_t)); }

// The chunk's metadata (no K/V): what FrameChunk writes into the header.
Chunk MetaOf(const SeqEncodeItem& item) {
  Chunk meta;
  meta.shape = item.shape;
  meta.dtype = DType::kBF16;
  meta.rope = item.rope;
  meta.first_position = item.first_position;
  meta.tokens.assign(item.tokens.begin(), item.tokens.end());
  return meta;
}

// Workspace: [int32 status per item][descriptors][step bases][symbols]
// [two layers of reconstruction][squared-error partials][squared errors][costs]
// [model symbols][component ranks][coded counts][lane word counts][lane states]
// [arena words][arena keys][stream sizes][stream offsets][section sizes],
// and for arith=int12 [one layer's input][prediction][residual maxima]
// [reconstruction maxima]. On kCpu only the statuses.
struct Layout {
  uint64_t descs = 0, steps = 0, q = 0, xhat = 0, sse_part = 0, sse = 0, cost = 0, ops = 0, rank = 0, coded = 0;
  uint64_t lane_words = 0, lane_states = 0, lane_ops = 0, shift = 0, arena_words = 0, arena_keys = 0;
  uint64_t stream_bytes = 0, dst = 0, section_bytes = 0, total = 0;
  uint64_t layer_elements = 0;  // one layer's K and V of every item
  // arith=int12: one layer's input and prediction; the per-layer maxima.
  uint64_t xin = 0, pred = 0, rmax = 0, max_bits = 0, max_words = 0;
};

}  // namespace

uint64_t SeqEncodeMaxBytes(const KvShape& s) {
  const uint64_t groups = 2ull * s.layers * s.kv_heads;
  return uint64_t{s.layers} * (4 + 8ull * s.kv_heads) +
         groups * (StreamHeaderBytes(s.head_dim, SeqStreamCoding::kSplitLanes) + 2ull * s.tokens * s.head_dim);
}

struct SeqEncodeGpu::Impl {
  explicit Impl(Backend b) : backend(b), rope(b) {}
  ~Impl() {
    for (float* p : {predictor, basis, basis_t, step_scale}) BackendFree(backend, p);
    BackendFree(backend, cost_table);
    BackendFree(backend, static_cost);
    BackendFree(backend, static_entry);
    BackendFree(backend, static_scale);
    BackendFree(backend, device_mult_code);
#ifdef SEQKV_WITH_CUDA
    if (staging != nullptr) cudaFreeHost(staging);
    for (cudaEvent_t e : events) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    for (cudaEvent_t e : item_events) cudaEventDestroy(e);
#endif
  }

  uint32_t host_threads = internal::DefaultHostThreads();  // Finish's framing threads, kCpu's encodes

  Backend backend;
  std::shared_ptr<const Codec> codec;
  const SeqProfile* profile = nullptr;
  SeqEncoderSettings settings;
  float rho = 0.5f;
  std::vector<uint8_t> mult_code;   // [G]
  std::vector<double> multiplier;   // [G] SeqMultiplier(mult_code)
  std::vector<float> item_delta;    // the last Encode's step per item (what Finish writes)
  // The last Encode's rate-control outcomes that fail an item (the kl budget
  // needs the lossless fallback), applied by Finish: Encode's statuses keep
  // the set of items its workspace layout was made for, which Finish remakes.
  std::vector<Status> deferred;
  // kCuda: the profile's arrays and the RoPE table of the pre-RoPE keys.
  float* predictor = nullptr;
  float* basis = nullptr;
  float* basis_t = nullptr;
  float* step_scale = nullptr;
  uint32_t* cost_table = nullptr;
  // kCuda, streams=lanes: the profile's static model and the step codes.
  uint32_t* static_cost = nullptr;
  uint32_t* static_entry = nullptr;  // SqLaunch::static_entry
  int16_t* static_scale = nullptr;
  uint8_t* device_mult_code = nullptr;
  internal::DeviceRope rope;
  // kCuda, arith=int12: the profile's fixed-point operands as int8 halves.
  internal::Int12Tables int12;
  // kCpu: the last Encode's chunks.
  std::vector<std::vector<uint8_t>> cpu_chunks;

  Status CheckItem(const SeqEncodeArgs& args, const SeqEncodeItem& item) const {
    const SeqProfile& p = *profile;
    SEQKV_RETURN_IF_ERROR(ValidateShape(item.shape, DType::kBF16));
    if (item.shape.layers != p.layers || item.shape.kv_heads != p.kv_heads || item.shape.head_dim != p.head_dim) {
      return InvalidArgument("seq gpu encode: the chunk's shape is not the profile's");
    }
    SEQKV_RETURN_IF_ERROR(MetaOf(item).ValidateMeta());
    if (!item.out) return InvalidArgument("seq gpu encode: null output");
    SEQKV_RETURN_IF_ERROR(internal::CheckSource(kWho, args.source, args.block_size, item, item.shape.tokens));
    if (item.first_position + item.shape.tokens > (uint64_t{1} << 24)) {
      return OutOfRange("seq gpu encode: RoPE positions must stay below 2^24");
    }
    return Status::Ok();
  }

  // The CPU reference: the codec itself on the gathered chunk; the layer
  // sections also go to item.out.
  Status CpuEncodeItem(const SeqEncodeArgs& args, const SeqEncodeItem& item, std::vector<uint8_t>* bytes) const {
    SEQKV_ASSIGN_OR_RETURN(Chunk chunk,
                           internal::GatherInput(item.shape, item, args.source, args.block_size, args.num_blocks));
    chunk.rope = item.rope;
    chunk.first_position = item.first_position;
    chunk.tokens.assign(item.tokens.begin(), item.tokens.end());
    SEQKV_ASSIGN_OR_RETURN(*bytes, EncodeChunk(chunk, *codec));
    if (SeqLastEncodeInfo().lossless_fallback) {  // as the CUDA path answers
      bytes->clear();
      return Unimplemented(kLosslessFallback);
    }
    SEQKV_ASSIGN_OR_RETURN(ChunkHeader header, ParseChunkHeader(*bytes));
    // The GPU's limit, judged the same way: every group stream within it.
    const uint64_t limit = StreamHeaderBytes(item.shape.head_dim, settings.streams) +
                           2ull * item.shape.tokens * item.shape.head_dim;
    for (size_t k = 1; k < header.sections.size(); ++k) {
      const std::span<const uint8_t> section(bytes->data() + header.sections[k].offset, header.sections[k].length);
      SEQKV_ASSIGN_OR_RETURN(auto streams, seqkv::internal::UnpackSeqStreams(section, 2 * item.shape.kv_heads));
      for (std::span<const uint8_t> stream : streams) {
        if (stream.size() > limit) return ResourceExhausted(kTooManyBits);
      }
    }
    uint64_t at = 0;
    for (size_t k = 1; k < header.sections.size(); ++k) {
      std::memcpy(item.out + at, bytes->data() + header.sections[k].offset, header.sections[k].length);
      at += header.sections[k].length;
    }
    return Status::Ok();
  }

  Layout MakeLayout(const SeqEncodeArgs& args, const std::vector<Status>* statuses) const {
    Layout l;
    const size_t n = args.items.size();
    l.descs = StatusBytes(n);
#ifdef SEQKV_WITH_CUDA
    const SeqProfile& p = *profile;
    const uint32_t d = p.head_dim;
    uint64_t elements = 0, groups = 0, tile_channels = 0, arena = 0;
    for (size_t i = 0; i < n; ++i) {
      if (statuses != nullptr && !(*statuses)[i].ok()) continue;
      const uint32_t T = args.items[i].shape.tokens;
      elements += 2 * Elements(args.items[i].shape);
      groups += p.groups();
      tile_channels += uint64_t{p.groups()} * ((T + internal::kSqSseTile - 1) / internal::kSqSseTile) * d;
      arena += p.groups() * internal::SqArenaWords(T, d);
      l.layer_elements += 2ull * p.kv_heads * T * d;
    }
    using internal::AlignUp;
    l.steps = l.descs + AlignUp(n * sizeof(internal::SqDesc));
    l.q = l.steps + AlignUp(n * uint64_t{p.groups()} * sizeof(double));
    l.xhat = l.q + AlignUp(elements * sizeof(int32_t));
    l.sse_part = l.xhat + AlignUp(2 * l.layer_elements * sizeof(float));
    l.sse = l.sse_part + AlignUp(tile_channels * sizeof(double));
    l.cost = l.sse + AlignUp(groups * sizeof(double));
    l.ops = l.cost + AlignUp(groups * sizeof(uint64_t));
    l.rank = l.ops + AlignUp(elements * sizeof(uint32_t));
    l.coded = l.rank + AlignUp(groups * d * sizeof(int16_t));
    l.lane_words = l.coded + AlignUp(groups * sizeof(uint32_t));
    constexpr uint32_t kSlots = internal::kSqLaneSlots;
    l.lane_states = l.lane_words + AlignUp(groups * kSlots * sizeof(uint32_t));
    l.lane_ops = l.lane_states + AlignUp(groups * kSlots * sizeof(uint32_t));
    l.shift = l.lane_ops + AlignUp(groups * kSlots * sizeof(uint32_t));
    l.arena_words = l.shift + AlignUp(groups * sizeof(int8_t));
    l.arena_keys = l.arena_words + AlignUp(arena * sizeof(uint16_t));
    l.stream_bytes = l.arena_keys + AlignUp(arena * sizeof(uint32_t));
    l.dst = l.stream_bytes + AlignUp(groups * sizeof(uint32_t));
    l.section_bytes = l.dst + AlignUp(groups * sizeof(uint64_t));
    l.total = l.section_bytes + AlignUp(n * uint64_t{p.layers} * sizeof(uint64_t));
    if (settings.arith == SeqArith::kInt12) {
      l.max_words = (groups / p.groups()) * 2ull * p.layers * p.kv_heads;
      l.xin = l.total;
      l.pred = l.xin + AlignUp(l.layer_elements * sizeof(float));
      l.rmax = l.pred + AlignUp(l.layer_elements * sizeof(float));
      l.max_bits = l.rmax + AlignUp(l.max_words * sizeof(uint32_t));
      l.total = l.max_bits + AlignUp(l.max_words * sizeof(uint32_t));
    }
#else
    (void)args;
    (void)statuses;
    l.total = l.descs;
#endif
    return l;
  }

  // The chunk of an item from its layer sections (host bytes, back to back)
  // and its groups' squared errors.
  Result<std::vector<uint8_t>> Frame(const SeqEncodeItem& item, float delta0, const uint8_t* sections_bytes,
                                     std::span<const uint64_t> section_bytes, const std::vector<double>& sse) const {
    const SeqProfile& p = *profile;
    seqkv::internal::SeqLossyParams params;
    params.loop.delta0 = delta0;
    params.loop.mult_code = mult_code;
    params.loop.arith = settings.arith;
    params.streams = settings.streams;
    if (IsLaneCoding(settings.streams)) {
      params.step_class = seqkv::internal::SeqStepClass(delta0);
    }
    const double proxy = seqkv::internal::SeqProxy(p, sse, item.shape.tokens);
    const std::vector<uint8_t> params_section = seqkv::internal::PackSeqLossyParams(params, static_cast<float>(proxy));
    std::vector<SectionView> sections;
    sections.push_back({seqkv::internal::kSeqParamsSection, params_section});
    uint64_t at = 0;
    for (uint32_t l = 0; l < p.layers; ++l) {
      sections.push_back({seqkv::internal::kSeqLayerSectionBase + l,
                          std::span<const uint8_t>(sections_bytes + at, section_bytes[l])});
      at += section_bytes[l];
    }
    return FrameChunk(MetaOf(item), codec->id(), codec->Spec(), codec->ChunkFlags(), sections);
  }

#ifdef SEQKV_WITH_CUDA
  // SEQKV_GPU_STAGE_TIMES=1 (for benches): events between the stages of the
  // last Encode, printed to stderr by Finish, with its rate control's rounds
  // (each a trial encode of the items still searching: the closed loop and
  // the models), trials and items coded again at their chosen step.
  bool stage_times = std::getenv("SEQKV_GPU_STAGE_TIMES") != nullptr;
  cudaEvent_t events[4] = {};
  size_t rate_rounds = 0, rate_trials = 0, rate_again = 0;
  void Mark(int k, cudaStream_t s) {
    if (!stage_times) return;
    if (events[k] == nullptr && cudaEventCreate(&events[k]) != cudaSuccess) {
      stage_times = false;
      return;
    }
    cudaEventRecord(events[k], s);
  }
  void PrintStages() const {
    if (!stage_times || events[0] == nullptr || events[3] == nullptr) return;
    float ms[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) cudaEventElapsedTime(&ms[k], events[k], events[k + 1]);
    std::fprintf(stderr, "seq gpu encode stages: dense %.3f ms, models + lane counts %.3f ms, sections + lanes + merge %.3f ms\n",
                 ms[0], ms[1], ms[2]);
    if (rate_rounds > 0) {
      std::fprintf(stderr, "seq gpu encode rate control: %zu rounds, %zu trials, %zu items coded again (before the stages)\n",
                   rate_rounds, rate_trials, rate_again);
    }
  }

  // Pinned host memory for Finish's downloads, grown on demand.
  uint8_t* staging = nullptr;
  uint64_t staging_bytes = 0;
  Status EnsureStaging(uint64_t bytes) {
    if (bytes <= staging_bytes) return Status::Ok();
    const uint64_t want = std::max<uint64_t>(bytes, 2 * staging_bytes);
    if (staging != nullptr) cudaFreeHost(staging);
    staging = nullptr;
    staging_bytes = 0;
    SEQKV_CUDA_RETURN(cudaMallocHost(reinterpret_cast<void**>(&staging), want), "pinned staging buffer");
    staging_bytes = want;
    return Status::Ok();
  }
  // Finish's events, one per downloaded item (blocking: the framing threads
  // sleep instead of spinning while they wait), grown on demand.
  std::vector<cudaEvent_t> item_events;
  Status EnsureItemEvents(size_t n) {
    while (item_events.size() < n) {
      cudaEvent_t e = nullptr;
      SEQKV_CUDA_RETURN(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync),
                        "download event");
      item_events.push_back(e);
    }
    return Status::Ok();
  }
#endif
};

SeqEncodeGpu::SeqEncodeGpu(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SeqEncodeGpu::SeqEncodeGpu(SeqEncodeGpu&&) noexcept = default;
SeqEncodeGpu& SeqEncodeGpu::operator=(SeqEncodeGpu&&) noexcept = default;
SeqEncodeGpu::~SeqEncodeGpu() = default;

Backend SeqEncodeGpu::backend() const { return impl_->backend; }

void SeqEncodeGpu::SetHostThreads(uint32_t threads) {
  impl_->host_threads = internal::HostThreadsSetting(threads);
}
uint32_t SeqEncodeGpu::host_threads() const { return impl_->host_threads; }

Result<SeqEncodeGpu> SeqEncodeGpu::Create(std::shared_ptr<const Codec> codec) {
  return CreateFor(DefaultBackend(), std::move(codec));
}

Result<SeqEncodeGpu> SeqEncodeGpu::CreateFor(Backend backend, std::shared_ptr<const Codec> codec) {
  const auto* seq = dynamic_cast<const SeqLossyEncoder*>(codec.get());
  if (seq == nullptr) return InvalidArgument("seq gpu encode: not a lossy seq codec");
  const SeqEncoderSettings settings = seq->Settings();
  const SeqProfile& p = seq->profile();
  if (p.layer0_from_model) {
    return Unimplemented("seq gpu encode: the profile takes layer 0 from the model; encode on the CPU");
  }
  if (p.head_dim > 1024) return Unimplemented("seq gpu encode: head_dim above 1024");
  const bool int12 = settings.arith == SeqArith::kInt12;
  if (int12 && backend == Backend::kCuda && !internal::Int12Fits(p.head_dim, p.features())) {
    return Unimplemented("seq gpu encode: arith=int12 encodes on the GPU for head sizes 64 and 128 (and at most 128 "
                         "kv heads) only; encode on the CPU");
  }
#ifdef SEQKV_WITH_CUDA
  static_assert(internal::kSqSseTile == seqkv::internal::kSeqSseTile, "tile of the squared-error sums");
  if (internal::SqMaxHeaderBytes(p.head_dim) != StreamHeaderBytes(p.head_dim, SeqStreamCoding::kAdaptive) ||
      internal::SqMaxHeaderBytes(p.head_dim, internal::kSqLaneHeader) !=
          StreamHeaderBytes(p.head_dim, SeqStreamCoding::kSignedLanes) ||
      internal::SqMaxHeaderBytes(p.head_dim, internal::kSqSplitHeader) !=
          StreamHeaderBytes(p.head_dim, SeqStreamCoding::kSplitLanes)) {
    return Internal("seq gpu encode: header");
  }
  static_assert(internal::kSqLaneSlots == seqkv::internal::kSeqLaneMax, "lane slots");
#endif
  auto impl = std::make_unique<Impl>(backend);
  impl->codec = std::move(codec);
  impl->profile = &p;
  impl->settings = settings;
  impl->rho = static_cast<float>(settings.deadzone);
  impl->mult_code = seqkv::internal::SeqStepCodes(p, settings.krate, settings.vrate, settings.lrate);
  for (uint32_t g = 0; g < p.groups(); ++g) impl->multiplier.push_back(seqkv::internal::SeqMultiplier(impl->mult_code[g]));
  if (backend == Backend::kCuda) {
    const uint32_t d = p.head_dim;
    std::vector<float> basis_t(p.basis.size());
    for (uint32_t g = 0; g < p.groups(); ++g) {
      const float* u = p.basis.data() + size_t{g} * d * d;
      float* ut = basis_t.data() + size_t{g} * d * d;
      for (uint32_t i = 0; i < d; ++i) {
        for (uint32_t j = 0; j < d; ++j) ut[size_t{j} * d + i] = u[size_t{i} * d + j];
      }
    }
    SEQKV_ASSIGN_OR_RETURN(impl->predictor, internal::UploadFloats(backend, p.predictor));
    SEQKV_ASSIGN_OR_RETURN(impl->basis, internal::UploadFloats(backend, p.basis));
    SEQKV_ASSIGN_OR_RETURN(impl->basis_t, internal::UploadFloats(backend, basis_t));
    SEQKV_ASSIGN_OR_RETURN(impl->step_scale, internal::UploadFloats(backend, p.step_scale));
    if (int12) SEQKV_RETURN_IF_ERROR(impl->int12.Ensure(backend, p, seqkv::internal::SeqFixedGroups(p)));
    const std::vector<uint32_t>& table = seqkv::internal::SeqCostTable();
    SEQKV_ASSIGN_OR_RETURN(void* t, BackendAllocate(backend, table.size() * sizeof(uint32_t)));
    impl->cost_table = static_cast<uint32_t*>(t);
    SEQKV_RETURN_IF_ERROR(BackendCopyIn(backend, t, table.data(), table.size() * sizeof(uint32_t)));
    if (IsLaneCoding(settings.streams)) {
      const seqkv::internal::SeqStaticTables tables = seqkv::internal::MakeSeqStaticTables(p);
      const bool s = IsSignedLaneCoding(settings.streams);
      SEQKV_ASSIGN_OR_RETURN(impl->static_cost, internal::Upload(backend, s ? tables.signed_cost : tables.cost));
      SEQKV_ASSIGN_OR_RETURN(impl->static_entry,
                             internal::Upload(backend, s ? StaticEntries(tables.signed_cum,
                                                                         seqkv::internal::kSeqSignedRowStride)
                                                         : StaticEntries(tables.cum, seqkv::internal::kSeqLaneRowStride)));
      SEQKV_ASSIGN_OR_RETURN(impl->static_scale, internal::Upload(backend, p.static_scale));
      SEQKV_ASSIGN_OR_RETURN(impl->device_mult_code, internal::Upload(backend, impl->mult_code));
    }
  }
  return SeqEncodeGpu(std::move(impl));
}

Status SeqEncodeGpu::CanImplement(const SeqEncodeArgs& args) const {
  if (args.items.size() > (1u << 20)) return InvalidArgument("seq gpu encode: too many items in one batch");
  if (args.source == KvLayout::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("seq gpu encode: paged source needs block_size and num_blocks");
  }
  return Status::Ok();
}

uint64_t SeqEncodeGpu::WorkspaceBytes(const SeqEncodeArgs& args) const {
  if (impl_->backend == Backend::kCpu) return StatusBytes(args.items.size());
  return impl_->MakeLayout(args, nullptr).total;
}

Status SeqEncodeGpu::Encode(const SeqEncodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                            std::vector<Status>* statuses) {
  SEQKV_RETURN_IF_ERROR(CanImplement(args));
  if (statuses == nullptr) return InvalidArgument("seq gpu encode: statuses is null");
  if (workspace == nullptr || workspace_bytes < WorkspaceBytes(args)) {
    return InvalidArgument("seq gpu encode: workspace too small");
  }
  statuses->assign(args.items.size(), Status::Ok());
  for (size_t i = 0; i < args.items.size(); ++i) (*statuses)[i] = impl_->CheckItem(args, args.items[i]);
  if (impl_->backend == Backend::kCpu) {
    std::memset(workspace, 0, StatusBytes(args.items.size()));
    impl_->cpu_chunks.assign(args.items.size(), {});
    // The items on up to host_threads threads (codecs are safe to call from
    // many threads; each item writes only its own chunk, status and output).
    internal::ForEachOnHostThreads(args.items.size(), impl_->host_threads, [&](size_t i) {
      if (!(*statuses)[i].ok()) return;
      try {
        (*statuses)[i] = impl_->CpuEncodeItem(args, args.items[i], &impl_->cpu_chunks[i]);
      } catch (const std::bad_alloc&) {
        (*statuses)[i] = ResourceExhausted("seq gpu encode: out of host memory");
      }
    });
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  const SeqProfile& p = *impl_->profile;
  auto s = static_cast<cudaStream_t>(stream);
  // One RoPE table for the batch: items with other RoPE parameters than the
  // first rotated item are not taken.
  const bool rope_keys = p.pre_rope_keys;
  SEQKV_ASSIGN_OR_RETURN(const RopeParams* rope,
                         impl_->rope.ForBatch(args.items, rope_keys, p.head_dim, kWho, statuses));

  const Layout layout = impl_->MakeLayout(args, statuses);
  auto* base = static_cast<uint8_t*>(workspace);
  auto* device_descs = reinterpret_cast<internal::SqDesc*>(base + layout.descs);
  auto* steps = reinterpret_cast<double*>(base + layout.steps);
  const uint32_t d = p.head_dim, G = p.groups();
  // Each item's descriptor, its workspace regions fixed for the whole call
  // (the launches of a round take a subset, with their own prefixes).
  std::vector<internal::SqDesc> all;
  std::vector<size_t> item_of;  // all[k] is args.items[item_of[k]]
  uint64_t q_at = 0, layer_at = 0, part_at = 0, group_at = 0, arena_at = 0;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    const SeqEncodeItem& item = args.items[i];
    const uint32_t T = item.shape.tokens;
    const uint32_t tiles = (T + internal::kSqSseTile - 1) / internal::kSqSseTile;
    internal::SqDesc e{};
    e.in[0] = static_cast<const uint16_t*>(item.k_in);
    e.in[1] = static_cast<const uint16_t*>(item.v_in);
    e.in_tokens = item.in_tokens;
    e.layer_caches = item.layer_caches;
    e.block_table = item.block_table;
    e.token_offset = item.token_offset;
    e.first_position = item.first_position;
    e.q = reinterpret_cast<int32_t*>(base + layout.q) + q_at;
    e.xhat[0] = reinterpret_cast<float*>(base + layout.xhat) + layer_at;
    e.xhat[1] = reinterpret_cast<float*>(base + layout.xhat) + layout.layer_elements + layer_at;
    e.sse_part = reinterpret_cast<double*>(base + layout.sse_part) + part_at;
    e.sse = reinterpret_cast<double*>(base + layout.sse) + group_at;
    e.cost = reinterpret_cast<uint64_t*>(base + layout.cost) + group_at;
    e.ops = reinterpret_cast<uint32_t*>(base + layout.ops) + q_at;
    e.rank = reinterpret_cast<int16_t*>(base + layout.rank) + group_at * d;
    e.coded = reinterpret_cast<uint32_t*>(base + layout.coded) + group_at;
    e.lane_words = reinterpret_cast<uint32_t*>(base + layout.lane_words) + group_at * internal::kSqLaneSlots;
    e.lane_states = reinterpret_cast<uint32_t*>(base + layout.lane_states) + group_at * internal::kSqLaneSlots;
    e.lane_ops = reinterpret_cast<uint32_t*>(base + layout.lane_ops) + group_at * internal::kSqLaneSlots;
    e.shift = reinterpret_cast<int8_t*>(base + layout.shift) + group_at;
    e.arena_cap = internal::SqArenaWords(T, d);
    e.arena_words = reinterpret_cast<uint16_t*>(base + layout.arena_words) + arena_at;
    e.arena_keys = reinterpret_cast<uint32_t*>(base + layout.arena_keys) + arena_at;
    e.stream_bytes = reinterpret_cast<uint32_t*>(base + layout.stream_bytes) + group_at;
    e.dst = reinterpret_cast<uint64_t*>(base + layout.dst) + group_at;
    e.section_bytes = reinterpret_cast<uint64_t*>(base + layout.section_bytes) + all.size() * p.layers;
    e.out = item.out;
    e.rho = impl_->rho;
    e.tokens = T;
    e.rotate_keys = rope_keys && item.rope.style != RopeStyle::kNone && impl_->rope.rotary_dim() > 0 ? 1 : 0;
    e.status_index = static_cast<uint32_t>(i);
    if (impl_->settings.arith == SeqArith::kInt12) {
      e.xin = reinterpret_cast<float*>(base + layout.xin) + layer_at;
      e.pred = reinterpret_cast<float*>(base + layout.pred) + layer_at;
      e.rmax = reinterpret_cast<uint32_t*>(base + layout.rmax) + all.size() * 2ull * p.layers * p.kv_heads;
      e.max_bits = reinterpret_cast<uint32_t*>(base + layout.max_bits) + all.size() * 2ull * p.layers * p.kv_heads;
    }
    q_at += 2 * Elements(item.shape);
    layer_at += 2ull * p.kv_heads * T * d;
    part_at += uint64_t{G} * tiles * d;
    group_at += G;
    arena_at += G * e.arena_cap;
    all.push_back(e);
    item_of.push_back(i);
  }
  impl_->item_delta.assign(args.items.size(), static_cast<float>(impl_->settings.delta));
  impl_->deferred.assign(args.items.size(), Status::Ok());
  SEQKV_CUDA_RETURN(cudaMemsetAsync(workspace, 0, StatusBytes(args.items.size()), s), "status reset");
  if (all.empty()) return Status::Ok();

  internal::SqLaunch launch{};
  launch.descs = device_descs;
  launch.layers = p.layers;
  launch.heads = p.kv_heads;
  launch.head_dim = d;
  launch.features = p.features();
  launch.inputs = static_cast<uint32_t>(p.inputs);
  launch.predictor = impl_->predictor;
  launch.basis = impl_->basis;
  launch.basis_t = impl_->basis_t;
  launch.step_scale = impl_->step_scale;
  launch.cost_table = impl_->cost_table;
  launch.lanes = IsLaneCoding(impl_->settings.streams);
  launch.signed_lanes = IsSignedLaneCoding(impl_->settings.streams);
  launch.split = impl_->settings.streams == SeqStreamCoding::kSplitLanes;
  launch.static_cost = impl_->static_cost;
  launch.static_entry = impl_->static_entry;
  launch.static_scale = impl_->static_scale;
  launch.mult_code = impl_->device_mult_code;
  launch.rope_style = rope != nullptr && rope->style == RopeStyle::kRotateHalf ? 1 : 2;
  launch.rotary_dim = impl_->rope.rotary_dim();
  launch.rope_cos = impl_->rope.cos();
  launch.rope_sin = impl_->rope.sin();
  launch.paged = args.source == KvLayout::kPaged;
  launch.block_size = args.block_size;
  launch.num_blocks = args.num_blocks;
  launch.statuses = static_cast<int32_t*>(workspace);
  launch.int12 = impl_->settings.arith == SeqArith::kInt12;
  launch.w_i8 = impl_->int12.w;
  launch.u_i8 = impl_->int12.u;
  launch.v_i8 = impl_->int12.v;
  launch.fixed_exp = impl_->int12.exps;
  // Uploads the descriptors of `which` (indices into `all`) with the step
  // delta0 of each, and points `launch` at them.
  auto select = [&](const std::vector<size_t>& which, const std::vector<float>& delta0) -> Status {
    std::vector<internal::SqDesc> descs;
    std::vector<double> step_base;
    uint32_t ctas = 0, groups = 0;
    internal::EqualCtas equal;  // launch.item_ctas
    for (size_t k : which) {
      internal::SqDesc e = all[k];
      e.step_base = steps + descs.size() * G;
      e.step_class = seqkv::internal::SeqStepClass(delta0[k]);
      e.first_cta = ctas;
      e.first_group = groups;
      const uint32_t n = internal::SqCtasOf(p.kv_heads, e.tokens, launch.int12);
      equal.Add(n);
      ctas += n;
      groups += G;
      for (uint32_t g = 0; g < G; ++g) step_base.push_back(double{delta0[k]} * impl_->multiplier[g]);
      descs.push_back(e);
    }
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_descs, descs.data(), descs.size() * sizeof(internal::SqDesc),
                                      cudaMemcpyHostToDevice, s),
                      "descriptor upload");
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(steps, step_base.data(), step_base.size() * sizeof(double),
                                      cudaMemcpyHostToDevice, s),
                      "step upload");
    launch.count = static_cast<uint32_t>(descs.size());
    launch.total_ctas = ctas;
    launch.item_ctas = equal.Get();
    launch.total_groups = groups;
    return Status::Ok();
  };
  // The closed loop (arith=int12: its maxima cleared first).
  auto layers = [&]() -> Status {
    if (layout.max_words > 0) {
      SEQKV_CUDA_RETURN(cudaMemsetAsync(base + layout.rmax, 0, layout.max_bits + layout.max_words * 4 - layout.rmax, s),
                        "int12 maxima reset");
    }
    for (uint32_t l = 0; l < p.layers; ++l) SEQKV_CUDA_RETURN(internal::LaunchSqLayer(launch, l, s), "layer launch");
    return Status::Ok();
  };
  // The closed loop and the models: symbols, squared errors, code lengths.
  auto trial = [&]() -> Status {
    SEQKV_RETURN_IF_ERROR(layers());
    SEQKV_CUDA_RETURN(internal::LaunchSqModels(launch, s), "model launch");
    return Status::Ok();
  };

  std::vector<float> delta0(all.size(), static_cast<float>(impl_->settings.delta));
  std::vector<size_t> final_round(all.size());
  for (size_t k = 0; k < all.size(); ++k) final_round[k] = k;
  const SeqEncoderSettings& o = impl_->settings;
  impl_->rate_rounds = impl_->rate_trials = impl_->rate_again = 0;
  if (o.bits > 0 || o.kl > 0) {
    // Rate control: every item's SeqRateSearch, one round of trials at a time
    // (one wait per round), as the CPU encoder runs them one after another.
    std::vector<seqkv::internal::SeqRateSearch> search;
    for (size_t k = 0; k < all.size(); ++k) search.emplace_back(o.bits, o.kl, o.delta, o.maxbits, o.streams);
    std::vector<uint8_t> kept_last(all.size(), 0);
    std::vector<uint64_t> cost(group_at);
    std::vector<double> sse(group_at);
    for (int round = 0; round < 64; ++round) {
      std::vector<size_t> active;
      for (size_t k = 0; k < all.size(); ++k) {
        if (search[k].done()) continue;
        active.push_back(k);
        delta0[k] = static_cast<float>(search[k].delta());
      }
      if (active.empty()) break;
      ++impl_->rate_rounds;
      impl_->rate_trials += active.size();
      SEQKV_RETURN_IF_ERROR(select(active, delta0));
      SEQKV_RETURN_IF_ERROR(trial());
      SEQKV_CUDA_RETURN(cudaMemcpyAsync(cost.data(), base + layout.cost, cost.size() * sizeof(uint64_t),
                                        cudaMemcpyDeviceToHost, s),
                        "cost download");
      SEQKV_CUDA_RETURN(cudaMemcpyAsync(sse.data(), base + layout.sse, sse.size() * sizeof(double),
                                        cudaMemcpyDeviceToHost, s),
                        "squared-error download");
      SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
      for (size_t k : active) {
        const KvShape& shape = args.items[item_of[k]].shape;
        uint64_t total = 0;
        for (uint32_t g = 0; g < G; ++g) total += cost[k * G + g];
        const double bits = seqkv::internal::SeqTrialBits(0.0, p, p.layers, total) / (2.0 * double(shape.elements()));
        const std::vector<double> item_sse(sse.begin() + k * G, sse.begin() + (k + 1) * G);
        kept_last[k] = search[k].Report(bits, seqkv::internal::SeqProxy(p, item_sse, shape.tokens)) ? 1 : 0;
      }
    }
    // The chosen trial's symbols: still in the workspace when it was the
    // item's last trial, else coded again.
    final_round.clear();
    std::vector<size_t> again;
    for (size_t k = 0; k < all.size(); ++k) {
      const size_t i = item_of[k];
      if (!search[k].done()) {
        impl_->deferred[i] = Internal("seq gpu encode: rate control did not finish");
        continue;
      }
      if (search[k].lossless()) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "seq: the kl budget %.9g cannot be met below maxbits=%.9g and fallback=none",
                      o.kl, o.maxbits);
        impl_->deferred[i] = o.fallback_lossless ? Unimplemented(kLosslessFallback) : FailedPrecondition(buf);
        continue;
      }
      delta0[k] = static_cast<float>(search[k].chosen_delta());
      impl_->item_delta[i] = delta0[k];
      final_round.push_back(k);
      if (!kept_last[k]) again.push_back(k);
    }
    impl_->rate_again = again.size();
    if (!again.empty()) {
      SEQKV_RETURN_IF_ERROR(select(again, delta0));
      SEQKV_RETURN_IF_ERROR(trial());
    }
    if (final_round.empty()) return Status::Ok();
    SEQKV_RETURN_IF_ERROR(select(final_round, delta0));
    impl_->Mark(0, s);
    impl_->Mark(1, s);
    SEQKV_CUDA_RETURN(internal::LaunchSqLaneCounts(launch, s), "lane launch");
  } else {
    SEQKV_RETURN_IF_ERROR(select(final_round, delta0));
    impl_->Mark(0, s);
    SEQKV_RETURN_IF_ERROR(layers());
    impl_->Mark(1, s);
    SEQKV_CUDA_RETURN(internal::LaunchSqModels(launch, s), "model launch");
    SEQKV_CUDA_RETURN(internal::LaunchSqLaneCounts(launch, s), "lane launch");
  }
  impl_->Mark(2, s);
  SEQKV_CUDA_RETURN(internal::LaunchSqPack(launch, s), "pack launch");
  impl_->Mark(3, s);
  return Status::Ok();
#else
  (void)stream;
  return Internal("seq gpu encode: built without CUDA");
#endif
}

Status SeqEncodeGpu::Finish(const SeqEncodeArgs& args, const void* workspace, void* stream,
                            std::vector<Status>* statuses, std::vector<std::vector<uint8_t>>* chunks) {
  if (statuses == nullptr || chunks == nullptr) return InvalidArgument("seq gpu encode: null statuses or chunks");
  if (statuses->size() != args.items.size()) {
    return InvalidArgument("seq gpu encode: Finish takes the statuses of the last Encode");
  }
  chunks->assign(args.items.size(), {});
  if (impl_->backend == Backend::kCpu) {
    if (impl_->cpu_chunks.size() != args.items.size()) {
      return InvalidArgument("seq gpu encode: Finish takes the batch of the last Encode");
    }
    for (size_t i = 0; i < args.items.size(); ++i) {
      if ((*statuses)[i].ok()) (*chunks)[i] = std::move(impl_->cpu_chunks[i]);
    }
    impl_->cpu_chunks.clear();
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  auto s = static_cast<cudaStream_t>(stream);
  const SeqProfile& p = *impl_->profile;
  const Layout layout = impl_->MakeLayout(args, statuses);
  const auto* base = static_cast<const uint8_t*>(workspace);
  std::vector<int32_t> codes(args.items.size());
  SEQKV_CUDA_RETURN(cudaMemcpyAsync(codes.data(), workspace, codes.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
                    "status download");
  size_t taken = 0;
  for (const Status& st : *statuses) taken += st.ok() ? 1 : 0;
  std::vector<double> sse(taken * p.groups());
  std::vector<uint64_t> section_bytes(taken * p.layers);
  if (taken > 0) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(sse.data(), base + layout.sse, sse.size() * sizeof(double),
                                      cudaMemcpyDeviceToHost, s),
                      "squared-error download");
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(section_bytes.data(), base + layout.section_bytes,
                                      section_bytes.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost, s),
                      "section size download");
  }
  SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
  impl_->PrintStages();
  // Every good item's sections into one pinned staging buffer, then one wait.
  std::vector<size_t> slot_of(args.items.size());         // index among the items the device ran
  std::vector<uint64_t> staged(args.items.size(), UINT64_MAX);  // offset in the staging buffer
  uint64_t stage_bytes = 0;
  auto item_total = [&](size_t i) {  // item i's layer sections, in bytes
    uint64_t total = 0;
    for (uint32_t l = 0; l < p.layers; ++l) total += section_bytes[slot_of[i] * p.layers + l];
    return total;
  };
  size_t k = 0;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    slot_of[i] = k++;
    if (i < impl_->deferred.size() && !impl_->deferred[i].ok()) {
      (*statuses)[i] = impl_->deferred[i];
      continue;
    }
    if (codes[i] != 0) {
      (*statuses)[i] = codes[i] == internal::kSqOverflow         ? ResourceExhausted(kTooManyBits)
                       : codes[i] == internal::kSqBlockOutOfRange ? OutOfRange(kBadBlock)
                                                                  : Internal("seq gpu encode: unknown device status");
      continue;
    }
    const uint64_t total = item_total(i);
    if (total > SeqEncodeMaxBytes(args.items[i].shape)) {
      (*statuses)[i] = Internal("seq gpu encode: section sizes past the output");
      continue;
    }
    staged[i] = stage_bytes;
    stage_bytes += total;
  }
  SEQKV_RETURN_IF_ERROR(impl_->EnsureStaging(stage_bytes));
  // Each item's download, then an event; the items are framed in this order
  // by up to host_threads threads, each item once its event has completed.
  std::vector<size_t> order;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (staged[i] != UINT64_MAX) order.push_back(i);
  }
  SEQKV_RETURN_IF_ERROR(impl_->EnsureItemEvents(order.size()));
  for (size_t n = 0; n < order.size(); ++n) {
    const size_t i = order[n];
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(impl_->staging + staged[i], args.items[i].out, item_total(i),
                                      cudaMemcpyDeviceToHost, s),
                      "output download");
    SEQKV_CUDA_RETURN(cudaEventRecord(impl_->item_events[n], s), "download event");
  }
  int device = 0;
  SEQKV_CUDA_RETURN(cudaGetDevice(&device), "current device");
  std::atomic<int> wait_error{cudaSuccess};
  internal::ForEachOnHostThreads(
      order.size(), impl_->host_threads,
      [&](size_t n) {
        const size_t i = order[n];
        const cudaError_t e = cudaEventSynchronize(impl_->item_events[n]);
        if (e != cudaSuccess) {
          int none = cudaSuccess;
          wait_error.compare_exchange_strong(none, static_cast<int>(e));
          (*statuses)[i] = Internal(std::string("seq gpu encode: output download: ") + cudaGetErrorString(e));
          return;
        }
        const size_t slot = slot_of[i];
        try {
          const std::vector<double> item_sse(sse.begin() + slot * p.groups(), sse.begin() + (slot + 1) * p.groups());
          auto framed =
              impl_->Frame(args.items[i], impl_->item_delta[i], impl_->staging + staged[i],
                           std::span<const uint64_t>(section_bytes.data() + slot * p.layers, p.layers), item_sse);
          if (framed.ok()) {
            (*chunks)[i] = std::move(*framed);
          } else {
            (*statuses)[i] = framed.status();
          }
        } catch (const std::bad_alloc&) {
          (*statuses)[i] = ResourceExhausted("seq gpu encode: out of host memory framing the chunk");
        }
      },
      [&] { return cudaSetDevice(device) == cudaSuccess; });  // else the other threads frame the rest
  if (wait_error.load() != cudaSuccess) {
    return Internal(std::string("seq gpu encode: output download: ") +
                    cudaGetErrorString(static_cast<cudaError_t>(wait_error.load())));
  }
  return Status::Ok();
#else
  (void)workspace;
  (void)stream;
  return Internal("seq gpu encode: built without CUDA");
#endif
}

}  // namespace seqkv::gpu
