"""The flood of ``just load --flood``: silent connections held up to a bound
for a bounded time, those the server closes replaced, from the addresses asked."""

from __future__ import annotations

import multiprocessing
import socket
import threading

from loadtest.flood import flood


def test_the_flood_holds_its_connections_and_replaces_closed_ones() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1024)
        sources: list[str] = []

        def accept() -> None:
            # close the first 50 at once, as a daemon shedding them would; keep the rest
            kept = []
            for n in range(350):
                conn, (host, _) = server.accept()
                sources.append(host)
                if n < 50:
                    conn.close()
                else:
                    kept.append(conn)
            for conn in kept:
                conn.close()

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        ready = multiprocessing.Event()
        stats: multiprocessing.Queue[tuple[int, int, int, int]] = multiprocessing.Queue()
        port = server.getsockname()[1]
        flood(port, 300, 1.0, ["127.0.1.1", "127.0.1.2"], ready, stats)
        opened, closed, peak, failed = stats.get(timeout=10)
    assert ready.is_set()
    assert failed == 0
    assert opened >= 300 + 50 - 1, "closed connections are replaced"
    assert closed >= 50
    assert peak <= 300
    assert set(sources) == {"127.0.1.1", "127.0.1.2"}
