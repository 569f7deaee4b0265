# fork() from a signal handler that interrupted a fork() (issue 12.6): a single-threaded
# process's fork handlers must take no lock. Not under TSan, which runs its own thread.
if(NOT MAPALLOC_SANITIZE MATCHES "thread")
  add_executable(fork_signal ${CMAKE_CURRENT_SOURCE_DIR}/fork_signal.c)
  target_link_libraries(fork_signal PRIVATE mapalloc_static Threads::Threads)
  add_test(NAME fork_signal COMMAND fork_signal 2)
  set_tests_properties(fork_signal PROPERTIES TIMEOUT 120)
  # The same with heap profiling on, a sample every 64 bytes on average (nearly every malloc
  # takes prof_lock): the profiler's fork handlers must take no lock either (docs/fork.md).
  add_test(NAME fork_signal_prof COMMAND fork_signal 2)
  set_tests_properties(fork_signal_prof PROPERTIES TIMEOUT 120
    ENVIRONMENT "MAPALLOC_PROF=1;MAPALLOC_PROF_SAMPLE=64;MAPALLOC_PROF_PREFIX=${CMAKE_CURRENT_BINARY_DIR}/fork_signal_prof")
endif()
