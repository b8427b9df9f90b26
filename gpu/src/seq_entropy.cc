// SeqEntropyGpu: argument checks, the backend choice, the CPU path (the
// codec's SeqDecodeGroup) and the CUDA launch path (descriptors and the
// per-group model area in the workspace, one launch per call).
#include "seqkv/gpu/seq_entropy.h"

#include <algorithm>
#include <string>

#include "gpu_util.h"
// The codec's reference decoder: codec/src is a private include path of gpu/
// (gpu/CMakeLists.txt).
#include "seq_lossy_core.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>

#include "seq_entropy_kernels.h"
#endif

namespace seqkv::gpu {

namespace {

[[maybe_unused]] constexpr char kWho[] = "seq entropy gpu";  // CUDA builds: SEQKV_CUDA_RETURN
constexpr uint64_t kMaxItems = uint64_t{1} << 24;

Status CheckItem(const SeqEntropyItem& item) {
  if (item.dim == 0 || item.dim > kSeqEntropyMaxDim) {
    return InvalidArgument("seq entropy gpu: dim " + std::to_string(item.dim) + " (want 1.." +
                           std::to_string(kSeqEntropyMaxDim) + ")");
  }
  if (item.stream == nullptr && item.stream_bytes != 0)
    return InvalidArgument("seq entropy gpu: null stream");
  if (item.q_out == nullptr && item.tokens != 0) return InvalidArgument("seq entropy gpu: null q_out");
  return Status::Ok();
}

#ifdef SEQKV_WITH_CUDA

// One group's models in the global-model area: 16-byte aligned for the
// kernels' uint4 accesses.
uint64_t GlobalModelBytes(uint32_t dim) {
  return internal::AlignUp(uint64_t{dim} * internal::kSeGroupBytesPerDim, 16);
}

// The shared-model kernel's threads per block: the groups whose models fit in
// half an SM's shared memory (two blocks per SM), at most a warp.
uint32_t SharedThreads(uint32_t max_dim) {
  static const int per_block = [] {
    int bytes = 0;
    if (internal::SeSharedMemoryPerBlock(&bytes) != cudaSuccess) {
      cudaGetLastError();
      bytes = 48 << 10;
    }
    return bytes;
  }();
  const uint64_t budget =
      std::max<uint64_t>(static_cast<uint64_t>(per_block) / 2, internal::SeSharedStride(max_dim));
  return static_cast<uint32_t>(std::clamp<uint64_t>(budget / internal::SeSharedStride(max_dim), 1, 32));
}

uint32_t MaxDim(const SeqEntropyDecodeArgs& args) {
  uint32_t m = 1;
  for (const SeqEntropyItem& it : args.items) {
    if (it.dim <= kSeqEntropyMaxDim) m = std::max(m, it.dim);
  }
  return m;
}

// kAuto: shared-memory models while the batch fits in two waves of resident
// groups, the global-model kernel beyond. Measured on the H200 (docs/gpu.md):
// one wave of the shared kernel runs in about the time of one group's chain,
// ~3x faster per group than the global kernel at that size, so it stays ahead
// up to ~2 waves (TinyLlama 8192 groups, 1.8 waves: 17.7 vs 25.5 ms); at ~4
// waves the global kernel, which keeps every group in flight, wins (Llama
// 8192 groups: 51 vs 60 ms).
SeqEntropyKernel Resolve(const SeqEntropyDecodeArgs& args) {
  if (args.kernel != SeqEntropyKernel::kAuto) return args.kernel;
  const uint32_t threads = SharedThreads(MaxDim(args));
  const uint64_t resident = uint64_t{threads} * 2 * internal::SeSmCount();  // two blocks per SM
  return args.items.size() <= 2 * resident ? SeqEntropyKernel::kSharedModels
                                           : SeqEntropyKernel::kGlobalModels;
}

// Workspace: [descriptors][int32 status per item][global-model area].
struct Layout {
  uint64_t descs = 0, statuses = 0, models = 0, total = 0;
};
Layout MakeLayout(const SeqEntropyDecodeArgs& args, SeqEntropyKernel kernel) {
  Layout l;
  const uint64_t n = args.items.size();
  l.descs = 0;
  l.statuses = internal::AlignUp(n * sizeof(internal::SeDesc));
  l.models = l.statuses + internal::AlignUp(n * sizeof(int32_t) + sizeof(int32_t));
  uint64_t model_bytes = 0;
  if (kernel == SeqEntropyKernel::kGlobalModels) {
    for (const SeqEntropyItem& it : args.items) {
      if (it.dim >= 1 && it.dim <= kSeqEntropyMaxDim) model_bytes += GlobalModelBytes(it.dim);
    }
  }
  l.total = l.models + internal::AlignUp(model_bytes);
  return l;
}

int32_t* StatusArray(void* workspace, size_t items) {
  return reinterpret_cast<int32_t*>(static_cast<uint8_t*>(workspace) +
                                    internal::AlignUp(items * sizeof(internal::SeDesc)));
}

#endif  // SEQKV_WITH_CUDA

}  // namespace

SeqEntropyGpu SeqEntropyGpu::Create() {
  return SeqEntropyGpu(DefaultBackend());
}

Result<SeqEntropyGpu> SeqEntropyGpu::CreateFor(Backend backend) {
  SEQKV_RETURN_IF_ERROR(RequireBackend(backend, "seq entropy gpu"));
  return SeqEntropyGpu(backend);
}

Status SeqEntropyGpu::CanImplement(const SeqEntropyDecodeArgs& args) const {
  if (args.items.size() > kMaxItems) return InvalidArgument("seq entropy gpu: too many items in one batch");
  return Status::Ok();
}

uint64_t SeqEntropyGpu::WorkspaceBytes(const SeqEntropyDecodeArgs& args) const {
#ifdef SEQKV_WITH_CUDA
  if (backend() == Backend::kCuda) return MakeLayout(args, Resolve(args)).total;
#endif
  (void)args;
  return 0;
}

Status SeqEntropyGpu::Decode(const SeqEntropyDecodeArgs& args, void* workspace, uint64_t workspace_bytes,
                             void* stream, std::vector<Status>* statuses) const {
  SEQKV_RETURN_IF_ERROR(CanImplement(args));
  if (statuses == nullptr) return InvalidArgument("seq entropy gpu: statuses is null");
  if (workspace_bytes < WorkspaceBytes(args)) return InvalidArgument("seq entropy gpu: workspace too small");
  statuses->assign(args.items.size(), Status::Ok());
  for (size_t i = 0; i < args.items.size(); ++i) (*statuses)[i] = CheckItem(args.items[i]);
  if (backend() == Backend::kCpu) {
    for (size_t i = 0; i < args.items.size(); ++i) {
      if (!(*statuses)[i].ok()) continue;
      const SeqEntropyItem& it = args.items[i];
      (*statuses)[i] = seqkv::internal::SeqDecodeGroup(std::span<const uint8_t>(it.stream, it.stream_bytes),
                                                       it.tokens, it.dim, it.q_out);
    }
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  const SeqEntropyKernel kernel = Resolve(args);
  const Layout layout = MakeLayout(args, kernel);
  std::vector<internal::SeDesc> descs;
  descs.reserve(args.items.size());
  uint64_t model_offset = 0;
  uint32_t max_dim = 1;
  for (size_t i = 0; i < args.items.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    const SeqEntropyItem& it = args.items[i];
    internal::SeDesc d{};
    d.stream = it.stream;
    d.stream_bytes = it.stream_bytes;
    d.q = it.q_out;
    d.tokens = it.tokens;
    d.dim = it.dim;
    d.status_index = static_cast<uint32_t>(i);
    if (kernel == SeqEntropyKernel::kGlobalModels) {
      d.models_offset = model_offset;
      model_offset += GlobalModelBytes(it.dim);
    }
    max_dim = std::max(max_dim, it.dim);
    descs.push_back(d);
  }
  auto s = static_cast<cudaStream_t>(stream);
  auto* base = static_cast<uint8_t*>(workspace);
  auto* device_descs = reinterpret_cast<internal::SeDesc*>(base + layout.descs);
  int32_t* device_statuses = StatusArray(workspace, args.items.size());
  if (!descs.empty()) {
    SEQKV_CUDA_RETURN(cudaMemcpyAsync(device_descs, descs.data(), descs.size() * sizeof(internal::SeDesc),
                                      cudaMemcpyHostToDevice, s),
                      "descriptor upload");
  }
  if (!args.items.empty()) {
    SEQKV_CUDA_RETURN(cudaMemsetAsync(device_statuses, 0, args.items.size() * sizeof(int32_t), s),
                      "status reset");
  }
  internal::SeLaunch launch{};
  launch.descs = device_descs;
  launch.count = static_cast<uint32_t>(descs.size());
  launch.models = base + layout.models;
  launch.max_dim = max_dim;
  if (kernel == SeqEntropyKernel::kSharedModels) {
    launch.threads = SharedThreads(max_dim);
    SEQKV_CUDA_RETURN(internal::LaunchSeDecodeShared(launch, device_statuses, s), "kernel launch");
  } else {
    launch.threads = 0;  // the launcher's choice
    SEQKV_CUDA_RETURN(internal::LaunchSeDecodeGlobal(launch, device_statuses, s), "kernel launch");
  }
  return Status::Ok();
#else
  (void)workspace;
  (void)stream;
  return Internal("seq entropy gpu: built without CUDA");
#endif
}

Status SeqEntropyGpu::CollectStatuses(const void* workspace, void* stream,
                                      std::vector<Status>* statuses) const {
  if (statuses == nullptr) return InvalidArgument("seq entropy gpu: statuses is null");
  if (backend() == Backend::kCpu || statuses->empty()) return Status::Ok();
#ifdef SEQKV_WITH_CUDA
  auto s = static_cast<cudaStream_t>(stream);
  std::vector<int32_t> codes(statuses->size());
  SEQKV_CUDA_RETURN(cudaMemcpyAsync(codes.data(), StatusArray(const_cast<void*>(workspace), codes.size()),
                                    codes.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
                    "status download");
  SEQKV_CUDA_RETURN(cudaStreamSynchronize(s), "stream synchronize");
  for (size_t i = 0; i < codes.size(); ++i) {
    if (!(*statuses)[i].ok()) continue;
    // The messages are SeqDecodeGroup's.
    switch (codes[i]) {
      case internal::kSeOk:
        break;
      case internal::kSeTruncatedHeader:
        (*statuses)[i] = DataLoss("seq: group stream truncated");
        break;
      case internal::kSeBadBitmap:
        (*statuses)[i] = DataLoss("seq: bad component bitmap");
        break;
      case internal::kSeBadLanes:
        (*statuses)[i] = DataLoss("seq: bad lane count");
        break;
      case internal::kSeTrailingBytes:
        (*statuses)[i] = DataLoss("seq: trailing bytes in group stream");
        break;
      case internal::kSeBadState:
        (*statuses)[i] = DataLoss("seq: bad rANS state");
        break;
      case internal::kSeOddWords:
        (*statuses)[i] = DataLoss("seq: odd rANS word bytes");
        break;
      case internal::kSeCorrupt:
        (*statuses)[i] = DataLoss("seq: group stream truncated or corrupt");
        break;
      case internal::kSeEmptyComponent:
        (*statuses)[i] = DataLoss("seq: a coded component has no non-zero symbol");
        break;
      case internal::kSeFinalState:
        (*statuses)[i] = DataLoss("seq: rANS final state mismatch (corrupt stream)");
        break;
      default:
        (*statuses)[i] = Internal("seq entropy gpu: unknown device status");
        break;
    }
  }
  return Status::Ok();
#else
  (void)workspace;
  (void)stream;
  return Internal("seq entropy gpu: built without CUDA");
#endif
}

}  // namespace seqkv::gpu
