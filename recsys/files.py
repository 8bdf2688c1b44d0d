"""Files written atomically (a temporary name, then a rename) get the permissions a plain
``open`` or ``mkdir`` would give them: ``tempfile`` makes its files and folders private to
their owner (0600, 0700), so a bundle or photo written by the trainer's user could not be read
by a service running as another one."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

# What the machine answers about a file that the command cannot help: a full disk, a
# read-only or missing folder, a file where a folder should be, a name too long, a link
# loop. The CLI says these in one line (exit 2), as input that cannot work; an OSError of
# another errno is more likely the code's own fault, and keeps its traceback.
REFUSED = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM,
        errno.EROFS, errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
        errno.ELOOP, errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY, errno.ETXTBSY,
    }
)  # fmt: skip


def refused(exc: OSError) -> str | None:
    """One line of what the machine refused (``REFUSED``), the file named: "No space left on
    device: /data/ev" (the system's words, not pyarrow's longer ones); None for another
    errno."""
    if exc.errno not in REFUSED:
        return None
    names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return os.strerror(exc.errno) + (f": {' -> '.join(names)}" if names else "")


@contextlib.contextmanager
def writing(path: str | Path):
    """Name ``path`` in an OSError of the block that names no file (a write's on a full disk,
    pyarrow's): the error line said "No space left on device" and not where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def out_path(path: str | Path) -> Path:
    """The path a command writes for the ``path`` it was given: ``~`` expanded (a quoted
    ``'~/ev'`` made a folder named ~ here, and "written to ~/ev" read as the home folder),
    absolute, and through links to their target (a folder or file written under a temporary
    name and renamed into place replaced a link to it, and the target stayed as it was)."""
    return Path(os.path.realpath(os.path.expanduser(path)))


def _umask() -> int:
    """This process's umask, read without changing it (Linux's /proc), else set and reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def as_if_plain(path: str | Path) -> None:
    """Give ``path`` (a file or a folder, made by ``tempfile``) the mode ``open`` or
    ``mkdir`` would have given it under this process's umask."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~_umask())


def left_by_dead_process(pid: str) -> bool:
    """Whether ``pid`` (the digits a file or folder's name holds) is a process of this host
    that is gone: what a killed process left under such a name is its own to remove."""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process, alive
        return False
    return False
