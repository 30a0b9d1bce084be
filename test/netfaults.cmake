# Real network faults (test/netfaults.sh): in a network namespace of the
# test's own (unshare -n), with nft (a blackhole, random loss, injected
# resets, half-open handshakes) and tc (tbf, a slow link), against
# ringio-proxy and ringio-echo, once per backend. Needs root (or a user
# namespace), nft and tc; without them it exits 77 and ctest reports a
# skip with the reason. Included from test/CMakeLists.txt.
find_package(Threads REQUIRED)

add_executable(nf_connect ${CMAKE_CURRENT_SOURCE_DIR}/nf_connect.c)
target_link_libraries(nf_connect PRIVATE ringio Threads::Threads)
add_executable(nf_client ${CMAKE_CURRENT_SOURCE_DIR}/nf_client.c)

if(TARGET ringio-proxy AND TARGET ringio-echo)
  foreach(b uring epoll)
    add_test(NAME netfaults.${b}
      COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/netfaults.sh
        --proxy $<TARGET_FILE:ringio-proxy> --echo $<TARGET_FILE:ringio-echo>
        --nf-connect $<TARGET_FILE:nf_connect> --nf-client $<TARGET_FILE:nf_client>
        ${CMAKE_BINARY_DIR} ${b})
    set_tests_properties(netfaults.${b} PROPERTIES
      ENVIRONMENT "RINGIO_BACKEND=${b}"
      TIMEOUT 400
      SKIP_RETURN_CODE 77
      LABELS netfaults)
  endforeach()
endif()
