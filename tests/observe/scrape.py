"""Reading a test daemon's metrics endpoint as a scraper would, or as no
scraper should."""

from __future__ import annotations

import ssl

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon


def metrics_port(daemon: Daemon) -> int:
    return daemon.running.observability.metrics_addresses[0][1]


async def raw_http(
    port: int, request: bytes, *, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """Send ``request`` bytes and return everything the server answers until it closes."""
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if ssl_context is not None:
        stream = trio.SSLStream(stream, ssl_context, server_hostname="localhost")
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
        return answer


async def scrape(daemon: Daemon, *, ssl_context: ssl.SSLContext | None = None) -> dict[str, float]:
    """Every sample of the metrics endpoint, keyed ``name{label="value",...}``
    (labels sorted), as Prometheus would store them."""
    answer = await raw_http(
        metrics_port(daemon),
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ssl_context=ssl_context,
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
