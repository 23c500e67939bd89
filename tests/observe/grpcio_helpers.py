"""grpcio channels to a test daemon (which must use the P-384 PKI: grpcio's
BoringSSL refuses P-521 server keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import trio

from tests.conftest import Daemon

T = TypeVar("T")


@contextmanager
def grpcio_channel(daemon: Daemon, client: str = "alice") -> Iterator[grpc.Channel]:
    tls = daemon.pki.client_tls(client)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{daemon.port}", credentials) as channel:
        yield channel


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """grpcio blocks; the daemon runs in this trio loop, so call it from a thread."""
    return await trio.to_thread.run_sync(lambda: fn(*args))
