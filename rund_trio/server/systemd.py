"""systemd integration: sd_notify(3) and socket activation (sd_listen_fds(3)).

Both read what systemd puts in the environment and remove it, so that jobs
never inherit it (a job writing READY=1 or taking the listening socket would
confuse systemd or the daemon). The protocols are small enough that a
dependency would only wrap the same dozen lines: a notification is one
datagram of ``KEY=VALUE`` lines to the unix socket named by ``NOTIFY_SOCKET``
(``@name`` is the abstract namespace); passed sockets are descriptors 3, 4,
... when ``LISTEN_PID`` is this process.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from rund_trio.errors import ConfigError

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages. Never raises and never blocks: a socket that
    cannot be reached is one warning, after which nothing more is sent (the
    daemon keeps serving without telling systemd)."""

    def __init__(self, address: str, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
        self._socket: socket.socket | None = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for (``NOTIFY_SOCKET``), or None when
        the daemon does not run under a ``Type=notify`` unit. Removes
        ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``environ``
        (default: this process's environment)."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec_text = env.pop("WATCHDOG_USEC", "")
        pid_text = env.pop("WATCHDOG_PID", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            log.warning(
                "NOTIFY_SOCKET=%s is neither a path nor @abstract: not notifying systemd", address
            )
            return None
        watchdog_usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        if pid_text and pid_text != str(os.getpid()):
            watchdog_usec = None  # the watchdog is meant for another process
        return cls(address, watchdog_usec=watchdog_usec)

    def send(self, *lines: str) -> bool:
        """Send one notification of ``lines`` (``KEY=VALUE``); False if it could not be."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode(), self._target)
        except BlockingIOError:
            return False  # systemd is behind; the next message says the same
        except OSError as error:
            log.warning(
                "cannot notify systemd through NOTIFY_SOCKET=%s: %s; the daemon keeps serving "
                "without notifying it",
                self.address,
                error.strerror or error,
            )
            self.close()
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "shutting down") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed (socket activation), or [] when it
    passed none to this process. Removes ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` from ``environ``. Each must be a listening TCP socket:
    anything else is a ``ConfigError`` naming the descriptor. The sockets are
    made close-on-exec, so jobs do not inherit them."""
    env = os.environ if environ is None else environ
    pid_text = env.pop("LISTEN_PID", "")
    count_text = env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if not count_text or pid_text != str(os.getpid()):
        return []
    if not count_text.isdigit():
        raise ConfigError(f"LISTEN_FDS={count_text!r} from systemd is not a number")
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count_text)):
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as error:
            raise ConfigError(
                f"descriptor {fd} passed by systemd (LISTEN_FDS) is not a socket: "
                f"{error.strerror or error}"
            ) from None
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise ConfigError(
                f"descriptor {fd} passed by systemd (LISTEN_FDS) is not a TCP socket: "
                "use ListenStream=PORT or ADDRESS:PORT in the .socket unit"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ConfigError(f"descriptor {fd} passed by systemd (LISTEN_FDS) is not listening")
        sockets.append(sock)
    return sockets
