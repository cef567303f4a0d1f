# facevec_component(NAME SOURCES a.cpp ... DEPS target ...)
#
# Declares the library facevec_NAME with the alias facevec::NAME. The
# project root is on the include path, so headers are included as
# "storage/store.h". Warnings are errors-clean: -Wall -Wextra.
function(facevec_component name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  if(ARG_SOURCES)
    add_library(facevec_${name} STATIC ${ARG_SOURCES})
    set(scope PUBLIC)
  else()
    add_library(facevec_${name} INTERFACE)
    set(scope INTERFACE)
  endif()
  add_library(facevec::${name} ALIAS facevec_${name})
  target_include_directories(facevec_${name} ${scope} ${PROJECT_SOURCE_DIR})
  target_link_libraries(facevec_${name} ${scope} ${ARG_DEPS})
  if(ARG_SOURCES)
    target_link_libraries(facevec_${name} PRIVATE ${ARG_PRIVATE_DEPS})
    target_compile_options(facevec_${name} PRIVATE -Wall -Wextra)
    set_target_properties(facevec_${name} PROPERTIES
      POSITION_INDEPENDENT_CODE ON)
  endif()
endfunction()

# facevec_test(NAME SOURCES a.cpp ... DEPS target ... [LABELS l ...])
#
# A GoogleTest program registered with ctest test by test. The built CLI,
# the source tree and the default data folders (../shared beside the
# checkout) are compiled in (tests/test_util.h); FACEVEC_BIN,
# FACEVEC_FACES and FACEVEC_REFERENCE in the environment override them.
function(facevec_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest_main
                        GTest::gmock)
  target_compile_options(${name} PRIVATE -Wall -Wextra)
  target_compile_definitions(${name} PRIVATE
    FACEVEC_TEST_BIN="$<TARGET_FILE:facevec>"
    FACEVEC_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    FACEVEC_TEST_FACES="${PROJECT_SOURCE_DIR}/../shared/faces"
    FACEVEC_TEST_REFERENCE="${PROJECT_SOURCE_DIR}/../shared/reference")
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  # An empty LABELS value would make LABELS swallow the next key.
  set(label_args)
  if(ARG_LABELS)
    set(label_args LABELS "${ARG_LABELS}")
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} ${label_args})
endfunction()

# facevec_bench(NAME SOURCES a.cpp ... DEPS target ...)
function(facevec_bench name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
  target_compile_options(${name} PRIVATE -Wall -Wextra)
endfunction()
