# seqkv_add_test(NAME name SOURCES ... LIBS ... [LABELS ...] [SHARDS n])
# One helper for every test: links GoogleTest, registers with CTest. With
# SHARDS n > 1 the binary is registered n times, name.0 .. name.(n-1), each
# running every n-th test case (GoogleTest's GTEST_TOTAL_SHARDS and
# GTEST_SHARD_INDEX): a long binary then stays well inside the per-test
# limit, also under the sanitizers, and its shards run in parallel.
function(seqkv_add_test)
  cmake_parse_arguments(T "" "NAME;SHARDS" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} seqkv_test_util GTest::gtest GTest::gtest_main)
  set(env "SEQKV_SOURCE_DIR=${PROJECT_SOURCE_DIR}" "SEQKV_BINARY_DIR=${PROJECT_BINARY_DIR}")
  if(T_SHARDS AND T_SHARDS GREATER 1)
    math(EXPR last "${T_SHARDS} - 1")
    set(tests "")
    foreach(i RANGE ${last})
      add_test(NAME ${T_NAME}.${i} COMMAND ${T_NAME})
      set_tests_properties(${T_NAME}.${i} PROPERTIES
        ENVIRONMENT "${env};GTEST_TOTAL_SHARDS=${T_SHARDS};GTEST_SHARD_INDEX=${i}")
      list(APPEND tests ${T_NAME}.${i})
    endforeach()
  else()
    add_test(NAME ${T_NAME} COMMAND ${T_NAME})
    set_tests_properties(${T_NAME} PROPERTIES ENVIRONMENT "${env}")
    set(tests ${T_NAME})
  endif()
  set_tests_properties(${tests} PROPERTIES TIMEOUT 600)
  if(T_LABELS)
    set_tests_properties(${tests} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# seqkv_add_tests_in(DIR LIBS ... [LABELS ...] [SHARDED name n ...]): one test
# per *_test.cc in DIR; the binaries named in SHARDED run as n shards each.
function(seqkv_add_tests_in dir)
  cmake_parse_arguments(T "" "" "LIBS;LABELS;SHARDED" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${dir}/*_test.cc)
  foreach(src ${sources})
    get_filename_component(name ${src} NAME_WE)
    set(shards 1)
    list(FIND T_SHARDED ${name} at)
    if(at GREATER -1)
      math(EXPR at "${at} + 1")
      list(GET T_SHARDED ${at} shards)
    endif()
    seqkv_add_test(NAME ${name} SOURCES ${src} LIBS ${T_LIBS} LABELS ${T_LABELS} SHARDS ${shards})
  endforeach()
endfunction()
