"""_errors: pstore's statuses as Python exceptions.

Every failed C call becomes an instance of a subclass of pstore.Error carrying
the status number (`.status`), its name (`.status_name`) and libpstore's
message, which names the store, model, tensor or file and says what to do.
Thread-safety: check() must run on the thread that made the failed call (the
message is per thread in libpstore); it always does, right after the call.
"""

from ._capi import lib


class Error(Exception):
    """A pstore call failed. `.status` is the C API's pstore_status value."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def status_name(self):
        if self.status is None:
            return "error"
        return lib.pstore_status_string(self.status).decode()


class NotFound(Error, LookupError):
    status = 1


class Corruption(Error):
    status = 2


class InvalidArgument(Error, ValueError):
    status = 3


class IOFailure(Error, OSError):
    status = 4


class Busy(Error):
    status = 5


class NoSpace(Error, OSError):
    status = 6


class Unsupported(Error):
    status = 7


class Exists(Error):
    status = 8


class Internal(Error):
    status = 9


class Aborted(Error):
    status = 10


class NoMemory(Error, MemoryError):
    status = 11


class Closed(Error):
    """The Store or Model was closed, or belongs to the parent of a fork."""


_BY_STATUS = {c.status: c for c in (NotFound, Corruption, InvalidArgument, IOFailure, Busy, NoSpace,
                                    Unsupported, Exists, Internal, Aborted, NoMemory)}


def check(status, what=None):
    """Raises the exception of a nonzero status with libpstore's message."""
    if status == 0:
        return
    msg = lib.pstore_last_error().decode(errors="replace")
    if what and what not in msg:
        msg = f"{what}: {msg}" if msg else what
    cls = _BY_STATUS.get(status, Error)
    raise cls(msg or lib.pstore_status_string(status).decode(), status)
