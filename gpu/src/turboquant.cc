// TurboQuantGpu: argument checks, the backend choice, and the CUDA launch
// path (descriptors into the workspace, one launch per (E, bits) group).
// The CPU path is turboquant_cpu.cc.
#include "seqkv/gpu/turboquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "seqkv/codec/codec.h"
#include "gpu_util.h"
#include "kv_layout.h"
#include "turboquant_cpu.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>

#include "turboquant_kernels.h"
// The codebooks and the sign generator are the codec's own (one copy of the
// tables): codec/src is a private include path of gpu/ (gpu/CMakeLists.txt).
#include "hadamard.h"
#include "lloyd_max.h"
#endif

namespace seqkv::gpu {

namespace {

[[maybe_unused]] constexpr char kWho[] = "turboquant gpu";  // CUDA builds: SEQKV_CUDA_RETURN
constexpr uint32_t kMinPadded = 32;
constexpr uint32_t kMaxPadded = 1024;

uint32_t PaddedDim(uint32_t head_dim) {
  uint32_t p = 1;
  while (p < head_dim) p <<= 1;
  return p;
}

Status CheckItemShape(const KvShape& shape, const TurboQuantParams& params) {
  SEQKV_RETURN_IF_ERROR(ValidateShape(shape, DType::kBF16));
  if (params.bits < 1 || params.bits > 4) {
    return Unimplemented("turboquant gpu: bits=" + std::to_string(params.bits) + " (want 1..4)");
  }
  const uint32_t padded = PaddedDim(shape.head_dim);
  if (padded < kMinPadded || padded > kMaxPadded) {
    return Unimplemented("turboquant gpu: head_dim " + std::to_string(shape.head_dim) +
                         " (padded dimension must be 32..1024)");
  }
  return Status::Ok();
}

Status CheckDecodeItem(const TurboQuantDecodeArgs& args, const TurboQuantDecodeItem& item) {
  SEQKV_RETURN_IF_ERROR(CheckItemShape(item.shape, item.params));
  const uint64_t nb = TurboQuantNormBytes(item.shape);
  const uint64_t cb = TurboQuantCodeBytes(item.shape, item.params.bits);
  if (item.k_norms_bytes != nb || item.v_norms_bytes != nb || item.k_codes_bytes != cb ||
      item.v_codes_bytes != cb) {
    return DataLoss("turboquant gpu: norms/codes are " + std::to_string(item.k_norms_bytes) + "/" +
                    std::to_string(item.k_codes_bytes) + " (K), " + std::to_string(item.v_norms_bytes) + "/" +
                    std::to_string(item.v_codes_bytes) + " (V) bytes, expected " + std::to_string(nb) + "/" +
                    std::to_string(cb));
  }
  if (!item.k_norms || !item.k_codes || !item.v_norms || !item.v_codes) {
    return InvalidArgument("turboquant gpu: null section pointer");
  }
  return internal::CheckDestination("turboquant gpu", args.destination, args.block_size, item, item.shape.tokens);
}

Status CheckEncodeItem(const TurboQuantEncodeArgs& args, const TurboQuantEncodeItem& item) {
  SEQKV_RETURN_IF_ERROR(CheckItemShape(item.shape, item.params));
  if (!item.k_norms || !item.k_codes || !item.v_norms || !item.v_codes) {
    return InvalidArgument("turboquant gpu: null output");
  }
  return internal::CheckSource("turboquant gpu", args.source, args.block_size, item, item.shape.tokens);
}

#ifdef SEQKV_WITH_CUDA

// Workspace: [descriptors][int32 status per item].
uint64_t CudaWorkspaceBytes(size_t items) {
  return internal::AlignUp(items * sizeof(internal::TqDesc)) + internal::AlignUp(items * sizeof(int32_t) + sizeof(int32_t));
}
int32_t* StatusArray(void* workspace, size_t items) {
  return reinterpret_cast<int32_t*>(static_cast<uint8_t*>(workspace) +
                                    internal::AlignUp(items * sizeof(internal::TqDesc)));
}

// The item's shape and group key (d', bits, seed).
void FillItemShape(const KvShape& shape, const TurboQuantParams& params, internal::TqDesc* d) {
  d->layers = shape.layers;
  d->heads = shape.kv_heads;
  d->tokens = shape.tokens;
  d->head_dim = shape.head_dim;
  d->padded = PaddedDim(shape.head_dim);
  d->bits = static_cast<uint32_t>(params.bits);
  d->seed = params.seed;
}

// What a launch group shares: the codebook, the signs, the scales.
internal::TqGroupConsts MakeGroupConsts(uint32_t padded, int bits, uint32_t seed) {
  internal::TqGroupConsts c{};
  c.padded = padded;
  c.bits = static_cast<uint32_t>(bits);
  c.sqrt_padded = static_cast<float>(std::sqrt(static_cast<double>(padded)));
  c.inv_sqrt_padded = static_cast<float>(1.0 / std::sqrt(static_cast<double>(padded)));
  const seqkv::internal::GaussianCodebook& book = seqkv::internal::StandardNormalCodebook(bits);
  for (int i = 0; i < (1 << bits); ++i) c.centroids[i] = book.centroids[i];
  for (int i = 0; i + 1 < (1 << bits); ++i) c.thresholds[i] = book.thresholds[i];
  // Part 0's signs (no split): SplitMix64 from `seed`, one output per 64 coordinates.
  uint64_t state = seed;
  for (uint32_t w = 0; w < (padded + 63) / 64; ++w) c.sign_words[w] = seqkv::internal::SplitMix64(&state);
  if (padded < 64) c.sign_words[0] &= (uint64_t{1} << padded) - 1;
  for (uint32_t i = 0; i < padded && i < static_cast<uint32_t>(internal::kTqLaneCoords); ++i) {
    const bool negative = (c.sign_words[i / 64] >> (i % 64)) & 1;
    c.signed_inv_sqrt[i] = negative ? -c.inv_sqrt_padded : c.inv_sqrt_padded;
    c.sign_masks[i] = negative ? 0x80000000u : 0u;
  }
  return c;
}

// Sorts descriptors into (d', bits, seed) groups, assigns tiles, uploads them
// and launches `launch` per group.
template <typename Launch>
Status UploadAndLaunch(std::vector<internal::TqDesc>& descs, void* workspace, cudaStream_t stream, size_t items,
                       Launch&& launch) {
  auto key = [](const internal::TqDesc& d) { return std::make_tuple(d.padded, d.bits, d.seed); };
  std::stable_sort(descs.begin(), descs.end(),
                   [&](const internal::TqDesc& a, const internal::TqDesc& b) { return key(a) < key(b); });
  struct Group {
    size_t begin, end;
    uint32_t tiles;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < descs.size();) {
    size_t j = i;
    uint32_t tiles = 0;
    const int per_tile = internal::TqVectorsPerTile(static_cast<int>(descs[i].padded / 32));
    while (j < descs.size() && key(descs[j]) == key(descs[i])) {
      descs[j].first_tile = tiles;
      const uint64_t vectors = 2 * uint64_t{descs[j].layers} * descs[j].heads * descs[j].tokens;
      tiles += static_cast<uint32_t>((vectors + per_tile - 1) / per_tile);
      ++j;
    }
    groups.push_back({i, j, tiles});
    i = j;
  }
  auto* device_descs = static_cast<internal::TqDesc*>(workspace);
  int32_t* statuses = StatusArray(workspace, items);
  if (!descs.empty()) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_descs, descs.data(), descs.size() * sizeof(internal::TqDesc),
                                      cudaMemcpyHostToDevice, stream),
                      "descriptor upload");
  }
  SEQKV_CUDA_RETURN(cudaMemsetAsync(statuses, 0, items * sizeof(int32_t), stream), "status reset");
  for (const Group& g : groups) {
    const internal::TqDesc& first = descs[g.begin];
    internal::TqLaunchGroup lg;
    lg.descs = device_descs + g.begin;
    lg.count = static_cast<uint32_t>(g.end - g.begin);
    lg.total_tiles = g.tiles;
    lg.elems_per_lane = static_cast<int>(first.padded / 32);
    lg.bits = static_cast<int>(first.bits);
    lg.consts = MakeGroupConsts(first.padded, lg.bits, first.seed);
    SEQKV_CUDA_RETURN(launch(lg, statuses), "kernel launch");
  }
  return Status::Ok();
}

// What a decode item puts in its descriptor beyond the shape: its sections
// and its destination (contiguous tensors, or the paged caches).
void FillDesc(const TurboQuantDecodeArgs&, const TurboQuantDecodeItem& item, internal::TqDesc* d) {
  d->norms[0] = item.k_norms;
  d->norms[1] = item.v_norms;
  d->codes[0] = item.k_codes;
  d->codes[1] = item.v_codes;
  d->tensors[0] = item.k_out;
  d->tensors[1] = item.v_out;
  d->layer_caches = item.layer_caches;
  d->block_table = item.block_table;
  d->outer_tokens = item.out_tokens;
  d->token_offset = item.token_offset;
}

// An encode item: its bf16 sources (the kernels only read them; TqDesc has one
// pointer pair for both directions) and its outputs.
void FillDesc(const TurboQuantEncodeArgs& args, const TurboQuantEncodeItem& item, internal::TqDesc* d) {
  d->tensors[0] = const_cast<void*>(item.k_in);
  d->tensors[1] = const_cast<void*>(item.v_in);
  if (args.source == KvLayout::kPaged) {  // only read
    d->layer_caches = const_cast<void* const*>(item.layer_caches);
    d->block_table = item.block_table;
    d->block_size = args.block_size;
    d->num_blocks = args.num_blocks;
  }
  d->out_norms[0] = item.k_norms;
  d->out_norms[1] = item.v_norms;
  d->out_codes[0] = item.k_codes;
  d->out_codes[1] = item.v_codes;
  d->outer_tokens = item.in_tokens;
  d->token_offset = item.token_offset;
}

// The launcher of one group: decode picks it by destination layout.
cudaError_t LaunchGroup(const TurboQuantDecodeArgs& args, const internal::TqLaunchGroup& g, int32_t* statuses,
                        cudaStream_t stream) {
  return args.destination == KvDestination::kPaged
             ? internal::LaunchTqDecodePaged(g, args.block_size, args.num_blocks, statuses, stream)
             : internal::LaunchTqDecodeContiguous(g, statuses, stream);
}

cudaError_t LaunchGroup(const TurboQuantEncodeArgs&, const internal::TqLaunchGroup& g, int32_t* statuses,
                        cudaStream_t stream) {
  return internal::LaunchTqEncode(g, statuses, stream);
}

#endif  // SEQKV_WITH_CUDA

// The body that Decode and Encode share: whole-batch checks, per-item host
// checks into `statuses`, then either the CPU reference per item (`cpu`) or,
// on CUDA, one descriptor per item that passed (FillDesc) and one launch per
// group (LaunchGroup). `check` and `cpu` are what differs between the two
// directions on every build; the descriptor and launch parts exist only with
// CUDA, so they are overloads on the item and args types rather than arguments.
template <typename Args, typename Check, typename Cpu>
Status RunBatch(const TurboQuantGpu& gpu, const Args& args, void* workspace, uint64_t workspace_bytes,
                void* stream, std::vector<Status>* statuses, Check&& check, Cpu&& cpu) {
  SEQKV_RETURN_IF_ERROR(gpu.CanImplement(args));
  if (statuses == nullptr) return InvalidArgument("turboquant gpu: statuses is null");
  if (workspace_bytes < gpu.WorkspaceBytes(args)) {
    return InvalidArgument("turboquant gpu: workspace too small");
  }
  statuses->assign(args.items.size(), Status::Ok());
  for (size_t i = 0; i < args.items.size(); ++i) (*statuses)[i] = check(args.items[i]);
  if (gpu.backend() == Backend::kCpu) {
    for (size_t i = 0; i < args.items.size(); ++i) {
      if ((*statuses)[i].ok()) (*statuses)[i] = cpu(args.items[i]);
    }
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  std::vector<internal::TqDesc> descs;
  descs.reserve(args.items.size());
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    internal::TqDesc d{};
    FillItemShape(args.items[i].shape, args.items[i].params, &d);
    FillDesc(args, args.items[i], &d);
    d.status_index = static_cast<uint32_t>(i);
    descs.push_back(d);
  }
  auto s = static_cast<cudaStream_t>(stream);
  return UploadAndLaunch(descs, workspace, s, args.items.size(),
                         [&](const internal::TqLaunchGroup& g, int32_t* st) {
                           return LaunchGroup(args, g, st, s);
                         });
#else
  (void)workspace;
  (void)stream;
  return Internal("turboquant gpu: built without CUDA");
#endif
}

}  // namespace

Result<TurboQuantParams> ParseTurboQuantSpec(std::string_view spec) {
  SEQKV_ASSIGN_OR_RETURN(CodecSpec parsed, ParseCodecSpec(spec));
  if (parsed.name != "turboquant") return InvalidArgument("turboquant gpu: not a turboquant spec: " + std::string(spec));
  // The codec itself validates the parameters (and rejects what it does not know).
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(parsed.ToString()));
  (void)codec;
  TurboQuantParams params;
  auto bits = parsed.params.find("bits");
  if (bits != parsed.params.end()) {
    if (bits->second.find('.') != std::string::npos) {
      return Unimplemented("turboquant gpu: half-step widths (outlier split) are not implemented yet");
    }
    params.bits = std::stoi(bits->second);
  }
  auto outliers = parsed.params.find("outliers");
  if (outliers != parsed.params.end() && outliers->second != "0") {
    return Unimplemented("turboquant gpu: the outlier split is not implemented yet");
  }
  auto seed = parsed.params.find("seed");
  if (seed != parsed.params.end()) params.seed = static_cast<uint32_t>(std::stoull(seed->second));
  return params;
}

uint64_t TurboQuantNormBytes(const KvShape& shape) { return shape.vectors() * 2; }

uint64_t TurboQuantCodeBytes(const KvShape& shape, int bits) {
  return (shape.vectors() * PaddedDim(shape.head_dim) * static_cast<uint64_t>(bits) + 7) / 8;
}

Result<TurboQuantDecodeItem> MakeDecodeItem(const ChunkHeader& header, const uint8_t* chunk_base) {
  if (header.codec_id != CodecId::kTurboQuant) return InvalidArgument("turboquant gpu: not a turboquant chunk");
  if (header.dtype != DType::kBF16) return Unimplemented("turboquant gpu: only bf16 chunks");
  if (header.flags != 0) return FailedPrecondition("turboquant gpu: chunk needs context");
  SEQKV_ASSIGN_OR_RETURN(TurboQuantParams params, ParseTurboQuantSpec(header.codec_spec));
  if (header.sections.size() != 4) {
    return DataLoss("turboquant gpu: " + std::to_string(header.sections.size()) + " sections, expected 4");
  }
  for (uint32_t i = 0; i < 4; ++i) {
    if (header.sections[i].type != i + 1) return DataLoss("turboquant gpu: unexpected section type");
  }
  TurboQuantDecodeItem item;
  item.params = params;
  item.shape = header.shape;
  const auto& s = header.sections;
  item.k_norms = chunk_base + s[0].offset;
  item.k_norms_bytes = s[0].length;
  item.k_codes = chunk_base + s[1].offset;
  item.k_codes_bytes = s[1].length;
  item.v_norms = chunk_base + s[2].offset;
  item.v_norms_bytes = s[2].length;
  item.v_codes = chunk_base + s[3].offset;
  item.v_codes_bytes = s[3].length;
  return item;
}

TurboQuantGpu TurboQuantGpu::Create() {
  return TurboQuantGpu(DefaultBackend());
}

Result<TurboQuantGpu> TurboQuantGpu::CreateFor(Backend backend) {
  SEQKV_RETURN_IF_ERROR(RequireBackend(backend, "turboquant gpu"));
  return TurboQuantGpu(backend);
}

Status TurboQuantGpu::CanImplement(const TurboQuantDecodeArgs& args) const {
  if (args.destination == KvDestination::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("turboquant gpu: paged destination needs block_size and num_blocks");
  }
  if (args.items.size() > (1u << 24)) return InvalidArgument("turboquant gpu: too many items in one batch");
  return Status::Ok();
}

Status TurboQuantGpu::CanImplement(const TurboQuantEncodeArgs& args) const {
  if (args.items.size() > (1u << 24)) return InvalidArgument("turboquant gpu: too many items in one batch");
  if (args.source == KvLayout::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("turboquant gpu: paged source needs block_size and num_blocks");
  }
  return Status::Ok();
}

uint64_t TurboQuantGpu::WorkspaceBytes(const TurboQuantDecodeArgs& args) const {
#ifdef SEQKV_WITH_CUDA
  if (backend_ == Backend::kCuda) return CudaWorkspaceBytes(args.items.size());
#endif
  (void)args;
  return 0;
}

uint64_t TurboQuantGpu::WorkspaceBytes(const TurboQuantEncodeArgs& args) const {
#ifdef SEQKV_WITH_CUDA
  if (backend_ == Backend::kCuda) return CudaWorkspaceBytes(args.items.size());
#endif
  (void)args;
  return 0;
}

Status TurboQuantGpu::Decode(const TurboQuantDecodeArgs& args, void* workspace, uint64_t workspace_bytes,
                             void* stream, std::vector<Status>* statuses) const {
  return RunBatch(
      *this, args, workspace, workspace_bytes, stream, statuses,
      [&](const TurboQuantDecodeItem& item) { return CheckDecodeItem(args, item); },
      [&](const TurboQuantDecodeItem& item) { return internal::CpuDecodeItem(args, item); });
}

Status TurboQuantGpu::Encode(const TurboQuantEncodeArgs& args, void* workspace, uint64_t workspace_bytes,
                             void* stream, std::vector<Status>* statuses) const {
  return RunBatch(
      *this, args, workspace, workspace_bytes, stream, statuses,
      [&](const TurboQuantEncodeItem& item) { return CheckEncodeItem(args, item); },
      [&](const TurboQuantEncodeItem& item) { return internal::CpuEncodeItem(args, item); });
}

Status TurboQuantGpu::CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses) const {
  if (statuses == nullptr) return InvalidArgument("turboquant gpu: statuses is null");
  if (backend_ == Backend::kCpu || statuses->empty()) return Status::Ok();
#ifdef SEQKV_WITH_CUDA
  auto s = static_cast<cudaStream_t>(stream);
  std::vector<int32_t> codes(statuses->size());
  SEQKV_CUDA_RETURN(cudaMemcpyAsync(codes.data(), StatusArray(const_cast<void*>(workspace), codes.size()),
                                    codes.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
                    "status download");
  SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
  for (size_t i = 0; i < codes.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    switch (codes[i]) {
      case internal::kTqOk: break;
      case internal::kTqBadStoredNorm: (*statuses)[i] = DataLoss("turboquant gpu: invalid stored norm"); break;
      case internal::kTqBlockOutOfRange:
        (*statuses)[i] = OutOfRange("turboquant gpu: block table entry outside [0, num_blocks)");
        break;
      case internal::kTqNonFiniteInput:
        (*statuses)[i] = InvalidArgument("turboquant gpu: non-finite value (NaN or Inf) in the input");
        break;
      case internal::kTqNormOverflow:
        (*statuses)[i] = InvalidArgument("turboquant gpu: vector norm exceeds the fp16 range");
        break;
      default: (*statuses)[i] = Internal("turboquant gpu: unknown device status"); break;
    }
  }
  return Status::Ok();
#else
  (void)workspace;
  (void)stream;
  return Internal("turboquant gpu: built without CUDA");
#endif
}

Result<void*> TurboQuantGpu::Allocate(uint64_t bytes) const { return BackendAllocate(backend_, bytes); }

void TurboQuantGpu::Free(void* p) const { BackendFree(backend_, p); }

Status TurboQuantGpu::CopyIn(void* dst, const void* host_src, uint64_t bytes) const {
  return BackendCopyIn(backend_, dst, host_src, bytes);
}

Status TurboQuantGpu::CopyOut(void* host_dst, const void* src, uint64_t bytes) const {
  return BackendCopyOut(backend_, host_dst, src, bytes);
}

Status TurboQuantGpu::Fill(void* dst, uint8_t value, uint64_t bytes) const { return BackendFill(backend_, dst, value, bytes); }

}  // namespace seqkv::gpu
