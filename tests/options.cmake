# Run-time options take effect at the library's first use and never change after it
# (tests/options_first_use.c): a first malloc while environ is NULL, a pool made before any
# malloc.
add_executable(options_first_use ${CMAKE_CURRENT_SOURCE_DIR}/options_first_use.c)
target_include_directories(options_first_use PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(options_first_use PRIVATE _GNU_SOURCE ${MAPALLOC_DEFS})
target_link_libraries(options_first_use PRIVATE mapalloc_static Threads::Threads)
foreach(mode heap-noenv pool-first)
  add_test(NAME options_first_use_${mode} COMMAND options_first_use ${mode})
  set_tests_properties(options_first_use_${mode} PROPERTIES TIMEOUT 60 ENVIRONMENT
    "MAPALLOC_PURGE_DELAY_MS=0;MAPALLOC_SECURE=1;MAPALLOC_VERBOSE=1")
endforeach()
