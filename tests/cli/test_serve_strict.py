"""``serve`` refuses an explicit option the host cannot honour; ``--version``."""

from __future__ import annotations

import re
import resource
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.cli.conftest import RUND, Pki, clean_env, rund
from tests.cli.test_errors import assert_one_line_error


def test_an_explicit_pids_max_without_cgroups_stops_start_up(pki: Pki, tmp_path: Path) -> None:
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--no-cgroups",
        "--pids-max", "100", cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(
        result, "--pids-max 100 cannot be enforced on this host: cgroups are off (--no-cgroups)"
    )


def test_an_explicit_rootfs_that_does_not_exist_stops_start_up(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "no-root"
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--no-cgroups",
        "--rootfs", missing, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, f"--rootfs {missing} is not a directory")


def _serve_with_descriptor_limit(limit: int, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    def lower_the_limit() -> None:  # in the child only, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    assert RUND is not None
    return subprocess.Popen(
        [RUND, "serve", "--addr", "127.0.0.1:0", "--no-cgroups", "--temp-state-dir", *args],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lower_the_limit,
    )


def test_an_explicit_fd_reserve_the_descriptor_limit_cannot_hold_stops_start_up(
    pki: Pki, tmp_path: Path
) -> None:
    process = _serve_with_descriptor_limit(
        1024, [*pki.server_args(), "--fd-reserve", "1000"], tmp_path
    )
    _, stderr = process.communicate(timeout=20)
    result = subprocess.CompletedProcess(process.args, process.returncode, b"", stderr)
    assert_one_line_error(result, "--fd-reserve 1000 leaves fewer than 256")


def test_the_default_fd_reserve_under_a_low_descriptor_limit_is_fitted_with_one_warning(
    pki: Pki, tmp_path: Path
) -> None:
    process = _serve_with_descriptor_limit(1024, pki.server_args(), tmp_path)
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for raw in process.stderr:  # until it serves, or exits
            lines.append(raw.decode(errors="replace"))
            if "listening on" in lines[-1]:
                break
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "listening on" in lines[-1], "".join(lines)
    warnings = [line for line in lines if "the file descriptor limit is only 1024" in line]
    assert len(warnings) == 1, "".join(lines)
    assert "keeping 256 in reserve" in warnings[0]


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    result = rund("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.decode() == f"rund-trio {version('rund-trio')}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version("rund-trio"))
