# tools/mapalloc-maps: runs on itself and on a child process; checks the table's sanity.
add_test(NAME tool_mapalloc_maps
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tools_check.sh $<TARGET_FILE:mapalloc-maps>)
set_tests_properties(tool_mapalloc_maps PROPERTIES TIMEOUT 60)
