# The install/consumer test (cmake -P). Installs the current build tree into
# a fresh prefix, then builds test/consumer/main.c against it four ways and
# runs each binary:
#   a) cc + pkg-config, shared library
#   b) cc + pkg-config ringio-static (the archive; README's line), checked
#      with readelf and ldd to need no libringio.so
#   c) CMake find_package(ringio CONFIG) + ringio::ringio
#   d) the same with ringio::ringio_static
# and then runs the installed tools with no LD_LIBRARY_PATH (e) and reads
# an installed man page with man -M (f).
# Every problem found is collected and reported; the test fails if any.
#
# Inputs: BUILD_DIR, CONSUMER_DIR, WORK_DIR, CC, SANITIZE, TOOLS.
cmake_minimum_required(VERSION 3.16)

foreach(v BUILD_DIR CONSUMER_DIR WORK_DIR CC)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "install_consumer.cmake: -D${v}= is required")
  endif()
endforeach()

set(problems "")
macro(problem msg)
  message(STATUS "PROBLEM: ${msg}")
  list(APPEND problems "${msg}")
endmacro()

# run(<label> <outvar> COMMAND...): run, record a problem on failure.
function(run label outvar)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  string(STRIP "${out}" out)
  set(${outvar} "${out}" PARENT_SCOPE)
  set(${outvar}_ok TRUE PARENT_SCOPE)
  if(NOT rc EQUAL 0)
    set(${outvar}_ok FALSE PARENT_SCOPE)
    string(REPLACE ";" " " cmd "${ARGN}")
    set(problems "${problems};${label}: `${cmd}` exited ${rc}: ${err}${out}"
        PARENT_SCOPE)
    message(STATUS "PROBLEM: ${label}: exit ${rc}\n${err}${out}")
  else()
    message(STATUS "${label}: ok ${out}")
  endif()
endfunction()

set(san_flags "")
if(SANITIZE)
  set(san_flags -fsanitize=address,undefined -fno-omit-frame-pointer)
endif()

# ---- install ----
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
# Install needs everything it installs built: build (a no-op when up to
# date) first.
run("build" out ${CMAKE_COMMAND} --build "${BUILD_DIR}")
run("cmake --install" out ${CMAKE_COMMAND} --install "${BUILD_DIR}"
    --prefix "${prefix}")
if(NOT out_ok)
  string(REPLACE ";" "\n  " p "${problems}")
  message(FATAL_ERROR "install failed:\n  ${p}")
endif()

# GNUInstallDirs may pick lib, lib64 or lib/<multiarch>: find it.
file(GLOB_RECURSE pcs "${prefix}/*/ringio.pc")
if(NOT pcs)
  message(FATAL_ERROR "no ringio.pc installed under ${prefix}")
endif()
list(GET pcs 0 pc)
get_filename_component(pcdir "${pc}" DIRECTORY)
get_filename_component(libdir "${pcdir}" DIRECTORY)
message(STATUS "libdir: ${libdir}")

foreach(f "${prefix}/include/ringio.h" "${libdir}/libringio.so"
          "${libdir}/libringio.a" "${libdir}/cmake/ringio/ringioConfig.cmake"
          "${libdir}/cmake/ringio/ringioConfigVersion.cmake"
          "${libdir}/cmake/ringio/ringioTargets.cmake"
          "${libdir}/cmake/ringio/ringioStaticTargets.cmake")
  if(NOT EXISTS "${f}")
    problem("not installed: ${f}")
  endif()
endforeach()

# The shared library carries the SONAME CMakeLists.txt sets
# (RINGIO_SOVERSION) and the versioned file exists.
if(NOT SOVERSION MATCHES "^[0-9]+$")
  message(FATAL_ERROR "install_consumer: -DSOVERSION=N is required")
endif()
find_program(READELF readelf)
if(READELF AND EXISTS "${libdir}/libringio.so")
  run("readelf libringio.so" dyn ${READELF} -d "${libdir}/libringio.so")
  if(NOT dyn MATCHES "SONAME[^\n]*\\[libringio\\.so\\.${SOVERSION}\\]")
    problem("libringio.so has no SONAME libringio.so.${SOVERSION}")
  endif()
  if(NOT EXISTS "${libdir}/libringio.so.${SOVERSION}")
    problem("libringio.so.${SOVERSION} (the SONAME link) is not installed")
  endif()
endif()

set(ENV{PKG_CONFIG_PATH} "${pcdir}:$ENV{PKG_CONFIG_PATH}")
unset(ENV{RINGIO_BACKEND})

# The .pc must describe this prefix, wherever --prefix put it.
run("pkg-config includedir" pc_inc pkg-config --variable=includedir ringio)
get_filename_component(pc_inc_real "${pc_inc}" REALPATH)
get_filename_component(want_inc_real "${prefix}/include" REALPATH)
if(pc_inc_ok AND NOT pc_inc_real STREQUAL want_inc_real)
  problem("ringio.pc says includedir=${pc_inc}, but it was installed with --prefix ${prefix}: the .pc does not follow the install prefix (it should derive prefix from its own location, pcfiledir)")
endif()
run("pkg-config Requires.private" req pkg-config --print-requires-private ringio)
if(NOT req MATCHES "liburing")
  problem("ringio.pc lacks Requires.private: liburing")
endif()

function(check_links label bin want_shared)
  if(NOT READELF OR NOT EXISTS "${bin}")
    return()
  endif()
  execute_process(COMMAND ${READELF} -d "${bin}" OUTPUT_VARIABLE dyn)
  if(want_shared AND NOT dyn MATCHES "NEEDED[^\n]*libringio\\.so\\.${SOVERSION}")
    set(problems "${problems};${label}: binary does not need libringio.so.${SOVERSION}"
        PARENT_SCOPE)
  elseif(NOT want_shared AND dyn MATCHES "NEEDED[^\n]*libringio")
    set(problems "${problems};${label}: a static link still needs libringio.so"
        PARENT_SCOPE)
  endif()
endfunction()

# ldd must not list libringio for a static binary.
find_program(LDD ldd)
function(check_ldd label bin)
  if(NOT LDD OR NOT EXISTS "${bin}")
    return()
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH
                  ${LDD} "${bin}" OUTPUT_VARIABLE out)
  if(out MATCHES "libringio")
    set(problems "${problems};${label}: ldd lists libringio: ${out}"
        PARENT_SCOPE)
  endif()
endfunction()

set(main "${CONSUMER_DIR}/main.c")
set(ld_env "LD_LIBRARY_PATH=${libdir}:$ENV{LD_LIBRARY_PATH}")

# ---- a) pkg-config, shared ----
run("a) pkg-config --cflags --libs" flags pkg-config --cflags --libs ringio)
separate_arguments(flags UNIX_COMMAND "${flags}")
run("a) cc shared" out ${CC} ${san_flags} "${main}" ${flags}
    -o "${WORK_DIR}/a_shared")
if(out_ok)
  check_links("a) shared" "${WORK_DIR}/a_shared" TRUE)
  run("a) run shared" out ${CMAKE_COMMAND} -E env "${ld_env}"
      "${WORK_DIR}/a_shared")
endif()

# ---- b) pkg-config ringio-static, the archive, as README says ----
run("b) pkg-config --cflags --libs ringio-static" sflags
    pkg-config --cflags --libs ringio-static)
if(NOT sflags MATCHES "-luring")
  problem("pkg-config --libs ringio-static lacks -luring: '${sflags}'")
endif()
if(NOT sflags MATCHES "-DRINGIO_STATIC")
  problem("pkg-config --cflags ringio-static lacks -DRINGIO_STATIC: '${sflags}'")
endif()
separate_arguments(sflags UNIX_COMMAND "${sflags}")
run("b) cc static" out ${CC} ${san_flags} "${main}" ${sflags}
    -o "${WORK_DIR}/b_static")
if(out_ok)
  check_links("b) static" "${WORK_DIR}/b_static" FALSE)
  check_ldd("b) static" "${WORK_DIR}/b_static")
  run("b) run static" out ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH
      "${WORK_DIR}/b_static")
endif()

# ---- c) and d) CMake package ----
string(REPLACE ";" " " san_str "${san_flags}")
foreach(variant shared static)
  if(variant STREQUAL "static")
    set(tag "d)")
    set(opt ON)
  else()
    set(tag "c)")
    set(opt OFF)
  endif()
  set(bdir "${WORK_DIR}/cmake_${variant}")
  run("${tag} configure" out ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${bdir}"
      "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_C_COMPILER=${CC}"
      "-DCMAKE_C_FLAGS=${san_str}" -DCONSUMER_STATIC=${opt})
  if(NOT out_ok)
    continue()
  endif()
  run("${tag} build" out ${CMAKE_COMMAND} --build "${bdir}")
  if(NOT out_ok)
    continue()
  endif()
  if(variant STREQUAL "shared")
    check_links("${tag} shared" "${bdir}/consumer" TRUE)
    run("${tag} run" out ${CMAKE_COMMAND} -E env "${ld_env}" "${bdir}/consumer")
  else()
    check_links("${tag} static" "${bdir}/consumer" FALSE)
    run("${tag} run" out "${bdir}/consumer")
  endif()
endforeach()

# ---- e) the installed tools start from this prefix, with no help ----
# (an $ORIGIN-relative RUNPATH: no LD_LIBRARY_PATH, no ldconfig)
if(TOOLS)
  foreach(t ringio-probe ringio-echo ringio-proxy)
    set(bin "${prefix}/bin/${t}")
    if(NOT EXISTS "${bin}")
      problem("e) not installed: ${bin}")
      continue()
    endif()
    if(READELF)
      execute_process(COMMAND ${READELF} -d "${bin}" OUTPUT_VARIABLE dyn)
      if(NOT dyn MATCHES "(RUNPATH|RPATH)[^\n]*\\$ORIGIN")
        problem("e) ${t}: no $ORIGIN-relative RUNPATH")
      endif()
    endif()
    if(LDD)
      execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH
                      ${LDD} "${bin}" OUTPUT_VARIABLE out)
      set(got "")
      if(out MATCHES "libringio\\.so\\.${SOVERSION} => ([^ \n]+)")
        get_filename_component(got "${CMAKE_MATCH_1}" REALPATH)
      endif()
      get_filename_component(want "${libdir}/libringio.so.${SOVERSION}" REALPATH)
      if(NOT got STREQUAL want)
        problem("e) ${t}: ldd does not resolve libringio.so.${SOVERSION} to ${want}: ${out}")
      endif()
    endif()
  endforeach()
  run("e) run installed ringio-probe" out ${CMAKE_COMMAND} -E env
      --unset=LD_LIBRARY_PATH "${prefix}/bin/ringio-probe")
  run("e) run installed ringio-echo --help" out ${CMAKE_COMMAND} -E env
      --unset=LD_LIBRARY_PATH "${prefix}/bin/ringio-echo" --help)
endif()

# ---- f) the man pages are installed and man finds them ----
find_program(MAN man)
if(MAN)
  foreach(page rio_recv ringio rio_loop_destroy)
    execute_process(COMMAND ${CMAKE_COMMAND} -E env MANWIDTH=80 MANPAGER=cat
                    PAGER=cat ${MAN} -M "${prefix}/share/man" ${page}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0 OR NOT out MATCHES "${page}")
      problem("f) man -M ${prefix}/share/man ${page}: exit ${rc} ${err}")
    endif()
  endforeach()
elseif(NOT EXISTS "${prefix}/share/man/man3/rio_recv.3")
  problem("f) not installed: ${prefix}/share/man/man3/rio_recv.3")
endif()

list(REMOVE_ITEM problems "")
if(problems)
  list(LENGTH problems n)
  string(REPLACE ";" "\n  - " p "${problems}")
  message(FATAL_ERROR "install/consumer: ${n} problem(s):\n  - ${p}")
endif()
message(STATUS "install/consumer: all four consumers built and ran")
