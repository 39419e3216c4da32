# Shared compile settings for every kfleet target.
function(kfleet_target_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
      -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wformat=2>)
  if(KFLEET_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

# kfleet_module(NAME SOURCES ... DEPS ...): one static library per module, includes rooted at the repo.
function(kfleet_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(kfleet_${name} STATIC ${ARG_SOURCES})
  add_library(kfleet::${name} ALIAS kfleet_${name})
  target_include_directories(kfleet_${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(kfleet_${name} PUBLIC ${ARG_DEPS})
  kfleet_target_options(kfleet_${name})
endfunction()

# kfleet_test(NAME SOURCES ... DEPS ...): one gtest binary per module, registered with CTest.
function(kfleet_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  kfleet_target_options(${name})
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 TEST_PREFIX "${name}."
    PROPERTIES ENVIRONMENT "KFLEET_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data")
endfunction()
