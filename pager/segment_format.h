// Where each table of a segment sits (pager/segment.h, docs/pager.md): the
// offsets computed from the sizes, the check that a header found in shared
// memory matches them, and the size of a stored layout. For Segment only.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "pager/segment.h"

namespace pstore {

struct SegmentOffsets {
  uint64_t manifest, layout, tables, slots, states, refs, units, alloc, attach, pins, pins_stride,
      data, total;
};

SegmentOffsets ComputeOffsets(uint64_t page, uint64_t manifest_len, uint64_t layout_len,
                              uint64_t tables_len, uint32_t nslots, uint32_t nunits,
                              uint32_t ntensors, uint64_t data_bytes);

// Whether a header describes a segment of file_size bytes as ComputeOffsets
// lays it out: every offset recomputed from the sizes, so that nothing mapped
// or indexed from it can reach past the file.
bool HeaderConsistent(const SegmentHeader& h, uint64_t file_size);

// Bytes of a layout as stored (Segment::LayoutBytes).
uint64_t LayoutSize(uint64_t nslots, uint64_t nunits, uint64_t npieces, uint64_t ntensors);

}  // namespace pstore
