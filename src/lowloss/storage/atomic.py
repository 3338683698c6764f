"""Atomic writes: a file is, at every instant, absent, its previous version or its new version, whole.

Every write goes to a temp file in the target's folder (`.x.*.tmp`), flushed to disk, then renamed over
the target, and the folder is flushed too. The writer holds a lock on its temp file while it lives, so
the next write to the same target can tell leftovers of killed runs (nobody holds them) from writes in
progress, and removes the leftovers. Only a regular file is ever replaced: a device, a FIFO, a folder or
a symbolic link at the target is refused, checked before the write and again just before the rename.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lowloss.errors import LowlossError

TEMP_SUFFIX = ".tmp"

logger = logging.getLogger(__name__)


class ArtifactError(LowlossError):
    """A weight file or sidecar that cannot be trusted."""


def require_file(path: str | os.PathLike) -> None:
    """Raise one clear error unless `path` is a file this process can open (missing, a symbolic link
    loop, a folder and a permission problem each say so)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror
        raise ArtifactError(f"{path}: cannot be read ({reason})") from None


def require_replaceable(path: str | os.PathLike) -> None:
    """Raise one clear error when `path` exists and is not a regular file (what `os.replace` would destroy:
    a device node, a FIFO, a socket, a folder, or a symbolic link, whose target would stay unwritten)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there to replace (the write then says why it fails)
        return
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be checked ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ArtifactError(f"{path}: is {file_type(mode)}, not a regular file; it is never replaced")


def file_type(mode: int) -> str:
    """`a folder`, `a symbolic link`, `a device`, … for an lstat mode."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace `path` by `data`."""
    with _temp_file(Path(path)) as (fd, _):
        view = memoryview(data)
        while view:  # os.write may write less than asked (a signal, a nearly full disk)
            view = view[os.write(fd, view) :]


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Atomically replace `path` by what `write(tmp)` writes to the temp file `tmp` (for writers that
    need a file name, like matplotlib's savefig)."""
    with _temp_file(Path(path)) as (_, tmp):
        write(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (CSV, JSON, Markdown)."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Atomically write a JSON file, pretty-printed."""
    try:
        text = json_text(obj)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    write_text_atomic(path, text)


@contextmanager
def _temp_file(path: Path) -> Iterator[tuple[int, Path]]:
    """A locked temp file beside `path`, flushed and renamed onto `path` when the block ends.

    A crash at any point leaves either the old file or the new one, never half of one; an OSError
    (a full disk, a read-only folder) becomes one error naming `path`, and the temp file goes.
    """
    fd, tmp = -1, None
    require_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = _locked_temp(path)
        yield fd, tmp
        os.fsync(fd)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any other file
        require_replaceable(path)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock, after the rename
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _locked_temp(path: Path) -> tuple[int, Path]:
    """mkstemp beside `path`, locked; retried if a concurrent cleanup removed it before the lock."""
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files of earlier writes to `path` whose writer is gone (no lock held)."""
    path = Path(path)
    removed = []
    for name in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*{TEMP_SUFFIX}")):
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(name)
            removed.append(Path(name))
        except OSError:  # locked: a write in progress
            pass
        finally:
            os.close(fd)
    if removed:
        logger.info("removed %d temp file(s) left by an interrupted write of %s", len(removed), path)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after it cannot bring the old file back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(obj: dict) -> str:
    """JSON as lowloss writes it: indented, keys sorted, a final newline; NaN and Infinity, which are not
    JSON, are refused."""
    try:
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ArtifactError(f"not written: {exc} (every number lowloss writes is finite)") from None
