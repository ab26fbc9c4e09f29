// What export writes with, whatever the model's format (the chunks come
// from store/export_chunks.h): a file's header rebuilt from the manifest, and
// a folder of files for a model of several files that is removed again when
// any of them cannot be written.
//
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace pstore {

// A format's file header rebuilt from the manifest: the header bytes kept
// verbatim, where the data starts and its size, and one entry per tensor of
// the file, named, with `fill(tensor, &entry)` setting the format's own
// fields (type, shape, place).
template <class Header, class Fill>
Header HeaderFromManifest(const Manifest& m, const ManifestFile& f, const Fill& fill) {
  Header h;
  h.header_bytes = f.header_bytes;
  h.data_offset = f.header_bytes.size();
  h.data_size = f.data_size;
  for (uint32_t i : f.tensors) {
    h.tensors.emplace_back();
    h.tensors.back().name = m.tensors[i].name;
    fill(m.tensors[i], &h.tensors.back());
  }
  return h;
}

// Writes the files of a model of several files into the folder `path`
// (created when missing) with `write_file(file path, file)`, then runs
// `finish` (may be empty). On any error it removes the files it wrote, and the
// folder when it made it, and returns the error.
Status WriteModelFolder(
    Env* env, const std::string& path, const std::vector<ManifestFile>& files,
    const std::function<Status(const std::string& out, const ManifestFile& f)>& write_file,
    const std::function<Status()>& finish);

}  // namespace pstore
