# cmake --install into a temporary prefix, then build and run a consumer with pkg-config
# and with find_package(mapalloc) (tests/consumer/). Not in a sanitizer build: the installed
# library then needs the sanitizer runtime, which a plain consumer does not link.
if(NOT MAPALLOC_SANITIZE)
  add_test(NAME install_consumer
    COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR}
      -DSRC_DIR=${CMAKE_CURRENT_SOURCE_DIR}/consumer
      -DWORK=${CMAKE_CURRENT_BINARY_DIR}/install-test -DCC=${CMAKE_C_COMPILER}
      -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run.cmake)
  set_tests_properties(install_consumer PROPERTIES TIMEOUT 300)
endif()
