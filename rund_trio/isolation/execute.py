"""``rund-trio execute``: set up a job's process, then exec the job's program.

The daemon starts this helper (``HelperSpawner``) in a new session with the
job's output pipes as stdout/stderr and two more fds (formats in
``rund_trio.isolation.wire``): the spec fd, read to its end and closed, and
the status fd, made close-on-exec at once. The helper then

1. joins the job's cgroup (``cgroup_dir``), before anything can fork;
2. ``unshare``\\ s the requested namespaces (a contained job: only the PID
   namespace here, ``rund-init`` unshares the rest);
3. with a PID namespace, forks the namespace's PID 1 (``rund-init``, below);
4. in the job's namespaces: a host job's ``/`` made recursively private, the
   ``hidden`` paths covered, a fresh /proc (or ``rootfs``), a fresh /sys with
   an isolated network, the host name, ``lo`` up. A contained job's file
   system is built by ``rund-init`` as the host's root (``container_fs``:
   read-only host or ``rootfs``, covers, private /tmp and /dev, masked /proc,
   cgroup namespace), which then enters its user namespace
   (``userns``, maps written by this helper): every mount, the covers
   included, is locked from then on. Started by the fork server, ``rund-init``
   copies the read-only tree with its covers from a template mount namespace
   (``mount_template``) and mounts only the job's own /proc, /sys, /dev and
   /tmp: no pivot_root, no unmount of the host's root;
5. in the job's process (forked by ``rund-init``): for a contained job
   narrows its capabilities (``capabilities``), drops to ``uid``/``gid``
   (ids of its user namespace when contained), changes to ``cwd``, restores
   default signal dispositions, sets ``no_new_privs`` and its seccomp filter
   (``seccomp``) last, and execs ``argv`` (looked up in the job's own
   ``PATH``). A host job gets none of steps 4's contained part nor 5's
   narrowing: the spec's ``contained`` record drives both, or neither.

**A terminal.** When the daemon gives a job a pseudo-terminal, it is the
job's stdin, stdout and stderr, and becomes the controlling terminal of the
session the job's program runs in: the helper's own (it leads it) without a
PID namespace; with one, a new session led by ``rund-init`` (step ``tty``), so
that the session and process group ids are visible inside the namespace (a
shell hands the terminal back to its original process group when it exits).
The helper then relays what the daemon sends its process group to
``rund-init``'s.

A contained job has its own devpts, where a terminal of the host's would
not exist (``tty`` would say "not a tty"): the daemon gives it, in place of
a terminal, one end of a unix socket (``SOCK_SEQPACKET``) whose first packet
is the window size (a ``struct winsize``). ``rund-init``, as the job's root
once its file system is built (step ``tty``), opens a terminal in the job's
devpts (``/dev/pts/0``), sends its master back through the socket
(``SCM_RIGHTS``) and makes the slave its stdin, stdout, stderr and its new
session's controlling terminal, owned by the job's ``uid``/``gid``. This
happens before the job's program is forked: the daemon has the master by the
time the status fd says the program runs.

Any failure before the exec writes ``<errno> <step> <message>`` to the status
fd and exits with ``EXIT_SETUP_FAILED``; a successful exec closes the status fd
(close-on-exec), which the daemon reads as "running".

**PID namespace.** The job's program is not PID 1 of its namespace but PID 2,
under ``rund-init``, a fork of this helper that does what a container init
(tini, ``docker --init``) does: reap orphans, and end the namespace as soon as
the job's program ends (the kernel then kills everything left in it). PID 1 is
immune to every signal it has no handler for, even ones sent from outside the
namespace, except SIGKILL; a program run as PID 1 would survive SIGTERM from
the daemon and ``kill $$`` from itself. Under ``rund-init`` signals reach the
job's processes as they would without isolation. The helper itself stays as the
parent of ``rund-init``, ignoring the signals the daemon sends to the job's
process group, and finally reproduces the job's end: it exits with the job's
exit code, or kills itself with the signal that killed the job (default
disposition, no core dump). ``rund-init`` hands the job's wait status up
through a pipe because, being a PID 1, it cannot die of a signal itself. The
job's program, first thing after its fork, sends the helper one packet over a
socket with ``SO_PASSCRED``: the kernel stamps it with the program's pid as
the helper sees it, which the helper writes on the status fd
(``wire.PROGRAM_PID``) for Status's ``pid``.

``rund-init`` asks the kernel for SIGKILL when the helper ends
(``PR_SET_PDEATHSIG``), and the fork server asks the same for the helper when
the daemon ends: a daemon that dies, even of SIGKILL, takes its jobs with it.

Only built-in and frozen modules are imported (``ctypes`` too when namespaces
or another user are asked for): the interpreter start is most of this helper's cost.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # ``signal`` would import enum
import _socket
import posix
import sys

from rund_trio.isolation import trace, wire

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from rund_trio.isolation.mount_template import Template
    from rund_trio.isolation.rootfs import SetupError

    T = TypeVar("T")

_EINVAL = 22
_ENOENT = 2
_EACCES = 13
_KEEP_SEARCHING = frozenset({2, 20, 19, 110, 116})  # ENOENT ENOTDIR ENODEV ETIMEDOUT ESTALE
_DEFAULT_PATH = "/bin:/usr/bin"  # the C library's, when the job's env has no PATH
_SIGKILL = 9
_SIGSTOP = 19
_SIGCHLD = 17
_SIGCONT = 18
_SYNCHRONOUS = frozenset({4, 5, 7, 8, 11, 31})  # ILL TRAP BUS FPE SEGV SYS
_UCRED_SIZE = 12  # struct ucred: pid, uid, gid
_SOCK_CLOEXEC = 0o2000000


class SetupFailed(Exception):
    """A setup step failed before the job's program ran."""

    def __init__(self, step: str, errno: int, message: str) -> None:
        super().__init__(step, errno, message)
        self.step = step
        self.errno = errno
        self.message = message


def _step(step: str, function: Callable[..., T], *args: object) -> T:
    """Run one setup step, turning its ``OSError`` into ``SetupFailed``."""
    try:
        return function(*args)
    except OSError as error:
        message = error.strerror or str(error)
        if error.filename is not None:
            name = error.filename
            if isinstance(name, bytes):
                name = name.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
            message += f": {name!r}"
        raise SetupFailed(step, error.errno or _EINVAL, message) from None


def _report(status_fd: int, failure: SetupFailed) -> None:
    try:  # noqa: SIM105 (contextlib costs the helper an import)
        posix.write(status_fd, wire.encode_status(failure.errno, failure.step, failure.message))
    except OSError:
        pass  # the daemon is gone: nobody to tell


def read_spec(spec_fd: int) -> dict[str, object]:
    """The record on ``spec_fd`` (read from its offset to its end, left
    open); ``SetupFailed`` (step ``spec``) if it is not one."""
    chunks = []
    while chunk := posix.read(spec_fd, 1 << 16):
        chunks.append(chunk)
    try:
        return wire.decode_spec(b"".join(chunks))
    except wire.WireError as error:
        raise SetupFailed("spec", _EINVAL, str(error)) from None


def _join_cgroup(cgroup_dir: str) -> None:
    fd = posix.open(cgroup_dir.rstrip("/") + "/cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC)
    try:
        posix.write(fd, b"0")
    finally:
        posix.close(fd)


def _catchable_signals() -> list[int]:
    return [s for s in range(1, 65) if s not in (_SIGKILL, _SIGSTOP, 32, 33)]


def _ignore_group_signals() -> None:
    """Survive what the daemon sends the job's process group (not SIGKILL)."""
    for signum in _catchable_signals():
        if signum not in _SYNCHRONOUS and signum not in (_SIGCHLD, _SIGCONT):
            _signal.signal(signum, _signal.SIG_IGN)


def _default_signals() -> None:
    """What a freshly started program expects: every signal at its default
    disposition (Python ignores SIGPIPE and SIGXFSZ) and none blocked."""
    for signum in _catchable_signals():
        try:  # noqa: SIM105 (contextlib costs the helper an import)
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def _setup_namespaces(record: dict[str, object]) -> None:
    """Step 4, in the process whose namespaces are the job's."""
    from rund_trio.isolation import linux

    ns: dict[str, bool] = record["namespaces"]  # type: ignore[assignment]
    if ns["mount"]:
        _step("mount-private", linux.mount, None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        hidden: list[str] = record["hidden"]  # type: ignore[assignment]
        for path in hidden:
            _step("hide", _hide, path)
        rootfs = record["rootfs"]
        if isinstance(rootfs, str):
            from rund_trio.isolation.rootfs import SetupError, enter_rootfs

            try:
                enter_rootfs(rootfs)
            except SetupError as error:
                raise _failed(error) from None
        else:
            if ns["pid"]:
                flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
                _step("mount-proc", linux.mount, "proc", "/proc", "proc", flags)
            if ns["net"]:
                _step("mount-sys", _fresh_sysfs)
    hostname = record["hostname"]
    if isinstance(hostname, str):
        _step("hostname", linux.sethostname, hostname)
    if ns["net"]:
        _step("net-lo", linux.interface_up, "lo")


def _failed(error: SetupError) -> SetupFailed:
    """The ``SetupFailed`` for a ``SetupError`` of the set-up modules."""
    message = error.error.strerror or str(error.error)
    if error.error.filename is not None:
        message += f": {error.error.filename!r}"
    return SetupFailed(error.step, error.error.errno or _EINVAL, message)


def _setup_contained(
    record: dict[str, object], ready_w: int, go_r: int, template: Template | None
) -> int:
    """Step 4 for a contained job, in ``rund-init``: its namespaces and file
    system made as the host's root (``container_fs``; its root tree a copy of
    ``template`` when that fits the job, see ``mount_template``), then its
    user namespace (``userns``), as whose root it returns.

    Returns an fd of the mount namespace the tree was built in, which the
    user namespace's copy of it left: freeing a mount namespace waits for an
    RCU grace period, so ``_release_after_exec`` frees it once the job's
    program runs."""
    from rund_trio.isolation import container_fs, linux, userns
    from rund_trio.isolation.rootfs import SetupError

    ns: dict[str, bool] = record["namespaces"]  # type: ignore[assignment]
    contained: dict[str, list[int]] = record["contained"]  # type: ignore[assignment]
    ids = contained["ids"]
    rootfs = record["rootfs"]
    hidden: list[str] = record["hidden"]  # type: ignore[assignment]
    if template is not None and (rootfs is not None or tuple(hidden) != template.hidden):
        template.close()
        template = None  # not this job's tree
    try:
        trace.mark("init unshare")
        if template is not None:
            try:
                _step("setns", linux.setns, template.ns_fd, linux.CLONE_NEWNS)
            finally:
                template.close()
        _step("unshare", linux.unshare, container_fs.unshare_flags(ns))
        trace.mark("init unshared")
        if template is None:
            container_fs.build(
                rootfs if isinstance(rootfs, str) else None, hidden, _hide, (ids[0], ids[1])
            )
        else:
            # The job's /dev binds "/dev/<name>": the host's nodes, which the
            # template staged (its own /dev is nodev, as all of its tree);
            # the job's /tmp covers the stage, and the root is the tree again.
            from rund_trio.isolation.mount_template import STAGE

            _step("mount-dev", posix.chroot, STAGE)
            container_fs.mount_job_dirs((ids[0], ids[1]))
            _step("chdir", posix.chroot, ".")
        trace.mark("init built")
        hostname = record["hostname"]
        if isinstance(hostname, str):
            _step("hostname", linux.sethostname, hostname)
        if ns["net"]:
            _step("net-lo", linux.interface_up, "lo")
        trace.mark("init lo-up")
        if template is None:
            container_fs.enter()
        trace.mark("init entered")
        builder = _step("userns", posix.open, "/proc/self/ns/mnt", posix.O_RDONLY | posix.O_CLOEXEC)
        if not userns.enter(ready_w, go_r):
            posix._exit(wire.EXIT_SETUP_FAILED)  # the helper failed and reported why
    except SetupError as error:
        raise _failed(error) from None
    return builder


def _release_after_exec(builder: int, exec_r: int, exec_w: int) -> None:
    """In ``rund-init``, after forking the job's process (which holds
    ``exec_w``, close-on-exec, and closed its copy of ``builder``): close
    ``builder`` once that process executed its program or ended, so that the
    grace period of freeing the namespace delays nothing the daemon waits for."""
    posix.close(exec_w)
    try:  # noqa: SIM105 (contextlib costs the helper an import)
        posix.read(exec_r, 1)  # end of file: executed or ended
    except OSError:
        pass
    posix.close(exec_r)
    posix.close(builder)


def _hide(path: str) -> None:
    """Cover ``path`` in this mount namespace: a directory with an empty
    read-only tmpfs, anything else with ``/dev/null`` (reads as empty). A path
    that does not exist has nothing to hide."""
    from rund_trio.isolation import linux

    try:
        mode = posix.stat(path).st_mode
    except FileNotFoundError:
        return
    if mode & 0o170000 == 0o040000:  # S_ISDIR, without importing stat
        flags = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        linux.mount("tmpfs", path, "tmpfs", flags, "size=4k,nr_inodes=1,mode=000")
    else:
        linux.mount("/dev/null", path, None, linux.MS_BIND)


def _fresh_sysfs() -> None:
    """A sysfs of the new network namespace on /sys (so /sys/class/net shows
    only its interfaces), with the host's cgroup mount carried over."""
    from rund_trio.isolation import linux

    try:
        cgroup: int | None = linux.clone_mount("/sys/fs/cgroup")
    except OSError:
        cgroup = None  # no cgroup file system mounted there
    linux.mount("sysfs", "/sys", "sysfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    if cgroup is not None:
        try:
            linux.attach_mount(cgroup, "/sys/fs/cgroup")
        finally:
            posix.close(cgroup)


def _change_user(uid: object, gid: object) -> None:
    """setgroups, setgid, setuid; keeping the parent death signal, which the
    kernel clears on a change of credentials."""
    from rund_trio.isolation import linux

    death_signal = linux.parent_death_signal()
    parent = posix.getppid()
    _step("setgroups", posix.setgroups, [])
    if isinstance(gid, int):
        _step("setgid", posix.setgid, gid)
    if isinstance(uid, int):
        _step("setuid", posix.setuid, uid)
    if death_signal:
        linux.set_parent_death_signal(death_signal)
        if posix.getppid() != parent:  # the parent ended meanwhile
            posix._exit(wire.EXIT_SETUP_FAILED)


def _exec_job(record: dict[str, object]) -> None:
    """Step 5: only returns by raising ``SetupFailed``."""
    uid, gid = record["uid"], record["gid"]
    confine: dict[str, object] | None = record["contained"]  # type: ignore[assignment]
    # The contained profile comes LAST, after every mount, unshare and fork
    # (which need the powers it takes away): nothing privileged may follow.
    # The capabilities are narrowed just before the change of credentials,
    # which needs only SETUID/SETGID (kept), because shrinking the bounding
    # set needs SETPCAP, which leaving uid 0 clears; no_new_privs and the
    # seccomp filter come after it, right before the exec.
    if confine is not None:
        from rund_trio.isolation import capabilities

        _step("capabilities", capabilities.confine, confine["caps"])
    if isinstance(gid, int) or isinstance(uid, int):
        _change_user(uid, gid)
    cwd = record["cwd"]
    if isinstance(cwd, str):
        _step("chdir", posix.chdir, cwd)
    argv: list[str] = record["argv"]  # type: ignore[assignment]
    env: dict[str, str] = record["env"]  # type: ignore[assignment]
    _default_signals()
    if confine is not None:
        from rund_trio.isolation import seccomp

        _step("seccomp", seccomp.install, confine["seccomp"])
    trace.mark("job exec")
    code = _execvpe(argv, env)
    message = f"{posix.strerror(code)}: {argv[0]!r}"
    if "/" not in argv[0]:
        message += f" in PATH {env.get('PATH', _DEFAULT_PATH)}"
    raise SetupFailed("exec", code, message)


def _execvpe(argv: list[str], env: dict[str, str]) -> int:
    """``execvpe`` as the C library does it: try each ``PATH`` entry, go on
    past ENOENT/ENOTDIR (and EACCES, remembered); returns the errno.

    Not ``posix.execvpe``: it imports ``warnings`` lazily, and after pivot_root
    the standard library is out of reach.
    """
    program = argv[0]
    if "/" in program:
        candidates = [program]
    else:
        candidates = [
            (directory or ".").rstrip("/") + "/" + program
            for directory in env.get("PATH", _DEFAULT_PATH).split(":")
        ]
    denied = False
    for candidate in candidates:
        try:
            posix.execve(candidate, argv, env)
        except OSError as error:
            code = error.errno or _EINVAL
            if code == _EACCES:
                denied = True
            elif code not in _KEEP_SEARCHING:
                return code
    return _EACCES if denied else _ENOENT


def _reap_until(child: int) -> int:
    """As PID 1: reap whatever ends until ``child`` does; its wait status."""
    while True:
        pid, status = posix.waitpid(-1, 0)
        if pid == child:
            return status


def _end_like(status: int) -> None:
    """End this process the way the job ended (never returns)."""
    if posix.WIFSIGNALED(status):
        signum = posix.WTERMSIG(status)
        try:
            from rund_trio.isolation import linux  # imported already: no file access

            linux.disable_core_dumps()
            if signum != _SIGKILL:  # its disposition cannot be set (EINVAL), nor needs to be
                _signal.signal(signum, _signal.SIG_DFL)
                _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [signum])
            posix.kill(posix.getpid(), signum)
        except (OSError, ValueError):
            pass
        posix._exit(128 + signum)  # a signal whose default is not to terminate
    posix._exit(posix.waitstatus_to_exitcode(status) if posix.WIFEXITED(status) else 1)


def _say_pid(pid_w: _socket.socket) -> None:
    """In the job's process, first thing: one packet to the helper, which
    the kernel stamps with this process's pid as the helper sees it
    (``SCM_CREDENTIALS``, translated into the receiver's PID namespace)."""
    try:  # noqa: SIM105 (contextlib costs the helper an import)
        pid_w.send(b"p")
    except OSError:
        pass  # the helper is gone; so is the job, soon (parent death signal)
    pid_w.close()


def _hear_pid(pid_r: _socket.socket) -> int | None:
    """In the helper: the host pid of the job's program, from ``_say_pid``;
    None if ``rund-init`` ended without forking it."""
    try:
        _, ancdata, _, _ = pid_r.recvmsg(1, _socket.CMSG_SPACE(_UCRED_SIZE))
    except OSError:
        return None
    finally:
        pid_r.close()
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_CREDENTIALS and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder, signed=True) or None
    return None


def _die_with_parent(parent_alive: int, *, close: bool = True) -> None:
    """In ``rund-init``: SIGKILL from the kernel when the helper above it ends
    (say, killed with the daemon), which ends the whole namespace.
    ``parent_alive`` is a pipe's read end whose only writer is the helper: at
    end of file the helper ended before the kernel could be asked."""
    from rund_trio.isolation import linux

    linux.set_parent_death_signal(_SIGKILL)
    posix.set_blocking(parent_alive, False)
    try:
        gone = posix.read(parent_alive, 1) == b""
    except BlockingIOError:
        gone = False
    if gone:
        posix._exit(wire.EXIT_SETUP_FAILED)
    if close:
        posix.close(parent_alive)


def _run_init(
    record: dict[str, object],
    status_fd: int,
    result_w: int,
    parent_alive: int,
    pid_w: _socket.socket,
    userns_fds: tuple[int, int] | None,
    template: Template | None,
) -> None:
    """PID 1 of the job's PID namespace (a forked child: never returns).
    ``userns_fds`` (ready_w, go_r) and ``template`` for a contained job."""
    try:
        from rund_trio.isolation import linux

        _die_with_parent(parent_alive, close=userns_fds is None)
        linux.set_process_name("rund-init")
        if posix.isatty(0):
            _step("tty", _take_terminal, True)
        builder = -1
        if userns_fds is None:
            _setup_namespaces(record)
        else:
            builder = _setup_contained(record, *userns_fds, template)
            trace.mark("init userns-root")
            # Becoming the namespace's root cleared the parent death signal.
            _die_with_parent(parent_alive)
            if _terminal_socket():
                _step("tty", _open_job_terminal, record)
            exec_r, exec_w = _step("pipe", posix.pipe2, posix.O_CLOEXEC)
        trace.mark("init fork-job")
        job = _step("fork", posix.fork)
        if job == 0:
            try:
                trace.mark("job forked")
                if builder >= 0:
                    posix.close(builder)
                    posix.close(exec_r)
                _say_pid(pid_w)
                posix.close(result_w)
                _exec_job(record)
            except SetupFailed as failure:
                _report(status_fd, failure)
            except BaseException as error:  # a bug: still say something
                _report(status_fd, SetupFailed("helper", _EINVAL, repr(error)))
            posix._exit(wire.EXIT_SETUP_FAILED)
        pid_w.close()
        posix.close(status_fd)
        if builder >= 0:
            _release_after_exec(builder, exec_r, exec_w)
        status = _reap_until(job)
        posix.write(result_w, b"%d" % status)
        posix._exit(0)
    except SetupFailed as failure:
        _report(status_fd, failure)
    except BaseException as error:
        _report(status_fd, SetupFailed("helper", _EINVAL, repr(error)))
    posix._exit(wire.EXIT_SETUP_FAILED)


def _start(record: dict[str, object], status_fd: int, template: Template | None) -> None:
    """Steps 1 to 5. Returns only by raising ``SetupFailed``; with a PID
    namespace this process ends as the job ended."""
    cgroup_dir = record["cgroup_dir"]
    if isinstance(cgroup_dir, str):
        _step("cgroup", _join_cgroup, cgroup_dir)
    contained: dict[str, object] | None = record["contained"]  # type: ignore[assignment]
    if contained is not None:  # now: the job's file system puts them out of reach
        from rund_trio.isolation import capabilities, seccomp  # noqa: F401
    ns: dict[str, bool] = record["namespaces"]  # type: ignore[assignment]
    # The daemon gave the job a terminal, or a contained job the socket to
    # send the master of one back through.
    terminal = posix.isatty(0) or (contained is not None and _terminal_socket())
    if terminal and not ns["pid"]:
        _step("tty", _take_terminal)
    if not any(ns.values()):
        _exec_job(record)
        return
    from rund_trio.isolation import linux

    flags = 0
    for kind, flag in (
        ("pid", linux.CLONE_NEWPID),
        ("mount", linux.CLONE_NEWNS),
        ("uts", linux.CLONE_NEWUTS),
        ("ipc", linux.CLONE_NEWIPC),
        ("net", linux.CLONE_NEWNET),
    ):
        if ns[kind]:
            flags |= flag
    if contained is not None:  # rund-init unshares the rest (_setup_contained)
        flags = linux.CLONE_NEWPID
    trace.mark("helper unshare")
    _step("unshare", linux.unshare, flags)
    trace.mark("helper unshared")
    if not ns["pid"]:
        _setup_namespaces(record)
        _exec_job(record)
        return
    result_r, result_w = _step("pipe", posix.pipe2, posix.O_CLOEXEC)
    alive_r, alive_w = _step("pipe", posix.pipe2, posix.O_CLOEXEC)
    pid_r, pid_w = _step("socketpair", _pid_socketpair)
    if contained:
        ready_r, ready_w = _step("pipe", posix.pipe2, posix.O_CLOEXEC)
        go_r, go_w = _step("pipe", posix.pipe2, posix.O_CLOEXEC)
    _ignore_group_signals()
    trace.mark("helper fork-init")
    init = _step("fork", posix.fork)
    if init == 0:
        trace.mark("init forked")
        posix.close(result_r)
        posix.close(alive_w)
        pid_r.close()
        if contained:
            posix.close(ready_r)
            posix.close(go_w)
        _run_init(
            record,
            status_fd,
            result_w,
            alive_r,
            pid_w,
            (ready_w, go_r) if contained else None,
            template if contained else None,
        )
    linux.set_process_name("rund-execute")
    if template is not None:
        template.close()  # rund-init's business
    if terminal:
        _relay_group_signals(init)
    posix.close(result_w)
    posix.close(alive_r)  # alive_w stays open until this process ends
    pid_w.close()
    if contained:
        posix.close(ready_w)
        posix.close(go_r)
        trace.mark("helper map-wait")
        _map_ids(init, contained["ids"], ready_r, go_w)  # type: ignore[arg-type]
        trace.mark("helper mapped")
    # The status fd reaches end of file only once this line is written (or
    # not) and the job's program was executed: the daemon has both then.
    program = _hear_pid(pid_r)
    trace.mark("helper heard-pid")
    if program is not None:
        try:  # noqa: SIM105 (contextlib costs the helper an import)
            posix.write(status_fd, wire.PROGRAM_PID + b"%d\n" % program)
        except OSError:
            pass  # the daemon is gone
    posix.close(status_fd)
    _, init_status = posix.waitpid(init, 0)
    relayed = posix.read(result_r, 32)
    _end_like(int(relayed) if relayed else init_status)


def _pid_socketpair() -> tuple[_socket.socket, _socket.socket]:
    """(helper's end, job's end): the helper's end receives credentials."""
    ends = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _SOCK_CLOEXEC)
    ends[0].setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
    return ends[0], ends[1]


def _take_terminal(new_session: bool = False) -> None:
    """Make the terminal on stdin (a job started with a tty) the controlling
    terminal of the session the job's program will be in: this process's own
    (it leads it), or with ``new_session`` a new one led by this process
    (``rund-init``: so that its ids are visible in the job's PID namespace,
    where a shell hands the terminal back to its original process group)."""
    from rund_trio.isolation import linux

    if new_session:
        posix.setsid()
    linux.set_controlling_terminal(0)


def _terminal_socket() -> bool:
    """Stdin is a socket: the daemon asks a contained job's ``rund-init`` for
    a terminal of the job's own devpts (a job's stdin is otherwise a
    terminal, a pipe or /dev/null)."""
    return posix.fstat(0).st_mode & 0o170000 == 0o140000  # S_ISSOCK


def _open_job_terminal(record: dict[str, object]) -> None:
    """In a contained job's ``rund-init``, as the job's root with its file
    system entered: a new terminal of the job's devpts, sized as the daemon's
    first packet on the socket on stdin says; its master sent back through
    that socket, its slave made stdin, stdout and stderr and the controlling
    terminal of a new session led by this process."""
    from rund_trio.isolation import linux

    winsize = posix.read(0, 64)
    if not winsize:
        raise OSError(_EINVAL, "the daemon closed the terminal socket")
    posix.setsid()
    master, slave = linux.open_terminal()
    try:
        linux.set_window_size(master, winsize)
        uid, gid = record["uid"], record["gid"]
        if isinstance(uid, int) or isinstance(gid, int):
            posix.fchown(
                slave, uid if isinstance(uid, int) else -1, gid if isinstance(gid, int) else -1
            )
        channel = _socket.socket(fileno=posix.dup(0))
        try:
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, master.to_bytes(4, sys.byteorder))]
            channel.sendmsg([b"t"], rights)
        finally:
            channel.close()
    finally:
        posix.close(master)
    for fd in (0, 1, 2):
        posix.dup2(slave, fd)
    posix.close(slave)
    linux.set_controlling_terminal(0)


def _relay_group_signals(init: int) -> None:
    """In the helper above a ``rund-init`` that leads its own session (a job
    with a terminal): what the daemon sends the helper's process group goes on
    to ``rund-init``'s, where the job's processes are."""

    def relay(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib costs the helper an import)
            posix.kill(-init, signum)
        except OSError:
            pass

    for signum in _catchable_signals():
        if signum not in _SYNCHRONOUS and signum not in (_SIGCHLD, _SIGCONT):
            _signal.signal(signum, relay)


def _map_ids(init: int, ids: list[int], ready_r: int, go_w: int) -> None:
    """In the helper: write ``rund-init``'s id maps (``userns.write_maps``);
    on failure kill it and raise ``SetupFailed``."""
    from rund_trio.isolation import userns
    from rund_trio.isolation.rootfs import SetupError

    try:
        userns.write_maps(init, ids, ready_r, go_w)
    except SetupError as error:
        posix.kill(init, _SIGKILL)
        posix.waitpid(init, 0)
        raise _failed(error) from None


def _close_other_fds(*keep: int) -> None:
    """Close every fd but stdio and ``keep``: whatever the daemon's process
    inherited without close-on-exec must not reach the job."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            posix.closerange(low, fd)
            low = fd + 1
    posix.closerange(low, 0x7FFFFFFF)


def execute(
    spec_fd: int,
    status_fd: int,
    *,
    spec: dict[str, object] | SetupFailed | None = None,
    template: Template | None = None,
) -> int:
    """Run the helper on these fds; returns ``EXIT_SETUP_FAILED`` on failure
    (after reporting it), and otherwise never returns. ``spec``: the record
    (or why there is none) when the caller read ``spec_fd`` already (the
    fork server); ``template``: a template mount namespace the fork server
    holds, used if it fits the job."""
    try:
        posix.set_inheritable(status_fd, False)
    except OSError as error:
        posix.write(2, f"rund-trio execute: bad status fd {status_fd}: {error}\n".encode())
        return wire.EXIT_SETUP_FAILED
    keep = [spec_fd, status_fd, trace.fd()]
    if template is not None:
        keep += [template.ns_fd, template.mountinfo_fd]
    _close_other_fds(*keep)
    try:
        if spec is None:
            spec = read_spec(spec_fd)
        posix.close(spec_fd)
        if isinstance(spec, SetupFailed):
            raise spec
        trace.mark("helper spec-read")
        _start(spec, status_fd, template)
        raise SetupFailed("exec", _EINVAL, "the helper returned instead of executing")
    except SetupFailed as failure:
        _report(status_fd, failure)
    except OSError as error:
        _report(status_fd, SetupFailed("helper", error.errno or _EINVAL, str(error)))
    except Exception as error:
        _report(status_fd, SetupFailed("helper", _EINVAL, repr(error)))
    return wire.EXIT_SETUP_FAILED


def parse_args(argv: list[str]) -> tuple[int, int]:
    """``[--spec-fd N] [--status-fd N]`` → (spec fd, status fd)."""
    fds = {"--spec-fd": wire.DEFAULT_SPEC_FD, "--status-fd": wire.DEFAULT_STATUS_FD}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag not in fds or not args or not args[0].isdigit():
            raise SystemExit(
                f"usage: rund-trio execute [--spec-fd N] [--status-fd N] (got {flag!r})"
            )
        fds[flag] = int(args.pop(0))
    return fds["--spec-fd"], fds["--status-fd"]


def main(argv: list[str] | None = None) -> int:
    """The helper's entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    spec_fd, status_fd = parse_args(sys.argv[1:] if argv is None else argv)
    return execute(spec_fd, status_fd)


if __name__ == "__main__":
    sys.exit(main())
