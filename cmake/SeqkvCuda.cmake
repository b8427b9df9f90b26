# Finds nvcc (it is not on PATH by default) and enables CUDA for Hopper:
# sm_90a machine code (the architecture-specific target, for wgmma) and
# compute_90 PTX (what a newer GPU would compile; the wgmma kernels trap
# there and are launched only on compute capability 9.0 devices).
# Sets SEQKV_WITH_CUDA. CUDA sources use C++17 (CMake 3.25 cannot set C++20 for CUDA).
set(SEQKV_WITH_CUDA OFF)
if(NOT SEQKV_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(SEQKV_NVCC nvcc
      HINTS ENV CUDA_HOME ENV CUDA_PATH
      PATHS /usr/local/cuda/bin /usr/local/cuda-13.0/bin /usr/local/cuda-12/bin /usr/lib/cuda/bin /usr/bin
      NO_CACHE)
    if(SEQKV_NVCC)
      set(CMAKE_CUDA_COMPILER ${SEQKV_NVCC})
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90a-real 90-virtual)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(SEQKV_WITH_CUDA ON)
    message(STATUS "seqkv: CUDA enabled with ${CMAKE_CUDA_COMPILER} (${CMAKE_CUDA_ARCHITECTURES})")
  elseif(SEQKV_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SEQKV_CUDA=ON but nvcc was not found (set CUDA_HOME)")
  else()
    message(STATUS "seqkv: nvcc not found, building without CUDA")
  endif()
endif()
