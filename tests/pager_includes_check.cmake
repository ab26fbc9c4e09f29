# The pager reads chunks only through the chunk-source seam
# (store/chunk_source.h): no file under pager/ may include a RocksDB header.
# Its classes meet through narrow interfaces (pager/model_host.h): no file
# under pager/ declares a friend class.
# Run as a test: cmake -DSOURCE_DIR=<repository> -P pager_includes_check.cmake
file(GLOB_RECURSE files "${SOURCE_DIR}/pager/*.h" "${SOURCE_DIR}/pager/*.cc")
if(NOT files)
  message(FATAL_ERROR "no pager files found under ${SOURCE_DIR}/pager")
endif()
set(bad "")
set(bad_friends "")
foreach(f IN LISTS files)
  file(STRINGS "${f}" hits REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]rocksdb/")
  if(hits)
    string(APPEND bad "\n  ${f}: ${hits}")
  endif()
  file(STRINGS "${f}" friends REGEX "^[ \t]*friend[ \t]+(class|struct)")
  if(friends)
    string(APPEND bad_friends "\n  ${f}: ${friends}")
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "pager files include RocksDB headers; the pager reads chunks through "
                      "ChunkSource (store/chunk_source.h) only, see docs/architecture.md:${bad}")
endif()
if(bad_friends)
  message(FATAL_ERROR "pager files declare friends; give the other class what it needs through "
                      "a narrow interface (as pager/model_host.h does), see "
                      "docs/architecture.md:${bad_friends}")
endif()
list(LENGTH files n)
message(STATUS "${n} pager files: none includes a RocksDB header or declares a friend")
