"""The errors a user can cause and fix, and how pcae words them: one line each (the CLI prints it
and exits 1; Ctrl-C exits 130)."""
from __future__ import annotations

import errno
import shutil
import signal


def first_line(e: BaseException, with_type: bool = False, limit: int = 160) -> str:
    """An exception as one short line for a user-facing message: its first line (or its type's
    name when it has no text), optionally prefixed by the type, at most `limit` characters."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if with_type and text:
        line = f"{type(e).__name__}: {line}"
    return line[:limit]

class PcaeError(Exception):
    """An error the user can fix (bad file, bad option). The CLI prints it as one line, exit 1."""

class Interrupted(PcaeError):
    """Ctrl-C ended a job between its steps (what was saved is named in the message). The CLI
    prints it as one line and exits 130, like any Ctrl-C."""

class DiskFull(PcaeError):
    """The disk filled while pcae wrote a file. Every writer goes through `atomic_path` /
    `atomic_files`, so the file's previous version (and everything else) is intact.

    After a failed HDF5 write the HDF5 library can crash while the interpreter exits; the CLI
    therefore leaves without running exit handlers once it has said this (pcae.cli.main)."""

    def __init__(self, path=None):
        where = "" if path is None else f" (writing {path})"
        super().__init__(f"the disk is full{where}: free some space and run again; "
                         "files written before are intact")

def is_disk_full(error: BaseException, folder=None) -> bool:
    """Whether `error`, raised while writing into `folder`, means the disk is full: ENOSPC, as
    OSError or inside another library's message (HDF5: errno 28), or an error from a writer that
    does not say (torch.save: "unexpected pos") while the folder's disk has under 1 MiB free."""

    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    if "No space left" in text or "errno = 28" in text or "[Errno 28]" in text:
        return True
    if folder is not None and not isinstance(error, OSError):  # an OSError says what it is
        try:
            return shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            return False
    return False


class deferred_interrupt:
    """Ctrl-C inside the block sets a flag; `check()`, called where stopping is safe (between
    chunks, before a commit), raises KeyboardInterrupt; `requested` says whether one came. A KeyboardInterrupt raised by the signal itself could land
    inside a library's finaliser (h5py closes files in weakref callbacks), where Python prints
    "ignored" and carries on. A second Ctrl-C raises at once; outside the main thread signals are
    left alone."""

    def __enter__(self):
        self.requested, self.previous = False, None
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
