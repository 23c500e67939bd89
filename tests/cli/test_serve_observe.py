"""``rund-trio serve``'s metrics and audit flags: start-up errors are one line."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cli.conftest import Pki, rund
from tests.cli.test_errors import assert_one_line_error


def test_metrics_tls_without_an_address_is_one_line(pki: Pki, tmp_path: Path) -> None:
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--metrics-tls", cwd=tmp_path
    )
    assert_one_line_error(result, "--metrics-tls needs --metrics-addr")


def test_audit_required_without_an_audit_log_is_one_line(pki: Pki, tmp_path: Path) -> None:
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--audit-required", cwd=tmp_path
    )
    assert_one_line_error(result, "--audit-required needs --audit-log")


def test_a_metrics_port_in_use_is_one_line(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = rund(
            "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--metrics-addr", addr,
            cwd=tmp_path,
        )  # fmt: skip
    assert_one_line_error(result, f"cannot listen for metrics on {addr}", "Address already in use")


def test_an_audit_log_in_a_missing_directory_is_one_line(pki: Pki, tmp_path: Path) -> None:
    audit = tmp_path / "nowhere" / "audit.log"
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--audit-log", audit, cwd=tmp_path
    )
    assert_one_line_error(result, f"cannot open the audit log {audit}", "No such file")
