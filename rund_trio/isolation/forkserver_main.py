"""The fork server: one long-lived process that starts jobs by forking itself.

``ForkServerSpawner`` (``rund_trio.process.forkserver``) starts this once, as
``python -I -S`` in its own session with one end of a ``SOCK_SEQPACKET``
socket pair on fd 3, and keeps the other end. The server has the ``execute``
helper's modules already imported, so a job start costs a fork instead of an
interpreter start.

**Protocol** (one request at a time; each message is one packet):

- request: ``b"spawn"`` with five fds attached (``SCM_RIGHTS``): the job's
  stdin, stdout and stderr, the spec fd (``rund_trio.isolation.wire``, read
  from its current offset to its end) and the status fd's write end; or
  ``b"spawn-in-cgroup"`` with a sixth, the job's cgroup directory: the child
  is created in it (``CLONE_INTO_CGROUP``) or, where the kernel cannot, joins
  it first thing (its spec then has no ``cgroup_dir``: it is joined once);
- reply: ``b"pid <pid>"`` once the job's process exists, or a status line
  (``wire.encode_status``: ``<errno> <step> <message>``) when it could not be
  created;
- end of file on the socket (the daemon closed its end, or died): the server
  exits.

**The job's process is the daemon's child, not the server's.** The server
creates it with ``clone3(CLONE_PARENT)`` (fork semantics: no new stack, a copy
of the server's memory), so the daemon can watch it through a pidfd and reap it
with ``wait4``, with its rusage, exactly like a process it spawned itself; the
pid stays pinned until the daemon reaps it. The server's only children of its
own are the short-lived builders of template mount namespaces
(``mount_template``), each reaped before the request that made it is answered.
(``CLONE_PARENT`` hands the child the server's own exit signal, SIGCHLD, as the
server was spawned by the daemon.)

**The spec is read here**, once, not in the child: the server needs it to
pick the job's template mount namespace (a contained job on the host's root
gets a copy of the read-only tree with its covers, built once, instead of
building it and unmounting the old root per job), and the child inherits the
record with its memory. Templates are built by children of the server after
it answered, never while a request waits (until one is ready, jobs build
their own tree); between requests the server collects them and drops those
the host's mount changes made stale (``Templates.sweep``).

The child then does what ``posix_spawn`` and the helper's interpreter did for
the ``execute`` helper: a new session, the job's stdio on 0 to 2, and
``rund_trio.isolation.execute.execute(spec fd, status fd)``, which closes
every other fd (this socket too), joins the cgroup, unshares, forks
``rund-init``, ... and execs the job's program, reporting failures on the
status fd. The raw clone skips the C library's and the interpreter's fork
handlers; that is safe only because this process is single-threaded (no lock
can be held by another thread), which it must stay: no threads here, ever.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # ``signal`` would import enum
import _socket
import posix
import sys

from rund_trio.isolation import trace, wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rund_trio.isolation.execute import SetupFailed
    from rund_trio.isolation.mount_template import Template, Templates

SERVER_FD = 3
"""The server's end of the socket pair, in the server."""
REQUEST_SPAWN = b"spawn"
REQUEST_SPAWN_IN_CGROUP = b"spawn-in-cgroup"
"""The same with a sixth fd: the job's cgroup v2 directory (read-only)."""
REQUEST_FDS = 5
"""stdin, stdout, stderr, spec, status."""
REPLY_PID = b"pid "
CHILD_PID = b"pid "
"""The first line a job's process writes on its status fd: ``pid <pid>\n``.
The daemon learns the pid from the child itself, so a server that dies
between its fork and its reply cannot leave a child nobody knows."""
REPLY_MAX = wire.STATUS_MAX

CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000
_SYS_CLONE3 = 435  # the same number on every architecture (new-style table)
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}
_ENOSYS = 38
_EINVAL = 22
_E2BIG = 7
_EPROTO = 71
_SIGINT = 2
_SIGKILL = 9

_clone3_works = True
_daemon_pid = 0
"""The daemon's pid: this server's parent, and every job's."""
_into_cgroup_works = True
_templates: Templates | None = None
"""Template mount namespaces (``mount_template``), once ``main`` runs."""


def _clone_args(flags: int, cgroup_fd: int) -> bytes:
    """A ``struct clone_args`` (version 2, 88 bytes): flags, then pidfd,
    child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid and
    set_tid_size all zero (``CLONE_PARENT`` forbids an exit signal of our own;
    no stack: fork-like), then the cgroup fd."""
    return flags.to_bytes(8, sys.byteorder) + bytes(72) + cgroup_fd.to_bytes(8, sys.byteorder)


def _clone3(flags: int, cgroup_fd: int = 0) -> int:
    from rund_trio.isolation import linux  # imported by main() already

    args = _clone_args(flags, cgroup_fd)
    pid = linux._syscall(linux._Long(_SYS_CLONE3), args, linux._ULong(len(args)))
    linux._check(pid)
    return int(pid)


def clone_parent(cgroup_fd: int | None = None) -> int:
    """Fork this process with ``CLONE_PARENT``: the child's parent is this
    process's parent. Returns 0 in the child, its pid in this process; raises
    ``OSError``. ``clone3`` where the kernel (or a seccomp filter) allows it,
    else the legacy ``clone`` with a NULL stack.

    With ``cgroup_fd`` the child starts in that cgroup (``CLONE_INTO_CGROUP``,
    ``clone3`` only): no migration, so none of the cgroup lock's RCU grace
    period a write to ``cgroup.procs`` may wait for.
    """
    global _clone3_works
    if cgroup_fd is not None:
        return _clone3(CLONE_PARENT | CLONE_INTO_CGROUP, cgroup_fd)
    if _clone3_works:
        try:
            return _clone3(CLONE_PARENT)
        except OSError as error:
            if error.errno != _ENOSYS:
                raise
        _clone3_works = False
    from rund_trio.isolation import linux

    machine = posix.uname().machine
    number = _SYS_CLONE.get(machine)
    if number is None:
        raise OSError(_ENOSYS, f"clone: unknown system call number on {machine}")
    zero = linux._ULong(0)
    if machine == "s390x":  # clone(stack, flags, ...) there
        pid = linux._syscall(linux._Long(number), zero, linux._ULong(CLONE_PARENT), zero, zero)
    else:
        pid = linux._syscall(linux._Long(number), linux._ULong(CLONE_PARENT), zero, zero, zero)
    linux._check(pid)
    return int(pid)


def _fork_job(cgroup_fd: int | None) -> tuple[int, bool]:
    """(pid or 0 in the child, whether the child is in the job's cgroup
    already). Into the cgroup directly where the kernel can; otherwise the
    child joins it itself, as the helper does, reporting why it cannot."""
    global _into_cgroup_works
    if cgroup_fd is not None and _into_cgroup_works and _clone3_works:
        try:
            return clone_parent(cgroup_fd), True
        except OSError as error:
            if error.errno in (_ENOSYS, _E2BIG, _EINVAL):  # a kernel before 5.7
                _into_cgroup_works = False
    return clone_parent(), cgroup_fd is None


def _join_cgroup(cgroup_fd: int) -> None:
    fd = posix.open("cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC, dir_fd=cgroup_fd)
    try:
        posix.write(fd, b"0")
    finally:
        posix.close(fd)


def _die_with_the_daemon() -> None:
    """SIGKILL from the kernel when the daemon (this child's parent, through
    ``CLONE_PARENT``) ends, however it ends: a job must not outlive the only
    process that can stop it. With a PID namespace ``rund-init`` does the same
    with this process, and its death ends the namespace."""
    from rund_trio.isolation import linux

    linux.set_parent_death_signal(_SIGKILL)
    if posix.getppid() != _daemon_pid:  # it ended before the line above
        posix._exit(wire.EXIT_SETUP_FAILED)


def _read_spec(
    spec_fd: int, stdin_fd: int
) -> tuple[dict[str, object] | SetupFailed, Template | None]:
    """The job's spec, read here rather than in every child, and the
    template mount namespace for its root tree if it is a contained job on
    the host's root whose terminal, if any, rund-init opens in the job's
    own devpts (``mount_template``; None if it cannot be built). A job given
    the daemon's terminal builds its tree itself, the host's root at hand
    for taking that terminal."""
    from rund_trio.isolation import execute

    try:
        spec = execute.read_spec(spec_fd)
    except execute.SetupFailed as failure:
        return failure, None
    template = None
    namespaces: dict[str, bool] = spec["namespaces"]  # type: ignore[assignment]
    if (
        _templates is not None
        and not posix.isatty(stdin_fd)
        and spec["contained"] is not None
        and spec["rootfs"] is None
        and namespaces["pid"]
    ):
        hidden: list[str] = spec["hidden"]  # type: ignore[assignment]
        template = _templates.get(tuple(hidden))
    return spec, template


def _run_job(
    fds: list[int],
    cgroup_fd: int | None,
    spec: dict[str, object] | SetupFailed,
    template: Template | None,
) -> None:
    """In the freshly cloned child: never returns."""
    from rund_trio.isolation import execute  # imported by main() already

    code = wire.EXIT_SETUP_FAILED
    stdin, stdout, stderr, spec_fd, status_fd = fds[:REQUEST_FDS]
    step = "forkserver"
    try:
        _die_with_the_daemon()
        posix.write(status_fd, CHILD_PID + b"%d\n" % posix.getpid())
        if cgroup_fd is not None:
            step = "cgroup"
            _join_cgroup(cgroup_fd)  # first: before anything can fork
            step = "forkserver"
        posix.setsid()
        # Every received fd is above 3 (the server's 0-3 are open), so none
        # of these overwrites another before it is used.
        posix.dup2(stdin, 0)
        posix.dup2(stdout, 1)
        posix.dup2(stderr, 2)
        trace.mark("child execute")
        code = execute.execute(spec_fd, status_fd, spec=spec, template=template)
    except BaseException as error:
        number = _EINVAL
        message = repr(error)
        if isinstance(error, OSError):
            number = error.errno or _EINVAL
            message = error.strerror or message
        try:  # noqa: SIM105 (contextlib costs an import)
            posix.write(status_fd, wire.encode_status(number, step, message))
        except BaseException:
            pass
    finally:
        posix._exit(code)


def handle(data: bytes, fds: list[int]) -> bytes:
    """One request; the reply. The caller closes ``fds`` afterwards."""
    if data == REQUEST_SPAWN and len(fds) == REQUEST_FDS:
        cgroup_fd = None
    elif data == REQUEST_SPAWN_IN_CGROUP and len(fds) == REQUEST_FDS + 1:
        cgroup_fd = fds[REQUEST_FDS]
    else:
        return wire.encode_status(_EPROTO, "forkserver", f"bad request {data[:40]!r}")
    trace.mark("server request")
    spec, template = _read_spec(fds[3], fds[0])
    trace.mark("server spec-read")
    try:
        pid, joined = _fork_job(cgroup_fd)
    except OSError as error:
        return wire.encode_status(error.errno or _EINVAL, "fork", error.strerror or str(error))
    if pid == 0:
        trace.mark("child cloned")
        _run_job(fds, None if joined else cgroup_fd, spec, template)
    trace.mark("server cloned")
    return REPLY_PID + b"%d" % pid


def _wait_for_request(sock: _socket.socket) -> None:
    """Until the daemon's next request (or end of file): meanwhile, collect
    the templates built and drop those the host's mount changes made stale,
    so that none keeps a file system the host unmounted."""
    import select

    if _templates is None:
        return
    while True:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        for fd, events in _templates.watched():
            poller.register(fd, events)
        ready = [fd for fd, _ in poller.poll()]
        if len(ready) > ready.count(sock.fileno()):
            _templates.sweep(ready)  # this poll consumed their news: act on it now
        if sock.fileno() in ready:
            return


def serve(sock: _socket.socket) -> int:
    """Answer requests until the daemon closes its end."""
    space = _socket.CMSG_SPACE(REQUEST_FDS * 2 * wire.FD_SIZE)
    while True:
        _wait_for_request(sock)
        data, ancdata, flags, _ = sock.recvmsg(256, space)
        fds = wire.received_fds(ancdata)
        try:
            if not data and not fds:
                return 0
            if flags & (_socket.MSG_CTRUNC | _socket.MSG_TRUNC):
                reply = wire.encode_status(_EPROTO, "forkserver", "request truncated")
            else:
                reply = handle(data, fds)
        finally:
            for fd in fds:
                posix.close(fd)
        sock.send(reply)
        if _templates is not None:
            _templates.start_builds()  # after the reply, with no job's fd open


def main(fd: int = SERVER_FD) -> int:
    """The fork server's entry point."""
    # What every job needs, imported once here rather than per job; this
    # module's top level stays light, as the daemon imports it for the
    # protocol's constants.
    from rund_trio.isolation import (  # noqa: F401
        capabilities,
        container_fs,
        execute,
        linux,
        mount_template,
        rootfs,
        seccomp,
        userns,
    )

    seccomp.prepare()
    trace.enable_from_environment()
    global _templates
    try:
        _templates = mount_template.Templates(execute._hide)
    except OSError:
        _templates = None  # no /proc: every job builds its own tree

    # In its own session already; SIGINT aimed at a process group must not end
    # it (the jobs get default dispositions back before their exec anyway).
    _signal.signal(_SIGINT, _signal.SIG_IGN)
    global _daemon_pid
    _daemon_pid = posix.getppid()
    linux.set_process_name("rund-forkserver")
    sock = _socket.socket(fileno=fd)
    try:
        return serve(sock)
    except BrokenPipeError:
        return 0  # the daemon left while we answered
    finally:
        sock.close()
