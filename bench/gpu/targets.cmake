# The GPU bench target (see bench.cmake). Needs a CUDA build.
if(SEQKV_WITH_CUDA)
  add_executable(turboquant_bench ${CMAKE_CURRENT_LIST_DIR}/turboquant_bench.cc)
  target_link_libraries(turboquant_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
  add_executable(lossless_bench ${CMAKE_CURRENT_LIST_DIR}/lossless_bench.cc)
  target_link_libraries(lossless_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
endif()
