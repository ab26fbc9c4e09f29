// Pack layout formats (store/remote/pack_layout.h), without a cluster: the
// chunk index's values and the locations object's bytes, and that a reader
// refuses damaged or foreign bytes.
#include "store/remote/pack_layout.h"

#include <gtest/gtest.h>

#include "codec/chunk_codec.h"

namespace pstore {
namespace {

ChunkKey Key(int i) {
  return HashBytes(&i, sizeof(i));
}

Locations Sample() {
  Locations l;
  const PackId a = Key(1000), b = Key(1001);
  for (int i = 0; i < 50; ++i) {
    ChunkLocation loc;
    loc.pack = i % 2 ? a : b;
    loc.offset = uint64_t(i) * 70000 + (uint64_t(1) << 33);  // above 32 bits
    loc.length = uint32_t(1000 + i);
    l.Set(Key(i), loc);
  }
  l.Set(Key(77), ChunkLocation{true, {}, 0, 0});  // its own object c.<key>
  return l;
}

TEST(PackLayout, IndexValueRoundTrips) {
  ChunkLocation loc{false, Key(5), (uint64_t(1) << 40) + 3, 123456};
  const std::string v = EncodeIndexValue(loc);
  EXPECT_EQ(v.size(), 28u);
  auto back = DecodeIndexValue(v);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, loc);
  EXPECT_FALSE(DecodeIndexValue(v.substr(1)).has_value());
  EXPECT_FALSE(DecodeIndexValue("").has_value());
}

TEST(PackLayout, LocationsRoundTripAndAreDeterministic) {
  const Locations l = Sample();
  const std::string bytes = l.Serialize();
  auto back = Locations::Parse(bytes, "l.x");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->size(), l.size());
  for (const auto& [k, loc] : l.map()) {
    const ChunkLocation* got = back->Find(k);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(*got, loc);
  }
  EXPECT_EQ(back->Packs().size(), 2u);
  // The same entries set in another order give the same bytes.
  Locations reversed;
  std::vector<std::pair<ChunkKey, ChunkLocation>> entries(l.map().begin(), l.map().end());
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) reversed.Set(it->first, it->second);
  EXPECT_EQ(reversed.Serialize(), bytes);
}

TEST(PackLayout, DamagedLocationsAreRefused) {
  const std::string bytes = Sample().Serialize();
  for (size_t at : {size_t(0), size_t(9), bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[at] ^= 0x01;
    auto r = Locations::Parse(bad, "l.damaged");
    ASSERT_FALSE(r.ok()) << "a flipped bit at " << at << " was accepted";
    EXPECT_TRUE(r.status().IsCorruption());
    EXPECT_NE(r.status().message().find("l.damaged"), std::string::npos);
  }
  EXPECT_FALSE(Locations::Parse(bytes.substr(0, bytes.size() - 3), "l.short").ok());
  EXPECT_FALSE(Locations::Parse("", "l.empty").ok());
  EXPECT_FALSE(Locations::Parse(std::string(100, 'x'), "l.other").ok());
}

TEST(PackLayout, LocationsWithALengthNoFrameHasAreRefused) {
  for (uint32_t length : {0u, 0x80000000u, 0xffffffffu}) {
    Locations l = Sample();
    l.Set(Key(5), ChunkLocation{false, Key(1000), 4096, length});
    auto r = Locations::Parse(l.Serialize(), "l.lying");
    ASSERT_FALSE(r.ok()) << "length " << length << " was accepted";
    EXPECT_TRUE(r.status().IsCorruption());
    EXPECT_NE(r.status().message().find("l.lying"), std::string::npos);
    EXPECT_NE(r.status().message().find(Key(5).Hex()), std::string::npos);
  }
  // A chunk's own object has no range.
  Locations own = Sample();
  own.Set(Key(6), ChunkLocation{true, {}, 0, 0});
  EXPECT_TRUE(Locations::Parse(own.Serialize(), "l.own").ok());
}

TEST(PackLayout, FramesLongerThanTheirChunkCanEncodeToAreRefused) {
  // Two tensors: "a" of one 64 KiB chunk, "b" of a 64 KiB and a 100-byte one.
  Manifest m;
  m.chunk_size = 64u << 10;
  m.tensors.push_back({"a", DType::kU8, {65536}, 0, 0, 65536, 0});
  m.tensors.push_back({"b", DType::kU8, {65636}, 0, 65536, 65636, 1});
  m.chunks = {Key(0), Key(1), Key(2)};
  Locations l;
  for (int i = 0; i < 3; ++i) {
    const uint64_t raw = i == 2 ? 100 : 65536;
    l.Set(Key(i), ChunkLocation{false, Key(1000), uint64_t(i) << 20, uint32_t(MaxFrameBytes(raw))});
  }
  EXPECT_TRUE(CheckFrameLengths(l, m, "l.ok").ok());
  // One byte longer than a 100-byte chunk's longest frame, though far less
  // than a 64 KiB chunk's.
  l.Set(Key(2), ChunkLocation{false, Key(1000), 5u << 20, uint32_t(MaxFrameBytes(100) + 1)});
  Status st = CheckFrameLengths(l, m, "l.lying");
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.IsCorruption());
  for (const std::string& word : {std::string("l.lying"), std::string("tensor b, chunk 1"),
                                  Key(2).Hex(), "k." + Key(1000).Hex() + " bytes 5242880-"}) {
    EXPECT_NE(st.message().find(word), std::string::npos) << word << ": " << st.ToString();
  }
  // A chunk in its own object has no range to check.
  l.Set(Key(2), ChunkLocation{true, {}, 0, 0});
  EXPECT_TRUE(CheckFrameLengths(l, m, "l.own").ok());
}

TEST(PackLayout, LocateNamesThePackAndByteRange) {
  auto l = std::make_shared<const Locations>(Sample());
  LocatedChunkSource src(RemoteIo{}, l);
  const ChunkLocation& loc = *l->Find(Key(3));
  EXPECT_EQ(src.Locate(Key(3)), "k." + loc.pack.Hex() + " bytes " + std::to_string(loc.offset) +
                                    "-" + std::to_string(loc.offset + loc.length));
  EXPECT_EQ(src.Locate(Key(77)), "c." + Key(77).Hex());
  // Not listed: no object of its own is assumed for a model stored in packs.
  EXPECT_EQ(src.Locate(Key(999)), "none: its locations object does not list it");
  LocatedChunkSource named(RemoteIo{}, l, "l.abc");
  EXPECT_EQ(named.Locate(Key(999)), "none: l.abc does not list it");
  // Without locations (a model pushed before packs) every chunk is its own object.
  EXPECT_EQ(LocatedChunkSource(RemoteIo{}, nullptr).Locate(Key(999)), "c." + Key(999).Hex());
  EXPECT_EQ(IndexShard(Key(3)), "i." + Key(3).Hex().substr(0, 2));
}

}  // namespace
}  // namespace pstore
