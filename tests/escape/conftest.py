"""The escape suite: a contained job, root in its namespaces, started by a
client over mTLS, tries to get out; every attempt must fail, and each test
names the layer that stops it.

The daemon here keeps its state directory and its TLS files where a job could
otherwise see them (under /var/tmp, not the host's /tmp, which a contained
job does not see at all), and its private key is world-readable: only the
covers stand between a job and the key, so the tests prove the covers, not
file modes. Another client's job has already written ``SECRET`` to its output
in the state directory before each attempt.

Layers, as the tests name them:

* ``mount lock``: the covers and the read-only host tree were mounted in a
  mount namespace owned by the host's user namespace; the job's is owned by
  its own, so the kernel locks them (no umount, no remount, no bind without
  them);
* ``user namespace``: the job's root is an unprivileged host uid owning
  nothing of the host; PID, network, UTS and cgroup namespaces are owned by
  the host's user namespace, so it has no capability over them;
* ``pid namespace``, ``cgroup namespace``: what the job can name;
* ``read-only``, ``nodev``, ``nosuid``: mount flags of the host's tree, and of
  /proc/sys, /sys, /dev;
* ``minimal /dev``: no disk node is there.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.jobs.isolation_policy import IsolationPolicy
from rund_trio.tls.context import TlsFiles
from tests.conftest import Daemon, Pki, start_daemon

HERE = Path(__file__).parent
JOB_UID = 1000
"""A non-root uid jobs may ask for (inside the user namespace)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without root there is no daemon that can contain jobs: skip."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="a containing daemon needs root")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(skip)


@dataclass
class Target:
    """A daemon with secrets to steal, and what they are."""

    daemon: Daemon
    state_dir: Path
    key: Path
    secret: str
    """In another client's job output, in the state directory."""
    key_text: str

    def leaked(self, text: str) -> bool:
        """Whether a job's output holds either secret."""
        return self.secret in text or "PRIVATE KEY" in text or self.key_text[40:80] in text


@dataclass
class Attempt:
    exit_code: int | None
    stdout: str
    stderr: str


async def run_job(daemon: Daemon, script: str, client: str = "alice", **fields: object) -> Attempt:
    """``sh -c script`` as a job of ``client``, to its end."""
    request = pb.JobStartRequest(name="sh", args=["-c", script])
    for name, value in fields.items():
        getattr(request, name).value = value
    with trio.fail_after(30):
        async with daemon.client(client) as rund:
            job_id = await rund.start(request)
            out, err = bytearray(), bytearray()
            async for chunk in rund.log(job_id):
                out += chunk.stdout
                err += chunk.stderr
            status = await rund.status(job_id)
    code = status.exit_code.value if status.HasField("exit_code") else None
    return Attempt(code, out.decode(errors="replace"), err.decode(errors="replace"))


async def make_target(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, home: Path, isolation: IsolationPolicy
) -> Target:
    tls_dir = home / "tls"
    tls_dir.mkdir()
    server = pki.server_tls()
    files = {}
    for name, path in (("ca", server.ca), ("cert", server.cert), ("key", server.key)):
        files[name] = tls_dir / path.name
        shutil.copy(path, files[name])
        files[name].chmod(0o644)  # only the cover protects the key
    state_dir = home / "state"
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        tls=TlsFiles(ca=files["ca"], cert=files["cert"], key=files["key"]),
        state_dir=state_dir,
        isolation=isolation,
    )
    secret = f"SECRET-{secrets.token_hex(8)}"
    done = await run_job(daemon, f"echo {secret}", client="bob")
    assert done.stdout.strip() == secret
    return Target(daemon, state_dir, files["key"], secret, files["key"].read_text())


@pytest.fixture
async def target(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, job_visible_dir: Path
) -> AsyncIterator[Target]:
    """A daemon with default (contained) jobs that may run as ``JOB_UID``."""
    isolation = IsolationPolicy(
        allowed_uids=frozenset({JOB_UID}), allowed_gids=frozenset({JOB_UID})
    )
    yield await make_target(nursery, pki, tmp_path, job_visible_dir, isolation)
