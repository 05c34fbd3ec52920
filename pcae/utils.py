"""Small helpers shared across pcae: the user-facing error type and atomic file writes."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """pcae's cache folder: $PCAE_CACHE_DIR, else $XDG_CACHE_HOME/pcae, else ~/.cache/pcae."""
    base = os.environ.get("PCAE_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcae"


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


HDF5_RESERVE = 4 << 20  # bytes kept free beside an HDF5 write (see ensure_space)


def ensure_space(path, nbytes: int) -> None:
    """DiskFull unless the disk of `path` has room for `nbytes` more, twice over, plus HDF5_RESERVE.

    Called before each HDF5 write: HDF5 does not report a full disk reliably (its metadata
    writes fail inside object deallocation, ignored, and the process can then crash), so pcae
    refuses a write that would come close to filling the disk instead of attempting it."""
    import shutil

    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < 2 * int(nbytes) + HDF5_RESERVE:
        raise DiskFull(path)


def is_disk_full(error: BaseException, folder=None) -> bool:
    """Whether `error`, raised while writing into `folder`, means the disk is full: ENOSPC, as
    OSError or inside another library's message (HDF5: errno 28), or an error from a writer that
    does not say (torch.save: "unexpected pos") while the folder's disk has under 1 MiB free."""
    import errno

    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    if "No space left" in text or "errno = 28" in text or "[Errno 28]" in text:
        return True
    if folder is not None and not isinstance(error, OSError):  # an OSError says what it is
        import shutil

        try:
            return shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            return False
    return False


def refuse_special(path: Path, what: str) -> None:
    """PcaeError when `path` is a pipe, socket or device: reading one would block on a writer
    that never comes or never end (/dev/zero); a missing path or a folder is the caller's to say."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise PcaeError(f"{path}: is not a regular file (a pipe, socket or device), expected {what}")


def open_image(path, mode: str | None = None, what: str = "image"):
    """An image file, decoded, as a PIL image (converted to `mode` if given). Every way a file can
    fail is one PcaeError naming it: missing, a folder, not an image or truncated, and more pixels
    than PIL's Image.MAX_IMAGE_PIXELS (a decompression bomb: a small file that decodes to
    gigabytes; PIL only warns below twice its limit, pcae makes the warning an error, raised from
    the header before anything is decoded). Used by every reader of photos and query images; data
    folders skip such files instead (pcae.data)."""
    import warnings

    from PIL import Image

    path = Path(path)
    expected = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
    if path.is_dir():
        raise PcaeError(f"{path}: is a folder, expected {expected}")
    if not path.exists():
        raise PcaeError(f"{path} does not exist")
    refuse_special(path, expected)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert(mode) if mode else im.copy()
    except PcaeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PcaeError(f"{path}: refused, {first_line(e)}") from None
    except Exception as e:  # PIL raises many types for broken files
        raise PcaeError(f"{path} is not a readable {what}: {first_line(e, with_type=True)}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _host_tag() -> str:
    """8 hex digits naming this machine: a pid means something only on the host that wrote it."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def writer_tag() -> str:
    """What pcae's temp names carry to say who writes them: `pid{pid}-{host}`."""
    return f"pid{os.getpid()}-{_host_tag()}"


def _temp_pid(name: str) -> int | None:
    """The writer's pid in a pcae temp name `.{target}.pid{pid}-{host}.{random}...` written on
    this machine (or in the older `pid{pid}` form), or None: another machine's temp files in a
    shared folder are never taken for a dead writer's."""
    parts = name.split(".")
    for part in parts[2:]:
        pid, _, host = part.partition("-")
        if pid.startswith("pid") and pid[3:].isdigit() and host in ("", _host_tag()):
            return int(pid[3:])
    return None


def clean_stale_temps(folder: Path, target: str | None = None) -> int:
    """Remove pcae's own temp files and staging folders in `folder` (of `target` only, if given)
    whose writing process no longer exists: what a run killed with SIGKILL leaves behind."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        ours = (name.endswith(".tmp") and name.startswith(f".{target}." if target else ".")) or (
            target is None and name.startswith(STAGING_PREFIX))
        pid = _temp_pid(name) if ours else None
        if pid is None or _pid_alive(pid):
            continue
        try:
            if entry.is_dir():
                import shutil
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temp path in the same folder as `path`; on success fsync it and os.replace it over
    `path`, so a reader (or a run killed at any moment) sees the old file or the new one, never half.

    The temp name carries the writer's pid, so the temp files of killed runs are removed the next
    time pcae writes `path`."""
    path = Path(path)
    if path.is_dir():  # refused before anything is written, naming the path the caller gave
        raise PcaeError(f"{path}: is a folder, a file was expected")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)  # any killed pcae writer's, not only this file's
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer_tag()}.",
                               suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError, DiskFull) as e:  # checked before the temp file goes: its space counts
        if isinstance(e, DiskFull) or is_disk_full(e, path.parent):
            raise DiskFull(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


SOFTWARE = "pcae"  # the PNG "Software" text chunk of every image pcae writes: what --force may replace


def written_by_pcae(path: str | os.PathLike) -> bool:
    """Whether `path` is a file pcae wrote (a PNG with pcae's Software chunk or its older "pcae" key,
    an HDF5 file with a pcae format / pcae attr, pcae's scores.json), or a folder of only such
    files: what an output option's --force may replace. Anything else is the user's."""
    path = Path(path)
    if path.is_dir():
        return all(written_by_pcae(entry) for entry in path.iterdir())
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                text = getattr(image, "text", {}) or {}
            return text.get("Software") == SOFTWARE or "pcae" in text
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                return str(f.attrs.get("format", "")).startswith("pcae") or "pcae" in f.attrs
        if path.name == "scores.json":
            import json

            return "pcae" in json.loads(path.read_text())
    except Exception:  # unreadable: not something pcae can vouch for
        return False
    return False


def refuse_existing(path: str | os.PathLike | None, force: bool) -> None:
    """An output option's rule: an existing path needs --force, and --force replaces only what pcae
    wrote (written_by_pcae), never a user's file."""
    if path is None or not Path(path).exists():
        return
    if not force:
        raise PcaeError(f"{path}: already exists; pass --force to replace it")
    if not written_by_pcae(path):
        raise PcaeError(f"{path}: exists and is not a file pcae wrote; --force replaces only pcae's "
                        "outputs (remove it yourself, or choose another path)")


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


# ---------------------------------------------------------------------------------------------
# What --force replaces, kept until the replacement is complete

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
    import shutil

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
    import shutil

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


def refuse_not_ours(paths, is_ours, why: str = "--force replaces only pcae's own outputs") -> None:
    """PcaeError naming the first of `paths` that `is_ours` denies (a link, or a file pcae did not
    write under one of its names): what an output's --force must leave alone."""
    for path in paths:
        if not is_ours(path):
            kind = "a link" if Path(path).is_symlink() else "not a file pcae wrote"
            raise PcaeError(f"{path}: is {kind}; {why} (move it away, or choose another --out)")


# ---------------------------------------------------------------------------------------------
# Several files that must change together (a latents folder: latents, index, infos)

STAGING_PREFIX = ".pcae-staging."
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
    import json
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover_files(folder)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{STAGING_PREFIX}{writer_tag()}."))
    try:
        yield {name: staging / name for name in names}
        for name in names:
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


def recover_files(folder: str | os.PathLike) -> bool:
    """Finish a committed `atomic_files` change that was interrupted (a no-op when none was).

    Returns True when it had something to finish. Raises PcaeError when the folder cannot be
    written to finish it."""
    import json
    import shutil

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
        raise PcaeError(f"{journal}: unreadable commit journal ({e}); remove it and rerun the "
                        "command that wrote this folder") from None
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


def memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_fits(nbytes: float, what: str) -> None:
    """PcaeError naming `what` (the options responsible) when nbytes exceed this machine's memory,
    so an impossible size is refused before anything is allocated."""
    total = memory_bytes()
    if total and nbytes > total:
        raise PcaeError(f"{what} would need about {_size(nbytes)}; this machine has {_size(total)} of "
                        "memory")


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PB"


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo (Linux); what it can tell elsewhere."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction sets this CPU reports, e.g. ['amx_bf16', 'avx512_bf16']."""
    flags = _cpuinfo()[1]
    return [name for name in ("amx_bf16", "avx512_bf16") if name in flags]


def cpu_description() -> str:
    """The CPU's model name and its bf16 support, for every speed figure (Linux /proc/cpuinfo)."""
    model, _ = _cpuinfo()
    bf16 = cpu_bf16_flags()
    return f"{model}, {os.cpu_count()} cores, bf16: {', '.join(bf16) if bf16 else 'none'}"
