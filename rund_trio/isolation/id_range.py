"""The host ids a contained job's user namespace maps to.

A contained job's uids and gids 0..count-1 are the host's ``uid_start``..
and ``gid_start``..: its root is an unprivileged host user that owns nothing
of the host. The range comes from ``serve --userns-range START:COUNT``, else
from the ``rund-trio`` entries of ``/etc/subuid`` and ``/etc/subgid`` (the
convention ``useradd``, Docker's ``userns-remap`` and podman follow), else
``DEFAULT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rund_trio.errors import ConfigError

MAX_ID = 2**32 - 2
SUBID_NAME = "rund-trio"
"""The /etc/subuid and /etc/subgid entry the daemon looks for."""
MIN_COUNT = 65536
"""Enough for the ids programs expect (65534 ``nobody`` in particular)."""


@dataclass(frozen=True)
class IdRange:
    """Host ids ``uid_start``..``uid_start+count-1`` (and the same for gids)
    are a contained job's 0..count-1."""

    uid_start: int
    gid_start: int
    count: int

    def validate(self) -> None:
        """``ConfigError`` for a range that would map host root or overflow."""
        for name, start in (("uid", self.uid_start), ("gid", self.gid_start)):
            if start < 1:
                raise ConfigError(f"the user namespace's {name} range must not include 0 (root)")
            if start + self.count - 1 > MAX_ID:
                raise ConfigError(f"the user namespace's {name} range ends above {MAX_ID}")
        if self.count < MIN_COUNT:
            raise ConfigError(
                f"the user namespace range needs at least {MIN_COUNT} ids (got {self.count})"
            )

    def __str__(self) -> str:
        if self.uid_start == self.gid_start:
            return f"{self.uid_start}:{self.count}"
        return f"uids {self.uid_start}:{self.count}, gids {self.gid_start}:{self.count}"


DEFAULT = IdRange(2147418112, 2147418112, 65536)
"""The 64 Ki ids just below 2**31 (0x7FFF0000): above what useradd hands out
in /etc/subuid (from 100000 up), systemd-nspawn (524288-1879048191) and
systemd's foreign range (0x7FFE0000-0x7FFEFFFF)."""


def parse(text: str) -> IdRange:
    """``START:COUNT`` (the same start for uids and gids); ``ConfigError``."""
    start, sep, count = text.partition(":")
    if not sep or not start.isdigit() or not count.isdigit():
        raise ConfigError(
            f"--userns-range must be START:COUNT, e.g. 2147418112:65536 (got {text!r})"
        )
    ids = IdRange(int(start), int(start), int(count))
    ids.validate()
    return ids


def _subid(path: Path, name: str) -> tuple[int, int] | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] == name:
            if not fields[1].isdigit() or not fields[2].isdigit():
                raise ConfigError(f"{path}: bad entry for {name}: {line.strip()!r}")
            return int(fields[1]), int(fields[2])
    return None


def from_subid(
    name: str = SUBID_NAME,
    subuid: Path = Path("/etc/subuid"),
    subgid: Path = Path("/etc/subgid"),
) -> IdRange | None:
    """The first ``name`` entries of /etc/subuid and /etc/subgid, or None when
    neither has one. ``ConfigError`` when only one has, or they are unusable."""
    uids, gids = _subid(subuid, name), _subid(subgid, name)
    if uids is None and gids is None:
        return None
    if uids is None or gids is None:
        missing = subuid if uids is None else subgid
        raise ConfigError(f"{missing} has no {name!r} entry, but its sibling file has one")
    ids = IdRange(uids[0], gids[0], min(uids[1], gids[1]))
    ids.validate()
    return ids


def configured(flag: str | None) -> IdRange:
    """The daemon's range: the flag, else /etc/subuid+subgid, else ``DEFAULT``."""
    if flag is not None:
        return parse(flag)
    return from_subid() or DEFAULT
