# The long stress test (tests/stress/stress.c): tools/stress.sh [SECONDS] builds ma_stress in
# its own release-with-asserts build and runs it; here it runs for a few seconds with a fixed
# seed so every ctest run (and every sanitizer build) exercises it.
add_executable(ma_stress ${CMAKE_CURRENT_SOURCE_DIR}/stress/stress.c)
target_compile_definitions(ma_stress PRIVATE _GNU_SOURCE)
target_link_libraries(ma_stress PRIVATE mapalloc_static Threads::Threads)
add_test(NAME stress_short COMMAND ma_stress 4 --seed 1 --quiet)
set_tests_properties(stress_short PROPERTIES TIMEOUT 120 PASS_REGULAR_EXPRESSION "stress: PASS")
