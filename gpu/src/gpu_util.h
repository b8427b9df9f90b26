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
