"""Deprecated: pcae.utils was split by concern. Its names still import from here, with a warning;
import them from their modules instead: pcae.errors (PcaeError, Interrupted, DiskFull, first_line),
pcae.files (atomic_path, open_image, written_by_pcae, refuse_existing, cache_root, ...),
pcae.outputs (folder_lock, atomic_files, set_aside, ...), pcae.machine (check_fits, cpu_description).
"""
import warnings

from pcae.errors import DiskFull, Interrupted, PcaeError, first_line, is_disk_full  # noqa: F401
from pcae.files import (  # noqa: F401
                        SOFTWARE,
                        atomic_path,
                        cache_root,
                        clean_stale_temps,
                        ensure_space,
                        open_image,
                        refuse_existing,
                        refuse_special,
                        writer_tag,
                        written_by_pcae,
)
from pcae.machine import check_fits, cpu_bf16_flags, cpu_description, memory_bytes  # noqa: F401
from pcae.outputs import atomic_files, folder_lock, put_back, recover_files, refuse_not_ours, restore_stale, set_aside  # noqa: F401

warnings.warn("pcae.utils is deprecated: import from pcae.errors, pcae.files, pcae.outputs or pcae.machine",
              DeprecationWarning, stacklevel=2)
