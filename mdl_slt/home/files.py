"""Writes that stay safe when several processes race on one home (workers of a run, a job array).

    replacing(path)  a unique temporary file in `path`'s directory, renamed onto `path` when the
                     block ends: readers see the old file or the whole new one, never a part, and
                     of writers with identical content the last one wins
    locked(path)     an exclusive lock (`<path>.lock`, fcntl) held for the block: for work whose
                     result could differ between writers, or that should happen once (a download,
                     training the suite); the holder checks again inside whether it is still needed
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path):
    """Yield a fresh temporary path beside `path`; on success rename it onto `path` atomically,
    on failure remove it (`path` is then untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)`, atomically (`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on `<path>.lock` for the block; other processes asking for it wait."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
