"""One run per folder: an exclusive lock on OUT/.semiearth.lock, held for a run's lifetime.

`lock_run_folder(out_dir)` takes an `fcntl.flock` on the lock file (rank 0 only under DDP) and
writes who holds it (pid, host, start time). A second start into a locked folder, with or without
--resume / --overwrite, is a `RunLockedError` naming that process. The kernel releases a flock
when its process dies however it dies, so a lock file whose lock nobody holds was left by a run
that was killed: it is taken over with a notice. A run that ends deletes its lock file (while
still holding the lock; a starter that opened the old file sees that it is gone and opens anew).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time

LOCK_NAME = ".semiearth.lock"


class RunFolderError(RuntimeError):
    """The output folder already holds a run and neither --resume nor --overwrite was given, or
    another training holds it."""


class RunLockedError(RunFolderError):
    """Another process is training into this folder (it holds the folder's lock)."""


def _holder_info() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"


def describe_holder(text: str) -> str:
    """'pid 123 on host h, started 2025-01-01T10:00:00+00:00' from a lock file's content."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that did not say which" if not text.strip() else text.strip()[:200]


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


class RunLock:
    """A held run-folder lock; `release()` (or leaving the `with` block) deletes the file and unlocks."""

    def __init__(self, path: str, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_folder(out_dir: str) -> RunLock:
    """Create `out_dir` if needed and lock it for this process, or raise RunLockedError naming the
    process that holds it. A lock left by a dead process is taken over (one line on stderr)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # no flock on this filesystem
                os.close(fd)
                print(f"[semiearth] warning: cannot lock {out_dir} ({err.strerror}): make sure that no other "
                      "training writes into it", file=sys.stderr)  # fmt: skip
                return RunLock(path, None)
            text = _read(fd)
            for _ in range(40):  # the holder may be between taking the lock and writing its name
                if text.strip():
                    break
                time.sleep(0.025)
                text = _read(fd)
            os.close(fd)
            raise RunLockedError(
                f"{out_dir} is in use by another training ({describe_holder(text)}; lock file {path}): "
                "wait for it to end or stop it, or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder ended and deleted the file between our open and our lock: again
    previous = _read(fd)
    if previous.strip():
        print(f"[semiearth] {out_dir}: took over the lock of {describe_holder(previous)}, which no longer "
              "runs (it was killed or crashed)", file=sys.stderr)  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder_info().encode(), 0)
    return RunLock(path, fd)
