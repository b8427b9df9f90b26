// GPU tests (label "gpu") skip cleanly when no GPU is present, as in CI.
#include "seqkv/gpu/device.h"

#include <gtest/gtest.h>

#include <string>

#include "seqkv/gpu/backend.h"
#include "seqkv/gpu/lossless.h"
#include "seqkv/gpu/seq_entropy.h"
#include "seqkv/gpu/turboquant.h"

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

// Runs with and without a GPU: what Create() picks and what CreateFor(kCuda)
// answers follow the probe, and kCpu is always there.
TEST(GpuDeviceTest, BackendChoiceFollowsTheProbe) {
  const DeviceInfo info = ProbeDevices();
  EXPECT_EQ(DefaultBackend(), info.available ? Backend::kCuda : Backend::kCpu);
  EXPECT_TRUE(RequireBackend(Backend::kCpu, "test api").ok());
  const Status cuda = RequireBackend(Backend::kCuda, "test api");
  if (info.available) {
    EXPECT_TRUE(cuda.ok()) << cuda.ToString();
  } else {
    EXPECT_EQ(cuda.code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(cuda.message(), "test api: no CUDA device: " + info.reason);
  }
  EXPECT_EQ(TurboQuantGpu::CreateFor(Backend::kCuda).ok(), info.available);
  EXPECT_EQ(LosslessGpu::CreateFor(Backend::kCuda).ok(), info.available);
  EXPECT_EQ(SeqEntropyGpu::CreateFor(Backend::kCuda).ok(), info.available);
  EXPECT_TRUE(TurboQuantGpu::CreateFor(Backend::kCpu).ok());
  EXPECT_TRUE(LosslessGpu::CreateFor(Backend::kCpu).ok());
  EXPECT_TRUE(SeqEntropyGpu::CreateFor(Backend::kCpu).ok());
  EXPECT_EQ(TurboQuantGpu::Create().backend(), DefaultBackend());
  EXPECT_EQ(LosslessGpu::Create().backend(), DefaultBackend());
  EXPECT_EQ(SeqEntropyGpu::Create().backend(), DefaultBackend());
}

}  // namespace
}  // namespace seqkv::gpu
