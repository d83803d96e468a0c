"""Exclusive output directories: one job at a time in a run, evaluation, sweep or encode directory.

    with hold(run_dir, "training"):
        ...  # a second job into run_dir is refused at once with RunDirBusy naming this one

The lock is an `fcntl.flock` on `<dir>/.lock` (an encode, whose output appears only when complete, locks
`.<name>.lock` beside it). The kernel drops a flock when its holder exits however it exits (kill -9, a
crashed node's process), so a dead holder never leaves a directory stuck, and a resumed job takes the lock
over without any clean-up. The file is never deleted: deleting it would let two jobs lock two different
files of the same name. It holds the holder's pid, host, start time and command, for the refusal message.

On a shared file system the lock is as good as its flock: NFSv4 and Lustre (mounted with `flock`) map it to
a lock the server enforces across nodes; a mount without lock support raises, and we say so.
Holding is re-entrant within a process (the demo's training holds its run dir, and so does its training loop).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

_held: dict[str, list] = {}  # lock file -> [open file, depth]: an open descriptor keeps the flock


class RunDirBusy(FileExistsError):
    """Another live job holds the directory; the message names it."""


def lock_file(directory: str | Path) -> Path:
    return Path(directory) / ".lock"


def _describe(f: Path) -> str:
    try:
        h = json.loads(f.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "another process (its lock file is unreadable)"
    return (f"{h.get('what', 'a job')} pid {h.get('pid')} on {h.get('host')} since {h.get('started')} "
            f"({h.get('command', '?')})")


def acquire(directory: str | Path, what: str, file: str | Path | None = None) -> Path:
    """Lock `directory` (creating it) for this process, or raise RunDirBusy naming the holder."""
    directory = Path(directory).resolve()
    f = Path(file).resolve() if file else lock_file(directory)
    key = str(f)
    if key in _held:
        _held[key][1] += 1
        return f
    f.parent.mkdir(parents=True, exist_ok=True)
    fh = open(f, "a+")  # never truncate before we hold it: the holder's description is in there
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RunDirBusy(f"{directory} is in use by {_describe(f)}; wait for it to finish, stop it, or choose "
                         f"another output directory") from None
    except OSError as err:
        fh.close()
        raise OSError(f"cannot lock {f} ({err}): the file system of {directory} does not support flock; "
                      f"mount it with lock support (NFSv4, Lustre -o flock)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)[:500]}))
    fh.flush()
    _held[key] = [fh, 1]
    return f


def release(f: Path) -> None:
    entry = _held.get(str(f))
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[str(f)]
        entry[0].close()  # closing the descriptor drops the flock; the file stays (see the module docstring)


@contextmanager
def hold(directory: str | Path, what: str, file: str | Path | None = None):
    f = acquire(directory, what, file)
    try:
        yield f
    finally:
        release(f)
