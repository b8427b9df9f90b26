// LosslessGpu: argument checks, the backend choice, the CPU path (the codec's
// reference through the Codec interface) and the CUDA launch path.
#include "seqkv/gpu/lossless.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "gpu_util.h"
#include "kv_layout.h"
#include "lossless_rans.h"
#include "seqkv/codec/codec.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>

#include "lossless_kernels.h"
#endif

namespace seqkv::gpu {

namespace {

constexpr char kWho[] = "lossless gpu";
constexpr char kSpec[] = "lossless:coder=rans";

uint64_t PerLayer(const KvShape& s) { return uint64_t{s.kv_heads} * s.tokens * s.head_dim; }

Status CheckShape(const KvShape& shape) {
  SEQKV_RETURN_IF_ERROR(ValidateShape(shape, DType::kBF16));
  if (PerLayer(shape) > (uint64_t{1} << 31)) {
    return Unimplemented("lossless gpu: a layer of one tensor must hold at most 2^31 elements");
  }
  if (LosslessMaxCodedBytes(shape) >= (uint64_t{1} << 32)) {
    return Unimplemented("lossless gpu: a coded section must stay below 4 GiB");
  }
  return Status::Ok();
}

Status CheckDecodeItem(const LosslessDecodeArgs& args, const LosslessDecodeItem& item) {
  SEQKV_RETURN_IF_ERROR(CheckShape(item.shape));
  const uint64_t n = item.shape.elements();
  for (int kv = 0; kv < 2; ++kv) {
    if (!item.coded[kv] || !item.raw[kv]) return InvalidArgument("lossless gpu: null section pointer");
    if (item.raw_bytes[kv] != n) {
      return DataLoss("lossless gpu: stored plane is " + std::to_string(item.raw_bytes[kv]) + " bytes, expected " +
                      std::to_string(n));
    }
  }
  return internal::CheckDestination(kWho, args.destination, args.block_size, item, item.shape.tokens);
}

Status CheckEncodeItem(const LosslessEncodeArgs& args, const LosslessEncodeItem& item) {
  SEQKV_RETURN_IF_ERROR(CheckShape(item.shape));
  if (!item.coded[0] || !item.coded[1] || !item.raw[0] || !item.raw[1]) {
    return InvalidArgument("lossless gpu: null output");
  }
  return internal::CheckSource(kWho, args.source, args.block_size, item, item.shape.tokens);
}

// Workspace head, the same on both backends: [int32 status per item][u64
// coded size per item and tensor]; on kCuda the launch's arrays follow.
uint64_t StatusBytes(size_t items) { return internal::AlignUp(items * sizeof(int32_t) + sizeof(int32_t)); }
uint64_t SizesBytes(size_t items) { return internal::AlignUp(2 * items * sizeof(uint64_t) + sizeof(uint64_t)); }
uint64_t HeadBytes(size_t items) { return StatusBytes(items) + SizesBytes(items); }
[[maybe_unused]] int32_t* StatusArray(void* ws) { return static_cast<int32_t*>(ws); }
uint64_t* SizesArray(void* ws, size_t items) {
  return reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(ws) + StatusBytes(items));
}

// The CPU path, through the codec's reference.
Status CpuDecodeItem(const LosslessDecodeArgs& args, const LosslessDecodeItem& item) {
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(kSpec));
  const SectionView sections[4] = {
      {0, {item.coded[0], item.coded_bytes[0]}},
      {1, {item.raw[0], item.raw_bytes[0]}},
      {16, {item.coded[1], item.coded_bytes[1]}},
      {17, {item.raw[1], item.raw_bytes[1]}},
  };
  Chunk chunk;
  chunk.shape = item.shape;
  chunk.dtype = DType::kBF16;
  chunk.tokens.assign(item.shape.tokens, 0);
  SEQKV_RETURN_IF_ERROR(codec->Decode(sections, &chunk));
  return internal::ScatterDecoded(kWho, args.destination, args.block_size, args.num_blocks, item, chunk);
}

Status CpuEncodeItem(const LosslessEncodeArgs& args, const LosslessEncodeItem& item, uint64_t sizes[2]) {
  SEQKV_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(kSpec));
  SEQKV_ASSIGN_OR_RETURN(Chunk chunk,
                         internal::GatherInput(item.shape, item, args.source, args.block_size, args.num_blocks));
  std::vector<Section> sections;
  SEQKV_RETURN_IF_ERROR(codec->Encode(chunk, &sections));
  if (sections.size() != 4) return Internal("lossless gpu: reference wrote " + std::to_string(sections.size()) + " sections");
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<uint8_t>& coded = sections[2 * kv].data;
    const std::vector<uint8_t>& raw = sections[2 * kv + 1].data;
    if (coded.size() > LosslessMaxCodedBytes(item.shape) || raw.size() != LosslessRawBytes(item.shape)) {
      return Internal("lossless gpu: unexpected section size from the reference");
    }
    std::memcpy(item.coded[kv], coded.data(), coded.size());
    std::memcpy(item.raw[kv], raw.data(), raw.size());
    sizes[kv] = coded.size();
  }
  return Status::Ok();
}

// What Decode and Encode share before they part: the batch checks, then each
// item's host-side checks into `statuses` (one per item).
template <typename Args, typename Check>
Status StartBatch(const LosslessGpu& gpu, const Args& args, void* workspace, uint64_t workspace_bytes,
                  std::vector<Status>* statuses, Check&& check) {
  SEQKV_RETURN_IF_ERROR(gpu.CanImplement(args));
  if (statuses == nullptr) return InvalidArgument("lossless gpu: statuses is null");
  if (workspace == nullptr || workspace_bytes < gpu.WorkspaceBytes(args)) {
    return InvalidArgument("lossless gpu: workspace too small");
  }
  statuses->assign(args.items.size(), Status::Ok());
  for (size_t i = 0; i < args.items.size(); ++i) (*statuses)[i] = check(args.items[i]);
  return Status::Ok();
}

// The CPU backend: the workspace head cleared, then the reference for every
// item that passed the host checks (cpu(item, index)).
template <typename Items, typename Cpu>
void RunOnCpu(void* workspace, const Items& items, std::vector<Status>* statuses, Cpu&& cpu) {
  std::memset(workspace, 0, HeadBytes(items.size()));
  for (size_t i = 0; i < items.size(); ++i) {
    if ((*statuses)[i].ok()) (*statuses)[i] = cpu(items[i], i);
  }
}

#ifdef SEQKV_WITH_CUDA

struct Totals {
  uint64_t layers = 0, blocks = 0, units = 0;
};

template <typename Item>
Totals Count(std::span<const Item> items) {
  Totals t;
  for (const Item& item : items) {
    const uint64_t bpl = seqkv::internal::LrBlocksOf(PerLayer(item.shape));
    t.layers += item.shape.layers;
    t.blocks += item.shape.layers * bpl;
  }
  return t;
}

// [head][descriptors][meta (decode) | freqs, words (encode)].
uint64_t CudaWorkspaceBytes(size_t items, const Totals& t, bool encode) {
  uint64_t bytes = HeadBytes(items) + internal::AlignUp(items * sizeof(internal::LlDesc));
  if (encode) {
    bytes += internal::AlignUp(2 * t.layers * 256 * sizeof(uint16_t)) + internal::AlignUp(4 * t.blocks * sizeof(uint32_t));
  } else {
    bytes += internal::AlignUp(2 * (t.layers + items) * sizeof(uint32_t));
  }
  return bytes;
}

// Fills the shape fields and the prefixes of a descriptor.
void FillDesc(const KvShape& s, uint32_t warps, Totals* running, internal::LlDesc* d) {
  const uint32_t bpl = static_cast<uint32_t>(seqkv::internal::LrBlocksOf(PerLayer(s)));
  d->layers = s.layers;
  d->heads = s.kv_heads;
  d->tokens = s.tokens;
  d->head_dim = s.head_dim;
  d->blocks_per_layer = bpl;
  d->first_unit = static_cast<uint32_t>(running->units);
  d->first_layer = static_cast<uint32_t>(running->layers);
  d->first_block = static_cast<uint32_t>(running->blocks);
  running->units += internal::LlUnitsOf(s.layers, bpl, warps);
  running->layers += s.layers;
  running->blocks += uint64_t{s.layers} * bpl;
}

// Uploads the descriptors and fills the launch's workspace pointers.
Status Upload(const std::vector<internal::LlDesc>& descs, const Totals& t, uint32_t warps, void* workspace,
              size_t items, bool encode, cudaStream_t stream, internal::LlLaunch* launch) {
  auto* base = static_cast<uint8_t*>(workspace);
  uint64_t at = HeadBytes(items);
  auto* device_descs = reinterpret_cast<internal::LlDesc*>(base + at);
  at += internal::AlignUp(items * sizeof(internal::LlDesc));
  launch->descs = device_descs;
  launch->count = static_cast<uint32_t>(descs.size());
  launch->warps = warps;
  launch->total_units = static_cast<uint32_t>(t.units);
  launch->total_layers = static_cast<uint32_t>(t.layers);
  launch->total_blocks = static_cast<uint32_t>(t.blocks);
  launch->statuses = StatusArray(workspace);
  launch->sizes = SizesArray(workspace, items);
  if (encode) {
    launch->freqs = reinterpret_cast<uint16_t*>(base + at);
    at += internal::AlignUp(2 * t.layers * 256 * sizeof(uint16_t));
    launch->words = reinterpret_cast<uint32_t*>(base + at);
  } else {
    launch->meta = reinterpret_cast<uint32_t*>(base + at);
  }
  if (!descs.empty()) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_descs, descs.data(), descs.size() * sizeof(internal::LlDesc),
                                      cudaMemcpyHostToDevice, stream),
                      "descriptor upload");
  }
  SEQKV_CUDA_RETURN(cudaMemsetAsync(workspace, 0, HeadBytes(items), stream), "status reset");
  return Status::Ok();
}

#endif  // SEQKV_WITH_CUDA

}  // namespace

uint64_t LosslessRawBytes(const KvShape& shape) { return shape.elements(); }

uint64_t LosslessMaxCodedBytes(const KvShape& shape) {
  return seqkv::internal::LrMaxPlaneBytes(shape.layers, PerLayer(shape));
}

Result<LosslessDecodeItem> MakeLosslessDecodeItem(const ChunkHeader& header, const uint8_t* chunk_base) {
  if (header.codec_id != CodecId::kLossless) return InvalidArgument("lossless gpu: not a lossless chunk");
  if (header.codec_spec != kSpec) {
    return Unimplemented("lossless gpu: only " + std::string(kSpec) + " chunks decode on the GPU (this one is " +
                         header.codec_spec + ")");
  }
  if (header.dtype != DType::kBF16) return Unimplemented("lossless gpu: only bf16 chunks");
  if (header.flags != 0) return FailedPrecondition("lossless gpu: chunk needs context");
  if (header.sections.size() != 4) {
    return DataLoss("lossless gpu: " + std::to_string(header.sections.size()) + " sections, expected 4");
  }
  const uint32_t types[4] = {0, 1, 16, 17};
  for (int i = 0; i < 4; ++i) {
    if (header.sections[i].type != types[i]) return DataLoss("lossless gpu: unexpected section type");
  }
  LosslessDecodeItem item;
  item.shape = header.shape;
  for (int kv = 0; kv < 2; ++kv) {
    item.coded[kv] = chunk_base + header.sections[2 * kv].offset;
    item.coded_bytes[kv] = header.sections[2 * kv].length;
    item.raw[kv] = chunk_base + header.sections[2 * kv + 1].offset;
    item.raw_bytes[kv] = header.sections[2 * kv + 1].length;
  }
  return item;
}

LosslessGpu LosslessGpu::Create() { return LosslessGpu(DefaultBackend()); }

Result<LosslessGpu> LosslessGpu::CreateFor(Backend backend) {
  SEQKV_RETURN_IF_ERROR(RequireBackend(backend, "lossless gpu"));
  return LosslessGpu(backend);
}

Status LosslessGpu::CanImplement(const LosslessDecodeArgs& args) const {
  if (args.destination == KvDestination::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("lossless gpu: paged destination needs block_size and num_blocks");
  }
  if (args.items.size() > (1u << 20)) return InvalidArgument("lossless gpu: too many items in one batch");
  return Status::Ok();
}

Status LosslessGpu::CanImplement(const LosslessEncodeArgs& args) const {
  if (args.items.size() > (1u << 20)) return InvalidArgument("lossless gpu: too many items in one batch");
  if (args.source == KvLayout::kPaged && (args.block_size == 0 || args.num_blocks == 0)) {
    return InvalidArgument("lossless gpu: paged source needs block_size and num_blocks");
  }
  return Status::Ok();
}

uint64_t LosslessGpu::WorkspaceBytes(const LosslessDecodeArgs& args) const {
#ifdef SEQKV_WITH_CUDA
  if (backend_ == Backend::kCuda) return CudaWorkspaceBytes(args.items.size(), Count(args.items), false);
#endif
  return HeadBytes(args.items.size());
}

uint64_t LosslessGpu::WorkspaceBytes(const LosslessEncodeArgs& args) const {
#ifdef SEQKV_WITH_CUDA
  if (backend_ == Backend::kCuda) return CudaWorkspaceBytes(args.items.size(), Count(args.items), true);
#endif
  return HeadBytes(args.items.size());
}

Status LosslessGpu::Decode(const LosslessDecodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                           std::vector<Status>* statuses) const {
  SEQKV_RETURN_IF_ERROR(StartBatch(*this, args, workspace, workspace_bytes, statuses,
                                   [&](const LosslessDecodeItem& item) { return CheckDecodeItem(args, item); }));
  if (backend_ == Backend::kCpu) {
    RunOnCpu(workspace, args.items, statuses,
             [&](const LosslessDecodeItem& item, size_t) { return CpuDecodeItem(args, item); });
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  std::vector<internal::LlDesc> descs;
  descs.reserve(args.items.size());
  Totals running;
  uint32_t max_bpl = 1;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if ((*statuses)[i].ok()) {
      max_bpl = std::max(max_bpl, static_cast<uint32_t>(seqkv::internal::LrBlocksOf(PerLayer(args.items[i].shape))));
    }
  }
  const uint32_t warps = internal::LlDecodeWarps(max_bpl);
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    const LosslessDecodeItem& item = args.items[i];
    internal::LlDesc d{};
    FillDesc(item.shape, warps, &running, &d);
    for (int kv = 0; kv < 2; ++kv) {
      d.coded[kv] = item.coded[kv];
      d.coded_bytes[kv] = item.coded_bytes[kv];
      d.raw[kv] = item.raw[kv];
    }
    d.tensors[0] = item.k_out;
    d.tensors[1] = item.v_out;
    d.layer_caches = item.layer_caches;
    d.block_table = item.block_table;
    d.outer_tokens = item.out_tokens;
    d.token_offset = item.token_offset;
    d.status_index = static_cast<uint32_t>(i);
    descs.push_back(d);
  }
  auto s = static_cast<cudaStream_t>(stream);
  internal::LlLaunch launch{};
  SEQKV_RETURN_IF_ERROR(Upload(descs, running, warps, workspace, args.items.size(), false, s, &launch));
  return internal::FromCuda(internal::LaunchLlDecode(launch, args.destination == KvDestination::kPaged, args.block_size,
                                           args.num_blocks, s),
                  kWho, "kernel launch");
#else
  (void)stream;
  return Internal("lossless gpu: built without CUDA");
#endif
}

Status LosslessGpu::Encode(const LosslessEncodeArgs& args, void* workspace, uint64_t workspace_bytes, void* stream,
                           std::vector<Status>* statuses) const {
  SEQKV_RETURN_IF_ERROR(StartBatch(*this, args, workspace, workspace_bytes, statuses,
                                   [&](const LosslessEncodeItem& item) { return CheckEncodeItem(args, item); }));
  if (backend_ == Backend::kCpu) {
    uint64_t* sizes = SizesArray(workspace, args.items.size());
    RunOnCpu(workspace, args.items, statuses,
             [&](const LosslessEncodeItem& item, size_t i) { return CpuEncodeItem(args, item, sizes + 2 * i); });
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  std::vector<internal::LlDesc> descs;
  descs.reserve(args.items.size());
  Totals running;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    const LosslessEncodeItem& item = args.items[i];
    internal::LlDesc d{};
    FillDesc(item.shape, internal::kLlWarpsPerBlock, &running, &d);
    d.tensors[0] = const_cast<void*>(item.k_in);
    d.tensors[1] = const_cast<void*>(item.v_in);
    d.layer_caches = const_cast<void* const*>(item.layer_caches);  // only read
    d.block_table = item.block_table;
    for (int kv = 0; kv < 2; ++kv) {
      d.out_coded[kv] = item.coded[kv];
      d.out_raw[kv] = item.raw[kv];
    }
    d.outer_tokens = item.in_tokens;
    d.token_offset = item.token_offset;
    // Sizes land at the item's own place: status_index doubles as its index.
    d.status_index = static_cast<uint32_t>(i);
    descs.push_back(d);
  }
  auto s = static_cast<cudaStream_t>(stream);
  internal::LlLaunch launch{};
  SEQKV_RETURN_IF_ERROR(
      Upload(descs, running, internal::kLlWarpsPerBlock, workspace, args.items.size(), true, s, &launch));
  launch.src_paged = args.source == KvLayout::kPaged;
  launch.src_block_size = args.block_size;
  launch.src_num_blocks = args.num_blocks;
  return internal::FromCuda(internal::LaunchLlEncode(launch, s), kWho, "kernel launch");
#else
  (void)stream;
  return Internal("lossless gpu: built without CUDA");
#endif
}

Status LosslessGpu::CollectStatuses(const void* workspace, void* stream, std::vector<Status>* statuses,
                                    std::vector<uint64_t>* coded_bytes) const {
  if (statuses == nullptr) return InvalidArgument("lossless gpu: statuses is null");
  const size_t items = statuses->size();
  std::vector<int32_t> codes(items, 0);
  std::vector<uint64_t> sizes(2 * items, 0);
  auto* ws = const_cast<void*>(workspace);
  if (backend_ == Backend::kCpu) {
    if (items) std::memcpy(sizes.data(), SizesArray(ws, items), sizes.size() * sizeof(uint64_t));
  } else {
#ifdef SEQKV_WITH_CUDA
    auto s = static_cast<cudaStream_t>(stream);
    if (items) {
      SEQKV_CUDA_RETURN(cudaMemcpyAsync(codes.data(), StatusArray(ws), items * sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, s),
                        "status download");
      SEQKV_CUDA_RETURN(cudaMemcpyAsync(sizes.data(), SizesArray(ws, items), sizes.size() * sizeof(uint64_t),
                                        cudaMemcpyDeviceToHost, s),
                        "size download");
    }
    SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
#else
    (void)stream;
    return Internal("lossless gpu: built without CUDA");
#endif
  }
  for (size_t i = 0; i < items; ++i) {
    if (!(*statuses)[i].ok()) continue;
    switch (codes[i]) {
      case 0: break;
      case 1: (*statuses)[i] = DataLoss("lossless gpu: corrupt coded section"); break;
      case 2: (*statuses)[i] = OutOfRange("lossless gpu: block table entry outside [0, num_blocks)"); break;
      default: (*statuses)[i] = Internal("lossless gpu: unknown device status"); break;
    }
  }
  if (coded_bytes != nullptr) {
    coded_bytes->assign(2 * items, 0);
    for (size_t i = 0; i < items; ++i) {
      if (!(*statuses)[i].ok()) continue;
      (*coded_bytes)[2 * i] = sizes[2 * i];
      (*coded_bytes)[2 * i + 1] = sizes[2 * i + 1];
    }
  }
  return Status::Ok();
}

}  // namespace seqkv::gpu
