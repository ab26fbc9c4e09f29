// Internal to codec/: parsing of the frame versions no longer written (1, 2
// and 3; docs/codec.md, "Frames"). Nothing here writes a frame: the tests
// build old frames themselves (tests/legacy_frames.h).
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

#include "codec/frame.h"
#include "common/coding.h"
#include "common/status.h"

namespace pstore {

// From r, just after the transform byte of a version-1, -2 or -3 frame (with
// p->version, p->transform and p->info set): the raw length, the coders and
// the payloads.
Status ParseLegacyFrame(Reader* r, std::string_view frame, Frame* p);

}  // namespace pstore
