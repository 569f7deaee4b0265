# The long stress test (tests/stress/stress.c): tools/stress.sh [SECONDS] builds ma_stress in
# its own release-with-asserts build and runs it; here it runs for a few seconds with a fixed
# seed so every ctest run (and every sanitizer build) exercises it.
add_executable(ma_stress ${CMAKE_CURRENT_SOURCE_DIR}/stress/stress.c)
target_compile_definitions(ma_stress PRIVATE _GNU_SOURCE)
target_link_libraries(ma_stress PRIVATE mapalloc_static Threads::Threads)
add_test(NAME stress_short COMMAND ma_stress 4 --seed 1 --quiet)
set_tests_properties(stress_short PROPERTIES TIMEOUT 120 PASS_REGULAR_EXPRESSION "stress: PASS"
  FAIL_REGULAR_EXPRESSION "Sanitizer|runtime error") # sanitizer reports that do not abort

# A segment released under AddressSanitizer leaves no poisoned shadow behind (found by the
# stress test). Like pool_misuse_asan, it builds its own ASan copy of the page and object
# layers, so the check runs in every build (MAPALLOC_HAVE_ASAN: tests/CMakeLists.txt).
if(MAPALLOC_HAVE_ASAN)
  add_executable(asan_remap ${CMAKE_CURRENT_SOURCE_DIR}/asan_remap.c ${MAPALLOC_OS_SOURCES}
                 ${MAPALLOC_OBJ_SOURCES})
  target_include_directories(asan_remap PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/src)
  target_compile_definitions(asan_remap PRIVATE ${MAPALLOC_DEFS})
  target_compile_options(asan_remap PRIVATE -fsanitize=address -fno-omit-frame-pointer)
  target_link_options(asan_remap PRIVATE -fsanitize=address)
  target_link_libraries(asan_remap PRIVATE Threads::Threads)
  add_test(NAME asan_segment_release_unpoisons COMMAND asan_remap)
  set_tests_properties(asan_segment_release_unpoisons PROPERTIES
    PASS_REGULAR_EXPRESSION "remapped 1024 pages" FAIL_REGULAR_EXPRESSION "AddressSanitizer")
endif()
