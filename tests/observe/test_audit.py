"""The audit trail of a real daemon: one JSON line per call, allowed or
refused, and one per ended job with the SHA-256 of its journal."""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.logs.state_dir import journal_path
from rund_trio.observe.config import ObserveConfig
from tests.conftest import Daemon, Pki, start_daemon

START = "/rund.JobController/Start"


async def audited_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, audit: Path, **observe: object
) -> Daemon:
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        observe=ObserveConfig(audit_log=str(audit), **observe),  # type: ignore[arg-type]
    )


def lines(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def certificate_sha256(path: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


async def ended(daemon: Daemon, rund: RundClient, job_id: str) -> None:
    """Return once the job's end is in the audit log."""
    await rund.wait(job_id)
    audit = daemon.running.observability.audit
    assert audit is not None
    await audit.flushed()


async def test_a_start_is_one_line_saying_who_started_what(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    request = pb.JobStartRequest(name="sh", args=["-c", "exit 3"], network=pb.JOB_NETWORK_HOST)
    async with daemon.client("alice") as rund:
        job_id = await rund.start(request)
        (line,) = [line for line in lines(audit) if line["event"] == "rpc"]
        profile = (await rund.status(job_id)).profile
    assert line["method"] == START
    assert line["job_id"] == job_id
    assert line["code"] == "OK"
    assert line["sans"] == ["DNS:alice", "email:alice@example.com"]
    assert line["certificate_sha256"] == certificate_sha256(pki.client_tls("alice").cert)
    assert line["peer"].startswith("127.0.0.1:")
    assert line["profile"] == pb.JobProfile.Name(profile).removeprefix("JOB_PROFILE_").lower()
    assert line["start"] == {
        "argv": ["sh", "-c", "exit 3"],
        "limits": {},
        "uid": None,
        "gid": None,
        "network": "JOB_NETWORK_HOST",
        "env_names": [],
    }
    assert line["time"].endswith("Z") and 0 <= line["duration_seconds"] < 60


async def test_a_refused_start_still_says_what_was_asked(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    request = pb.JobStartRequest(name="id")
    request.max_memory_usage.value = 64 * 1024**2
    request.uid.value = 4242  # no --allow-uid: refused
    async with daemon.client("alice") as rund:
        with pytest.raises(RpcError) as refused:
            await rund.start(request)
    (line,) = lines(audit)
    assert line["code"] == refused.value.code != "OK"
    assert line["job_id"] is None and line["profile"] is None
    assert line["start"]["limits"] == {"max_memory_usage": 64 * 1024**2}
    assert line["start"]["uid"] == 4242


async def test_a_refused_call_is_audited_with_its_code_and_reason(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    async with daemon.client("bob") as rund:
        with pytest.raises(RpcError):
            await rund.status("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    (line,) = lines(audit)
    assert line["method"] == "/rund.JobController/Status"
    assert line["job_id"] == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert line["code"] == "NOT_FOUND"
    assert "not found" in line["message"]
    assert line["sans"] == ["DNS:bob"]


async def test_a_job_end_is_one_line_with_its_ending_and_its_journals_hash(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    async with daemon.client() as rund:
        job_id = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", "echo out; echo error >&2; exit 3"])
        )
        await ended(daemon, rund, job_id)
        journal = journal_path(daemon.running.state_dir, job_id).read_bytes()
        profile = (await rund.status(job_id)).profile
    (line,) = [line for line in lines(audit) if line["event"] == "job_ended"]
    assert line["job_id"] == job_id
    assert line["owner_sans"] == ["DNS:alice", "email:alice@example.com"]
    assert (line["state"], line["exit_code"], line["signal"]) == ("exited", 3, None)
    assert line["profile"] == pb.JobProfile.Name(profile).removeprefix("JOB_PROFILE_").lower()
    assert line["oom_killed"] is False
    assert line["cpu_seconds"] >= 0 and line["memory_peak_bytes"] >= 0
    output = line["output"]
    assert (output["stdout_bytes"], output["stderr_bytes"], output["dropped_bytes"]) == (4, 6, 0)
    assert output["journal_bytes"] == len(journal)
    assert output["journal_sha256"] == hashlib.sha256(journal).hexdigest()


async def test_a_stopped_job_ends_with_its_signal(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["300"]))
        await rund.stop(job_id)
        await ended(daemon, rund, job_id)
    (line,) = [line for line in lines(audit) if line["event"] == "job_ended"]
    assert (line["state"], line["exit_code"], line["signal"]) == ("stopped", None, "SIGKILL")


async def test_the_audit_file_is_private_and_appended_to(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    audit.write_text('{"earlier":"record"}\n')
    audit.chmod(0o644)
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    async with daemon.client() as rund:
        with pytest.raises(RpcError):
            await rund.status("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    assert [line.get("earlier") for line in lines(audit)] == ["record", None]


async def test_an_audit_file_removed_behind_the_daemons_back_is_created_again(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    daemon = await audited_daemon(nursery, pki, tmp_path, audit)
    async with daemon.client() as rund:
        with pytest.raises(RpcError):
            await rund.status("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        audit.unlink()
        with pytest.raises(RpcError):
            await rund.status("01BX5ZZKBKACTAV9WEVGEMMVRY")
    assert [line["job_id"] for line in lines(audit)] == ["01BX5ZZKBKACTAV9WEVGEMMVRY"]
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


async def test_an_audit_log_that_cannot_be_opened_is_a_start_up_error(
    pki: Pki, tmp_path: Path
) -> None:
    from rund_trio.errors import ConfigError, sole_exception

    with pytest.raises(BaseException) as raised:
        async with trio.open_nursery() as nursery:
            await audited_daemon(nursery, pki, tmp_path, tmp_path / "missing" / "audit.log")
    error = sole_exception(raised.value)
    assert isinstance(error, ConfigError)
    assert "cannot open the audit log" in str(error) and "No such file" in str(error)


async def test_audit_to_standard_output(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, observe=ObserveConfig(audit_log="-"))
    async with daemon.client() as rund:
        with pytest.raises(RpcError):
            await rund.status("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines()]
    assert line["code"] == "NOT_FOUND"


def test_required_audit_needs_an_audit_log() -> None:
    from rund_trio.errors import ConfigError

    with pytest.raises(ConfigError, match="--audit-required needs --audit-log"):
        ObserveConfig(audit_required=True)


def test_the_example_line_of_the_readme_is_a_real_line() -> None:
    """Kept honest: the README's example has exactly the fields a Start line has."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("### Audit trail")
    example = next(line for line in readme[start:].splitlines() if line.startswith('{"time"'))
    assert set(json.loads(example)) == {
        "time", "event", "peer", "sans", "certificate_sha256", "method", "job_id", "profile",
        "start", "code", "duration_seconds",
    }  # fmt: skip


async def test_jobs_killed_at_shutdown_have_their_end_lines_too(pki: Pki, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    with trio.CancelScope() as daemon_scope:
        async with trio.open_nursery() as nursery:
            daemon = await audited_daemon(nursery, pki, tmp_path, audit)
            async with daemon.client() as rund:
                job_id = await rund.start(
                    pb.JobStartRequest(name="sh", args=["-c", "echo x; sleep 300"])
                )
                async for _chunk in rund.log(job_id):
                    break
            daemon_scope.cancel()
    (line,) = [line for line in lines(audit) if line["event"] == "job_ended"]
    assert (line["job_id"], line["state"], line["signal"]) == (job_id, "killed", "SIGKILL")
    assert line["output"]["stdout_bytes"] == 2
    assert line["output"]["journal_sha256"] is not None
