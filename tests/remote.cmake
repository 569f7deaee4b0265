# MAPALLOC_BACKGROUND=0: no purger thread, memory of idle threads returns on a trim from
# any thread (tests/purger_off.c).
add_executable(purger_off ${CMAKE_CURRENT_SOURCE_DIR}/purger_off.c)
target_link_libraries(purger_off PRIVATE mapalloc_static Threads::Threads)
add_test(NAME purger_off COMMAND purger_off)
set_tests_properties(purger_off PROPERTIES
  ENVIRONMENT "MAPALLOC_BACKGROUND=0;MAPALLOC_PURGE_DELAY_MS=5000" TIMEOUT 120)
