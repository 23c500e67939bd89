"""A real Prometheus (Debian's ``prometheus`` package, installed by ``just
setup``) scrapes a daemon, plain and over mutual TLS, with the example
configuration shipped in contrib/, and its query API returns the daemon's
metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.observe.config import ObserveConfig
from tests.conftest import Pki, start_daemon

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as answer:
        return json.load(answer)["data"]


def query(port: int, expression: str) -> list[dict[str, Any]]:
    try:
        result: list[dict[str, Any]] = api(
            port, "query?" + urllib.parse.urlencode({"query": expression})
        )["result"]
    except OSError:
        return []  # not up yet
    return result


async def test_prometheus_scrapes_a_daemon_plain_and_over_mutual_tls(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.fail("Prometheus is not installed: run `just setup` (apt-get install prometheus)")
    plain = await start_daemon(
        nursery, pki, tmp_path / "plain", observe=ObserveConfig(metrics_addr="127.0.0.1:0")
    )
    tls = await start_daemon(
        nursery,
        pki,
        tmp_path / "tls",
        observe=ObserveConfig(metrics_addr="127.0.0.1:0", metrics_tls=True),
    )
    async with plain.client() as rund:
        await rund.start(pb.JobStartRequest(name="true"))
    client = pki.client_tls("bob")
    config = (ROOT / "contrib" / "prometheus.yml").read_text()
    for old, new in {
        "scrape_interval: 15s": "scrape_interval: 200ms\n  scrape_timeout: 200ms",
        "localhost:9464": f"127.0.0.1:{plain.running.observability.metrics_addresses[0][1]}",
        "localhost:9465": f"127.0.0.1:{tls.running.observability.metrics_addresses[0][1]}",
        "/etc/rund-trio/ca.pem": str(client.ca),
        "/etc/rund-trio/prometheus.pem": str(client.cert),
        "/etc/rund-trio/prometheus-key.pem": str(client.key),
    }.items():
        assert old in config
        config = config.replace(old, new)
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    with subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),
    ) as prometheus:
        try:
            with trio.fail_after(60):
                while True:
                    started = await trio.to_thread.run_sync(query, port, "rund_jobs_started_total")
                    up = await trio.to_thread.run_sync(query, port, "up == 1")
                    if started and len(up) == 2:
                        break
                    await trio.sleep(0.2)  # Prometheus scrapes on its own clock
        except trio.TooSlowError:
            targets = await trio.to_thread.run_sync(api, port, "targets")
            pytest.fail(f"Prometheus did not scrape both daemons: {targets}")
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
    by_job = {sample["metric"]["job"]: float(sample["value"][1]) for sample in started}
    assert by_job == {"rund-trio": 1.0, "rund-trio-tls": 0.0}
