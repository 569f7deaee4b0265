# The eight classic heap misuse cases (tests/misuse/) run under glibc, mapalloc's default
# preload library and its secure one: the secure build must stop all of them, the default
# build what glibc stops. Whichever mode this build is, the preload library of the other
# mode is built here too (test-only), so one run compares both.
if(TARGET mapalloc_preload AND NOT MAPALLOC_SANITIZE)
  add_executable(misuse_case ${CMAKE_CURRENT_SOURCE_DIR}/misuse/misuse_case.c)
  target_compile_definitions(misuse_case PRIVATE _GNU_SOURCE)
  target_link_libraries(misuse_case PRIVATE ${CMAKE_DL_LIBS})

  set(misuse_other_defs ${MAPALLOC_DEFS} MA_OVERRIDE=1)
  if(MAPALLOC_SECURE)
    list(REMOVE_ITEM misuse_other_defs MA_SECURE=1)
  else()
    list(APPEND misuse_other_defs MA_SECURE=1)
  endif()
  add_library(mapalloc_preload_other SHARED EXCLUDE_FROM_ALL
    ${MAPALLOC_SOURCES} ${MAPALLOC_OVERRIDE_SOURCES})
  set_target_properties(mapalloc_preload_other PROPERTIES OUTPUT_NAME mapalloc-preload-other)
  target_include_directories(mapalloc_preload_other PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/src)
  target_compile_definitions(mapalloc_preload_other PRIVATE ${misuse_other_defs})
  target_compile_options(mapalloc_preload_other PRIVATE -fvisibility=hidden)
  target_link_libraries(mapalloc_preload_other PRIVATE Threads::Threads)
  add_dependencies(misuse_case mapalloc_preload_other)

  if(MAPALLOC_SECURE)
    set(misuse_default $<TARGET_FILE:mapalloc_preload_other>)
    set(misuse_secure $<TARGET_FILE:mapalloc_preload>)
  else()
    set(misuse_default $<TARGET_FILE:mapalloc_preload>)
    set(misuse_secure $<TARGET_FILE:mapalloc_preload_other>)
  endif()
  add_test(NAME misuse
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/misuse/run.sh $<TARGET_FILE:misuse_case>
            ${misuse_default} ${misuse_secure})
  set_tests_properties(misuse PROPERTIES TIMEOUT 300 PASS_REGULAR_EXPRESSION "misuse: ok")
endif()
