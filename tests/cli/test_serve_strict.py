"""``serve`` refuses an explicit option the host cannot honour; ``--version``."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tests.cli.conftest import Pki, rund
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


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    result = rund("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.decode() == f"rund-trio {version('rund-trio')}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version("rund-trio"))
