"""``rund-trio serve``: run the daemon until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rund_trio.cli.durations import parse_duration
from rund_trio.cli.options import add_tls_options, tls_files
from rund_trio.cli.sizes import parse_reserve, parse_size

if TYPE_CHECKING:
    from rund_trio.server.app import RunningDaemon, ServeConfig
    from rund_trio.server.host_support import Requested
    from rund_trio.server.systemd import Notifier


def parse_user(text: str) -> tuple[int, int]:
    """``UID`` or ``UID:GID`` (the group defaults to the uid)."""
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid or uid)


def _san_pattern(text: str) -> str:
    from rund_trio.errors import ConfigError
    from rund_trio.jobs.isolation_policy import parse_san_pattern

    try:
        return parse_san_pattern(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_count(text: str) -> int:
    """A whole number of zero or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of zero or more")
    return int(text)


DEFAULT_PIDS_MAX = 4096


def requested_options(args: argparse.Namespace) -> Requested:
    """The host-dependent options given on the command line (not left at their
    default): the host must honour them or start-up fails."""
    from rund_trio.server.host_support import Requested

    return Requested(
        pids_max=args.pids_max,
        io_devices=bool(args.io_device),
        cgroup_root=args.cgroup_root is not None,
        rootfs=args.rootfs is not None,
        run_as=args.run_as is not None,
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the daemon",
        description="Run the job daemon: serve the JobController API over mutual TLS "
        "until SIGINT or SIGTERM, then kill every job and exit.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a TOML file setting any of these flags by its name without the dashes "
        '(e.g. state-dir = "/var/lib/rund-trio"); flags given here override it',
    )
    parser.add_argument(
        "--addr",
        default=":8000",
        help="address to listen on: host:port, [::1]:port, or :port for every interface "
        "(default: %(default)s)",
    )
    add_tls_options(parser, cert="tls/server.pem", key="tls/server-key.pem", env_prefix=None)
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for job records and output, mode 0700, kept across restarts "
        "(default: /var/lib/rund-trio as root, else $XDG_STATE_HOME/rund-trio, "
        "by default ~/.local/state/rund-trio)",
    )
    state.add_argument(
        "--temp-state-dir",
        action="store_true",
        help="use a fresh private directory under the system temp directory instead, "
        "removed at exit with every job record (tests, demos)",
    )
    parser.add_argument(
        "--retain-jobs",
        type=parse_count,
        default=10_000,
        metavar="N",
        help="most ended jobs kept (record and output); the ones that ended first are "
        "forgotten first (default: %(default)s; 0: no limit)",
    )
    parser.add_argument(
        "--retain-for",
        type=parse_duration,
        default="7d",
        metavar="DURATION",
        help="forget ended jobs this long after they ended, e.g. 12h, 30d "
        "(default: %(default)s; 0: no limit)",
    )
    parser.add_argument(
        "--output-cap",
        type=parse_size,
        default="1G",
        help="output kept per job, e.g. 512M or 2G; the rest is dropped and counted "
        "(default: %(default)s; 0 keeps none)",
    )
    parser.add_argument(
        "--max-output-total",
        type=parse_size,
        default="10G",
        metavar="SIZE",
        help="output of all retained jobs together in the state directory; beyond it "
        "output is dropped and Start is refused until jobs are removed or forgotten "
        "(default: %(default)s; 0: no cap)",
    )
    parser.add_argument(
        "--min-free-disk",
        type=parse_reserve,
        default=None,
        metavar="SIZE|PERCENT%",
        help="free space job output never eats into on the state directory's filesystem; "
        "below it output is dropped and Start is refused (default: 1G or 5%% of the "
        "filesystem, whichever is smaller; 0: none)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at shutdown, send jobs SIGTERM and wait this long before SIGKILL (default: 0)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds a client has to complete the TLS handshake (default: %(default)s)",
    )
    cgroups = parser.add_argument_group("resource control (cgroup v2)")
    cgroups.add_argument(
        "--cgroup-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="the cgroup v2 directory for job cgroups (default: rund-trio below the "
        "daemon's own cgroup); one daemon per directory",
    )
    cgroups.add_argument(
        "--io-device",
        action="append",
        default=[],
        metavar="DEV",
        help="block device io limits apply to, as MAJ:MIN or /dev/NAME; repeatable "
        "(default: the machine's whole disks)",
    )
    cgroups.add_argument(
        "--pids-max",
        type=int,
        default=None,
        metavar="N",
        help=f"most processes a job may have, so a fork bomb stays inside it "
        f"(default: {DEFAULT_PIDS_MAX}, a warning where the host cannot enforce it; "
        "given explicitly, start-up fails there; 0 for no cap)",
    )
    cgroups.add_argument(
        "--no-cgroups",
        action="store_true",
        help="do not put jobs in cgroups (every resource limit is then refused)",
    )
    isolation = parser.add_argument_group("isolation")
    isolation.add_argument(
        "--no-namespaces",
        action="store_true",
        help="run jobs in the daemon's namespaces instead of new PID, mount, UTS and IPC ones",
    )
    isolation.add_argument(
        "--network",
        choices=["host", "isolated"],
        default=None,
        help="network of jobs that do not choose one: the host's, or a namespace with only "
        "loopback (default: host, or isolated with --forbid-host-network)",
    )
    isolation.add_argument(
        "--forbid-host-network",
        action="store_true",
        help="never give a job the host's network",
    )
    isolation.add_argument(
        "--rootfs",
        type=Path,
        default=None,
        metavar="DIR",
        help="a root filesystem every job pivots into (see README: building one)",
    )
    isolation.add_argument(
        "--run-as",
        type=parse_user,
        default=None,
        metavar="UID[:GID]",
        help="user (and group) of jobs that do not choose one (default: the daemon's own)",
    )
    isolation.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="a uid clients may ask to run a job as; repeatable (default: none; "
        "root only if listed)",
    )
    isolation.add_argument(
        "--allow-gid",
        type=int,
        action="append",
        default=[],
        metavar="GID",
        help="a gid clients may ask for; repeatable",
    )
    isolation.add_argument(
        "--hide",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a file or directory no job may read, e.g. a CA key on this machine; repeatable "
        "(the state directory and --key are always hidden; needs namespaces)",
    )
    isolation.add_argument(
        "--default-profile",
        choices=["contained", "host"],
        default="contained",
        help="profile of jobs that do not ask for one: contained (a user namespace, the "
        "host read-only, narrowed capabilities, no_new_privs, a seccomp filter) or host "
        "(the daemon's own powers, for a daemon that trusts every client; the only one "
        "--no-namespaces can run) (default: %(default)s)",
    )
    isolation.add_argument(
        "--allow-host-jobs",
        type=_san_pattern,
        action="append",
        default=[],
        metavar="SAN-PATTERN",
        help="clients whose certificate has a SAN matching KIND:PATTERN (KIND DNS, IP, email "
        "or URI; PATTERN a glob, e.g. DNS:*.ops.example.com) may ask for host jobs "
        "(client --host); repeatable (default: none)",
    )
    isolation.add_argument(
        "--userns-range",
        default=None,
        metavar="START:COUNT",
        help="host uids and gids START.. that contained jobs' ids 0..COUNT-1 map to "
        "(default: the rund-trio entries of /etc/subuid and /etc/subgid, else 2147418112:65536)",
    )
    caps = parser.add_argument_group("caps (beyond them: RESOURCE_EXHAUSTED)")
    caps.add_argument(
        "--max-running-jobs",
        type=int,
        default=4096,
        metavar="N",
        help="jobs running at once (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-running-jobs-per-client",
        type=int,
        default=1024,
        metavar="N",
        help="jobs running at once per client certificate (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-log-streams-per-client",
        type=int,
        default=256,
        metavar="N",
        help="Log streams open at once per client certificate (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-request-size",
        type=parse_size,
        default="4M",
        metavar="SIZE",
        help="largest request message, e.g. 64K or 16M, refused from its length prefix "
        "(default: %(default)s)",
    )
    caps.add_argument(
        "--max-argv-bytes",
        type=parse_size,
        default="1M",
        metavar="SIZE",
        help="largest command line a job may have: its arguments' bytes and NULs "
        "(default: %(default)s; 0: no cap, Linux then refuses beyond ~2M)",
    )
    caps.add_argument(
        "--max-env-bytes",
        type=parse_size,
        default="128K",
        metavar="SIZE",
        help="largest environment a Start request may add (-e): its entries' bytes and NULs "
        "(default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-streams-per-connection",
        type=int,
        default=1024,
        metavar="N",
        help="requests one connection may have open at once; a client that opens more "
        "loses the connection (default: %(default)s)",
    )
    observe = parser.add_argument_group("metrics and audit trail (see README: Operating rund-trio)")
    observe.add_argument(
        "--metrics-addr",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )
    observe.add_argument(
        "--metrics-tls",
        action="store_true",
        help="serve metrics over the daemon's mutual TLS (scrapers need a client certificate "
        "of the daemon's CA) instead of plain HTTP",
    )
    observe.add_argument(
        "--metrics-max-job-series",
        type=int,
        default=20,
        metavar="N",
        help="running jobs (the longest running) with their own CPU and memory series; "
        "every job counts in the aggregates (default: %(default)s)",
    )
    observe.add_argument(
        "--audit-log",
        default=None,
        metavar="FILE",
        help="append one JSON line per request and per ended job to FILE (mode 0600), "
        "or - for standard output (default: off)",
    )
    observe.add_argument(
        "--audit-max-size",
        type=parse_size,
        default="100M",
        metavar="SIZE",
        help="rotate the audit file before it grows beyond SIZE (default: %(default)s; 0: never)",
    )
    observe.add_argument(
        "--audit-keep",
        type=int,
        default=5,
        metavar="N",
        help="rotated audit files kept, FILE.1 the newest (default: %(default)s)",
    )
    observe.add_argument(
        "--audit-required",
        action="store_true",
        help="refuse job requests with UNAVAILABLE while the audit log cannot be written "
        "(default: keep serving and count the lost records)",
    )
    admission = parser.add_argument_group(
        "connection admission (beyond these, new connections are closed at once)"
    )
    admission.add_argument(
        "--max-handshakes",
        type=int,
        default=256,
        metavar="N",
        help="connections in the TLS handshake at once (default: %(default)s; 0: no cap)",
    )
    admission.add_argument(
        "--max-handshakes-per-source",
        type=int,
        default=64,
        metavar="N",
        help="connections in the TLS handshake at once from one IP address "
        "(default: %(default)s; 0: no cap)",
    )
    admission.add_argument(
        "--max-connections-per-client",
        type=int,
        default=256,
        metavar="N",
        help="connections open at once per client certificate (default: %(default)s; 0: no cap)",
    )
    admission.add_argument(
        "--fd-reserve",
        type=int,
        default=1024,
        metavar="N",
        help="file descriptors kept free for jobs and their output: with fewer free, new "
        "connections are closed at once (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="the daemon's own log on stderr: text lines, or one JSON object a line "
        "(default: %(default)s)",
    )
    parser.set_defaults(handler=run)
    return parser


def serve_parser() -> argparse.ArgumentParser:
    """A fresh ``serve`` parser, as ``rund-trio serve`` parses its flags."""
    top = argparse.ArgumentParser(prog="rund-trio")
    return add_parser(top.add_subparsers())


def apply_config_file(args: argparse.Namespace) -> frozenset[str]:
    """Set in ``args`` what ``--config`` sets and the command line does not;
    the ``dest`` of the flags taken from the file. ``ConfigError`` names the
    file and the key of any problem in it."""
    from rund_trio.cli import config_file

    if args.config is None:
        return frozenset()
    values = config_file.load(args.config, serve_parser())
    argv: list[str] = args.argv
    serve_argv = argv[argv.index("serve") + 1 :] if "serve" in argv else argv
    given = config_file.given_on_command_line(serve_parser(), serve_argv)
    taken = frozenset(dest for dest in values if dest not in given)
    for dest in taken:
        setattr(args, dest, values[dest])
    return taken


def build_config(args: argparse.Namespace) -> ServeConfig:
    """The daemon's whole configuration from its flags, checked as far as
    flags can be without touching the system. Raises ``ConfigError``."""
    from rund_trio.cgroups.devices import parse_io_device
    from rund_trio.cgroups.tree import CgroupOptions
    from rund_trio.isolation import id_range
    from rund_trio.jobs.isolation_policy import IsolationPolicy, Network, Profile
    from rund_trio.logs.budget import Reserve
    from rund_trio.logs.state_dir import default_state_dir
    from rund_trio.observe.config import ObserveConfig
    from rund_trio.rpc import TransportConfig
    from rund_trio.server.admission import AdmissionLimits
    from rund_trio.server.app import ServeConfig
    from rund_trio.server.systemd import listen_sockets

    return ServeConfig(
        tls=tls_files(args),
        addr=args.addr,
        state_dir=None if args.temp_state_dir else (args.state_dir or default_state_dir()),
        retain_jobs=args.retain_jobs or None,
        retain_for=args.retain_for or None,
        output_cap=args.output_cap,
        max_output_total=args.max_output_total or None,
        min_free_disk=args.min_free_disk or Reserve(),
        shutdown_grace=args.shutdown_grace,
        transport=TransportConfig(
            handshake_timeout=args.handshake_timeout,
            max_request_size=args.max_request_size,
            max_streams_per_connection=args.max_streams_per_connection,
        ),
        cgroups=None
        if args.no_cgroups
        else CgroupOptions(
            root=args.cgroup_root,
            io_devices=tuple(parse_io_device(device) for device in args.io_device) or None,
            pids_max=(DEFAULT_PIDS_MAX if args.pids_max is None else args.pids_max) or None,
        ),
        max_running_jobs=args.max_running_jobs or None,
        max_running_jobs_per_client=args.max_running_jobs_per_client or None,
        max_log_streams_per_client=args.max_log_streams_per_client or None,
        max_argv_bytes=args.max_argv_bytes or None,
        observe=ObserveConfig(
            metrics_addr=args.metrics_addr,
            metrics_tls=args.metrics_tls,
            metrics_max_job_series=args.metrics_max_job_series,
            audit_log=args.audit_log,
            audit_max_size=args.audit_max_size or None,
            audit_keep=args.audit_keep,
            audit_required=args.audit_required,
        ),
        max_env_bytes=args.max_env_bytes or None,
        requested=requested_options(args),
        isolation=IsolationPolicy(
            namespaces=not args.no_namespaces,
            network=Network(args.network or ("isolated" if args.forbid_host_network else "host")),
            allow_host_network=not args.forbid_host_network,
            rootfs=str(args.rootfs.resolve()) if args.rootfs else None,
            run_as=args.run_as,
            allowed_uids=frozenset(args.allow_uid),
            allowed_gids=frozenset(args.allow_gid),
            hidden=tuple(str(path.absolute()) for path in args.hide),
            default_profile=Profile(args.default_profile),
            host_job_grants=tuple(args.allow_host_jobs),
            # Without namespaces no job is contained and the range is unused.
            id_range=id_range.DEFAULT
            if args.no_namespaces
            else id_range.configured(args.userns_range),
        ),
        admission=AdmissionLimits(
            max_handshakes=args.max_handshakes or None,
            max_handshakes_per_source=args.max_handshakes_per_source or None,
            max_connections_per_client=args.max_connections_per_client or None,
            fd_reserve=args.fd_reserve,
        ),
        listen_sockets=tuple(listen_sockets()),
    )


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    import trio

    from rund_trio.errors import ConfigError
    from rund_trio.server import daemon_log
    from rund_trio.server.admission import fit_fd_reserve, raise_descriptor_limit
    from rund_trio.server.app import check_config, serve
    from rund_trio.server.systemd import Notifier
    from rund_trio.wire.heap import keep_stream_buffers_in_heap

    from_file = apply_config_file(args)
    try:
        config = build_config(args)
        check_config(config)
    except ConfigError as error:
        # A bad value the file set: say where it came from.
        flags = [dest for dest in from_file if f"--{dest.replace('_', '-')}" in str(error)]
        if flags:
            raise ConfigError(f"{error} (set in the config file {args.config})") from None
        raise
    limiter = daemon_log.configure(args.log_level, args.log_format)
    log = logging.getLogger("rund_trio")
    old, new = raise_descriptor_limit()
    if new != old:
        log.debug("raised the descriptor limit from %d to %d", old, new)
    if args.fd_reserve != serve_parser().get_default("fd_reserve"):
        # An explicit reserve the raised limit cannot hold is refused here;
        # a default one is fitted (with a warning) by serve itself.
        fit_fd_reserve(new, config.admission.fd_reserve, explicit=True)
    notifier = Notifier.from_environment()
    if config.listen_sockets and args.addr != serve_parser().get_default("addr"):
        log.warning("serving on the sockets systemd passed (LISTEN_FDS); --addr is not used")

    keep_stream_buffers_in_heap()

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                running = await nursery.start(serve, config)
                nursery.start_soon(daemon_log.flush_every, limiter)
                if notifier is not None:
                    nursery.start_soon(systemd_notifications, notifier, running)
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    break
                if notifier is not None:
                    notifier.stopping()
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


async def systemd_notifications(notifier: Notifier, running: RunningDaemon) -> None:
    """READY=1 now, then STATUS= with the job counts when they change, and
    WATCHDOG=1 at half the watchdog interval if systemd set one. Runs until
    cancelled."""
    import trio

    notifier.ready(daemon_status(running))
    last = ""
    next_ping = trio.current_time()
    while True:
        if notifier.watchdog_interval is not None and trio.current_time() >= next_ping:
            notifier.watchdog()
            next_ping = trio.current_time() + notifier.watchdog_interval
        status = daemon_status(running)
        if status != last:
            notifier.status(status)
            last = status
        interval = notifier.watchdog_interval or STATUS_INTERVAL
        await trio.sleep(min(interval, STATUS_INTERVAL))


STATUS_INTERVAL = 2.0
"""Seconds between looks at the job counts for systemd's STATUS=."""


def daemon_status(running: RunningDaemon) -> str:
    """One line for ``systemctl status``: jobs running and ended, connections."""
    jobs = running.supervisor.jobs.values()
    active = sum(1 for job in jobs if not job.exited.is_set())
    return (
        f"serving: {active} jobs running, {len(jobs) - active} ended, "
        f"{running.server.connections} connections"
    )
