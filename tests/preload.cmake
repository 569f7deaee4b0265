# Integration tests of libmapalloc-preload.so: an exports/semantics check program and real
# programs (python3, perl, git, gcc, g++, sort, bash, sqlite3) run with LD_PRELOAD, their
# output compared with a plain run. See tests/preload/run-programs.sh.
# Not in a sanitizer build: a sanitized preload library needs the sanitizer runtime
# preloaded first, whose malloc then takes precedence over ours.
if(TARGET mapalloc_preload AND NOT MAPALLOC_SANITIZE)
  add_executable(preload_override_check ${CMAKE_CURRENT_SOURCE_DIR}/preload/override_check.c)
  target_compile_definitions(preload_override_check PRIVATE _GNU_SOURCE)
  target_link_libraries(preload_override_check PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
  add_test(NAME preload_override_check
    COMMAND env LD_PRELOAD=$<TARGET_FILE:mapalloc_preload> $<TARGET_FILE:preload_override_check>)
  # The same checks with the options at their extremes.
  add_test(NAME preload_override_check_purge_now
    COMMAND env LD_PRELOAD=$<TARGET_FILE:mapalloc_preload> MAPALLOC_PURGE_DELAY_MS=0
            MAPALLOC_HUGE_PAGES=1 $<TARGET_FILE:preload_override_check>)
  add_test(NAME preload_override_check_purge_never
    COMMAND env LD_PRELOAD=$<TARGET_FILE:mapalloc_preload> MAPALLOC_PURGE_DELAY_MS=-1
            MAPALLOC_HUGE_PAGES=0 MAPALLOC_STATS=1 $<TARGET_FILE:preload_override_check>)
  add_test(NAME preload_programs
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/preload/run-programs.sh $<TARGET_FILE:mapalloc_preload>)
  # The same programs under RLIMIT_AS = 100000 KiB (issue 12.6): each one that runs on glibc
  # under the limit must run on mapalloc too.
  add_test(NAME preload_programs_rlimit_as
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/preload/run-programs.sh $<TARGET_FILE:mapalloc_preload>
            100000)
  set_tests_properties(preload_override_check preload_override_check_purge_now
    preload_override_check_purge_never preload_programs preload_programs_rlimit_as
    PROPERTIES TIMEOUT 300)
endif()
