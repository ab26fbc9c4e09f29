# libFuzzer target over the codec (PSTORE_BUILD_FUZZERS=ON, clang; see the top
# CMakeLists.txt). Run it for a bounded time with `make codec_fuzz_run`
# (PSTORE_FUZZ_SECONDS, default 60) or tests/run_codec_fuzz.sh.
if(PSTORE_BUILD_FUZZERS)
  add_executable(codec_fuzz ${CMAKE_CURRENT_LIST_DIR}/codec_fuzz.cc)
  target_link_libraries(codec_fuzz PRIVATE pstore_codec)
  target_compile_options(codec_fuzz PRIVATE -fsanitize=fuzzer)
  target_link_options(codec_fuzz PRIVATE -fsanitize=fuzzer)
  set(PSTORE_FUZZ_SECONDS 60 CACHE STRING "Seconds that codec_fuzz_run fuzzes for")
  add_custom_target(codec_fuzz_run
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_codec_fuzz.sh $<TARGET_FILE:codec_fuzz>
            ${PSTORE_FUZZ_SECONDS} ${CMAKE_CURRENT_BINARY_DIR}/codec_fuzz_work
    DEPENDS codec_fuzz USES_TERMINAL)
endif()
