#include "seqkv/gpu/device.h"

namespace seqkv::gpu {

#ifdef SEQKV_WITH_CUDA
DeviceInfo ProbeCudaDevices();  // device_cuda.cu
bool BuiltWithCuda() { return true; }
DeviceInfo ProbeDevices() { return ProbeCudaDevices(); }
#else
bool BuiltWithCuda() { return false; }
DeviceInfo ProbeDevices() {
  DeviceInfo info;
  info.reason = "built without CUDA";
  return info;
}
#endif

}  // namespace seqkv::gpu
