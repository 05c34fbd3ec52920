"""Folder outputs: a run folder, a latents folder, a comparison, a set of portraits. One mechanism
gives every command that writes one the same promises:

    with output_folder(path, "latents folder", paths_of) as out:
        out.replace()                   # --force: check, then keep the old output aside
        with out.files([...]) as tmp:   # several files replaced as one change
            ...
        out.commit()                    # the new output is whole: the old one goes

- One writer at a time: a kernel lock on the folder (flock), which goes with the process.
- What --force replaces is pcae's own output only, by content (pcae.files.written_by_pcae): a
  user's file or a link under one of pcae's names is refused before anything changes. A damaged
  file of pcae's formats counts as pcae's only beside one that surely is.
- Nothing lost under an error, Ctrl-C, SIGKILL or a full disk: the replaced output waits in a
  hidden folder (`.pcae-replaced.<writer>`) until `commit()`; an error or Ctrl-C before then puts
  it back at once, and after a SIGKILL the next writer of the folder does (or drops it, when the
  new output had been committed). Several files that must change together go through a staging
  folder and a journal (`atomic_files`), finished by the next reader or writer after a kill.
- Temp files and staging folders of dead writers are removed (pcae.files.clean_stale_temps).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from pcae.errors import DiskFull, PcaeError, is_disk_full
from pcae.files import (
    STAGING_PREFIX,
    _fsync_dir,
    _pid_alive,
    _temp_pid,
    atomic_path,
    clean_stale_temps,
    usual_mode,
    writer_tag,
    written_by_pcae,
)


@contextmanager


def folder_lock(folder: str | os.PathLike, what: str = "folder"):
    """Hold `folder` (made if missing) for one pcae writer for the length of the block: a second
    pcae command writing the same folder meanwhile stops at once with a one-line PcaeError
    instead of mixing its files with this one's. The lock is the kernel's (flock on the folder),
    so it goes with the process, however that ends: a killed writer leaves no stale lock.

    The folders this call made are removed again when the block fails and leaves them empty."""
    import fcntl

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PcaeError(f"{folder}: exists and is not a folder")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PcaeError(f"{folder}: another pcae command is writing this {what} now; wait for it "
                            "to end (or stop it), then rerun") from None
        except OSError:  # a file system without locks on folders (some network mounts): unguarded
            pass
        try:
            yield folder
        except BaseException:
            for made in created:
                try:
                    made.rmdir()  # only when empty
                except OSError:
                    break
            raise
    finally:
        os.close(fd)

REPLACED_PREFIX = ".pcae-replaced."

_ASIDE_DONE = ".complete"

def set_aside(folder: str | os.PathLike, paths) -> Path:
    """Move `paths` (files or folders inside `folder`) into a hidden folder in it, REPLACED_PREFIX
    + writer_tag(), and mark it complete: what --force replaces is kept there until the new
    outputs are whole (then the caller removes it), so a command that fails, is stopped or is
    killed before then loses nothing (`put_back`, `restore_stale`). A set-aside interrupted
    half-way moves back at once."""
    folder = Path(folder)
    aside = Path(tempfile.mkdtemp(dir=folder, prefix=f"{REPLACED_PREFIX}{writer_tag()}."))
    try:
        for path in paths:
            target = aside / Path(path).relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        (aside / _ASIDE_DONE).touch()  # until then, what is not yet moved is still in `folder`
    except BaseException:
        put_back(folder, aside, clear=lambda aside: None)
        raise
    return aside

def put_back(folder: str | os.PathLike, aside: Path, clear) -> None:
    """Undo `set_aside`: `clear(aside)` removes the new command's partial outputs, then the kept files
    come back. Without the completion mark (a set-aside killed half-way, before anything new was
    written; or a put-back killed after it had cleared) the kept files are only moved back."""

    if (aside / _ASIDE_DONE).exists():
        clear(aside)
        (aside / _ASIDE_DONE).unlink()  # from here on a kill leaves a half put-back: moved back next time

    def move_back(source: Path, target_dir: Path) -> None:
        for entry in sorted(source.iterdir()):
            target = target_dir / entry.name
            if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
                move_back(entry, target)
            else:
                os.replace(entry, target)

    move_back(aside, Path(folder))
    shutil.rmtree(aside, ignore_errors=True)

def restore_stale(folder: str | os.PathLike, committed, clear) -> bool:
    """After a command that set outputs aside was killed (it could not clean up): put them back
    (`put_back` with `clear`) unless `committed()` says its new outputs were whole, then drop them.
    Only set-asides of writers no longer running on this machine are touched. Returns True when
    something was put back."""

    folder = Path(folder)
    try:
        kept = [p for p in folder.iterdir() if p.name.startswith(REPLACED_PREFIX) and p.is_dir()
                and not p.is_symlink()]
    except OSError:
        return False
    restored = False
    for aside in kept:
        pid = _temp_pid(aside.name)
        if pid is None or _pid_alive(pid):
            continue
        if ((aside / _ASIDE_DONE).exists() and committed()) or restored:
            shutil.rmtree(aside, ignore_errors=True)
        else:
            put_back(folder, aside, clear)
            restored = True
    return restored

def refuse_not_ours(paths, why: str = "--force replaces only pcae's own outputs") -> None:
    """PcaeError naming the first of `paths` that pcae did not write (pcae.files.written_by_pcae: a
    link, or a user's file under one of pcae's names); a damaged file of pcae's formats counts as
    pcae's only beside one that surely is. What an output's --force must leave alone."""
    files = []
    for path in map(Path, paths):  # a folder of an output: each file in it, so the first not pcae's is named
        files += sorted(f for f in path.rglob("*") if not f.is_dir() or f.is_symlink()) \
            if path.is_dir() and not path.is_symlink() else [path]
    verdicts = {f: written_by_pcae(f) for f in files}
    sure = True in verdicts.values()
    for path, ours in verdicts.items():
        if not (ours or (ours is None and sure)):
            kind = "a link" if path.is_symlink() else "not a file pcae wrote"
            raise PcaeError(f"{path}: is {kind}; {why} (move it away, or choose another --out)")

JOURNAL = ".pcae-commit.json"

@contextmanager


def atomic_files(folder: str | os.PathLike, names: list[str]):
    """Write several files of `folder` as one change: yields {name: temp path}; on success all of
    them replace folder/name, and a reader never sees some new and some old.

    The files are written into a staging folder inside `folder`. The commit point is a journal
    (one atomic rename) naming that folder; then each file is renamed into place and the journal
    removed. A run killed before the journal leaves the previous files untouched (its staging
    folder is removed later, `clean_stale_temps`); killed after it, the next `recover_files` on
    the folder finishes the renames. An exception or Ctrl-C inside the block discards the staging
    folder and leaves the previous files as they were.
    """

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover_files(folder)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{STAGING_PREFIX}{writer_tag()}."))
    try:
        yield {name: staging / name for name in names}
        for name in names:  # a writer may make its file 0600 (safetensors does): the usual mode
            os.chmod(staging / name, usual_mode())
            with open(staging / name, "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(staging)
        with atomic_path(folder / JOURNAL) as tmp:  # the commit point
            tmp.write_text(json.dumps({"staging": staging.name, "names": list(names)}))
    except (OSError, RuntimeError, DiskFull) as e:
        full = isinstance(e, DiskFull) or is_disk_full(e, folder)
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise DiskFull(folder) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    recover_files(folder)

def recover_files(folder: str | os.PathLike, wait: float = 30.0) -> bool:
    """Finish a committed `atomic_files` change that was interrupted (a no-op when none was).

    A change whose writer is still running is its writer's to finish: a reader (search while
    embed --force commits) waits up to `wait` seconds for it, and never moves a file of it.
    Returns True when it had something to finish. Raises PcaeError when the folder cannot be
    written to finish it."""

    folder = Path(folder)
    journal = folder / JOURNAL
    if not journal.is_file():
        clean_stale_temps(folder)
        return False
    try:
        plan = json.loads(journal.read_text())
        staging, names = plan["staging"], list(plan["names"])
        # the journal only ever names pcae's own staging folder in `folder` and plain file names:
        # anything else (a crafted or damaged journal) must not move or delete a thing
        plain = lambda name: (isinstance(name, str) and name not in ("", ".", "..")  # noqa: E731
                              and "/" not in name and "\\" not in name and "\0" not in name)
        if not (plain(staging) and staging.startswith(STAGING_PREFIX) and all(plain(n) for n in names)):
            raise ValueError("it names files outside this folder")
        staging = folder / staging
        if staging.is_symlink() or not staging.is_dir():
            raise ValueError(f"its staging folder {staging.name} is not a folder here")
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not journal.exists():  # its writer finished it while we read
            return False
        raise PcaeError(f"{journal}: unreadable commit journal ({e}); remove it and rerun the "
                        "command that wrote this folder") from None
    writer = _temp_pid(staging.name)
    if writer not in (None, os.getpid()) and _pid_alive(writer):  # a live writer finishes its own
        deadline = time.monotonic() + wait
        while journal.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if journal.exists():
            raise PcaeError(f"{folder}: pcae process {writer} is writing it; run again when it has finished")
        return False
    try:
        for name in names:
            if (staging / name).exists():
                os.replace(staging / name, folder / name)
        _fsync_dir(folder)
        journal.unlink()
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        raise PcaeError(f"{folder}: an interrupted write must be finished but the folder cannot be "
                        f"written ({e.strerror or e})") from None
    return True


class OutputFolder:
    """A folder being written as one output (see the module docstring); made by `output_folder`.

    paths_of(folder) lists the paths of this kind of output that exist in a folder (links
    included): what --force replaces, what a failed new output leaves behind.
    """

    def __init__(self, path: Path, what: str, paths_of):
        self.path, self.what, self.paths_of = path, what, paths_of
        self.aside: Path | None = None  # where the output --force replaces waits until commit()
        self.replaced = False  # whether replace() set an output aside (it may be back by now)

    def existing(self) -> list[Path]:
        return self.paths_of(self.path)

    def replace(self) -> None:
        """--force: refuse if any existing path of this output is not pcae's, then set them all
        aside until `commit()` (put back if the new output fails first)."""
        paths = self.existing()
        refuse_not_ours(paths)
        if paths:
            self.aside = set_aside(self.path, paths)
            self.replaced = True

    def clear(self) -> None:
        """Remove this output's own files (a new output that did not get whole)."""
        for path in self.existing():
            if written_by_pcae(path) is not False and not path.is_symlink():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        clean_stale_temps(self.path)

    def files(self, names: list[str]):
        """Several files of the folder replaced as one change (`atomic_files`)."""
        return atomic_files(self.path, names)

    def commit(self) -> None:
        """The new output is whole: what it replaced goes."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def put_back(self) -> bool:
        """Undo `replace()` before `commit()`: the new output's files go, the old ones come back."""
        if self.aside is None:
            return False
        put_back(self.path, self.aside, clear=lambda aside: self.clear())
        self.aside = None
        return True


@contextmanager
def output_folder(path: str | os.PathLike, what: str, paths_of, committed=None):
    """Write `path` as one output of kind `what` ("run folder", "latents folder", ...), holding its
    lock for the block; yields an OutputFolder.

    Before the block, what a killed writer left is finished or undone: a committed multi-file
    change is completed, an output a killed --force was replacing is put back unless
    `committed(folder)` says the new one had become whole (then it is dropped). After the block
    the output is committed; an exception or Ctrl-C in it puts back what `replace()` set aside.
    """
    path = Path(path)
    with folder_lock(path, what):
        folder = OutputFolder(path, what, paths_of)
        recover_files(path)
        restore_stale(path, committed=lambda: bool(committed and committed(path)),
                      clear=lambda aside: folder.clear())
        try:
            yield folder
        except BaseException:
            folder.put_back()
            raise
        folder.commit()
