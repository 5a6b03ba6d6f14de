"""Writing files so that a reader sees the old file or the whole new one, never half of one.

The bytes go to a temporary file in the destination's own folder, are flushed and fsynced, and the
temporary file is renamed over the destination with `os.replace` (atomic within one filesystem; a
temporary file under `$TMPDIR` would need a copy across filesystems, which a kill can truncate). On
any failure (disk full, a kill signal turned into an exception, a serialisation error) the temporary
file is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; a finished file gets the permissions open() would give.
_FILE_MODE = 0o666 & ~_umask()


def temp_prefix(path: str | Path) -> str:
    """Name prefix of the temporary files `atomic_open(path)` creates beside `path`."""
    return f".{Path(path).name}."


def _fsync_dir(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    `mode` is "wb" or "w" (text; `kwargs` go to `os.fdopen`, e.g. `encoding`). Missing parent folders are
    created. If the block raises, `path` is untouched and no temporary file remains.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically: a failed save leaves the previous file at `path` intact."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)
