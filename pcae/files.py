"""Every file pcae reads or writes goes through here: atomic writes (a temp file in the same folder,
fsynced, then os.replace: a reader or a killed writer sees the old file or the new one, never half),
the temp files of killed writers cleaned up, free-space checks before HDF5 writes, image and torch
files decoded with one-line errors, and what --force may replace for a single-file output.

Temp names carry the writer's pid and host (`.{name}.pid{pid}-{host}.{random}.tmp`), so the next
pcae write in a folder removes what a writer killed on this machine left, and never a live one's.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

from pcae.errors import DiskFull, PcaeError, first_line, is_disk_full

VERSION = "0.1.0"  # pcae's version, written into every checkpoint


def cache_root() -> Path:
    """pcae's cache folder: $PCAE_CACHE_DIR, else $XDG_CACHE_HOME/pcae, else ~/.cache/pcae (a user
    with no home: pcae-cache-UID in the temp folder)."""
    base = os.environ.get("PCAE_CACHE_DIR")
    if base:
        return Path(base)
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "pcae"
    try:
        return Path.home() / ".cache" / "pcae"
    except (RuntimeError, KeyError):  # a service's user: no $HOME and no password entry
        return Path(tempfile.gettempdir()) / f"pcae-cache-{os.getuid()}"

HDF5_RESERVE = 4 << 20  # bytes kept free beside an HDF5 write (see ensure_space)

def ensure_space(path, nbytes: int) -> None:
    """DiskFull unless the disk of `path` has room for `nbytes` more, twice over, plus HDF5_RESERVE.

    Called before each HDF5 write: HDF5 does not report a full disk reliably (its metadata
    writes fail inside object deallocation, ignored, and the process can then crash), so pcae
    refuses a write that would come close to filling the disk instead of attempting it."""

    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < 2 * int(nbytes) + HDF5_RESERVE:
        raise DiskFull(path)

def refuse_special(path: Path, what: str) -> None:
    """PcaeError when `path` is a pipe, socket or device: reading one would block on a writer
    that never comes or never end (/dev/zero); a missing path or a folder is the caller's to say."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise PcaeError(f"{path}: is not a regular file (a pipe, socket or device), expected {what}")

def open_image(path, mode: str | None = None, what: str = "image"):
    """An image file, decoded as pcae reads every photo (`upright_8bit`): a PIL image in `mode`
    ("L" or "RGB"; default: "L" for one channel, else "RGB"). Every way a file can fail is one
    PcaeError naming it: missing, a folder, not an image or truncated, and more pixels than PIL's
    Image.MAX_IMAGE_PIXELS (a decompression bomb: a small file that decodes to gigabytes; PIL only
    warns below twice its limit, pcae makes the warning an error, raised from the header before
    anything is decoded). Used by every reader of photos and query images; data folders skip such
    files instead (pcae.data)."""

    from PIL import Image

    register_heif()
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
                return upright_8bit(im, mode)
    except PcaeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PcaeError(f"{path}: refused, {first_line(e)}") from None
    except Exception as e:  # PIL raises many types for broken files
        raise PcaeError(f"{path} is not a readable {what}: {first_line(e, with_type=True)}") from None


@functools.lru_cache(maxsize=None)
def register_heif() -> None:
    """HEIC/HEIF, iPhones' photo format, through the pillow-heif plugin (a dependency of pcae)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # PIL then says the file is not a readable image
        return
    register_heif_opener()


def storable(text: str) -> str:
    """`text` as PNG text chunks and HDF5 attributes can hold it: a file name's bytes that are not
    UTF-8 (kept by Python as surrogates) become backslash escapes, so writing never fails on them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def upright_size(im) -> tuple[int, int]:
    """(width, height) of an opened image as `upright_8bit` will return it, from its header."""
    turned = im.getexif().get(0x0112) in _ROTATED
    return (im.height, im.width) if turned else im.size


def upright_8bit(im, mode: str | None = None):
    """The one conversion of a decoded photo, shared by every reader: turned upright by its EXIF
    orientation (phones store photos sideways with a tag that says so), 16-bit and other high-depth
    grey scaled to 8 bits (not clipped to white), palette and grey+alpha through RGBA, CMYK to RGB;
    then in `mode` ("L" or "RGB"; None: "L" for one channel, else "RGB")."""
    import numpy as np
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I") or im.mode == "F":  # I;16, I;16B, I (16-bit PNG), F
        a = np.asarray(im, np.float64)
        top = a.max(initial=0)
        sixteen = im.mode.startswith("I;16") or (im.mode == "I" and top > 255)
        scale = 1 / 257 if sixteen else 255.0 if im.mode == "F" and top <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("P", "PA", "LA"):
        im = im.convert("RGBA")
    mode = mode or ("L" if im.mode in ("1", "L") else "RGB")
    return im.convert(mode)


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_short(path.name)}.{writer_tag()}.",
                               suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, usual_mode())  # mkstemp makes 0600; outputs get the usual permissions
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

def usual_mode() -> int:
    """The mode a new file gets from open() under this process's umask (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _short(name: str) -> str:
    """`name` in a temp or lock name: a long one (the name of a file is at most 255 bytes, and the
    temp name adds ~40) becomes its start and a hash, so every name a user may choose can be written."""
    if len(name.encode("utf-8", "surrogateescape")) <= 120:
        return name
    return f"{name[:24]}~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

SOFTWARE = "pcae"  # the PNG "Software" text chunk of every image pcae writes: what --force may replace

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LOG_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (new|resumed) run in ")
# what a JSON file pcae writes holds (any one set of keys): summary.json, report.json,
# index_infos.json, and the files that say "pcae" (scores.json)
_JSON_KEYS = ({"kind", "config", "steps"}, {"config", "rows"}, {"index_string", "metric", "d", "count"},
              {"pcae"}, {"kind", "configs", "groups"})  # ... and an export's config.json


def written_by_pcae(path: str | os.PathLike) -> bool | None:
    """Whether `path` is a file pcae wrote, by its content: the one check of what --force may
    replace, for every output. True for pcae's files, or a folder of only such files; False for
    anything else, a link included (the user's); None for a file of one of pcae's formats (by its
    first bytes) that cannot be read (a damaged HDF5 file, JSON cut off), which an output may
    replace only beside a file that is surely its own (pcae.outputs).

    What makes a file pcae's: a PNG with pcae's Software chunk (or its older "pcae" key); an HDF5
    file with a pcae format attribute or a latents file's attributes; a torch file with pcae's
    checkpoint header; a safetensors file with pcae's metadata; a FAISS index; a JSON object of one
    of pcae's reports (_JSON_KEYS); a
    train.log that starts with pcae's first line; a metrics.jsonl of pcae rows; compare-decoders'
    report.md.
    """
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        return all(written_by_pcae(entry) for entry in path.iterdir())
    if not path.is_file():
        return False
    name, suffix = path.name, path.suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                text = getattr(image, "text", {}) or {}
            return text.get("Software") == SOFTWARE or "pcae" in text
        if suffix in (".h5", ".hdf5"):
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    attrs = set(f.attrs)
                    return (str(f.attrs.get("format", "")).startswith("pcae") or "pcae" in attrs
                            or {"format_version", "dim", "encoder"} <= attrs)
            except Exception:  # h5py raises many types for a damaged file
                return None if head == _HDF5_SIGNATURE else False
        if suffix == ".pt":
            checkpoint = load_torch_file(path, lazy=True)
            return isinstance(checkpoint, dict) and checkpoint.get("pcae") == "checkpoint"
        if suffix == ".safetensors":  # an 8-byte header size, then a JSON header with pcae's metadata
            size = int.from_bytes(head, "little")
            with open(path, "rb") as f:
                f.seek(8)
                header = f.read(min(size, 1 << 20))
            try:
                meta = json.loads(header).get("__metadata__") or {}
            except ValueError:
                return None
            return str(meta.get("format", "")).startswith("pcae")
        if suffix == ".faiss":  # every FAISS index file opens with its type's four letters
            return len(head) >= 4 and head[:1] == b"I" and head[:4].isalnum()
        if suffix == ".json":
            text = path.read_text(errors="replace")
            try:
                data = json.loads(text)
            except ValueError:
                return None if text.lstrip().startswith("{") else False
            return isinstance(data, dict) and any(keys <= data.keys() for keys in _JSON_KEYS)
        if name == "train.log":
            with open(path, "rb") as f:
                return bool(_LOG_START.match(f.readline(4096).decode("utf-8", "replace")))
        if name == "metrics.jsonl":
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            return len(read_rows(path)) >= len(lines) - 1  # a torn last line is pcae's too
        if name.startswith("events.out.tfevents."):  # TensorBoard's records: a length, then "brain.Event"
            return path.parent.name == "tensorboard" and len(head) == 8
        if name == "report.md":
            with open(path, "rb") as f:
                return f.readline(200).decode("utf-8", "replace").strip() == "# compare-decoders"
    except (OSError, ValueError, PcaeError):
        return False
    except Exception:  # PIL raises many types for a broken image: not something pcae can vouch for
        return False
    return False


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl file: pcae's rows only (a JSON object with an integer "step");
    a torn last line (a killed run) and lines of anything else are dropped."""
    rows = []
    path = Path(path)
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
                rows.append(row)
    return rows


def refuse_existing(path: str | os.PathLike | None, force: bool) -> None:
    """An output option's rule: an existing path needs --force, and --force replaces only what pcae
    wrote (written_by_pcae), never a user's file."""
    if path is None or not Path(path).exists():
        return
    if not force:
        raise PcaeError(f"{path}: already exists; pass --force to replace it")
    if written_by_pcae(path) is not True:
        raise PcaeError(f"{path}: exists and is not a file pcae wrote; --force replaces only pcae's "
                        "outputs (remove it yourself, or choose another path)")

STAGING_PREFIX = ".pcae-staging."


def load_torch_file(path: Path, what: str = "pcae checkpoint", lazy: bool = False):
    """torch.load(path, weights_only=True) on the CPU, or PcaeError saying what the file is.

    lazy: memory-map the tensors (read when used); files torch cannot map are read whole.

    torch's own message for a file that weights-only loading refuses advises loading it with
    weights_only=False; that advice is never passed on (such a file can run code when loaded).
    """
    import torch  # here, not above: pcae's torch-free modules (and `pcae --help`) import this one

    if lazy and zipfile.is_zipfile(path):  # torch maps only its zip format
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, ValueError, OSError):
            pass  # the full read below says what is wrong with the file
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warnings are not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch's zip nor a pickle
            raise PcaeError(f"{path}: not a {what}: not a torch file (another format, or "
                            "corrupt or truncated)") from None
        raise PcaeError(f"{path}: not a {what}: {_what_it_holds(e)}, which pcae never "
                        "loads (unpickling arbitrary objects could run code)") from None
    except MemoryError:
        raise
    except Exception as e:  # the unpickler raises any type on another format (IndexError on a text file)
        raise PcaeError(f"{path}: not a {what}: not a torch file (another format, or "
                        f"corrupt or truncated: {type(e).__name__})") from None


def _what_it_holds(error: Exception) -> str:
    """What a file refused by weights-only loading holds, from torch's message (no advice)."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found.group(1)} object"
    if "Unsupported operand" in text or "weights_only" in text:
        return "it is a pickle of Python objects, not tensors and plain data"
    return "it is not a torch file of tensors and plain data"
