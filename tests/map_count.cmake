# The secure heap grown past vm.max_map_count (issue 12.4): malloc fails with ENOMEM, frees
# work, no unmap is lost and nothing leaks (tests/map_count.c). MAPALLOC_SECURE=1 turns
# secure mode on in a default build; a secure build has it anyway. Not in sanitizer builds:
# their runtimes map memory of their own and abort when the kernel refuses a mapping.
if(MAPALLOC_SANITIZE)
  return()
endif()
add_executable(map_count ${CMAKE_CURRENT_SOURCE_DIR}/map_count.c)
target_include_directories(map_count PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(map_count PRIVATE ${MAPALLOC_DEFS})
target_link_libraries(map_count PRIVATE mapalloc_static Threads::Threads)
# With MADV_GUARD_INSTALL (Linux 6.13+) a secure heap no longer costs a mapping per slab
# and does not reach the limit (tests/test_guard.c checks that): the PROT_NONE-hole
# fallback, which still does, is the one grown to the limit here.
add_test(NAME map_count_secure COMMAND map_count)
set_tests_properties(map_count_secure PROPERTIES TIMEOUT 300
  ENVIRONMENT "MAPALLOC_SECURE=1;MAPALLOC_GUARD_MADVISE=0")
if(NOT MAPALLOC_SECURE)
  # Without guard pages neighbouring large blocks share a kernel mapping: freeing every
  # other one at the limit makes the kernel refuse more than 64 unmaps.
  add_test(NAME map_count_default COMMAND map_count)
  set_tests_properties(map_count_default PROPERTIES TIMEOUT 300 ENVIRONMENT "MAPALLOC_SECURE=0")
endif()
