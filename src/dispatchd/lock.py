"""One daemon per spool: an exclusive ``flock`` on ``<spool>.lock``, held for the process's life.

The lock file also says who holds it (pid, spool, and once listening the daemon's URL), so the
CLI can find a running daemon with ``read_holder`` without ever taking the lock itself. The lock
lives on the file's inode: the holder unlinks the file before letting go, and a new holder checks
that the inode it locked is still the one at the path, so two processes can never both hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SpoolLocked, SpoolUnavailable

READ_TRIES = 3  # a holder rewriting the file may be caught between its write and its truncate
LOCK_TRIES = 10  # each try lost only to a holder that released and unlinked the file meanwhile


@dataclass(frozen=True, slots=True)
class Holder:
    """The process holding a spool's lock, as its lock file says."""

    pid: int
    url: str | None
    spool: str


def lock_path(spool_path: str | Path) -> Path:
    """The lock file beside the spool: ``<spool>.lock``."""
    return Path(f"{Path(spool_path).absolute()}.lock")


class SpoolLock:
    """An acquired spool lock; ``release`` (or the process's exit) lets it go."""

    def __init__(self, spool: Path, path: Path, fd: int) -> None:
        self.spool = spool
        self.path = path
        self._fd: int | None = fd
        self.url: str | None = None

    @classmethod
    def acquire(cls, spool_path: str | Path) -> SpoolLock:
        """Take the lock without waiting; ``SpoolLocked`` names the holder if another has it.

        Creates the spool's directory if it does not exist yet, and nothing else but the lock
        file; a conflict changes nothing.
        """
        spool = Path(spool_path).absolute()
        path = lock_path(spool)
        try:
            spool.parent.mkdir(parents=True, exist_ok=True)
            fds = (_lock_fd(spool, path) for _ in range(LOCK_TRIES))
            fd = next((fd for fd in fds if fd is not None), None)
        except OSError as exc:
            raise SpoolUnavailable(f"cannot lock spool {spool} ({path}): {exc}") from None
        if fd is None:
            raise SpoolUnavailable(f"cannot lock spool {spool}: {path} keeps being replaced")
        lock = cls(spool, path, fd)
        try:
            lock._write()
        except OSError as exc:
            lock.release()
            raise SpoolUnavailable(f"cannot write the lock file {path}: {exc}") from None
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def publish(self, url: str) -> None:
        """Record the daemon's URL in the lock file, for the CLI to find it."""
        self.url = url
        self._write()

    def release(self) -> None:
        """Remove the lock file and let go of the lock; releasing twice is harmless."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                # Unlinked while still held: a process that opened it meanwhile sees its
                # inode vanish from the path after locking it, and tries again.
                if _same_file(fd, self.path):
                    self.path.unlink()
        finally:
            os.close(fd)

    def _write(self) -> None:
        if self._fd is None:
            raise SpoolUnavailable(f"the lock on {self.spool} was released")
        data = json.dumps({"pid": os.getpid(), "spool": str(self.spool), "url": self.url}).encode()
        # Written over, then cut to length: a reader never sees an empty file from a live holder.
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))


def _lock_fd(spool: Path, path: Path) -> int | None:
    """A descriptor holding the lock on the file now at ``path``; ``None``: it moved, try again."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _parse(path)
        pid = f"pid {holder.pid}" if holder is not None else "pid unknown"
        raise SpoolLocked(
            f"spool {spool} is in use by another dispatchd ({pid}); stop it or point "
            "spool.path elsewhere"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    if not _same_file(fd, path):  # the previous holder removed it between our open and flock
        os.close(fd)
        return None
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_path = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_path.st_dev, on_path.st_ino)


def read_holder(spool_path: str | Path) -> Holder | None:
    """The live process holding ``spool_path``'s lock, or ``None``; never takes the lock."""
    path = lock_path(spool_path)
    for _ in range(READ_TRIES):
        if not path.exists():
            return None
        holder = _parse(path)
        if holder is not None:
            return holder if _alive(holder.pid) else None
        time.sleep(0.01)
    return None


def _parse(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_bytes())
        return Holder(int(data["pid"]), data.get("url"), str(data["spool"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
