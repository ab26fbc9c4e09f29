// The segment's format: table offsets, the header check, the layout as
// stored in a segment and its check (Segment::LayoutBytes, ReadLayout,
// CheckLayout), and the tensor table and manifest as found there.
#include "pager/segment_format.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace pstore {

namespace {

uint64_t RoundUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

struct LayoutPrefix {
  uint64_t page, unit, data_bytes;
  uint32_t nslots, nunits, npieces, ntensors;
};
static_assert(sizeof(LayoutPrefix) == 40);

template <typename T>
void Append(std::string* out, const std::vector<T>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
// The next n records of type T at *p, in place (the layout's records are
// 8-byte aligned: its prefix is 40 bytes and its offset a multiple of 64).
template <typename T>
std::span<const T> Span(const uint8_t** p, size_t n) {
  std::span<const T> s(reinterpret_cast<const T*>(*p), n);
  *p += n * sizeof(T);
  return s;
}

}  // namespace

SegmentOffsets ComputeOffsets(uint64_t page, uint64_t manifest_len, uint64_t layout_len,
                              uint64_t tables_len, uint32_t nslots, uint32_t nunits,
                              uint32_t ntensors, uint64_t data_bytes) {
  SegmentOffsets o;
  o.manifest = RoundUp(sizeof(SegmentHeader), 64);
  o.layout = RoundUp(o.manifest + manifest_len, 64);
  o.tables = RoundUp(o.layout + layout_len, 64);
  o.slots = RoundUp(o.tables + tables_len, 64);
  o.states = RoundUp(o.slots + sizeof(SlotInfo) * nslots, 64);
  o.refs = RoundUp(o.states + 4ull * nslots, 64);
  o.units = RoundUp(o.refs + nslots, 64);
  o.alloc = RoundUp(o.units + sizeof(UnitInfo) * nunits, 64);
  o.attach = RoundUp(o.alloc + 4ull * nunits, 64);
  o.pins = RoundUp(o.attach + sizeof(AttachEntry) * kMaxAttach, page);
  o.pins_stride = RoundUp(std::max<uint64_t>(4ull * ntensors, 4), page);
  // The data region starts on a huge-page boundary of the file, so that
  // huge-page slots can be backed by huge pages.
  o.data = RoundUp(o.pins + o.pins_stride * kMaxAttach, kHugePage);
  o.total = o.data + data_bytes;
  return o;
}

bool HeaderConsistent(const SegmentHeader& h, uint64_t file_size) {
  constexpr uint64_t kMaxFile = 1ull << 48;  // sizes below this cannot overflow Compute
  if (file_size >= kMaxFile || h.page == 0 || h.page > kHugePage || (h.page & (h.page - 1)) != 0 ||
      h.unit_bytes == 0 || h.manifest_len > file_size || h.layout_len > file_size ||
      h.tables_len > file_size || h.data_bytes > file_size || h.data_bytes % h.unit_bytes != 0 ||
      h.data_bytes / h.unit_bytes != h.nunits)
    return false;
  SegmentOffsets o = ComputeOffsets(h.page, h.manifest_len, h.layout_len, h.tables_len, h.nslots,
                                    h.nunits, h.ntensors, h.data_bytes);
  return o.manifest == h.manifest_off && o.layout == h.layout_off && o.tables == h.tables_off &&
         o.slots == h.slots_off && o.states == h.states_off && o.refs == h.refs_off &&
         o.units == h.units_off && o.alloc == h.alloc_off && o.attach == h.attach_off &&
         o.pins == h.pins_off && o.pins_stride == h.pins_stride && o.data == h.data_off &&
         o.total == h.total_bytes && h.total_bytes == file_size;
}

uint64_t LayoutSize(uint64_t nslots, uint64_t nunits, uint64_t npieces, uint64_t ntensors) {
  return sizeof(LayoutPrefix) + nslots * sizeof(Slot) + nunits * sizeof(Unit) +
         npieces * sizeof(SlotPiece) + ntensors * sizeof(TensorPlace);
}

std::string Segment::LayoutBytes(const Layout& l) {
  LayoutPrefix pre{l.page,
                   l.unit,
                   l.data_bytes,
                   uint32_t(l.slots.size()),
                   uint32_t(l.units.size()),
                   uint32_t(l.pieces.size()),
                   uint32_t(l.tensors.size())};
  std::string out;
  out.reserve(LayoutSize(l.slots.size(), l.units.size(), l.pieces.size(), l.tensors.size()));
  out.append(reinterpret_cast<const char*>(&pre), sizeof(pre));
  Append(&out, l.slots);
  Append(&out, l.units);
  Append(&out, l.pieces);
  Append(&out, l.tensors);
  return out;
}

Result<LayoutView> Segment::ReadLayout(const TensorTable& m) const {
  auto bad = [&](const char* what) {
    return Status::Corruption("shared memory " + name_ + ": layout " + what +
                              "; remove it with `pstore ps --gc`");
  };
  // Within the bounds the header had when it was checked (MapAndClaim).
  const Checked& h = checked_;
  LayoutPrefix pre;
  if (h.layout_len < sizeof(pre)) return bad("truncated");
  std::shared_ptr<const void> owner;
  const uint8_t* p = TablesBytes(h.layout_off, h.layout_len, &owner);
  std::memcpy(&pre, p, sizeof(pre));
  p += sizeof(pre);
  if (h.layout_len != LayoutSize(pre.nslots, pre.nunits, pre.npieces, pre.ntensors))
    return bad("of the wrong size");
  LayoutView l;
  l.page = pre.page;
  l.unit = pre.unit;
  l.data_bytes = pre.data_bytes;
  l.slots = Span<Slot>(&p, pre.nslots);
  l.units = Span<Unit>(&p, pre.nunits);
  l.pieces = Span<SlotPiece>(&p, pre.npieces);
  l.tensors = Span<TensorPlace>(&p, pre.ntensors);
  l.owned = std::move(owner);
  PSTORE_RETURN_IF_ERROR(CheckLayout(l, m));
  return l;
}

Status Segment::CheckLayout(const LayoutView& l, const TensorTable& m) const {
  auto bad = [&](const char* what) {
    return Status::Corruption("shared memory " + name_ + ": layout " + what +
                              "; remove it with `pstore ps --gc`");
  };
  const Checked& h = checked_;
  if (l.page != h.page || l.unit != h.unit || l.data_bytes != h.data_bytes ||
      l.slots.size() != h.nslots || l.units.size() != h.nunits || l.tensors.size() != h.ntensors ||
      l.tensors.size() != m.count())
    return bad("does not match the header");
  if (l.Fingerprint() != h.fingerprint) return bad("does not match its fingerprint");
  // Every index and range in bounds, so that no later use can stray; the
  // comparisons are written so that they cannot overflow.
  auto within = [](uint64_t first, uint64_t count, uint64_t size) {
    return first <= size && count <= size - first;
  };
  uint64_t prev_end = 0;
  for (size_t i = 0; i < l.slots.size(); i++) {
    const Slot& s = l.slots[i];
    const SlotInfo& si = slots_[i];
    if (s.bytes == 0 || s.offset % l.page != 0 || s.bytes % l.page != 0 || s.offset < prev_end ||
        !within(s.offset, s.bytes, l.data_bytes) || s.npieces == 0 ||
        !within(s.first_piece, s.npieces, l.pieces.size()) ||
        !within(s.first_tensor, s.ntensors, l.tensors.size()))
      return bad("has a slot out of range");
    if (si.offset != s.offset || si.bytes != s.bytes || si.first_tensor != s.first_tensor ||
        si.ntensors != s.ntensors)
      return bad("does not match the segment's slot table");
    prev_end = s.offset + s.bytes;
    for (uint32_t k = 0; k < s.npieces; k++) {
      const SlotPiece& pc = l.pieces[s.first_piece + k];
      if (uint64_t(pc.offset) + pc.len > s.bytes) return bad("has a piece out of its slot");
    }
  }
  for (size_t u = 0; u < l.units.size(); u++) {
    const Unit& un = l.units[u];
    const UnitInfo& ui = units_[u];
    if (!within(un.first_slot, un.nslots, l.slots.size()) || un.used_bytes > l.unit)
      return bad("has a unit out of range");
    if (ui.first_slot != un.first_slot || ui.nslots != un.nslots || ui.used_bytes != un.used_bytes)
      return bad("does not match the segment's unit table");
  }
  for (const SlotPiece& pc : l.pieces) {
    if (pc.chunk >= m.chunk_count() || pc.tensor >= l.tensors.size())
      return bad("has a piece out of range");
    // One of its tensor's chunks, of that chunk's length.
    const uint64_t first = m.first_chunk(pc.tensor);
    if (pc.chunk < first || pc.chunk - first >= m.ChunkCount(pc.tensor) ||
        pc.len != m.ChunkBytes(pc.tensor, pc.chunk - first))
      return bad("has a piece that is not one of its tensor's chunks");
  }
  for (uint32_t t = 0; t < l.tensors.size(); t++) {
    const TensorPlace& tp = l.tensors[t];
    const uint64_t size = m.size(t);
    if (!within(tp.first_slot, tp.nslots, l.slots.size()) || (tp.nslots == 0) != (size == 0) ||
        !within(tp.offset, size, l.data_bytes))
      return bad("places a tensor out of range");
    if (tp.nslots == 0) continue;
    // Its slots follow each other and cover it.
    const Slot& first = l.slots[tp.first_slot];
    const Slot& last = l.slots[tp.first_slot + tp.nslots - 1];
    for (uint32_t k = 1; k < tp.nslots; k++) {
      const Slot& a = l.slots[tp.first_slot + k - 1];
      if (l.slots[tp.first_slot + k].offset != a.offset + a.bytes)
        return bad("places a tensor in slots with gaps");
    }
    if (tp.offset < first.offset || tp.offset + size > last.offset + last.bytes)
      return bad("places a tensor outside its slots");
  }
  return Status::OK();
}

// The bytes [off, off + len) of the segment's header mapping: in place, or,
// when another user may write the segment, a private copy (8-aligned) that
// *owner keeps, so that what is checked is what is used.
const uint8_t* Segment::TablesBytes(uint64_t off, uint64_t len,
                                    std::shared_ptr<const void>* owner) const {
  if (!others_write_) return base_ + off;
  auto copy = std::make_shared<std::vector<uint64_t>>((len + 7) / 8);
  std::memcpy(copy->data(), base_ + off, len);
  *owner = copy;
  return reinterpret_cast<const uint8_t*>(copy->data());
}

Result<TensorTable> Segment::ReadTables() const {
  const Checked& h = checked_;
  std::shared_ptr<const void> owner;
  const uint8_t* p = TablesBytes(h.tables_off, h.tables_len, &owner);
  return TensorTable::Open(std::span<const uint8_t>(p, h.tables_len), std::move(owner),
                           "shared memory " + name_);
}

std::string Segment::CopyManifest() const {
  const Checked& h = checked_;
  return std::string(reinterpret_cast<const char*>(base_ + h.manifest_off), h.manifest_len);
}

}  // namespace pstore
