// SeqDecodeGpu: item parsing, the CPU path (the codec's reference functions),
// and the CUDA path (SeqEntropyGpu for the symbols, then one dense launch per
// layer).
#include "seqkv/gpu/seq_decode.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "device_tables.h"
#include "engine_rope.h"
#include "gpu_util.h"
#include "host_threads.h"
#include "kv_layout.h"
#include "seq_int12.h"
#include "seq_lanes.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/gpu/seq_entropy.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>

#include "seq_decode_kernels.h"
#include "seq_lanes_kernels.h"
#endif

namespace seqkv::gpu {

namespace {

constexpr char kWho[] = "seq gpu";
constexpr uint32_t kParamsSection = 1;
constexpr uint32_t kLayerSectionBase = 16;

uint64_t Elements(const KvShape& s) { return uint64_t{s.layers} * s.kv_heads * s.tokens * s.head_dim; }

Status CheckItem(const SeqDecodeArgs& args, const SeqDecodeItem& item, const SeqProfile& p) {
  SEQKV_RETURN_IF_ERROR(ValidateShape(item.shape, DType::kBF16));
  if (item.shape.layers != p.layers || item.shape.kv_heads != p.kv_heads || item.shape.head_dim != p.head_dim) {
    return FailedPrecondition("seq gpu: the chunk's shape is not the profile's");
  }
  const uint64_t groups = p.groups();
  if (item.streams.size() != groups || item.stream_bytes.size() != groups || item.mult_code.size() != groups) {
    return InvalidArgument("seq gpu: an item needs one stream and one step code per group");
  }
  if (!(item.delta0 > 0) || !std::isfinite(item.delta0)) return DataLoss("seq gpu: bad step");
  if (IsLaneCoding(item.coding) && !p.has_static_model()) {
    return FailedPrecondition("seq gpu: lane streams need a profile with a static model");
  }
  if (IsSignedLaneCoding(item.coding) && !p.has_signed_model()) {
    return FailedPrecondition("seq gpu: signed lane streams need a profile with a signed model");
  }
  if (item.first_position + item.shape.tokens > (uint64_t{1} << 24)) {
    return OutOfRange("seq gpu: RoPE positions must stay below 2^24");
  }
  return internal::CheckDestination(kWho, args.destination, args.block_size, item, item.shape.tokens);
}

// The CPU reference for one item: SeqDecodeGroup per group, SeqDecodeLoop,
// then the codec's output step (RoPE on the keys, bf16), then the scatter.
Status CpuDecodeItem(const SeqDecodeArgs& args, const SeqDecodeItem& item, const SeqProfile& p,
                     const seqkv::internal::SeqStaticTables& tables,
                     const std::vector<seqkv::internal::SeqFixedGroup>* fixed_groups) {
  const KvShape& s = item.shape;
  const uint32_t T = s.tokens, d = s.head_dim, H = s.kv_heads;
  const size_t per_group = size_t{T} * d;
  seqkv::internal::SeqLoopResult loop;
  loop.q.assign(size_t{p.groups()} * per_group, 0);
  std::vector<int16_t> classes(d);
  for (uint32_t g = 0; g < p.groups(); ++g) {
    const std::span<const uint8_t> stream(item.streams[g], item.stream_bytes[g]);
    if (IsLaneCoding(item.coding)) {
      seqkv::internal::SeqLaneClasses(p, g, item.step_class, item.mult_code[g], classes.data());
      SEQKV_RETURN_IF_ERROR(seqkv::internal::SeqDecodeLaneGroup(
          stream, T, d, tables, classes.data(), loop.q.data() + g * per_group,
          seqkv::internal::SeqLaneModelOf(item.coding)));
    } else {
      SEQKV_RETURN_IF_ERROR(seqkv::internal::SeqDecodeGroup(stream, T, d, loop.q.data() + g * per_group));
    }
  }
  seqkv::internal::SeqLoopParams params;
  params.delta0 = item.delta0;
  params.mult_code = item.mult_code;
  params.arith = item.arith;
  params.fixed_groups = fixed_groups;
  seqkv::internal::SeqDecodeLoop(p, T, nullptr, params, &loop);
  Chunk out;
  out.shape = s;
  out.dtype = DType::kBF16;
  out.k.resize(Elements(s) * 2);
  out.v.resize(Elements(s) * 2);
  const bool rope = p.pre_rope_keys && item.rope.style != RopeStyle::kNone;
  seqkv::internal::RopeTable table;
  if (rope) table = seqkv::internal::MakeRopeTable(item.rope, d, item.first_position, T);
  std::vector<float> buf(per_group);
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        const float* src = loop.xhat.data() + ((size_t{l} * 2 + kv) * H + h) * per_group;
        std::copy(src, src + per_group, buf.begin());
        if (kv == 0 && rope) seqkv::internal::ApplyRope(table, item.rope.style, buf.data());
        uint8_t* dst = (kv == 0 ? out.k.data() : out.v.data()) + ((size_t{l} * H + h) * per_group) * 2;
        FromFloat(DType::kBF16, buf.data(), per_group, dst);
      }
    }
  }
  return internal::ScatterDecoded(kWho, args.destination, args.block_size, args.num_blocks, item, out);
}

#ifdef SEQKV_WITH_CUDA

#endif  // SEQKV_WITH_CUDA

// Workspace: [int32 status per item][descriptors][step codes per item and
// group][lane descriptors][lane items][symbols]
// [two layers of reconstruction][arith=int12 items' largest |x| per layer and
// block][the entropy stage's workspace]. On kCpu only the statuses.
struct Layout {
  uint64_t descs = 0, codes = 0, lane_descs = 0, lane_items = 0, q = 0, xhat = 0, max_bits = 0, entropy = 0,
           total = 0;
  uint64_t max_words = 0;  // the max_bits words
  uint64_t layer_elements = 0;  // one layer's K and V of every item: each xhat buffer's floats
};

uint64_t StatusBytes(size_t items) { return internal::AlignUp(items * sizeof(int32_t) + sizeof(int32_t)); }

}  // namespace

struct SeqDecodeGpu::Impl {
  Backend backend = Backend::kCpu;
  std::shared_ptr<const SeqProfile> profile;
  SeqEntropyGpu entropy = SeqEntropyGpu::CreateFor(Backend::kCpu).value();
  // kCuda: the profile's arrays in device memory.
  float* predictor = nullptr;
  float* basis = nullptr;
  float* step_scale = nullptr;
  double* multipliers = nullptr;  // SeqMultiplier of every code (SdLaunch, SlLaunch::multipliers)
  // kCuda, SeqDenseMath::kTensorF16: the predictor and the step-scaled basis
  // rounded to FP16 (EnsureHalfWeights), made by the first such decode
  // (half_status: why they could not be).
  uint16_t* predictor_h = nullptr;
  uint16_t* basis_h = nullptr;
  // On a compute capability 9.0 device, at head size 128: the same weights
  // transposed for the wgmma kernel (SdLaunch::predictor_ht, basis_ht).
  uint16_t* predictor_ht = nullptr;
  uint16_t* basis_ht = nullptr;
  std::optional<Status> half_status;
  // arith=int12: the profile's fixed-point operands (SeqFixedGroups), made by
  // the first such decode; kCuda: their int8 halves (SdLaunch::w_i8, v_i8,
  // fixed_exp).
  std::optional<std::vector<seqkv::internal::SeqFixedGroup>> fixed_groups;
  internal::Int12Tables int12;
  // The profile's static model (streams=lanes): tables on the host (kCpu),
  // cumulative rows and scales in device memory (kCuda).
  seqkv::internal::SeqStaticTables tables;
  uint16_t* lane_cum = nullptr;
  uint8_t* signed_search = nullptr;  // the signed model's search tables (streams=lanes2)
  int16_t* lane_scale = nullptr;
  // kCuda: RoPE cos/sin of the pre-RoPE keys' rotation.
  internal::DeviceRope rope{Backend::kCpu};
  // The last Decode's entropy-stage statuses and the item of each group.
  std::vector<Status> group_statuses;
  std::vector<uint32_t> group_item;
  uint64_t last_entropy_offset = 0;  // where the entropy stage's workspace starts

  explicit Impl(Backend b) : backend(b), rope(b) {}
  ~Impl() {
    for (float* p : {predictor, basis, step_scale}) BackendFree(backend, p);
    BackendFree(backend, lane_cum);
    BackendFree(backend, multipliers);
    BackendFree(backend, predictor_h);
    BackendFree(backend, basis_h);
    BackendFree(backend, predictor_ht);
    BackendFree(backend, basis_ht);
    BackendFree(backend, signed_search);
    BackendFree(backend, lane_scale);
  }

  uint32_t host_threads = internal::DefaultHostThreads();  // kCpu's decodes

  const std::vector<seqkv::internal::SeqFixedGroup>& FixedGroups() {
    if (!fixed_groups.has_value()) fixed_groups = seqkv::internal::SeqFixedGroups(*profile);
    return *fixed_groups;
  }

  // The FP16 copies of the predictor and of the basis rows times their step
  // scales (float(step_scale[g][k] * basis[g][k][n]): the FP16 kernels'
  // symbol operands are q * float(step_base), HalfOperand), once;
  // FAILED_PRECONDITION (every later call too) when a weight is outside
  // FP16's range.
  Status EnsureHalfWeights() {
    if (half_status.has_value()) return *half_status;
    auto convert = [](const std::vector<float>& src, std::vector<uint16_t>* dst) {
      dst->resize(src.size());
      for (size_t i = 0; i < src.size(); ++i) {
        (*dst)[i] = FloatToHalf(src[i]);
        if (((*dst)[i] & 0x7C00u) == 0x7C00u) return false;  // infinity or NaN
      }
      return true;
    };
    std::vector<uint16_t> w, u;
    std::vector<float> scaled = profile->basis;
    const size_t d = profile->head_dim;
    for (size_t at = 0; at < scaled.size(); ++at) scaled[at] *= profile->step_scale[at / d];
    if (!convert(profile->predictor, &w) || !convert(scaled, &u)) {
      half_status = FailedPrecondition(
          "seq gpu: the profile has a weight outside FP16's range; use SeqDenseMath::kTensorTf32 or kExact");
      return *half_status;
    }
    SEQKV_ASSIGN_OR_RETURN(predictor_h, internal::Upload(backend, w));
    SEQKV_ASSIGN_OR_RETURN(basis_h, internal::Upload(backend, u));
    if (profile->head_dim == 128 && WgmmaDevice()) {
      // wt[g][n][f] = w[g][f][n] for the F - 1 feature rows; ut[g][n][k] = u[g][k][n].
      const uint32_t nf = profile->features() - 1, groups = profile->groups();
      std::vector<uint16_t> wt(size_t{groups} * d * nf), ut(size_t{groups} * d * d);
      for (uint32_t g = 0; g < groups; ++g) {
        for (uint32_t n = 0; n < d; ++n) {
          for (uint32_t f = 0; f < nf; ++f) {
            wt[(size_t{g} * d + n) * nf + f] = w[(size_t{g} * (nf + 1) + f) * d + n];
          }
          for (uint32_t k = 0; k < d; ++k) ut[(size_t{g} * d + n) * d + k] = u[(size_t{g} * d + k) * d + n];
        }
      }
      SEQKV_ASSIGN_OR_RETURN(predictor_ht, internal::Upload(backend, wt));
      SEQKV_ASSIGN_OR_RETURN(basis_ht, internal::Upload(backend, ut));
    }
    half_status = Status::Ok();
    return *half_status;
  }

  // Whether this device runs the FP16 dense stage's wgmma kernel: compute
  // capability 9.0 (the library's sm_90a code).
  bool WgmmaDevice() const {
#ifdef SEQKV_WITH_CUDA
    int dev = 0, major = 0, minor = 0;
    return backend == Backend::kCuda && cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
           major == 9 && minor == 0;
#else
    return false;
#endif
  }

  std::vector<SeqEntropyItem> EntropyItems(const SeqDecodeArgs& args, const std::vector<Status>* statuses,
                                           int32_t* q_base) const {
    std::vector<SeqEntropyItem> out;
    const SeqProfile& p = *profile;
    uint64_t q_at = 0;
    for (size_t i = 0; i < args.items.size(); ++i) {
      if (statuses != nullptr && !(*statuses)[i].ok()) continue;
      const SeqDecodeItem& item = args.items[i];
      const uint64_t per_group = uint64_t{item.shape.tokens} * p.head_dim;
      if (IsLaneCoding(item.coding)) {  // the lane kernel's (their symbols still take their place in q)
        q_at += per_group * p.groups();
        continue;
      }
      for (uint32_t g = 0; g < p.groups(); ++g) {
        SeqEntropyItem e;
        e.stream = g < item.streams.size() ? item.streams[g] : nullptr;
        e.stream_bytes = g < item.stream_bytes.size() ? item.stream_bytes[g] : 0;
        e.tokens = item.shape.tokens;
        e.dim = p.head_dim;
        e.q_out = q_base != nullptr ? q_base + q_at : reinterpret_cast<int32_t*>(16);  // sizing only
        q_at += per_group;
        out.push_back(e);
      }
    }
    return out;
  }

  Layout MakeLayout(const SeqDecodeArgs& args, const std::vector<Status>* statuses) const {
    Layout l;
    const size_t n = args.items.size();
    l.descs = StatusBytes(n);
#ifdef SEQKV_WITH_CUDA
    uint64_t elements = 0, lane_groups = 0;
    for (size_t i = 0; i < n; ++i) {
      if (statuses != nullptr && !(*statuses)[i].ok()) continue;
      elements += Elements(args.items[i].shape);
      if (IsLaneCoding(args.items[i].coding)) lane_groups += profile->groups();
      l.layer_elements += 2ull * profile->kv_heads * args.items[i].shape.tokens * profile->head_dim;
      if (args.items[i].arith == SeqArith::kInt12) l.max_words += 2ull * profile->layers * profile->kv_heads;
    }
    l.codes = l.descs + internal::AlignUp(n * sizeof(internal::SdDesc));
    l.lane_descs = l.codes + internal::AlignUp(n * uint64_t{profile->groups()});
    l.lane_items = l.lane_descs + internal::AlignUp(lane_groups * sizeof(internal::SlDesc));
    l.q = l.lane_items + internal::AlignUp(n * sizeof(internal::SlItem));
    l.xhat = l.q + internal::AlignUp(2 * elements * sizeof(int32_t));  // K and V symbols
    l.max_bits = l.xhat + internal::AlignUp(2 * l.layer_elements * sizeof(float));
    l.entropy = l.max_bits + internal::AlignUp(l.max_words * sizeof(uint32_t));
    SeqEntropyDecodeArgs ea;
    const std::vector<SeqEntropyItem> items = EntropyItems(args, statuses, nullptr);
    ea.items = items;
    l.total = l.entropy + internal::AlignUp(entropy.WorkspaceBytes(ea));
#else
    (void)statuses;
    l.total = l.descs;
#endif
    return l;
  }
};

Result<SeqDecodeItem> MakeSeqDecodeItem(const ChunkHeader& header, std::span<const uint8_t> host_chunk,
                                        const uint8_t* chunk_in_backend, const SeqProfile& p) {
  if (header.codec_id != CodecId::kSeq) return InvalidArgument("seq gpu: not a seq chunk");
  if (header.dtype != DType::kBF16) return Unimplemented("seq gpu: only bf16 chunks");
  if (header.flags & kFlagNeedsParent) {
    return FailedPrecondition("seq gpu: the chunk continues a parent chunk; decode it on the CPU with its parent");
  }
  SEQKV_ASSIGN_OR_RETURN(CodecSpec spec, ParseCodecSpec(header.codec_spec));
  if (spec.params.count("lossless")) return Unimplemented("seq gpu: seq:lossless decodes on the CPU only");
  auto pid = spec.params.find("profile");
  if (pid == spec.params.end() || pid->second != p.Id()) {
    return FailedPrecondition("seq gpu: the chunk names profile " +
                              (pid == spec.params.end() ? std::string("(none)") : pid->second) +
                              ", this decoder holds " + p.Id());
  }
  if (p.layer0_from_model) {
    return Unimplemented("seq gpu: layer 0 from the model is not implemented on the GPU; decode on the CPU");
  }
  const KvShape& s = header.shape;
  if (s.layers != p.layers || s.kv_heads != p.kv_heads || s.head_dim != p.head_dim) {
    return FailedPrecondition("seq gpu: the chunk's shape is not the profile's");
  }
  if (host_chunk.size() != header.total_bytes) return InvalidArgument("seq gpu: host bytes are not the chunk's");
  const auto section = [&](size_t i) {
    return host_chunk.subspan(header.sections[i].offset, header.sections[i].length);
  };
  if (header.sections.empty() || header.sections[0].type != kParamsSection) {
    return DataLoss("seq: missing parameters section");
  }
  const std::span<const uint8_t> params_section = section(0);
  if (params_section.empty()) return DataLoss("seq: truncated parameters");
  const uint8_t mode = params_section[0];
  if (mode == 1) return Unimplemented("seq gpu: a lossless-fallback chunk decodes on the CPU only");
  if (mode != 0) return DataLoss("seq: unknown mode");
  // The codec's own parsers, so both decoders accept and refuse the same chunks.
  SEQKV_ASSIGN_OR_RETURN(seqkv::internal::SeqLossyParams params,
                         seqkv::internal::ParseSeqLossyParams(params_section.subspan(1), p));
  if (params.loop.layer0_exact) return Unimplemented("seq gpu: layer 0 from the model is not implemented on the GPU");
  if (params.parent_hash != 0) return FailedPrecondition("seq gpu: the chunk continues a parent chunk");
  if (header.sections.size() != 1 + size_t{s.layers}) return DataLoss("seq: wrong number of sections");
  SeqDecodeItem item;
  item.shape = s;
  item.rope = header.rope;
  item.first_position = header.first_position;
  item.delta0 = params.loop.delta0;
  item.mult_code = std::move(params.loop.mult_code);
  item.coding = params.streams;
  item.step_class = params.step_class;
  item.arith = params.loop.arith;
  for (uint32_t l = 0; l < s.layers; ++l) {
    if (header.sections[1 + l].type != kLayerSectionBase + l) return DataLoss("seq: unexpected section type");
    SEQKV_ASSIGN_OR_RETURN(auto streams, seqkv::internal::UnpackSeqStreams(section(1 + l), 2 * s.kv_heads));
    for (std::span<const uint8_t> stream : streams) {
      // The same bytes in backend memory.
      item.streams.push_back(chunk_in_backend + (stream.data() - host_chunk.data()));
      item.stream_bytes.push_back(stream.size());
    }
  }
  return item;
}

SeqDecodeGpu::SeqDecodeGpu(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SeqDecodeGpu::SeqDecodeGpu(SeqDecodeGpu&&) noexcept = default;
SeqDecodeGpu& SeqDecodeGpu::operator=(SeqDecodeGpu&&) noexcept = default;
SeqDecodeGpu::~SeqDecodeGpu() = default;

Backend SeqDecodeGpu::backend() const { return impl_->backend; }

void SeqDecodeGpu::SetHostThreads(uint32_t threads) {
  impl_->host_threads = internal::HostThreadsSetting(threads);
}
uint32_t SeqDecodeGpu::host_threads() const { return impl_->host_threads; }

Result<SeqDecodeGpu> SeqDecodeGpu::Create(std::shared_ptr<const SeqProfile> profile) {
  return CreateFor(DefaultBackend(), std::move(profile));
}

Result<SeqDecodeGpu> SeqDecodeGpu::CreateFor(Backend backend, std::shared_ptr<const SeqProfile> profile) {
  if (profile == nullptr) return InvalidArgument("seq gpu: no profile");
  SEQKV_RETURN_IF_ERROR(profile->Validate());
  auto impl = std::make_unique<Impl>(backend);
  impl->profile = std::move(profile);
  impl->tables = seqkv::internal::MakeSeqStaticTables(*impl->profile);
  SEQKV_ASSIGN_OR_RETURN(impl->entropy, SeqEntropyGpu::CreateFor(backend));
  if (backend == Backend::kCuda) {
    SEQKV_ASSIGN_OR_RETURN(impl->predictor, internal::UploadFloats(backend, impl->profile->predictor));
    SEQKV_ASSIGN_OR_RETURN(impl->basis, internal::UploadFloats(backend, impl->profile->basis));
    SEQKV_ASSIGN_OR_RETURN(impl->step_scale, internal::UploadFloats(backend, impl->profile->step_scale));
    const std::array<double, 256>& multipliers = seqkv::internal::SeqMultipliers();
    SEQKV_ASSIGN_OR_RETURN(void* m, internal::UploadBytes(backend, multipliers.data(), sizeof(multipliers)));
    impl->multipliers = static_cast<double*>(m);
    if (impl->profile->has_static_model()) {
      SEQKV_ASSIGN_OR_RETURN(impl->lane_cum, internal::Upload(backend, impl->tables.cum));
      SEQKV_ASSIGN_OR_RETURN(impl->lane_scale, internal::Upload(backend, impl->profile->static_scale));
    }
    if (impl->profile->has_signed_model()) {
      SEQKV_ASSIGN_OR_RETURN(impl->signed_search,
                             internal::Upload(backend, seqkv::internal::SeqSignedSearchBytes(impl->tables)));
    }
  }
  return SeqDecodeGpu(std::move(impl));
}

Status SeqDecodeGpu::CanImplement(const SeqDecodeArgs& args) const {
  if (args.destination == KvDestination::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("seq gpu: paged destination needs block_size and num_blocks");
  }
  if (args.items.size() > (1u << 20)) return InvalidArgument("seq gpu: too many items in one batch");
  return Status::Ok();
}

uint64_t SeqDecodeGpu::WorkspaceBytes(const SeqDecodeArgs& args) const {
  if (impl_->backend == Backend::kCpu) return StatusBytes(args.items.size());
  return impl_->MakeLayout(args, nullptr).total;
}

Status SeqDecodeGpu::Decode(const SeqDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                            std::vector<Status>* statuses) {
  SEQKV_RETURN_IF_ERROR(CanImplement(args));
  if (statuses == nullptr) return InvalidArgument("seq gpu: statuses is null");
  if (workspace == nullptr || workspace_bytes < WorkspaceBytes(args)) {
    return InvalidArgument("seq gpu: workspace too small");
  }
  const SeqProfile& p = *impl_->profile;
  statuses->assign(args.items.size(), Status::Ok());
  for (size_t i = 0; i < args.items.size(); ++i) (*statuses)[i] = CheckItem(args, args.items[i], p);
#ifdef SEQKV_WITH_CUDA
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (impl_->backend == Backend::kCuda && (*statuses)[i].ok() &&
        args.items[i].coding == SeqStreamCoding::kSplitLanes && p.head_dim > internal::kSplitMaxDim) {
      (*statuses)[i] = FailedPrecondition("seq gpu: streams=lanes3 decodes on the GPU up to head_dim " +
                                          std::to_string(internal::kSplitMaxDim) + " (the CPU backend has no limit)");
    }
    // (SlDesc holds a lane stream's length in 32 bits.)
    if (impl_->backend == Backend::kCuda && (*statuses)[i].ok() && IsLaneCoding(args.items[i].coding)) {
      for (const uint64_t bytes : args.items[i].stream_bytes) {
        if (bytes > UINT32_MAX) {
          (*statuses)[i] = InvalidArgument("seq gpu: a lane group stream of 4 GiB or more");
          break;
        }
      }
    }
  }
#endif
  impl_->group_statuses.clear();
  impl_->group_item.clear();
  if (impl_->backend == Backend::kCpu) {
    std::memset(workspace, 0, StatusBytes(args.items.size()));
    // The items on up to host_threads threads, each writing only its own
    // status and destination; the int12 operands made once beforehand.
    const std::vector<seqkv::internal::SeqFixedGroup>* fixed_groups = nullptr;
    for (size_t i = 0; i < args.items.size(); ++i) {
      if ((*statuses)[i].ok() && args.items[i].arith == SeqArith::kInt12) fixed_groups = &impl_->FixedGroups();
    }
    internal::ForEachOnHostThreads(args.items.size(), impl_->host_threads, [&](size_t i) {
      if (!(*statuses)[i].ok()) return;
      const bool fixed = args.items[i].arith == SeqArith::kInt12;
      try {
        (*statuses)[i] = CpuDecodeItem(args, args.items[i], p, impl_->tables, fixed ? fixed_groups : nullptr);
      } catch (const std::bad_alloc&) {
        (*statuses)[i] = ResourceExhausted("seq gpu: out of host memory");
      }
    });
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  auto s = static_cast<cudaStream_t>(stream);
  // One RoPE table for the batch: items with other RoPE parameters than the
  // first rotated item are not taken.
  const bool rope_keys = p.pre_rope_keys;
  SEQKV_ASSIGN_OR_RETURN(const RopeParams* rope,
                         impl_->rope.ForBatch(args.items, rope_keys, p.head_dim, kWho, statuses));

  bool any_int = false, any_float = false;  // arith=int12 items (their own launches, kSdMathInt12), float items
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    if (args.items[i].arith != SeqArith::kInt12) {
      any_float = true;
      continue;
    }
    if (!internal::Int12Fits(p.head_dim, p.features())) {
      (*statuses)[i] = Unimplemented("seq gpu: arith=int12 chunks decode on the GPU for head sizes 64 and 128 (and "
                                     "at most 128 kv heads) only; decode this one on the CPU");
    } else {
      any_int = true;
    }
  }
  if (any_int) SEQKV_RETURN_IF_ERROR(impl_->int12.Ensure(impl_->backend, p, impl_->FixedGroups()));
  const Layout layout = impl_->MakeLayout(args, statuses);
  auto* base = static_cast<uint8_t*>(workspace);
  auto* device_descs = reinterpret_cast<internal::SdDesc*>(base + layout.descs);
  auto* device_codes = base + layout.codes;
  auto* device_lane_descs = reinterpret_cast<internal::SlDesc*>(base + layout.lane_descs);
  auto* device_lane_items = reinterpret_cast<internal::SlItem*>(base + layout.lane_items);
  auto* q = reinterpret_cast<int32_t*>(base + layout.q);
  auto* xhat = reinterpret_cast<float*>(base + layout.xhat);
  auto* max_bits = reinterpret_cast<uint32_t*>(base + layout.max_bits);
  std::vector<internal::SdDesc> descs, int_descs;  // float chunks, arith=int12 chunks
  std::vector<uint8_t> codes;                      // [item][G], the dense stage's step codes (SdDesc::codes)
  const uint32_t math = !internal::SdTensorCoreFits(p.head_dim)       ? internal::kSdMathExact
                        : args.math == SeqDenseMath::kTensorTf32x3 ? internal::kSdMathTf32x3
                        : args.math == SeqDenseMath::kTensorTf32   ? internal::kSdMathTf32
                        : args.math == SeqDenseMath::kTensorF16    ? internal::kSdMathF16
                                                                   : internal::kSdMathExact;
  // (The FP16 weights only for float items: a batch of int12 chunks does not need them.)
  if (math == internal::kSdMathF16 && any_float) SEQKV_RETURN_IF_ERROR(impl_->EnsureHalfWeights());
  // The f16 dense stage takes its symbols as FP16 operands q * step, stored
  // by the lane kernel (half the bytes, no conversion in the dense stage),
  // when every float item is a signed lane stream: its launches read one
  // kind of symbol. (SEQKV_HALF_SYMBOLS=0: int32 symbols, an experiment switch.)
  bool half_symbols = math == internal::kSdMathF16;
  if (const char* e = std::getenv("SEQKV_HALF_SYMBOLS"); e != nullptr && std::string(e) == "0") half_symbols = false;
  for (size_t i = 0; i < args.items.size() && half_symbols; ++i) {
    const SeqDecodeItem& item = args.items[i];
    if ((*statuses)[i].ok() && item.arith != SeqArith::kInt12 && !IsSignedLaneCoding(item.coding)) {
      half_symbols = false;
    }
  }
  // The lane descriptors in one array, by launch: magnitude, signed, signed
  // into FP16, split, split into FP16 (an item's groups all take its
  // kind's); launch k takes [bounds[k], bounds[k + 1]), and its items
  // (SlItem) [bounds[k] / G, bounds[k + 1] / G). Counted first, so that the
  // loop below writes each descriptor in its place once (it was half of a
  // call's host time with growing vectors per kind and a multiplier computed
  // per group: 0.49 of 0.94 ms for the 8K context). A descriptor is 16
  // bytes, the rest is its item's, and the step bases are made on the GPU
  // from the codes (a call uploaded 0.92 MB for that context with 48-byte
  // descriptors and the step bases as doubles).
  auto lane_kind = [&](const SeqDecodeItem& item) {
    const bool half = half_symbols && item.arith != SeqArith::kInt12;
    return item.coding == SeqStreamCoding::kLanes        ? 0
           : item.coding == SeqStreamCoding::kSplitLanes ? (half ? 4 : 3)
           : half                                        ? 2
                                                         : 1;
  };
  size_t bounds[6] = {0, 0, 0, 0, 0, 0};
  size_t groups_ok = 0;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    groups_ok += p.groups();
    if (IsLaneCoding(args.items[i].coding)) bounds[lane_kind(args.items[i]) + 1] += p.groups();
  }
  for (int k = 1; k < 6; ++k) bounds[k] += bounds[k - 1];
  std::vector<internal::SlDesc> lane_descs(bounds[5]);
  std::vector<internal::SlItem> lane_items(bounds[5] / p.groups());
  size_t lane_next[5] = {bounds[0], bounds[1], bounds[2], bounds[3], bounds[4]};
  codes.resize(groups_ok);
  uint64_t q_at = 0, layer_at = 0, max_at = 0;
  uint32_t ctas = 0, int_ctas = 0, item_at = 0;
  internal::EqualCtas equal, int_equal;     // the launches' item_ctas
  uint64_t clear_begin = 0, clear_end = 0;  // symbols [begin, end) still to clear
  auto clear = [&]() -> Status {
    if (clear_end > clear_begin) {
      SEQKV_CUDA_RETURN(cudaMemsetAsync(q + clear_begin, 0, (clear_end - clear_begin) * sizeof(int32_t), s),
                        "symbol reset");
    }
    clear_begin = clear_end;
    return Status::Ok();
  };
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    const SeqDecodeItem& item = args.items[i];
    internal::SdDesc d{};
    d.q = q + q_at;
    d.xhat[0] = xhat + layer_at;
    d.xhat[1] = xhat + layout.layer_elements + layer_at;
    const bool fixed = item.arith == SeqArith::kInt12;
    d.codes = device_codes + uint64_t{item_at} * p.groups();
    d.delta0 = item.delta0;
    std::memcpy(codes.data() + uint64_t{item_at++} * p.groups(), item.mult_code.data(), p.groups());
    d.out[0] = item.k_out;
    d.out[1] = item.v_out;
    d.layer_caches = item.layer_caches;
    d.block_table = item.block_table;
    d.outer_tokens = item.out_tokens;
    d.token_offset = item.token_offset;
    d.first_position = item.first_position;
    d.tokens = item.shape.tokens;
    d.rotate_keys = rope_keys && item.rope.style != RopeStyle::kNone && impl_->rope.rotary_dim() > 0 ? 1 : 0;
    d.status_index = static_cast<uint32_t>(i);
    if (fixed) {
      d.max_bits = max_bits + max_at;
      max_at += 2ull * p.layers * p.kv_heads;
      d.first_cta = int_ctas;
      const uint32_t n = internal::SdCtasOf(p.kv_heads, item.shape.tokens, internal::kSdMathInt12);
      int_equal.Add(n);
      int_ctas += n;
    } else {
      d.first_cta = ctas;
      const uint32_t n = internal::SdCtasOf(p.kv_heads, item.shape.tokens, math);
      equal.Add(n);
      ctas += n;
    }
    if (IsLaneCoding(item.coding)) {
      size_t& lane_at = lane_next[lane_kind(item)];
      internal::SlItem& li = lane_items[lane_at / p.groups()];
      li.q = q + q_at;
      li.tokens = item.shape.tokens;
      li.status_index = static_cast<uint32_t>(i);
      li.delta0 = item.delta0;
      li.step_class = item.step_class;
      for (uint32_t g = 0; g < p.groups(); ++g) {
        internal::SlDesc& ld = lane_descs[lane_at++];
        ld.stream = item.streams[g];
        ld.stream_bytes = static_cast<uint32_t>(item.stream_bytes[g]);
        ld.code = item.mult_code[g];
      }
    }
    // The magnitude lane kernel stores only non-zero symbols: one clear per
    // run of its items. (The signed lane kernel clears its symbols itself.)
    if (item.coding == SeqStreamCoding::kLanes) {
      if (clear_end != q_at) {
        SEQKV_RETURN_IF_ERROR(clear());
        clear_begin = q_at;
      }
      clear_end = q_at + Elements(item.shape) * 2;
    }
    q_at += Elements(item.shape) * 2;
    layer_at += 2ull * p.kv_heads * item.shape.tokens * p.head_dim;
    (fixed ? int_descs : descs).push_back(d);
  }
  const size_t float_descs = descs.size();  // then the int12 ones, each set its own launches
  descs.insert(descs.end(), int_descs.begin(), int_descs.end());
  SEQKV_RETURN_IF_ERROR(clear());
  if (!descs.empty()) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_descs, descs.data(), descs.size() * sizeof(internal::SdDesc),
                                      cudaMemcpyHostToDevice, s),
                      "descriptor upload");
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_codes, codes.data(), codes.size(), cudaMemcpyHostToDevice, s),
                      "step code upload");
  }
  if (!lane_descs.empty()) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_lane_descs, lane_descs.data(), lane_descs.size() * sizeof(internal::SlDesc),
                                      cudaMemcpyHostToDevice, s),
                      "lane descriptor upload");
    SEQKV_CUDA_RETURN(
        cudaMemcpyAsync(device_lane_items, lane_items.data(), lane_items.size() * sizeof(internal::SlItem),
                        cudaMemcpyHostToDevice, s),
        "lane item upload");
  }
  SEQKV_CUDA_RETURN(cudaMemsetAsync(workspace, 0, StatusBytes(args.items.size()), s), "status reset");
  if (layout.max_words > 0) {
    SEQKV_CUDA_RETURN(cudaMemsetAsync(max_bits, 0, layout.max_words * sizeof(uint32_t), s), "int12 maxima reset");
  }

  // The symbols: every group of every item through the entropy stage.
  const std::vector<SeqEntropyItem> eitems = impl_->EntropyItems(args, statuses, q);
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok() || IsLaneCoding(args.items[i].coding)) continue;
    for (uint32_t g = 0; g < p.groups(); ++g) impl_->group_item.push_back(static_cast<uint32_t>(i));
  }
  SeqEntropyDecodeArgs ea;
  ea.items = eitems;
  impl_->last_entropy_offset = layout.entropy;
  if (!eitems.empty()) {
    SEQKV_RETURN_IF_ERROR(impl_->entropy.Decode(ea, base + layout.entropy, layout.total - layout.entropy, stream,
                                                &impl_->group_statuses));
  }
  // The lane streams: a half-warp per group (the magnitude model into symbols cleared above).
  for (const int kind : {0, 1, 2, 3, 4}) {  // magnitude, signed, signed into FP16, split, split into FP16
    internal::SlLaunch sl{};
    sl.descs = device_lane_descs + bounds[kind];
    sl.count = static_cast<uint32_t>(bounds[kind + 1] - bounds[kind]);
    sl.dim = p.head_dim;
    sl.items = device_lane_items + bounds[kind] / p.groups();
    sl.groups = p.groups();
    sl.multipliers = impl_->multipliers;
    sl.cum = impl_->lane_cum;
    sl.signed_model = kind != 0;
    sl.signed_search = impl_->signed_search;
    sl.scale = impl_->lane_scale;
    sl.statuses = static_cast<int32_t*>(workspace);
    sl.half_symbols = kind == 2 || kind == 4;
    if (sl.count > 0) {
      SEQKV_CUDA_RETURN(kind >= 3 ? internal::LaunchSplitLaneDecode(sl, s) : internal::LaunchSlDecode(sl, s),
                        "lane kernel launch");
    }
  }

  internal::SdLaunch launch{};
  launch.descs = device_descs;
  launch.count = static_cast<uint32_t>(float_descs);
  launch.total_ctas = ctas;
  launch.item_ctas = equal.Get();
  launch.layers = p.layers;
  launch.heads = p.kv_heads;
  launch.head_dim = p.head_dim;
  launch.features = p.features();
  launch.inputs = static_cast<uint32_t>(p.inputs);
  launch.predictor = impl_->predictor;
  launch.basis = impl_->basis;
  launch.step_scale = impl_->step_scale;
  launch.multipliers = impl_->multipliers;
  launch.predictor_h = impl_->predictor_h;
  launch.basis_h = impl_->basis_h;
  // The wgmma kernel where its weights exist (SEQKV_DENSE_WGMMA=0: mma.sync,
  // a measuring switch).
  if (const char* e = std::getenv("SEQKV_DENSE_WGMMA"); e == nullptr || std::strcmp(e, "0") != 0) {
    launch.predictor_ht = impl_->predictor_ht;
    launch.basis_ht = impl_->basis_ht;
  }
  launch.rope_style = rope != nullptr && rope->style == RopeStyle::kRotateHalf ? 1 : 2;
  launch.rotary_dim = impl_->rope.rotary_dim();
  launch.rope_cos = impl_->rope.cos();
  launch.rope_sin = impl_->rope.sin();
  launch.rope_mirrored = impl_->rope.mirrored();
  launch.rope_cs_h = impl_->rope.cs_half();
  launch.rope_half_cols = impl_->rope.half_cols();
  launch.paged = args.destination == KvDestination::kPaged;
  launch.block_size = args.block_size;
  launch.num_blocks = args.num_blocks;
  launch.statuses = static_cast<int32_t*>(workspace);
  launch.math = math;
  launch.half_symbols = half_symbols;
  internal::SdLaunch int_launch = launch;
  int_launch.descs = device_descs + float_descs;
  int_launch.count = static_cast<uint32_t>(int_descs.size());
  int_launch.total_ctas = int_ctas;
  int_launch.item_ctas = int_equal.Get();
  int_launch.math = internal::kSdMathInt12;
  int_launch.half_symbols = false;
  int_launch.w_i8 = impl_->int12.w;
  int_launch.v_i8 = impl_->int12.v;
  int_launch.fixed_exp = impl_->int12.exps;
  for (uint32_t l = 0; l < p.layers; ++l) {
    if (launch.count > 0) SEQKV_CUDA_RETURN(internal::LaunchSdLayer(launch, l, s), "kernel launch");
    if (int_launch.count > 0) SEQKV_CUDA_RETURN(internal::LaunchSdLayer(int_launch, l, s), "int12 kernel launch");
  }
  return Status::Ok();
#else
  (void)stream;
  return Internal("seq gpu: built without CUDA");
#endif
}

#ifdef SEQKV_WITH_CUDA
static_assert(internal::kSlHalfRange == internal::kSdHalfRange, "one FP16 range code for both kernels");
#endif

Status SeqDecodeGpu::CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses) const {
  if (statuses == nullptr) return InvalidArgument("seq gpu: statuses is null");
  if (impl_->backend == Backend::kCpu || statuses->empty()) return Status::Ok();
#ifdef SEQKV_WITH_CUDA
  // The entropy stage's statuses (one per group) go onto the groups' items.
  auto s = static_cast<cudaStream_t>(stream);
  std::vector<int32_t> codes(statuses->size());
  SEQKV_CUDA_RETURN(cudaMemcpyAsync(codes.data(), workspace, codes.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
                    "status download");
  SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
  if (!impl_->group_statuses.empty()) {
    SEQKV_RETURN_IF_ERROR(impl_->entropy.CollectStatuses(
        static_cast<const uint8_t*>(workspace) + impl_->last_entropy_offset, stream, &impl_->group_statuses));
  }
  for (size_t k = 0; k < impl_->group_statuses.size(); ++k) {
    const uint32_t i = impl_->group_item[k];
    if ((*statuses)[i].ok() && !impl_->group_statuses[k].ok()) (*statuses)[i] = impl_->group_statuses[k];
  }
  for (size_t i = 0; i < codes.size(); ++i) {
    if (!(*statuses)[i].ok() || codes[i] == 0) continue;
    (*statuses)[i] = codes[i] == internal::kSdBlockOutOfRange
                         ? OutOfRange("seq gpu: block table entry outside [0, num_blocks)")
                     : codes[i] == internal::kSlCorrupt ? DataLoss("seq gpu: corrupt lane stream")
                     : codes[i] == internal::kSdHalfRange
                         ? FailedPrecondition("seq gpu: a value outside FP16's range (|x| >= 65520) in the "
                                              "SeqDenseMath::kTensorF16 decode; decode this chunk with kTensorTf32 "
                                              "or kExact")
                         : Internal("seq gpu: unknown device status");
  }
  return Status::Ok();
#else
  (void)workspace;
  (void)stream;
  return Internal("seq gpu: built without CUDA");
#endif
}

}  // namespace seqkv::gpu
