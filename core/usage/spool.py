"""The usage spool: attempts on local disk before the database has them.

Each router process appends its attempts to a file of its own in the spool directory
(AI_CONSOLE_SPOOL_DIR, default <data dir>/spool, mode 0700), one JSON line each, before the
call returns or raises. The usage writer ships the lines to the database and records how far it
has got in a small cursor file beside it (`.done`, the byte offset of the first line not yet
stored). A line is one write() to a file opened O_APPEND: once it returns, the line survives the
process being killed (the kernel has it), so a SIGKILL, a SIGTERM without a shutdown hook or a
database that is away for an hour loses nothing. A machine crash may lose the last lines the
kernel had not written out.

The owner holds an exclusive flock on its file for as long as it lives; the kernel drops the
lock when the process dies, however it dies. So a file whose lock can be taken is an orphan,
and whoever takes it (any router on the machine, or the console) ships what is left and deletes
it. Every line carries its attempt's unique id and the database ignores an id it already has,
so shipping a line twice (a crash between the commit and the cursor write, two shippers of
one orphan) stores it once; the settlement of its reservation is applied only when its row is.

Once everything in the file is stored and the file has grown past ROLL_BYTES, the writer
empties it and starts again at offset 0.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

ROLL_BYTES = 4 * 1024 * 1024  # empty a file that has grown past this, once all of it is stored
READ_BYTES = 1024 * 1024  # what one read takes in, at most
SUFFIX = ".spool"
CURSOR_SUFFIX = ".done"
DEAD_LETTER = "dead-letter.jsonl"


@dataclass(frozen=True)
class Line:
    """One spooled entry and the offset just after it."""

    entry: dict[str, Any] | None  # None: the line is not valid JSON (dead-lettered as such)
    raw: bytes
    end: int


def database_directory(spool_dir: Path, url: URL) -> Path:
    """The part of the spool for one database: a spool file is shipped only to the database
    its rows were made for, never to another that a router on the same machine uses. Named by
    the URL without its password (the same database under another URL is another part)."""
    identity = url._replace(password=None).render_as_string()  # URL.set ignores None
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return spool_dir / f"{url.get_backend_name()}-{digest}"


def prepare(directory: Path) -> Path:
    """Create the spool directory if needed, readable by this user only (0700): the rows name
    the calling service's users."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)
    return directory


class SpoolFile:
    """One spool file and its cursor, opened and locked: this process's own (`create`), or an
    orphan taken over (`take`). Appends are thread-safe; reads and the cursor belong to the one
    thread that ships the file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._cursor_fd = os.open(
            path.with_suffix(CURSOR_SUFFIX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        self._lock = threading.Lock()
        self.end = os.fstat(fd).st_size
        raw = os.pread(self._cursor_fd, 8, 0)
        done = int.from_bytes(raw, "little") if len(raw) == 8 else 0
        self.done = done if done <= self.end else 0  # emptied after the cursor was written
        # Bytes ever appended and ever stored (offsets restart when the file is emptied).
        self.appended = self.end
        self.stored = self.done

    @classmethod
    def create(cls, directory: Path) -> SpoolFile:
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Locked before it has its spool name: a shipper that saw the file unlocked would take
        # it for an orphan, find it empty and delete it under its owner.
        unnamed = directory / f"{name}.new"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(unnamed, flags, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = directory / f"{name}{SUFFIX}"
        unnamed.rename(path)
        return cls(path, fd)

    @classmethod
    def take(cls, path: Path) -> SpoolFile | None:
        """The orphan at `path`, locked for this process; None if its owner still lives (or
        another process took it first, or it is gone)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if os.fstat(fd).st_nlink == 0:  # shipped and deleted while we were opening it
            os.close(fd)
            return None
        return cls(path, fd)

    @property
    def pending(self) -> int:
        """Bytes appended and not yet stored."""
        return self.end - self.done

    def append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            written = 0
            while written < len(data):  # a regular file takes it whole; loop to be sure
                written += os.write(self._fd, data[written:])
            self.end += len(data)
            self.appended += len(data)

    def lines(self, limit: int) -> list[Line]:
        """Up to `limit` whole lines after the cursor (a line still being written waits)."""
        out: list[Line] = []
        offset = self.done
        while len(out) < limit:
            chunk = os.pread(self._fd, READ_BYTES, offset)
            last = chunk.rfind(b"\n")
            if last < 0:
                break
            for raw in chunk[: last + 1].splitlines(keepends=True):
                offset += len(raw)
                out.append(Line(_decode(raw), raw, offset))
                if len(out) >= limit:
                    break
        return out

    def rest(self) -> bytes:
        """What follows the cursor (of an orphan: a line its process died while writing)."""
        return os.pread(self._fd, self.pending, self.done)

    def mark_done(self, end: int) -> None:
        """Everything before `end` is stored; empty the file once all of it is and it is big."""
        self.stored += end - self.done
        self.done = end
        with self._lock:
            if self.done == self.end and self.end >= ROLL_BYTES:
                os.ftruncate(self._fd, 0)
                self.end = self.done = 0
        os.pwrite(self._cursor_fd, self.done.to_bytes(8, "little"), 0)

    def delete(self) -> None:
        """Remove a shipped orphan (still locked, so nobody else ships it meanwhile)."""
        for path in (self.path, self.path.with_suffix(CURSOR_SUFFIX)):
            with suppress(FileNotFoundError):
                path.unlink()
        self.close()

    def close(self) -> None:
        for fd in (self._cursor_fd, self._fd):
            with suppress(OSError):
                os.close(fd)


def orphans(directory: Path, own: Path | None) -> Iterator[Path]:
    """Spool files in `directory` other than `own` (their owners may be alive: see take)."""
    with suppress(FileNotFoundError):
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            if path != own:
                yield path


def dead_letter(directory: Path, line: Line, reason: str) -> None:
    """Keep a line the database refused, with why, for an operator to look at."""
    record = {"reason": reason, "line": line.raw.decode(errors="replace").rstrip("\n")}
    fd = os.open(
        directory / DEAD_LETTER, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
