"""One daemon per directory: an exclusive, non-blocking flock on it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rund_trio.errors import ConfigError


@contextmanager
def directory_held(path: Path, refusal: str) -> Iterator[None]:
    """Hold ``path`` for this process while the block runs; ``ConfigError``
    with ``refusal`` if another process holds it. The lock dies with the
    process, so a crashed daemon never blocks its successor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(refusal) from None
        yield
    finally:
        os.close(fd)
