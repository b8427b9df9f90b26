# seqkv_add_test(NAME name SOURCES ... LIBS ... [LABELS ...])
# One helper for every test: links GoogleTest, registers with CTest.
function(seqkv_add_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} seqkv_test_util GTest::gtest GTest::gtest_main)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES
    ENVIRONMENT "SEQKV_SOURCE_DIR=${PROJECT_SOURCE_DIR};SEQKV_BINARY_DIR=${PROJECT_BINARY_DIR}"
    TIMEOUT 600)
  if(T_LABELS)
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# seqkv_add_tests_in(DIR LIBS ... [LABELS ...]): one test per *_test.cc in DIR.
function(seqkv_add_tests_in dir)
  cmake_parse_arguments(T "" "" "LIBS;LABELS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${dir}/*_test.cc)
  foreach(src ${sources})
    get_filename_component(name ${src} NAME_WE)
    seqkv_add_test(NAME ${name} SOURCES ${src} LIBS ${T_LIBS} LABELS ${T_LABELS})
  endforeach()
endfunction()
