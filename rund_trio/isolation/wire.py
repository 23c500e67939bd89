"""The two byte formats between the daemon and the ``execute`` helper.

Imported by the helper on every job start, so it imports only built-in modules.

**Spec fd** (the daemon writes, the helper reads to end of file): the magic
line ``b"RUND-SPEC 1\\n"`` followed by ``marshal.dumps(record, 4)``, where
``record`` is a dict of plain values only (str, int, bool, None, list, dict)::

    {"argv": [str, ...],             # non-empty; argv[0] looked up in env's PATH
     "env": {str: str},
     "cwd": str | None,
     "cgroup_dir": str | None,       # "0" is written to <cgroup_dir>/cgroup.procs first
     "namespaces": {"pid": bool, "mount": bool, "uts": bool, "ipc": bool, "net": bool},
     "hostname": str | None,
     "rootfs": str | None,
     "hidden": [str, ...],           # absolute paths made unreadable (mount namespace)
     "uid": int | None,
     "gid": int | None,
     "contained": None | {           # a contained job (None: a host job)
         "ids": [int, int, int],     # its user namespace: host uid start, gid start, count
         "caps": int,                # the capability mask it keeps
         "seccomp": bytes}}          # its seccomp filter, BPF from libseccomp

``marshal`` rather than JSON because ``json`` drags in ``re`` and ``enum``,
about as much time as the whole interpreter start; both ends are the same
interpreter (the daemon runs the helper with ``sys.executable``) and format
version 4 is read by every Python 3 since 3.4. The spec fd is written only by
the daemon: never feed it untrusted bytes.

**Status fd** (close-on-exec in the job's program): end of file without a byte
(but the ``PROGRAM_PID`` line) means the program was executed. On failure the
helper writes one line,
``b"<errno> <step> <message>\\n"`` (decimal errno, a step name without spaces
such as ``exec`` or ``pivot_root``, then free UTF-8 text) and exits with
``EXIT_SETUP_FAILED``.
"""

from __future__ import annotations

import _socket
import marshal
import sys

SPEC_MAGIC = b"RUND-SPEC 1\n"
MARSHAL_VERSION = 4
EXIT_SETUP_FAILED = 127
"""The helper's exit code when it failed before the job's program ran."""
STATUS_MAX = 4096
"""The longest status line the daemon reads."""
PROGRAM_PID = b"job "
"""With a PID namespace, the helper's line ``job <pid>\n`` on the status fd:
the job's program's pid on the daemon's host (without one, the helper's own
pid is the program's)."""
DEFAULT_SPEC_FD = 3
DEFAULT_STATUS_FD = 4
NAMESPACE_KINDS = ("pid", "mount", "uts", "ipc", "net")


FD_SIZE = 4
"""Bytes of one descriptor in an ``SCM_RIGHTS`` message (a C int)."""


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in ``recvmsg``'s ancillary data (``SCM_RIGHTS``), in
    order: the requests the fork server receives, and the terminal master a
    contained job's ``rund-init`` sends back."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % FD_SIZE
            fds.extend(
                int.from_bytes(data[i : i + FD_SIZE], sys.byteorder, signed=True)
                for i in range(0, usable, FD_SIZE)
            )
    return fds


class WireError(ValueError):
    """The bytes on the spec fd are not a spec of this version."""


def encode_spec(record: dict[str, object]) -> bytes:
    """The spec fd's bytes for a record already checked by ``check_record``."""
    return SPEC_MAGIC + marshal.dumps(record, MARSHAL_VERSION)


def decode_spec(data: bytes) -> dict[str, object]:
    """The record in ``data``, with its shape checked (``check_record``)."""
    if not data.startswith(SPEC_MAGIC):
        raise WireError("not a rund-trio spec (bad magic)")
    try:
        record = marshal.loads(data[len(SPEC_MAGIC) :])
    except (EOFError, ValueError, TypeError) as error:
        raise WireError(f"corrupt spec: {error}") from None
    if not isinstance(record, dict):
        raise WireError("corrupt spec: not a mapping")
    check_record(record)
    return record


def _optional(record: dict[str, object], key: str, kind: type) -> None:
    value = record[key]
    # bool is an int subclass: never accept it for a number.
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise WireError(f"{key} must be {kind.__name__} or None")


def check_record(record: dict[str, object]) -> None:
    """Raise ``WireError`` unless ``record`` has exactly the shape above."""
    expected = {
        "argv",
        "env",
        "cwd",
        "cgroup_dir",
        "namespaces",
        "hostname",
        "rootfs",
        "hidden",
        "uid",
        "gid",
        "contained",
    }
    if set(record) != expected:
        raise WireError(f"spec keys must be {sorted(expected)}")
    argv = record["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise WireError("argv must be a non-empty list of str")
    env = record["env"]
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise WireError("env must map str to str")
    for key in ("cwd", "cgroup_dir", "hostname", "rootfs"):
        _optional(record, key, str)
    for key in ("uid", "gid"):
        _optional(record, key, int)
    hidden = record["hidden"]
    if not isinstance(hidden, list) or not all(isinstance(h, str) for h in hidden):
        raise WireError("hidden must be a list of str")
    namespaces = record["namespaces"]
    if (
        not isinstance(namespaces, dict)
        or set(namespaces) != set(NAMESPACE_KINDS)
        or not all(isinstance(v, bool) for v in namespaces.values())
    ):
        raise WireError(f"namespaces must map each of {NAMESPACE_KINDS} to a bool")
    contained = record["contained"]
    if contained is None:
        return
    if (
        not isinstance(contained, dict)
        or set(contained) != {"ids", "caps", "seccomp"}
        or not isinstance(contained["caps"], int)
        or isinstance(contained["caps"], bool)
        or not 0 <= contained["caps"] < 2**64
        or not isinstance(contained["seccomp"], bytes)
        or not contained["seccomp"]
    ):
        raise WireError(
            "contained must be None or {ids: [...], caps: a 64-bit mask, seccomp: BPF bytes}"
        )
    ids = contained["ids"]
    if (
        not isinstance(ids, list)
        or len(ids) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ids)
    ):
        raise WireError("contained ids must be [uid start, gid start, count]")


def encode_status(errno: int, step: str, message: str) -> bytes:
    """The status line for a failure of ``step`` with ``errno``."""
    line = f"{errno} {step.replace(' ', '_') or '?'} {message}".replace("\n", " ")
    return line.encode("utf-8", "backslashreplace")[: STATUS_MAX - 1] + b"\n"


def decode_status(data: bytes) -> tuple[int, str, str]:
    """(errno, step, message) from a status line; errno 0 if it is garbled."""
    text = data.decode("utf-8", "replace").strip()
    parts = text.split(" ", 2)
    if len(parts) >= 2 and parts[0].isdigit():
        return int(parts[0]), parts[1], parts[2] if len(parts) == 3 else ""
    return 0, "helper", text or "the helper failed without saying why"
