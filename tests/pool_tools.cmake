# Pool objects under Valgrind memcheck and AddressSanitizer: a user's use-after-free and
# leak of a pool object must be reported by those tools (issue 3).
add_executable(pool_misuse ${CMAKE_CURRENT_SOURCE_DIR}/pool_misuse.c)
target_link_libraries(pool_misuse PRIVATE mapalloc_static)

find_program(MAPALLOC_VALGRIND valgrind)
# (Not in sanitizer builds: those binaries do not run under valgrind.)
if(MAPALLOC_VALGRIND AND MAPALLOC_HAVE_VALGRIND_H AND NOT MAPALLOC_SANITIZE)
  add_test(NAME pool_valgrind_uaf
    COMMAND ${MAPALLOC_VALGRIND} -q --error-exitcode=99 $<TARGET_FILE:pool_misuse> uaf)
  set_tests_properties(pool_valgrind_uaf PROPERTIES
    PASS_REGULAR_EXPRESSION "Invalid write of size 1[^\n]*\n[^\n]*pool_misuse.c:26")
  # (the write at the bug's line; which block memcheck names varies with the secure
  # build's shuffled order)
  add_test(NAME pool_valgrind_leak
    COMMAND ${MAPALLOC_VALGRIND} --leak-check=full --error-exitcode=99
            $<TARGET_FILE:pool_misuse> leak)
  set_tests_properties(pool_valgrind_leak PROPERTIES
    PASS_REGULAR_EXPRESSION "definitely lost: 64 bytes in 1 blocks")
  add_test(NAME pool_valgrind_clean
    COMMAND ${MAPALLOC_VALGRIND} -q --leak-check=full --error-exitcode=99
            $<TARGET_FILE:pool_misuse> ok)
  set_tests_properties(pool_valgrind_clean PROPERTIES PASS_REGULAR_EXPRESSION "sum 4950"
    FAIL_REGULAR_EXPRESSION "==[0-9]+==")
  add_test(NAME pool_valgrind_destroy_live
    COMMAND ${MAPALLOC_VALGRIND} -q --leak-check=full --error-exitcode=99
            $<TARGET_FILE:pool_misuse> live)
  set_tests_properties(pool_valgrind_destroy_live PROPERTIES PASS_REGULAR_EXPRESSION "sum 4950"
    FAIL_REGULAR_EXPRESSION "==[0-9]+==")
endif()

# ASan poisoning is compiled into the object layer, so this target builds its own copy of
# the page and object layers with -fsanitize=address.
# (Not with -fsanitize=thread: the two sanitizers cannot be linked into one program.)
if(MAPALLOC_HAVE_ASAN AND NOT MAPALLOC_SANITIZE MATCHES "thread")
  add_executable(pool_misuse_asan ${CMAKE_CURRENT_SOURCE_DIR}/pool_misuse.c
                 ${MAPALLOC_OS_SOURCES} ${MAPALLOC_OBJ_SOURCES})
  target_include_directories(pool_misuse_asan PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/src)
  target_compile_definitions(pool_misuse_asan PRIVATE ${MAPALLOC_DEFS})
  target_compile_options(pool_misuse_asan PRIVATE -fsanitize=address -fno-omit-frame-pointer)
  target_link_options(pool_misuse_asan PRIVATE -fsanitize=address)
  target_link_libraries(pool_misuse_asan PRIVATE Threads::Threads)
  add_test(NAME pool_asan_uaf COMMAND pool_misuse_asan uaf)
  set_tests_properties(pool_asan_uaf PROPERTIES
    PASS_REGULAR_EXPRESSION "AddressSanitizer: use-after-poison")
  add_test(NAME pool_asan_clean COMMAND pool_misuse_asan ok)
  set_tests_properties(pool_asan_clean PROPERTIES PASS_REGULAR_EXPRESSION "sum 4950"
    FAIL_REGULAR_EXPRESSION "AddressSanitizer")
endif()
