// Where a model's tensors sit in its shared-memory segment.
//
// The data region is cut into slots, the unit of loading (one chunk, or a
// page of small tensors), and into units of max(2 MiB, chunk size), the unit
// of memory: a unit its slots cover entirely is allocated whole and backed by
// huge pages where the kernel allows, so a process maps it with one fault per
// 2 MiB; eviction frees whole units. A slot may straddle units; it belongs
// to each, and needs each allocated.
//
// Tensors of at least a page follow each other on page boundaries, each chunk
// one slot (several consecutive chunks of a tensor, one piece each, when its
// chunk length is not a whole number of pages: a quantized GGUF tensor on
// pages over 4 KiB), so a tensor is one contiguous range and there are no
// gaps (the last unit aside). Tensors smaller than a page are packed, 64-byte aligned,
// into shared one-page slots, so a model of many tiny tensors does not pay a
// page for each. A GGUF model's tensors are aligned to its general.alignment
// too (packed at that alignment when it is under a page, a slot of their own
// otherwise; big tensors start at a multiple of it), up to 2 MiB. Every process computes the same
// layout from the manifest (kLayoutVersion is part of the segment's name).
//
// Thread-safety: a Layout (and a LayoutView) is an immutable value once built.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "store/manifest.h"

namespace pstore {

// The version of the layout and of the segment's format (its header and
// tables); part of a segment's name, so a segment of another version is
// never opened.
constexpr uint32_t kLayoutVersion = 8;
constexpr uint64_t kSmallTensorAlign = 64;
constexpr uint64_t kHugePage = 2ull << 20;  // x86-64 and arm64 (4 KiB pages) PMD size

struct SlotPiece {
  uint64_t chunk;   // index into Manifest::chunks
  uint32_t offset;  // within the slot
  uint32_t len;     // raw bytes of the chunk
  uint32_t tensor;
  uint32_t reserved = 0;  // keeps the struct free of padding (it is hashed)
};

struct Slot {
  uint64_t offset;       // within the data region; page-aligned
  uint32_t bytes;        // a multiple of the page size
  uint32_t first_piece;  // into Layout::pieces
  uint32_t npieces;
  // Tensors whose pins keep the slot resident: [first_tensor, first_tensor + ntensors).
  // For a packed slot the range may include big tensors placed between its
  // small ones, which only makes eviction more careful.
  uint32_t first_tensor;
  uint32_t ntensors;
  uint32_t reserved = 0;  // keeps the struct free of padding (it is hashed)
};

struct TensorPlace {
  uint64_t offset;  // within the data region
  uint32_t first_slot;
  uint32_t nslots;  // 0 for an empty tensor
};

struct Unit {
  uint32_t first_slot;  // slots overlapping the unit: [first_slot, first_slot + nslots)
  uint32_t nslots;
  uint32_t used_bytes;  // bytes its slots cover; == unit: no gaps, huge pages possible
  uint32_t reserved;    // keeps the struct free of padding (it is hashed)
};

struct Layout {
  uint64_t page = 4096;
  uint64_t unit = kHugePage;  // bytes per unit
  uint64_t data_bytes = 0;    // a multiple of unit
  std::vector<Slot> slots;    // in offset order
  std::vector<Unit> units;
  std::vector<SlotPiece> pieces;
  std::vector<TensorPlace> tensors;  // parallel to Manifest::tensors

  static Layout Build(const Manifest& m, uint64_t page_size);
  // A hash of everything above, stored in the segment to catch a mismatch.
  uint64_t Fingerprint() const;
};

// A layout as a model reads it: the arrays where they lie, in a segment's
// mapping (Segment::ReadLayout, checked once) or in a Layout the view keeps.
struct LayoutView {
  uint64_t page = 4096;
  uint64_t unit = kHugePage;
  uint64_t data_bytes = 0;
  std::span<const Slot> slots;
  std::span<const Unit> units;
  std::span<const SlotPiece> pieces;
  std::span<const TensorPlace> tensors;
  std::shared_ptr<const void> owned;  // what the spans point into, when private

  // A view of a layout of this process's own, which it keeps.
  static LayoutView Of(Layout l);
  uint64_t Fingerprint() const;
};

}  // namespace pstore

static_assert(sizeof(pstore::Slot) == 32 && sizeof(pstore::SlotPiece) == 24 &&
                  sizeof(pstore::TensorPlace) == 16 && sizeof(pstore::Unit) == 16,
              "layout structs must have no padding");
