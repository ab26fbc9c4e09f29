// Pause points for tests of races between processes on different hosts
// (a push and a gc): with PSTORE_TEST_PAUSE set to "POINT=PATH[,POINT=PATH]",
// a process reaching POINT creates PATH.paused and waits until PATH.go
// exists, so a test can run another process's whole step at exactly that
// moment. Without the variable (as in every real run) it does nothing.
//
// Points: "gc-find-names" (gc step 1, after reading the names and before
// their manifests), "gc-marking" (gc, after step 1), "gc-claims" (gc step 3, after
// reading the claims and before reading their manifests and the names),
// "gc-names" (gc step 3, after reading the names and before their manifests),
// "gc-sweeping" (gc step 4, after deleting locations, manifests and claims'
// manifests, before packs and chunk objects), "gc-swept" (gc step 4, after
// deleting and before cleaning the chunk index), "push-locations" (push, after its claim is renewed
// and before it writes the model's locations object), "push-publish" (push, after the manifest is
// up and before the name), "pull-written" (pull, after a batch of chunks is written locally, so
// first after the first batch; with this point set a pull runs its batches one at a time, so no
// remote read is in flight while it waits and whatever a test does to the remote then meets the
// pull's next batch), "pull-kept" (pull, in a store whose chunks family no compaction changes
// meanwhile, such as a fresh one: one batch of at most 4 MiB at a time, a flush asked for after the
// first, waiting after each for any flush in progress to end, and pausing at the first after which
// the local chunks family holds more tables than when the pull began: some of what it fetched is on
// disk, the model not yet committed).
//
// Thread-safety: may be called from any thread.
#pragma once

namespace pstore {

void TestPause(const char* point);

// Whether PSTORE_TEST_PAUSE names point (for a step that runs differently
// while a test may stop it there).
bool TestPauseSet(const char* point);

}  // namespace pstore
