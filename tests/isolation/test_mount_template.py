"""The fork server's template mount namespaces (``mount_template``): a job
built from one sees what a job whose tree is built at its start would."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rund_trio.isolation import execute, linux
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.mount_template import Templates
from rund_trio.isolation.spec import Isolation
from rund_trio.process.forkserver import ForkServerSpawner
from tests.isolation.conftest import Finished, run_job

IDS = IdRange(2147418112, 2147418112, 65536)


@pytest.fixture
async def spawner() -> AsyncIterator[ForkServerSpawner]:
    fork_server = ForkServerSpawner()
    try:
        yield fork_server
    finally:
        await fork_server.aclose()


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory of the host a contained job sees (not under /tmp)."""
    path = Path("/var/tmp") / f"rund-template-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


async def contained(spawner: ForkServerSpawner, script: str, *hidden: str) -> Finished:
    return await run_job(
        "sh",
        "-c",
        script,
        isolation=Isolation(id_range=IDS, hidden=hidden),
        spawner=spawner,  # type: ignore[arg-type]
    )


async def test_a_mount_the_host_makes_after_a_job_started_is_seen_by_the_next_job(
    spawner: ForkServerSpawner, host_dir: Path
) -> None:
    assert (await contained(spawner, "true")).status.exit_code == 0
    linux.mount("tmpfs", str(host_dir), "tmpfs", 0, "size=16k")
    try:
        (host_dir / "marker").write_text("mounted\n")
        done = await contained(spawner, f"cat {host_dir}/marker")
    finally:
        linux.umount2(str(host_dir))
    assert done.stdout == "mounted\n", done.stderr


async def test_a_hidden_path_created_after_a_job_started_is_hidden_from_the_next_job(
    spawner: ForkServerSpawner, host_dir: Path
) -> None:
    secret = host_dir / "secret"
    assert (await contained(spawner, "true", str(secret))).status.exit_code == 0
    secret.write_text("SECRET\n")
    done = await contained(spawner, f"cat {secret} 2>&1; true", str(secret))
    assert "SECRET" not in done.stdout


async def test_a_hidden_file_replaced_by_a_rename_stays_hidden_from_the_next_job(
    spawner: ForkServerSpawner, host_dir: Path
) -> None:
    secret = host_dir / "secret"
    secret.write_text("old\n")
    first = await contained(spawner, f"cat {secret}", str(secret))
    assert first.stdout == ""
    (host_dir / "new").write_text("SECRET\n")
    os.rename(host_dir / "new", secret)
    done = await contained(spawner, f"cat {secret} 2>&1; true", str(secret))
    assert "SECRET" not in done.stdout


def test_a_template_is_built_after_the_request_and_reused_until_the_host_changes(
    host_dir: Path, request: pytest.FixtureRequest
) -> None:
    templates = Templates(execute._hide)
    request.addfinalizer(templates.close)
    hidden = (str(host_dir / "covered"),)
    assert templates.get(hidden) is None  # never built while a request waits
    templates.start_builds()
    templates.settle()
    first = templates.get(hidden)
    assert first is not None
    assert templates.get(hidden) is first
    linux.mount("tmpfs", str(host_dir), "tmpfs", 0, "size=16k")
    linux.umount2(str(host_dir))
    assert templates.get(hidden) is None
    templates.start_builds()
    templates.settle()
    second = templates.get(hidden)
    assert second is not None and second is not first


def test_a_template_goes_when_a_hidden_path_appears(
    host_dir: Path, request: pytest.FixtureRequest
) -> None:
    templates = Templates(execute._hide)
    request.addfinalizer(templates.close)
    hidden = (str(host_dir / "secret"),)
    templates.get(hidden)
    templates.start_builds()
    templates.settle()
    assert templates.get(hidden) is not None
    (host_dir / "secret").write_text("SECRET\n")
    assert templates.get(hidden) is None


def test_a_template_goes_when_a_hidden_file_is_renamed_over(
    host_dir: Path, request: pytest.FixtureRequest
) -> None:
    templates = Templates(execute._hide)
    request.addfinalizer(templates.close)
    (host_dir / "secret").write_text("old\n")
    hidden = (str(host_dir / "secret"),)
    templates.get(hidden)
    templates.start_builds()
    templates.settle()
    assert templates.get(hidden) is not None
    (host_dir / "new").write_text("SECRET\n")
    os.rename(host_dir / "new", host_dir / "secret")
    assert templates.get(hidden) is None


async def test_a_job_built_from_a_template_can_use_its_devices(spawner: ForkServerSpawner) -> None:
    """The template's tree is nodev: the job's /dev binds the host's nodes
    from the template's stage, which is not."""
    assert (await contained(spawner, "true")).status.exit_code == 0  # the template exists
    script = (
        "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 3 /dev/urandom | wc -c "
        "&& ! echo x > /dev/full 2>/dev/null && echo ok"
    )
    done = await contained(spawner, script)
    assert done.stdout.split() == ["3", "3", "ok"], done.stderr
