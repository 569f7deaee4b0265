# Life under RLIMIT_AS (issue 12.6): blocks of six sizes counted for glibc and ma_malloc in
# children limited to their mapped size plus 256 MiB; mapalloc must fit 90% of glibc's.
# Not in sanitizer builds: their shadow memory does not fit under an address-space limit.
if(NOT MAPALLOC_SANITIZE)
  add_executable(rlimit_fit ${CMAKE_CURRENT_SOURCE_DIR}/rlimit_fit.c)
  target_link_libraries(rlimit_fit PRIVATE mapalloc_static Threads::Threads)
  add_test(NAME rlimit_fit COMMAND rlimit_fit 256)
  set_tests_properties(rlimit_fit PROPERTIES TIMEOUT 300)
endif()
