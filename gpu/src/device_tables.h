// Private to gpu/'s host code: profile arrays and RoPE tables kept in backend
// memory by the seq codec's GPU APIs (SeqDecodeGpu, SeqEncodeGpu).
#pragma once

#include <cstdint>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu::internal {

// A copy of `values` in backend memory (BackendFree it).
Result<float*> UploadFloats(Backend backend, const std::vector<float>& values);

bool SameRope(const RopeParams& a, const RopeParams& b);

// cos/sin [positions][rotary_dim] of one set of RoPE parameters for positions
// [0, positions), in backend memory, grown on demand (engine_rope.h's tables,
// so rotations match the CPU reference bit for bit).
class DeviceRope {
 public:
  explicit DeviceRope(Backend backend) : backend_(backend) {}
  DeviceRope(const DeviceRope&) = delete;
  DeviceRope& operator=(const DeviceRope&) = delete;
  ~DeviceRope();

  // Makes the table cover `positions` positions of `rope` for heads of head_dim.
  Status Ensure(const RopeParams& rope, uint32_t head_dim, uint32_t positions);

  uint32_t rotary_dim() const { return rotary_dim_; }
  const float* cos() const { return cos_; }
  const float* sin() const { return sin_; }

 private:
  void Release();
  Backend backend_;
  RopeParams params_;
  uint32_t positions_ = 0;
  uint32_t rotary_dim_ = 0;
  float* cos_ = nullptr;
  float* sin_ = nullptr;
};

}  // namespace seqkv::gpu::internal
