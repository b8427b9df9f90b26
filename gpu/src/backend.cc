#include "seqkv/gpu/backend.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "gpu_util.h"
#include "seqkv/gpu/device.h"

namespace seqkv::gpu {

namespace {

constexpr char kWho[] = "gpu";

[[maybe_unused]] Status NoCuda() { return Internal(std::string(kWho) + ": built without CUDA"); }

}  // namespace

Backend DefaultBackend() { return ProbeDevices().available ? Backend::kCuda : Backend::kCpu; }

Status RequireBackend(Backend backend, std::string_view api) {
  if (backend == Backend::kCpu) return Status::Ok();
  const DeviceInfo info = ProbeDevices();
  if (info.available) return Status::Ok();
  return FailedPrecondition(std::string(api) + ": no CUDA device: " + info.reason);
}

Result<void*> BackendAllocate(Backend backend, uint64_t bytes) {
  if (backend == Backend::kCpu) {
    void* p = ::operator new(std::max<uint64_t>(bytes, 1), std::nothrow);
    if (!p) return ResourceExhausted("gpu: host allocation of " + std::to_string(bytes) + " bytes failed");
    return p;
  }
#ifdef SEQKV_WITH_CUDA
  void* p = nullptr;
  SEQKV_RETURN_IF_ERROR(internal::FromCuda(cudaMalloc(&p, std::max<uint64_t>(bytes, 1)), kWho, "cudaMalloc"));
  return p;
#else
  return NoCuda();
#endif
}

void BackendFree(Backend backend, void* p) {
  if (!p) return;
  if (backend == Backend::kCpu) {
    ::operator delete(p);
    return;
  }
#ifdef SEQKV_WITH_CUDA
  cudaFree(p);
#endif
}

Status BackendCopyIn(Backend backend, void* dst, const void* host_src, uint64_t bytes) {
  if (backend == Backend::kCpu) {
    if (bytes) std::memcpy(dst, host_src, bytes);
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  return internal::FromCuda(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), kWho, "copy in");
#else
  return NoCuda();
#endif
}

Status BackendCopyOut(Backend backend, void* host_dst, const void* src, uint64_t bytes) {
  if (backend == Backend::kCpu) {
    if (bytes) std::memcpy(host_dst, src, bytes);
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  return internal::FromCuda(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), kWho, "copy out");
#else
  return NoCuda();
#endif
}

Status BackendFill(Backend backend, void* dst, uint8_t value, uint64_t bytes) {
  if (backend == Backend::kCpu) {
    if (bytes) std::memset(dst, value, bytes);
    return Status::Ok();
  }
#ifdef SEQKV_WITH_CUDA
  return internal::FromCuda(cudaMemset(dst, value, bytes), kWho, "fill");
#else
  return NoCuda();
#endif
}

}  // namespace seqkv::gpu
