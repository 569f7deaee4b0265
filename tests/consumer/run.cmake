# Installs the build into a temporary prefix, then builds and runs tests/consumer against it
# with pkg-config and with find_package(mapalloc). Run by ctest (tests/install.cmake):
#   cmake -DBUILD_DIR=... -DSRC_DIR=... -DWORK=... -DCC=... -P run.cmake
cmake_minimum_required(VERSION 3.20)
file(REMOVE_RECURSE ${WORK})
set(prefix ${WORK}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
file(GLOB_RECURSE pcs ${prefix}/*/mapalloc.pc)
list(LENGTH pcs npc)
if(NOT npc EQUAL 1)
  message(FATAL_ERROR "expected one installed mapalloc.pc, found: ${pcs}")
endif()
get_filename_component(pcdir ${pcs} DIRECTORY)
get_filename_component(libdir ${pcdir} DIRECTORY)
foreach(f include/mapalloc.h include/mapalloc/pages.h)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()

# pkg-config: shared and static.
set(ENV{PKG_CONFIG_PATH} ${pcdir})
run(pkg-config --cflags --libs mapalloc)
separate_arguments(flags UNIX_COMMAND "${out}")
run(${CC} -std=c11 -Wall -Werror ${SRC_DIR}/consumer.c ${flags} -Wl,-rpath,${libdir}
    -o ${WORK}/consumer_pc)
run(${WORK}/consumer_pc)
if(NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "pkg-config consumer: ${out}")
endif()
run(pkg-config --static --cflags --libs mapalloc)
separate_arguments(flags UNIX_COMMAND "${out}")
run(${CC} -std=c11 -Wall -Werror -static ${SRC_DIR}/consumer.c ${flags} -o ${WORK}/consumer_pc_static)
run(${WORK}/consumer_pc_static)

# find_package(mapalloc): the shared and the static target.
run(${CMAKE_COMMAND} -S ${SRC_DIR} -B ${WORK}/cmake-build -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_C_COMPILER=${CC})
run(${CMAKE_COMMAND} --build ${WORK}/cmake-build)
foreach(exe consumer_shared consumer_static)
  run(${WORK}/cmake-build/${exe})
  if(NOT out MATCHES "consumer ok")
    message(FATAL_ERROR "${exe}: ${out}")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
message(STATUS "install test: pkg-config and find_package consumers ran")
