"""Finding a job's program the way ``execvp`` does, so errors keep their reason."""

from __future__ import annotations

import errno
import os
import stat

from rund_trio.errors import SpawnError


def resolve_program(name: str, search_path: str) -> str:
    """The file ``name`` runs: itself when it has a slash, else the first
    executable regular file of that name in ``search_path``.

    Raises ``SpawnError`` with ENOENT when there is none, or EACCES when only
    files without execute permission were found (as ``execvp`` reports).
    """
    if "/" in name:
        return name
    denied = False
    for directory in search_path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = True
    code = errno.EACCES if denied else errno.ENOENT
    reason = os.strerror(code) + ("" if denied else f" in PATH {search_path}")
    raise SpawnError(name, code, reason)
