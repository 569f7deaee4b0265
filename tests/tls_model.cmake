# -DMA_TLS_DYNAMIC (README, for dlopen use) must leave no initial-exec TLS access in the
# library: its thread-local variables (heap.c, pool.c) compiled with it carry only
# dynamic-model relocations (R_X86_64_TLSGD/TLSLD, DTPOFF), no R_X86_64_GOTTPOFF or
# TPOFF (initial-exec, local-exec).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND NOT MAPALLOC_SANITIZE)
  find_program(READELF_EXE readelf)
  if(READELF_EXE)
    add_library(tls_dynamic_objects OBJECT ${PROJECT_SOURCE_DIR}/src/malloc/heap.c
                                           ${PROJECT_SOURCE_DIR}/src/obj/pool.c)
    target_include_directories(tls_dynamic_objects PRIVATE ${PROJECT_SOURCE_DIR}/include
                                                           ${PROJECT_SOURCE_DIR}/src)
    target_compile_definitions(tls_dynamic_objects PRIVATE ${MAPALLOC_DEFS} MA_TLS_DYNAMIC)
    set_target_properties(tls_dynamic_objects PROPERTIES POSITION_INDEPENDENT_CODE ON)
    add_test(NAME tls_dynamic_model
      COMMAND sh -c "! ${READELF_EXE} -rW \"$@\" | grep -E '[^D]TPOFF' && ${READELF_EXE} -rW \"$@\" | grep -qE 'TLS(GD|LD)'"
              tls_model $<TARGET_OBJECTS:tls_dynamic_objects>
      COMMAND_EXPAND_LISTS)
    set_tests_properties(tls_dynamic_model PROPERTIES TIMEOUT 60)
  endif()
endif()
