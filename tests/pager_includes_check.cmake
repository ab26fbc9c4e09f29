# The pager reads chunks only through the chunk-source seam
# (store/chunk_source.h): no file under pager/ may include a RocksDB header.
# Run as a test: cmake -DSOURCE_DIR=<repository> -P pager_includes_check.cmake
file(GLOB_RECURSE files "${SOURCE_DIR}/pager/*.h" "${SOURCE_DIR}/pager/*.cc")
if(NOT files)
  message(FATAL_ERROR "no pager files found under ${SOURCE_DIR}/pager")
endif()
set(bad "")
foreach(f IN LISTS files)
  file(STRINGS "${f}" hits REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]rocksdb/")
  if(hits)
    string(APPEND bad "\n  ${f}: ${hits}")
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "pager files include RocksDB headers; the pager reads chunks through "
                      "ChunkSource (store/chunk_source.h) only, see docs/architecture.md:${bad}")
endif()
list(LENGTH files n)
message(STATUS "${n} pager files, none includes a RocksDB header")
