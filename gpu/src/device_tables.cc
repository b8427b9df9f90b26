#include "device_tables.h"

#include <algorithm>

#include "engine_rope.h"

namespace seqkv::gpu::internal {

Result<void*> UploadBytes(Backend backend, const void* data, uint64_t bytes) {
  SEQKV_ASSIGN_OR_RETURN(void* p, BackendAllocate(backend, bytes));
  const Status s = BackendCopyIn(backend, p, data, bytes);
  if (!s.ok()) {
    BackendFree(backend, p);
    return s;
  }
  return p;
}

bool SameRope(const RopeParams& a, const RopeParams& b) {
  return a.style == b.style && a.theta == b.theta && a.dim == b.dim;
}

DeviceRope::~DeviceRope() { Release(); }

void DeviceRope::Release() {
  BackendFree(backend_, cos_);
  BackendFree(backend_, sin_);
  cos_ = sin_ = nullptr;
  positions_ = 0;
}

Status DeviceRope::Ensure(const RopeParams& rope, uint32_t head_dim, uint32_t positions) {
  if (positions_ >= positions && SameRope(rope, params_)) return Status::Ok();
  // Grow geometrically: a table serves every later chunk of the sequence.
  uint32_t n = std::max<uint32_t>(positions, SameRope(rope, params_) ? 2 * positions_ : 0);
  n = std::min<uint32_t>(std::max<uint32_t>(n, 1024), 1u << 24);
  const seqkv::internal::RopeTable t = seqkv::internal::MakeRopeTable(rope, head_dim, 0, n);
  Release();
  rotary_dim_ = t.rotary_dim;
  if (t.rotary_dim > 0) {
    SEQKV_ASSIGN_OR_RETURN(cos_, UploadFloats(backend_, t.cos));
    SEQKV_ASSIGN_OR_RETURN(sin_, UploadFloats(backend_, t.sin));
  }
  params_ = rope;
  positions_ = n;
  return Status::Ok();
}

}  // namespace seqkv::gpu::internal
