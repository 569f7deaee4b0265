# Bindings (issue 14): the C++ adapters' tests (include/mapalloc/*.hpp), and the Rust crate's
# `cargo test` (bindings/rust), run offline with Debian's cargo against this build's
# libmapalloc.a.
find_library(CRITERION_LIB criterion)
if(CRITERION_LIB AND NOT MAPALLOC_SANITIZE MATCHES "thread")
  foreach(name test_pool_allocator test_memory_resource)
    add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/cpp/${name}.cpp)
    target_compile_features(${name} PRIVATE cxx_std_17)
    set_target_properties(${name} PROPERTIES CXX_EXTENSIONS OFF)
    target_compile_options(${name} PRIVATE -Wall -Wextra -Werror -Wpedantic)
    target_include_directories(${name} PRIVATE ${CRITERION_INCLUDE})
    target_link_libraries(${name} PRIVATE mapalloc_static ${CRITERION_LIB} Threads::Threads)
    add_test(NAME ${name} COMMAND ${name} --jobs 2)
    set_tests_properties(${name} PROPERTIES TIMEOUT 300)
  endforeach()
endif()

# cargo test: the default and the secure build (MapAlloc frees with ma_free_sized, which the
# secure build checks). Not in sanitizer builds: a Rust binary does not link the sanitizer
# runtime. Exit 77 (SKIPPED) when Debian's cargo is not installed (tools/test.sh installs it).
if(NOT MAPALLOC_SANITIZE AND NOT MAPALLOC_FAULT_INJECTION)
  if(MAPALLOC_SECURE)
    set(MAPALLOC_CARGO_ARGS --test global_alloc --test pool)
  else()
    set(MAPALLOC_CARGO_ARGS --features vm-memory)
  endif()
  add_test(NAME rust_cargo_test
    COMMAND ${PROJECT_SOURCE_DIR}/bindings/rust/cargo-debian.sh test ${MAPALLOC_CARGO_ARGS})
  set_tests_properties(rust_cargo_test PROPERTIES TIMEOUT 900 SKIP_RETURN_CODE 77
    ENVIRONMENT "MAPALLOC_BUILD_DIR=${PROJECT_BINARY_DIR};CARGO_TARGET_DIR=${PROJECT_BINARY_DIR}/cargo")
endif()

# The examples (examples/pool_server.cpp, examples/rust_global_alloc.rs) must run and exit 0.
if(TARGET example_pool_server)
  add_test(NAME example_pool_server COMMAND example_pool_server)
  set_tests_properties(example_pool_server PROPERTIES TIMEOUT 120)
endif()
if(NOT MAPALLOC_SANITIZE AND NOT MAPALLOC_FAULT_INJECTION AND NOT MAPALLOC_SECURE)
  add_test(NAME example_rust_global_alloc
    COMMAND ${PROJECT_SOURCE_DIR}/bindings/rust/cargo-debian.sh run --features vm-memory
      --example global_alloc) # the features of rust_cargo_test: nothing is rebuilt
  set_tests_properties(example_rust_global_alloc PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
    DEPENDS rust_cargo_test
    ENVIRONMENT "MAPALLOC_BUILD_DIR=${PROJECT_BINARY_DIR};CARGO_TARGET_DIR=${PROJECT_BINARY_DIR}/cargo")
endif()
