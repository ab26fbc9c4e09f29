# libFuzzer target over the GGUF header reader (PSTORE_BUILD_FUZZERS=ON, clang).
# Run it for a bounded time with tests/run_gguf_fuzz.sh (scripts/fuzz.sh does,
# in CI).
if(PSTORE_BUILD_FUZZERS)
  target_compile_options(pstore_formats PRIVATE -fsanitize=fuzzer-no-link)
  add_executable(gguf_fuzz ${CMAKE_CURRENT_LIST_DIR}/gguf_fuzz.cc)
  target_link_libraries(gguf_fuzz PRIVATE pstore_formats)
  target_compile_options(gguf_fuzz PRIVATE -fsanitize=fuzzer)
  target_link_options(gguf_fuzz PRIVATE -fsanitize=fuzzer)
endif()
