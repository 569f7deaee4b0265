# The arena layer's extra ctest entry: the guest-memory example must run and exit 0.
if(TARGET example_guest_memory)
  add_test(NAME example_guest_memory COMMAND example_guest_memory)
  set_tests_properties(example_guest_memory PROPERTIES TIMEOUT 60)
endif()
