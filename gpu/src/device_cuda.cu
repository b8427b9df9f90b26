// CUDA device probe. Compiled as C++17 by nvcc.
#include <cuda_runtime.h>

#include "seqkv/gpu/device.h"

namespace seqkv::gpu {

DeviceInfo ProbeCudaDevices() {
  DeviceInfo info;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count <= 0) {
    info.reason = err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device";
    cudaGetLastError();  // clear the sticky error
    return info;
  }
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) {
    info.reason = cudaGetErrorString(err);
    return info;
  }
  info.available = true;
  info.device_count = count;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  return info;
}

}  // namespace seqkv::gpu
