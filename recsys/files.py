"""Files written atomically (a temporary name, then a rename) get the permissions a plain
``open`` or ``mkdir`` would give them: ``tempfile`` makes its files and folders private to
their owner (0600, 0700), so a bundle or photo written by the trainer's user could not be read
by a service running as another one."""

from __future__ import annotations

import os
from pathlib import Path


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
