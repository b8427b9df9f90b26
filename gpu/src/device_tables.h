// Private to gpu/'s host code: profile arrays and RoPE tables kept in backend
// memory by the seq codec's GPU APIs (SeqDecodeGpu, SeqEncodeGpu).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/codec/status.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::internal {
struct SeqFixedGroup;  // seq_lossy_core.h
}  // namespace seqkv::internal

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

// arith=int12's operands in backend memory, for the int8 tensor-core kernels
// (seq_int12_device.cuh): the profile's fixed-point groups (SeqFixedGroups),
// each int12 n split as n = 64 hi + lo (lo in [-32, 31]) into int8 halves,
// hi then lo, a row per output column with K contiguous:
//   w  predictor [G][blocks][2][d][d] (blocks = (features - 1) / d; null without features)
//   u  forward transform [G][2][d][d] (rows: components)
//   v  reconstruction [G][2][d][d] (rows: channels)
//   exps [G][3]: ew, ev, eu.
struct Int12Tables {
  Backend backend = Backend::kCpu;
  int8_t* w = nullptr;
  int8_t* u = nullptr;
  int8_t* v = nullptr;
  int32_t* exps = nullptr;
  Int12Tables() = default;
  Int12Tables(const Int12Tables&) = delete;
  Int12Tables& operator=(const Int12Tables&) = delete;
  ~Int12Tables();
  // Uploads them once (`fixed`: SeqFixedGroups of `profile`); OK when they are there.
  Status Ensure(Backend b, const SeqProfile& profile, const std::vector<seqkv::internal::SeqFixedGroup>& fixed);
};

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
  // Whether cos and sin hold the same bits at channels j and j + rotary_dim / 2
  // of every position (checked when the table is made).
  bool mirrored() const { return mirrored_; }
  // The same angles as FP16 pairs for the FP16 dense kernels' output stage
  // (cos in the low half, sin in the high, each rounded to nearest even):
  // [positions][half_cols()], half_cols() = rotary_dim / 2 when mirrored()
  // (only the first half's channels), else rotary_dim.
  const uint32_t* cs_half() const { return cs_half_; }
  uint32_t half_cols() const { return mirrored_ ? rotary_dim_ / 2 : rotary_dim_; }

 private:
  void Release();
  Backend backend_;
  RopeParams params_;
  uint32_t positions_ = 0;
  uint32_t rotary_dim_ = 0;
  float* cos_ = nullptr;
  float* sin_ = nullptr;
  uint32_t* cs_half_ = nullptr;
  bool mirrored_ = false;
};

}  // namespace seqkv::gpu::internal
