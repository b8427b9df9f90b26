# The GPU bench target (see bench.cmake). Needs a CUDA build.
if(SEQKV_WITH_CUDA)
  add_executable(turboquant_bench ${CMAKE_CURRENT_LIST_DIR}/turboquant_bench.cc)
  target_link_libraries(turboquant_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
  add_executable(lossless_bench ${CMAKE_CURRENT_LIST_DIR}/lossless_bench.cc)
  target_link_libraries(lossless_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
  add_executable(seq_entropy_bench ${CMAKE_CURRENT_LIST_DIR}/seq_entropy_bench.cc)
  target_link_libraries(seq_entropy_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
  target_include_directories(seq_entropy_bench PRIVATE ${PROJECT_SOURCE_DIR}/codec/src)
  add_executable(seq_decode_bench ${CMAKE_CURRENT_LIST_DIR}/seq_decode_bench.cc
                                  ${CMAKE_CURRENT_LIST_DIR}/lane_proto_kernels.cu)
  # seqkv_test_util (tests/): the dev dumps' paths and token slices for the real-KV rows.
  target_link_libraries(seq_decode_bench PRIVATE seqkv::gpu seqkv::codec seqkv_test_util CUDA::cudart_static)
  target_include_directories(seq_decode_bench PRIVATE ${PROJECT_SOURCE_DIR}/codec/src ${PROJECT_SOURCE_DIR}/gpu/src
                                                      ${CMAKE_CURRENT_LIST_DIR})
  add_executable(seq_encode_bench ${CMAKE_CURRENT_LIST_DIR}/seq_encode_bench.cc)
  target_link_libraries(seq_encode_bench PRIVATE seqkv::gpu seqkv::codec CUDA::cudart_static)
  # Bench-only prototype of the dense stage's products on wgmma, which needs
  # the architecture-specific sm_90a (the library itself builds for sm_90).
  add_executable(wgmma_proto_bench ${CMAKE_CURRENT_LIST_DIR}/wgmma_proto.cu)
  set_target_properties(wgmma_proto_bench PROPERTIES CUDA_ARCHITECTURES 90a)
  # (gpu/src: the dense kernels' device helpers it shares, seq_dense_device.cuh)
  target_link_libraries(wgmma_proto_bench PRIVATE seqkv::codec CUDA::cudart_static)
  target_include_directories(wgmma_proto_bench PRIVATE ${PROJECT_SOURCE_DIR}/codec/src ${PROJECT_SOURCE_DIR}/gpu/src)
endif()
