#include "device_tables.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine_rope.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/dtype.h"

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
  BackendFree(backend_, cs_half_);
  cos_ = sin_ = nullptr;
  cs_half_ = nullptr;
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
  mirrored_ = t.rotary_dim % 2 == 0;
  const uint32_t half = t.rotary_dim / 2;
  for (size_t at = 0; mirrored_ && at + t.rotary_dim <= t.cos.size(); at += t.rotary_dim) {
    mirrored_ = std::memcmp(&t.cos[at], &t.cos[at + half], half * sizeof(float)) == 0 &&
                std::memcmp(&t.sin[at], &t.sin[at + half], half * sizeof(float)) == 0;
  }
  if (t.rotary_dim > 0) {
    SEQKV_ASSIGN_OR_RETURN(cos_, UploadFloats(backend_, t.cos));
    SEQKV_ASSIGN_OR_RETURN(sin_, UploadFloats(backend_, t.sin));
    const uint32_t cols = half_cols();
    std::vector<uint32_t> cs(size_t{n} * cols);
    for (size_t pos = 0; pos < n; ++pos) {
      for (uint32_t j = 0; j < cols; ++j) {
        const size_t at = pos * t.rotary_dim + j;
        cs[pos * cols + j] = uint32_t{FloatToHalf(t.cos[at])} | uint32_t{FloatToHalf(t.sin[at])} << 16;
      }
    }
    SEQKV_ASSIGN_OR_RETURN(cs_half_, Upload<uint32_t>(backend_, cs));
  }
  params_ = rope;
  positions_ = n;
  return Status::Ok();
}

Int12Tables::~Int12Tables() {
  BackendFree(backend, w);
  BackendFree(backend, u);
  BackendFree(backend, v);
  BackendFree(backend, exps);
}

Status Int12Tables::Ensure(Backend b, const SeqProfile& p, const std::vector<seqkv::internal::SeqFixedGroup>& fixed) {
  if (v != nullptr) return Status::Ok();
  backend = b;
  const uint32_t d = p.head_dim, G = p.groups(), blocks = (p.features() - 1) / d;
  const size_t dd = size_t{d} * d;
  // m [k][n] (or [n][k] when `by_rows`) into hi, lo [n][k].
  auto split = [&](const int16_t* m, bool by_rows, int8_t* hi, int8_t* lo) {
    for (uint32_t k = 0; k < d; ++k) {
      for (uint32_t n = 0; n < d; ++n) {
        const int32_t x = by_rows ? m[size_t{n} * d + k] : m[size_t{k} * d + n];
        const int32_t h = (x + 32) >> 6;
        hi[size_t{n} * d + k] = static_cast<int8_t>(h);
        lo[size_t{n} * d + k] = static_cast<int8_t>(x - h * 64);
      }
    }
  };
  std::vector<int8_t> hw(size_t{G} * blocks * 2 * dd), hu(size_t{G} * 2 * dd), hv(size_t{G} * 2 * dd);
  std::vector<int32_t> he(size_t{G} * 3);
  for (uint32_t g = 0; g < G; ++g) {
    for (uint32_t blk = 0; blk < blocks; ++blk) {
      int8_t* at = hw.data() + (size_t{g} * blocks + blk) * 2 * dd;
      split(fixed[g].w.data() + blk * dd, false, at, at + dd);  // W [c][j]: rows j
    }
    split(fixed[g].u.data(), true, hu.data() + size_t{g} * 2 * dd,
          hu.data() + size_t{g} * 2 * dd + dd);  // U [i][j]: rows i
    split(fixed[g].v.data(), false, hv.data() + size_t{g} * 2 * dd,
          hv.data() + size_t{g} * 2 * dd + dd);  // V [i][j]: rows j
    he[3 * g] = fixed[g].ew;
    he[3 * g + 1] = fixed[g].ev;
    he[3 * g + 2] = fixed[g].eu;
  }
  if (!hw.empty()) {
    SEQKV_ASSIGN_OR_RETURN(w, Upload(backend, hw));
  }
  SEQKV_ASSIGN_OR_RETURN(u, Upload(backend, hu));
  SEQKV_ASSIGN_OR_RETURN(exps, Upload(backend, he));
  SEQKV_ASSIGN_OR_RETURN(v, Upload(backend, hv));
  return Status::Ok();
}

}  // namespace seqkv::gpu::internal
