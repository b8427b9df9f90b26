// Private to gpu/'s host code: what every API's .cc needs, once. In CUDA
// builds it is compiled by g++ with the CUDA runtime's headers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "seqkv/codec/status.h"

#ifdef SEQKV_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace seqkv::gpu::internal {

// n rounded up to a multiple of `a`: workspace regions start 256-byte aligned.
inline uint64_t AlignUp(uint64_t n, uint64_t a = 256) { return (n + a - 1) / a * a; }

// A dense launch's item_ctas: Add each item's CTA count in order; Get is that
// count when every item has the same (so a CTA's item is blockIdx.x / count,
// no search), else 0 (also for no items).
class EqualCtas {
 public:
  void Add(uint32_t n) {
    equal_ = equal_ && (items_ == 0 || n == each_);
    each_ = n;
    ++items_;
  }
  uint32_t Get() const { return equal_ && items_ > 0 ? each_ : 0; }

 private:
  uint32_t each_ = 0;
  uint64_t items_ = 0;
  bool equal_ = true;
};

#ifdef SEQKV_WITH_CUDA
// INTERNAL "<who>: <what>: <CUDA's message>" for a failed CUDA call.
inline Status FromCuda(cudaError_t err, std::string_view who, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Internal(std::string(who) + ": " + what + ": " + cudaGetErrorString(err));
}
#endif

}  // namespace seqkv::gpu::internal

#ifdef SEQKV_WITH_CUDA
// Returns FromCuda's status from the enclosing function on failure; the file
// names its API in messages with a `kWho` in scope.
#define SEQKV_CUDA_RETURN(expr, what) \
  SEQKV_RETURN_IF_ERROR(::seqkv::gpu::internal::FromCuda((expr), kWho, (what)))
#endif
