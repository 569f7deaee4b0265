# Heap-profiling tests (tests/prof/run.sh): profiles read by google-pprof, the leak report,
# threads, fork, dumps while other threads allocate, the dump signal, a double free of a
# sampled block, re-entrancy of the unwinder, the estimates of bench/prof/prof_accuracy.c,
# the number of samples taken (rate). Preload library only, not in sanitizer builds
# (as tests/preload.cmake). Skipped (77) when google-pprof is missing.
if(TARGET mapalloc_preload AND NOT MAPALLOC_SANITIZE)
  add_executable(prof_prog ${CMAKE_CURRENT_SOURCE_DIR}/prof/prof_prog.c)
  target_compile_definitions(prof_prog PRIVATE _GNU_SOURCE)
  target_compile_options(prof_prog PRIVATE -O1 -fno-optimize-sibling-calls)
  set_target_properties(prof_prog PROPERTIES ENABLE_EXPORTS ON) # -rdynamic: dladdr names
  target_link_libraries(prof_prog PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
  add_executable(prof_reentry ${CMAKE_CURRENT_SOURCE_DIR}/prof/prof_reentry.cc)
  set_target_properties(prof_reentry PROPERTIES ENABLE_EXPORTS ON)
  target_link_libraries(prof_reentry PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
  add_executable(prof_accuracy ${PROJECT_SOURCE_DIR}/bench/prof/prof_accuracy.c)
  target_compile_options(prof_accuracy PRIVATE -O2)
  foreach(s leak threads fork dump signal misuse reentry accuracy rate slots slots_idle)
    set(prog $<TARGET_FILE:prof_prog>)
    if(s STREQUAL "reentry")
      set(prog $<TARGET_FILE:prof_reentry>)
    elseif(s STREQUAL "accuracy")
      set(prog $<TARGET_FILE:prof_accuracy>)
    endif()
    add_test(NAME prof_${s}
      COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/prof/run.sh ${s} $<TARGET_FILE:mapalloc_preload>
              ${prog} ${CMAKE_CURRENT_BINARY_DIR}/prof-${s})
    set_tests_properties(prof_${s} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
  endforeach()
endif()
