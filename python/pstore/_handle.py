"""_handle: what Store and Model share as owners of a C handle.

Each holds self._h, a handle object with the C pointer (.ptr) and the process
that opened it (.pid), or None once closed. close() and the end of a with
block drop it for new calls; whatever was taken from the handle (a store's
models, a model's views) keeps its own reference and stays usable. In a forked
child every call is refused: the C handles are not fork-safe.

Thread-safety: close() must not race with other calls on the same object.
"""

import os

from ._errors import Closed


class HandleOwner:
    """The base of Store and Model. A subclass sets _kind ("store", "model")
    and _reopen ("the store", ...: what to open again in a forked child), may
    set _closed_hint (appended to the error for a closed handle), and
    defines _name()."""

    _closed_hint = ""

    def _handle(self):
        h = self._h
        if h is None:
            raise Closed(f"{self._kind} {self._name()} is closed{self._closed_hint}")
        if h.pid != os.getpid():
            raise Closed(f"{self._kind} {self._name()} was opened in process {h.pid}, the parent "
                         f"of this fork; pstore handles are not fork-safe: open {self._reopen} "
                         "again in the child")
        return h

    def close(self):
        """Closes this handle for new calls. What was opened from it stays
        usable, and the memory under it mapped, until the last of it goes:
        a store's models and their views, a model's views."""
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _state(self):
        return "closed" if self._h is None else "open"
