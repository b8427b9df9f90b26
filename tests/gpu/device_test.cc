// GPU tests (label "gpu") skip cleanly when no GPU is present, as in CI.
#include "seqkv/gpu/device.h"

#include <gtest/gtest.h>

namespace seqkv::gpu {
namespace {

TEST(GpuDeviceTest, ProbeNeverFailsAndReportsWhy) {
  DeviceInfo info = ProbeDevices();
  if (!info.available) {
    EXPECT_FALSE(info.reason.empty());
    GTEST_SKIP() << "no GPU: " << info.reason;
  }
  EXPECT_GT(info.device_count, 0);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GE(info.compute_major, 7);
}

}  // namespace
}  // namespace seqkv::gpu
