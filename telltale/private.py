"""Files only their owner can read: 0700 directories and 0600 files.

Spools, local stores and secrets hold what a trainer logged (and sometimes credentials), so
they are created private whatever the process umask is. An existing directory's mode is
left alone (it may be shared on purpose); files are made 0600 when created.
"""

from __future__ import annotations

import os


def makedirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, with the directories it creates 0700."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        makedirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; 0700 needs no widening


def open_private(path: str, mode: str = "a", **kw):
    """``open(path, mode)``, creating the file 0600 (``mode``: a, ab, w, wb, x, xb)."""
    flags = {"a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode[0]]
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, **kw)
