// What the seq codec's GPU API tests share (tests/gpu/seq_decode_gpu_test.cc,
// seq_encode_gpu_test.cc): the dev dumps (calibration doc00, test doc05),
// loaded once per suite; one profile per predictor-input kind, calibrated
// once per suite; tests parameterized by (backend, inputs), CUDA cases
// skipping cleanly without a device.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/backend.h"
#include "seqkv/gpu/device.h"
#include "util/test_util.h"

namespace seqkv::test {

class SeqGpuTestBase : public ::testing::TestWithParam<std::tuple<gpu::Backend, std::string>> {
 protected:
  static void SetUpTestSuite() {
    const std::string cal = DevDump("doc00.safetensors");
    const std::string test = DevDump("doc05.safetensors");
    if (cal.empty() || test.empty()) return;
    auto a = ReadKvDump(cal);
    auto b = ReadKvDump(test);
    ASSERT_TRUE(a.ok() && b.ok());
    calibration_ = new Chunk(a->chunk);
    test_ = new Chunk(b->chunk);
  }
  static void TearDownTestSuite() {
    delete calibration_;
    delete test_;
    calibration_ = test_ = nullptr;
    profiles_.clear();
  }

  // One calibration per (predictor inputs, sensitivities) for the suite (the
  // sanitizer build runs these tests ~10x slower). With `sensitivities`, made
  // up uneven ones, so that kl= runs and the proxy weighs groups differently.
  static std::shared_ptr<const SeqProfile> ProfileFor(const std::string& inputs, bool sensitivities) {
    const auto key = std::make_pair(inputs, sensitivities);
    auto it = profiles_.find(key);
    if (it != profiles_.end()) return it->second;
    SeqCalibrateOptions o;
    o.inputs = *ParseSeqInputs(inputs);
    if (sensitivities) {
      const uint32_t groups = calibration_->shape.layers * 2 * calibration_->shape.kv_heads;
      for (uint32_t g = 0; g < groups; ++g) o.sensitivity.push_back(1e-3 * (0.5 + 0.25 * (g % 5)));
    }
    auto profile = CalibrateSeqProfile({*calibration_}, o, nullptr);
    EXPECT_TRUE(profile.ok()) << profile.status().ToString();
    if (!profile.ok()) return nullptr;
    return profiles_[key] = std::make_shared<const SeqProfile>(*profile);
  }

  // Skips without the dumps or (CUDA cases) a device; else sets profile_ and
  // makes it the only registered profile. Call first in SetUp.
  void SetUpProfile(bool sensitivities) {
    if (calibration_ == nullptr) GTEST_SKIP() << "no ../shared/kvdata/dev";
    if (backend() == gpu::Backend::kCuda && !gpu::ProbeDevices().available) {
      GTEST_SKIP() << gpu::ProbeDevices().reason;
    }
    profile_ = ProfileFor(std::get<1>(GetParam()), sensitivities);
    ASSERT_NE(profile_, nullptr);
    SeqResources::Default().Clear();
    SeqResources::Default().AddProfile(profile_);
  }
  void TearDown() override { SeqResources::Default().Clear(); }

  gpu::Backend backend() const { return std::get<0>(GetParam()); }

  static inline Chunk* calibration_ = nullptr;
  static inline Chunk* test_ = nullptr;
  static inline std::map<std::pair<std::string, bool>, std::shared_ptr<const SeqProfile>> profiles_;
  std::shared_ptr<const SeqProfile> profile_;
};

// "Cpu_same", "Cuda_all", ... for INSTANTIATE_TEST_SUITE_P.
inline std::string SeqGpuCaseName(const ::testing::TestParamInfo<std::tuple<gpu::Backend, std::string>>& info) {
  return std::string(std::get<0>(info.param) == gpu::Backend::kCpu ? "Cpu" : "Cuda") + "_" + std::get<1>(info.param);
}

// The host-thread setting of SeqEncodeGpu or SeqDecodeGpu: a default of 1 to
// 8, a value as set, and 0 restoring the default.
template <typename Api>
void ExpectHostThreadsSetting(Api& api) {
  const uint32_t fallback = api.host_threads();
  EXPECT_GE(fallback, 1u);
  EXPECT_LE(fallback, 8u);
  api.SetHostThreads(3);
  EXPECT_EQ(api.host_threads(), 3u);
  api.SetHostThreads(0);
  EXPECT_EQ(api.host_threads(), fallback);
}

}  // namespace seqkv::test
