// Private to gpu/'s host code: profile arrays and RoPE tables kept in backend
// memory by the seq codec's GPU APIs (SeqDecodeGpu, SeqEncodeGpu).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::gpu::internal {

// A copy of `bytes` bytes in backend memory (BackendFree it).
Result<void*> UploadBytes(Backend backend, const void* data, uint64_t bytes);
// A copy of `values` in backend memory (BackendFree it).
template <typename T>
Result<T*> Upload(Backend backend, const std::vector<T>& values) {
  SEQKV_ASSIGN_OR_RETURN(void* p, UploadBytes(backend, values.data(), values.size() * sizeof(T)));
  return static_cast<T*>(p);
}
inline Result<float*> UploadFloats(Backend backend, const std::vector<float>& values) {
  return Upload<float>(backend, values);
}

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

  // The one set of RoPE parameters of a batch, for a codec that codes keys
  // before RoPE (`rope_keys`): the first rotated item's; items (with an OK
  // status) that rotate with other parameters get UNIMPLEMENTED ("`who`: one
  // batch takes one set of RoPE parameters"). Makes the table cover every
  // item's positions; returns the parameters (null: nothing rotates).
  template <typename Items>
  Result<const RopeParams*> ForBatch(const Items& items, bool rope_keys, uint32_t head_dim, const char* who,
                                     std::vector<Status>* statuses) {
    const RopeParams* rope = nullptr;
    uint32_t positions = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& item = items[i];
      if (!(*statuses)[i].ok() || !rope_keys || item.rope.style == RopeStyle::kNone) continue;
      if (rope == nullptr) rope = &item.rope;
      if (!SameRope(item.rope, *rope)) {
        (*statuses)[i] = Unimplemented(std::string(who) + ": one batch takes one set of RoPE parameters");
        continue;
      }
      positions = std::max<uint32_t>(positions, static_cast<uint32_t>(item.first_position + item.shape.tokens));
    }
    if (rope != nullptr) SEQKV_RETURN_IF_ERROR(Ensure(*rope, head_dim, positions));
    return rope;
  }

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
