"""Writing result files so that a reader never sees half a file (other workers, a resume), and
a crash right after a write never leaves an empty one."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path` (a unique name: two writers never share
    it), flush it to disk, then rename it over `path`: readers see the old file or the new
    one, never a mix, and after a power cut the new one is whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; result files are for everyone who reads runs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself is durable once the directory is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems cannot sync a directory; the rename is still atomic
        pass
    return path


def write_json_atomic(path: Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str))


def read_json(path: Path):
    """The JSON in `path`; ValueError naming the file and what is wrong with it (missing,
    unreadable, not JSON: e.g. cut short by a full disk or a copy), never a bare parser message."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not valid JSON (damaged or cut short?): {problem}") from None


# How a full disk shows: the OS's error (ENOSPC; EDQUOT: a quota reached), SQLite's (SQLITE_FULL),
# or either as the text of an error another process sent (a trainer's first error line).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT),
                   "database or disk is full")


def is_disk_full(problem: BaseException | str | None) -> bool:
    """Whether an error (or an error's text) says that a disk is full, anywhere in its chain
    of causes.

    :param problem: an exception, the first line of one, or None
    """
    seen: set[int] = set()
    while isinstance(problem, BaseException) and id(problem) not in seen:
        seen.add(id(problem))
        if isinstance(problem, OSError) and problem.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(problem) for words in DISK_FULL_WORDS):
            return True
        problem = problem.__cause__ or problem.__context__
    return isinstance(problem, str) and any(words in problem for words in DISK_FULL_WORDS)
