// GPU discovery. The store never needs a GPU: every failure to find or use
// one (no driver, no device, no CUDA build) reads as "no GPU".
#pragma once

#include <string>

namespace seqkv::gpu {

struct DeviceInfo {
  bool available = false;
  int device_count = 0;
  std::string name;        // of device 0
  int compute_major = 0;   // of device 0
  int compute_minor = 0;
  std::string reason;      // why not available
};

// Probes once per call; cheap enough for start-up. Thread-safe.
DeviceInfo ProbeDevices();

// True when this build has CUDA support compiled in.
bool BuiltWithCuda();

}  // namespace seqkv::gpu
