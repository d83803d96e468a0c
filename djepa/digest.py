"""sha256 of files and arrays: what checkpoints, encoded datasets and reference statistics record when they are
written and compare before they are used.

sha256 runs at ~0.8 GiB/s per core here; hashlib and file reads release the GIL, so `files_sha256` hashes
several files at once in threads and goes as fast as the disk (or the cores) allow. A file's digest is cached
per process by path, size and modification time, so the checks of one job hash each file once.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process for the same path, size and modification time."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def files_sha256(paths: list[str | Path], threads: int | None = None) -> list[str]:
    """file_sha256 of each path, in order, several at a time (up to 8 threads, one per core)."""
    threads = threads or min(8, os.cpu_count() or 1)
    if threads == 1 or len(paths) < 2:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(file_sha256, paths))


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of named arrays (name, dtype, shape and bytes, in name order): it can be stored beside them in the
    same file, which a digest of the file itself cannot."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()
