#include "pager/layout.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <numeric>

namespace pstore {

namespace {
uint64_t RoundUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}
}  // namespace

Layout Layout::Build(const Manifest& m, uint64_t page) {
  Layout l;
  l.page = page;
  l.unit = std::max<uint64_t>(kHugePage, m.chunk_size);
  const uint64_t unit = l.unit;
  uint64_t cursor = 0;     // next free byte of the data region (page-aligned)
  int64_t pack_slot = -1;  // the open one-page slot for small tensors
  uint64_t pack_used = 0;
  // GGUF models ask for their tensors at multiples of general.alignment
  // (honoured up to a huge page, the alignment of the segment's mapping).
  const uint64_t align = std::min<uint64_t>(m.alignment, kHugePage);
  const uint64_t small_align = std::max<uint64_t>(kSmallTensorAlign, align);
  l.tensors.resize(m.tensors.size());
  // Pieces per slot; a packed slot gains pieces while later slots are made,
  // so they are gathered here and laid out contiguously at the end.
  std::vector<std::vector<SlotPiece>> per_slot;
  for (uint32_t ti = 0; ti < m.tensors.size(); ti++) {
    const ManifestTensor& t = m.tensors[ti];
    TensorPlace& p = l.tensors[ti];
    if (t.size == 0) {
      p = {cursor, uint32_t(l.slots.size()), 0};
      continue;
    }
    if (t.size < page && small_align < page) {
      uint64_t at = RoundUp(pack_used, small_align);
      if (pack_slot < 0 || at + t.size > page) {
        pack_slot = int64_t(l.slots.size());
        l.slots.push_back({cursor, uint32_t(page), 0, 0, ti, 0, 0});
        per_slot.emplace_back();
        cursor += page;
        at = 0;
      }
      Slot& s = l.slots[size_t(pack_slot)];
      per_slot[size_t(pack_slot)].push_back({t.first_chunk, uint32_t(at), uint32_t(t.size), ti, 0});
      s.ntensors = ti - s.first_tensor + 1;
      p = {s.offset + at, uint32_t(pack_slot), 1};
      pack_used = at + t.size;
      continue;
    }
    // Tensors of a page or more follow each other on page boundaries, with
    // no gaps (but for an alignment over a page); a slot may straddle two
    // units (pager/segment.h).
    if (align > page) cursor = RoundUp(cursor, align);
    p.offset = cursor;
    p.first_slot = uint32_t(l.slots.size());
    // Each slot holds k consecutive chunks, k the fewest whose bytes are a
    // whole number of pages: 1 but for a tensor's own chunk length on pages
    // over 4 KiB (a 16 KiB page and a 208896-byte Q8_0 chunk: 4 chunks a
    // slot), so that no page is shared by two slots. The last slot holds
    // what is left.
    const uint64_t n = m.ChunkCount(t), len = m.ChunkLen(t);
    const uint64_t k = page / std::gcd(len, page);
    for (uint64_t j = 0; j < n; j += k) {
      const uint64_t start = m.ChunkStart(t, j), end = std::min(n, j + k);
      const uint64_t bytes = m.ChunkStart(t, end - 1) + m.ChunkBytes(t, end - 1) - start;
      l.slots.push_back({cursor + start, uint32_t(RoundUp(bytes, page)), 0, 0, ti, 1, 0});
      per_slot.emplace_back();
      for (uint64_t c = j; c < end; c++)
        per_slot.back().push_back({t.first_chunk + c, uint32_t(m.ChunkStart(t, c) - start),
                                   uint32_t(m.ChunkBytes(t, c)), ti, 0});
    }
    p.nslots = uint32_t(l.slots.size() - p.first_slot);
    cursor += RoundUp(t.size, page);
  }
  for (size_t i = 0; i < l.slots.size(); i++) {
    l.slots[i].first_piece = uint32_t(l.pieces.size());
    l.slots[i].npieces = uint32_t(per_slot[i].size());
    l.pieces.insert(l.pieces.end(), per_slot[i].begin(), per_slot[i].end());
  }
  l.data_bytes = RoundUp(cursor, unit);
  l.units.assign(size_t(l.data_bytes / unit), Unit{0, 0, 0, 0});
  // A unit's slots are those overlapping it (slots are in offset order, so
  // they form a range; a straddling slot belongs to both its units).
  for (uint32_t i = 0; i < l.slots.size(); i++) {
    const Slot& sl = l.slots[i];
    uint64_t begin = sl.offset, end = sl.offset + sl.bytes;
    for (uint64_t u = begin / unit; u * unit < end; u++) {
      Unit& un = l.units[size_t(u)];
      if (un.nslots == 0) un.first_slot = i;
      un.nslots = i - un.first_slot + 1;
      un.used_bytes += uint32_t(std::min(end, (u + 1) * unit) - std::max(begin, u * unit));
    }
  }
  return l;
}

uint64_t Layout::Fingerprint() const {
  return LayoutView{page, unit, data_bytes, slots, units, pieces, tensors, nullptr}.Fingerprint();
}

LayoutView LayoutView::Of(Layout l) {
  auto owned = std::make_shared<const Layout>(std::move(l));
  return LayoutView{owned->page,  owned->unit,   owned->data_bytes, owned->slots,
                    owned->units, owned->pieces, owned->tensors,    owned};
}

uint64_t LayoutView::Fingerprint() const {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, &page, sizeof(page));
  XXH3_64bits_update(&st, &unit, sizeof(unit));
  XXH3_64bits_update(&st, &data_bytes, sizeof(data_bytes));
  XXH3_64bits_update(&st, units.data(), units.size_bytes());
  XXH3_64bits_update(&st, slots.data(), slots.size_bytes());
  XXH3_64bits_update(&st, pieces.data(), pieces.size_bytes());
  XXH3_64bits_update(&st, tensors.data(), tensors.size_bytes());
  return XXH3_64bits_digest(&st);
}

}  // namespace pstore
