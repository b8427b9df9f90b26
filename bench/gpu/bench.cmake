# Hooks the GPU bench into a build of the main tree without the main
# CMakeLists knowing about it (bench/gpu is not part of the normal build).
# bench/gpu/run.sh passes -DCMAKE_PROJECT_seqkv_INCLUDE=<this file>; the
# targets are added once the root directory has defined seqkv::gpu. (EVAL so
# the path is expanded now: a deferred call expands its arguments late.)
cmake_language(EVAL CODE
  "cmake_language(DEFER DIRECTORY [[${CMAKE_SOURCE_DIR}]] CALL include [[${CMAKE_CURRENT_LIST_DIR}/targets.cmake]])")
