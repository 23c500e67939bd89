"""CPU cost of the gRPC layer, measured as CPU time so that a loaded machine
does not change the numbers (wall time would):

* ``log``: CPU seconds per GiB of Log messages (1 MiB framed ``JobLog``
  pieces, as the daemon sends them) from a server core to a client core,
  in one process, without I/O: bytes moved by hand, with and without TLS
  (``ssl.SSLObject`` pairs over memory BIOs). Server and client CPU are
  counted separately (``time.thread_time`` around each side's work).
* ``status``: CPU of a real ``rund-trio serve`` process (from /proc) per
  Status call on a running job, one client connection.

Runs against this checkout's package, or an older one for comparison (from
outside both checkouts, so that ``bench`` and ``rund_trio`` come from the old
one; before the fenced ``rund_trio.rpc`` package, the purerpc-based
``rund_trio.wire.http2`` core is measured instead):

    python -m bench.cpu [--gib 0.5] [--calls 2000] [--skip-status] [--skip-log]
    cd /tmp && PYTHONPATH=/tmp/old /path/to/.venv/bin/python /path/to/bench/cpu.py
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

from rund_trio.wire.job_log import FramedMessage, LogChunk

PIECE = 1024 * 1024
GIB = 1024**3


class _Clock:
    """CPU seconds spent inside ``with`` blocks, per side."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> None:
        self._start = time.thread_time()

    def __exit__(self, *_: object) -> None:
        self.seconds += time.thread_time() - self._start


class _Tls:
    """One direction of TLS over memory: plaintext in, plaintext out."""

    def __init__(self, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        self.client = client_ctx.wrap_bio(self.c_in, self.c_out, server_hostname="localhost")
        for _ in range(10):
            for side in (self.client, self.server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            self.s_in.write(self.c_out.read())
            self.c_in.write(self.s_out.read())

    @staticmethod
    def _through(sender: ssl.SSLObject, out: ssl.MemoryBIO, into: ssl.MemoryBIO, data: Any) -> None:
        sender.write(data)
        into.write(out.read())

    @staticmethod
    def _read(receiver: ssl.SSLObject) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(receiver.read(256 * 1024))
            except ssl.SSLWantReadError:
                return got


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _framed(size: int) -> FramedMessage:
    """A Log message as the daemon frames it: gRPC prefix, JobLog.stdout's tag
    and length, the chunk (built here, so that any version's core can send it)."""
    data = bytes(size - 8)
    length, varint = len(data), bytearray()
    while length > 0x7F:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    body = b"\x0a" + bytes(varint) + data
    return FramedMessage(b"\0" + len(body).to_bytes(4, "big") + body)


# ------------------------------------------------------------ the two cores


class _NewPair:
    """rund_trio.rpc's sans-I/O core, both roles."""

    name = "rund_trio.rpc"

    def __init__(self) -> None:
        from rund_trio import rpc

        self.rpc = rpc
        self.server = rpc.GrpcConnection(rpc.Role.SERVER)
        self.client = rpc.GrpcConnection(rpc.Role.CLIENT, max_receive_message=8 * PIECE)

    def server_out(self) -> list[Any]:
        buffers = getattr(self.server, "buffers_to_send", None)
        if buffers is not None:
            return list(buffers())
        out = []
        while data := self.server.data_to_send():
            out.append(data)
        return out

    def client_out(self) -> list[Any]:
        out = []
        while data := self.client.data_to_send():
            out.append(data)
        return out

    def open(self) -> None:
        self.stream_id = self.client.start_request("rund.Rund", "Log")
        self.client.send_message(self.stream_id, b"\x0a\x01x")
        self.client.end_request(self.stream_id)

    def server_receive(self, data: bytes) -> None:
        self.server.receive_data(data)
        while self.server.next_event() is not self.rpc.NEED_DATA:
            pass

    def send(self, message: FramedMessage) -> None:
        self.server.send_message(self.stream_id, message, framed=True)

    def client_receive(self, data: bytes, on_message: Callable[[bytes], None]) -> None:
        self.client.receive_data(data)
        while (event := self.client.next_event()) is not self.rpc.NEED_DATA:
            if isinstance(event, self.rpc.MessageReceived):
                on_message(event.data)
                self.client.acknowledge(event.stream_id, event.flow_controlled_length)


class _OldPair:
    """The purerpc-based core of commit 04abeb9 (rund_trio.wire.http2)."""

    name = "rund_trio.wire.http2 (purerpc)"

    def __init__(self) -> None:
        # Only on a commit from before the fence, which had no rund_trio.rpc:
        # purerpc is the old core's own configuration and events.
        config = importlib.import_module("purerpc.grpclib.config")
        events = importlib.import_module("purerpc.grpclib.events")
        GRPCConfiguration = config.GRPCConfiguration
        GrpcConnection = importlib.import_module("rund_trio.wire.http2").GrpcConnection

        self.MessageReceived = events.MessageReceived
        self.RequestReceived = events.RequestReceived
        self.server = GrpcConnection(GRPCConfiguration(client_side=False))
        self.client = GrpcConnection(
            GRPCConfiguration(client_side=True, max_message_length=8 * PIECE)
        )
        self.server.initiate_connection()
        self.client.initiate_connection()

    def _out(self, connection: Any) -> list[Any]:
        out = []
        while data := connection.data_to_send():
            out.append(data)
        return out

    def server_out(self) -> list[Any]:
        return self._out(self.server)

    def client_out(self) -> list[Any]:
        return self._out(self.client)

    def open(self) -> None:
        self.stream_id = self.client.get_next_available_stream_id()
        self.client.start_request(
            self.stream_id,
            "https",
            "rund.Rund",
            "Log",
            authority="localhost",
            content_type_suffix="+proto",
        )
        self.client.send_data(self.stream_id, b"\0\0\0\0\x03\x0a\x01x")
        self.client.end_request(self.stream_id)
        self.started = False

    def server_receive(self, data: bytes) -> None:
        for event in self.server.receive_data(bytes(data)):
            if isinstance(event, self.RequestReceived):
                self.server.start_response(event.stream_id, "+proto")

    def send(self, message: FramedMessage) -> None:
        # As the old transport's _send_framed: views, as the window allows.
        view = memoryview(message)
        while view:
            window = self.server.flow_control_window(self.stream_id)
            if window <= 0:
                raise RuntimeError("the old core ran out of window in the bench")
            self.server.send_data(self.stream_id, view[:window])
            view = view[window:]

    def client_receive(self, data: bytes, on_message: Callable[[bytes], None]) -> None:
        for event in self.client.receive_data(bytes(data)):
            if isinstance(event, self.MessageReceived):
                on_message(event.data)
                self.client.acknowledge_received_data(event.stream_id, event.flow_controlled_length)


def _pair() -> Any:
    try:
        import rund_trio.rpc  # noqa: F401
    except ImportError:
        return _OldPair()
    return _NewPair()


def bench_log(total: int, tls: _Tls | None) -> dict[str, float]:
    """CPU seconds per GiB on each side for ``total`` bytes of Log messages."""
    pair = _pair()
    server_cpu, client_cpu = _Clock(), _Clock()
    received = 0

    def on_message(data: bytes) -> None:
        nonlocal received
        chunk = LogChunk()
        chunk.ParseFromString(data)
        received += len(chunk.stdout)

    def to_client(buffers: list[Any]) -> None:
        if tls is None:
            with client_cpu:
                for data in buffers:
                    pair.client_receive(data, on_message)
            return
        with server_cpu:
            for data in buffers:
                tls._through(tls.server, tls.s_out, tls.c_in, data)
        with client_cpu:
            for data in tls._read(tls.client):
                pair.client_receive(data, on_message)

    def to_server() -> None:
        with client_cpu:
            buffers = pair.client_out()
            if tls is not None:
                for data in buffers:
                    tls._through(tls.client, tls.c_out, tls.s_in, data)
        with server_cpu:
            if tls is not None:
                buffers = tls._read(tls.server)
            for data in buffers:
                pair.server_receive(data)

    pair.open()
    for _ in range(3):
        to_server()
        with server_cpu:
            out = pair.server_out()
        to_client(out)
    message = _framed(PIECE)
    payload = PIECE - 8
    pieces = total // payload
    server_cpu.seconds = client_cpu.seconds = 0.0
    received = 0
    for _ in range(pieces):
        with server_cpu:
            pair.send(message)
            out = pair.server_out()
        to_client(out)
        to_server()
    assert received == pieces * payload, (received, pieces * payload)
    gib = received / GIB
    return {"server": server_cpu.seconds / gib, "client": client_cpu.seconds / gib}


# ------------------------------------------------------------------ Status


def bench_status(calls: int) -> float:
    """Daemon CPU seconds per Status call (one client, a running job)."""
    import trio

    from bench import rund_load
    from bench.daemon import Pki, spawn_daemon

    with tempfile.TemporaryDirectory(prefix="rund-bench-cpu-") as tmp:
        work = Path(tmp)
        pki = Pki.create(work / "pki")
        daemon = spawn_daemon("cpu", pki, work)
        try:
            ctx = pki.client_context()
            job = trio.run(
                lambda: rund_load.start_jobs(
                    daemon.addr,
                    ctx,
                    ("sleep", "600"),
                    clients=1,
                    count=0,
                    max_seconds=30,
                    warmup=1,
                )
            )
            trio.run(
                lambda: rund_load.statuses(
                    daemon.addr, ctx, job.job_ids, clients=1, count=100, max_seconds=60
                )
            )
            before = daemon.cpu_seconds()
            done = trio.run(
                lambda: rund_load.statuses(
                    daemon.addr, ctx, job.job_ids, clients=1, count=calls, max_seconds=600
                )
            )
            spent = daemon.cpu_seconds() - before
            trio.run(lambda: rund_load.stop_all(daemon.addr, ctx, job.job_ids))
        finally:
            daemon.stop()
    # the warm-up calls of the timed run are counted too
    return spent / (len(done.samples_ms) + 10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=0.5, help="GiB of Log per measurement")
    parser.add_argument("--calls", type=int, default=2000, help="Status calls")
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--skip-log", action="store_true")
    args = parser.parse_args(argv)
    print(f"core: {_pair().name}  (python {sys.version.split()[0]})")
    if not args.skip_log:
        total = int(args.gib * GIB)
        plain = bench_log(total, None)
        print(
            f"Log, no TLS: server {plain['server']:.3f} s/GiB, client {plain['client']:.3f} "
            f"s/GiB, total {plain['server'] + plain['client']:.3f} CPU s/GiB"
        )
        server_ctx, client_ctx = _contexts()
        tls = bench_log(total, _Tls(server_ctx, client_ctx))
        print(
            f"Log, TLS:    server {tls['server']:.3f} s/GiB, client {tls['client']:.3f} "
            f"s/GiB, total {tls['server'] + tls['client']:.3f} CPU s/GiB (TLS included)"
        )
    if not args.skip_status:
        per_call = bench_status(args.calls)
        print(f"Status: daemon {per_call * 1e3:.3f} ms CPU per call (one client)")


if __name__ == "__main__":
    main()
