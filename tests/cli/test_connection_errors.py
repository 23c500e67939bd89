"""What the client says when it cannot talk to a daemon, against real servers:
one line, naming which side is wrong and what to do."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.cli.conftest import RUND, Pki, clean_env, rund, spawn_daemon
from tests.cli.test_client import process, read_until
from tests.cli.test_errors import UNKNOWN_ULID, assert_one_line_error


@pytest.fixture
def no_config(tmp_path: Path) -> dict[str, str]:
    """An environment whose $XDG_CONFIG_HOME holds no certificates."""
    return clean_env(XDG_CONFIG_HOME=str(tmp_path / "config"))


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """An HTTP server without TLS on a loopback port; its host:port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def https_server(other_pki: Pki) -> Iterator[str]:
    """An HTTPS server (HTTP/1.1, no client certificates) with a certificate
    from another CA; its host:port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(other_pki.cert("server"), other_pki.key("server"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def status(addr: str, pki: Pki, cwd: Path, **overrides: Path) -> subprocess.CompletedProcess[bytes]:
    files = {"ca": pki.ca, "cert": pki.cert("alice"), "key": pki.key("alice"), **overrides}
    flags = [arg for name, path in files.items() for arg in (f"--{name}", path)]
    return rund("client", "status", "--addr", addr, *flags, UNKNOWN_ULID, cwd=cwd, timeout=15)


def test_a_plain_http_server_is_not_a_rund_trio_daemon(
    plain_http_server: str, pki: Pki, workdir: Path
) -> None:
    assert_one_line_error(
        status(plain_http_server, pki, workdir),
        f"{plain_http_server} does not speak TLS",
        "it is not a rund-trio daemon; check the host and port of --addr",
    )


def test_a_tls_server_with_another_ca_is_named_as_such(
    https_server: str, pki: Pki, workdir: Path
) -> None:
    assert_one_line_error(
        status(https_server, pki, workdir),
        f"the server at {https_server} has a certificate that --ca does not vouch for",
        "check that --addr is the rund-trio daemon",
        f"(--ca {pki.ca})",
    )


def test_a_tls_server_that_does_not_speak_grpc_is_not_a_rund_trio_daemon(
    https_server: str, pki: Pki, other_pki: Pki, workdir: Path
) -> None:
    """Its certificate is trusted (--ca is its CA), but it offers no HTTP/2."""
    assert_one_line_error(
        status(https_server, pki, workdir, ca=other_pki.ca),
        f"{https_server} speaks TLS but not gRPC",
        "it is not a rund-trio daemon",
    )


def test_an_unknown_host_is_named_not_an_errno(pki: Pki, workdir: Path) -> None:
    result = status("no-such-host.invalid:8000", pki, workdir)
    assert_one_line_error(
        result,
        "cannot find host 'no-such-host.invalid' (from --addr no-such-host.invalid:8000)",
        "check its spelling",
    )
    assert b"-2" not in result.stderr


def test_a_url_as_addr_is_refused_with_the_host_port_to_give(pki: Pki, workdir: Path) -> None:
    assert_one_line_error(
        status("http://localhost:8000", pki, workdir),
        "--addr 'http://localhost:8000' is a URL",
        "give host:port, e.g. --addr localhost:8000",
    )


async def test_a_daemon_shutting_down_mid_log_is_not_a_certificate_refusal(
    pki: Pki, tmp_path: Path
) -> None:
    daemon = spawn_daemon(pki.server_args(), cwd=tmp_path)
    try:
        args = ["--addr", daemon.addr, *pki.client_args("alice")]
        started = rund(
            "client", "start", *args, "--", "sh", "-c", "echo up; exec sleep 600", cwd=tmp_path
        )
        assert started.returncode == 0, started.stderr.decode()
        job_id = started.stdout.decode().strip()
        with trio.fail_after(20):
            async with process([RUND, "client", "log", *args, job_id]) as log:
                assert log.stdout is not None and log.stderr is not None
                await read_until(log.stdout, bytearray(), b"up\n")
                await trio.to_thread.run_sync(daemon.stop)
                stderr = b""
                while chunk := await log.stderr.receive_some():
                    stderr += chunk
                assert await log.wait() == 1
    finally:
        daemon.stop()
    line = stderr.decode()
    assert line == (
        f"rund-trio: the daemon at {daemon.addr} closed the connection: it shut down or "
        "restarted; run the command again once it is back\n"
    )


def test_without_certificates_the_error_says_where_it_looked_and_not_to_make_a_ca(
    no_config: dict[str, str], workdir: Path
) -> None:
    result = rund("client", "status", UNKNOWN_ULID, cwd=workdir, env=no_config)
    assert_one_line_error(
        result,
        f"not in ./tls/ ({workdir / 'tls'}) and $XDG_CONFIG_HOME/rund-trio/ "
        f"({no_config['XDG_CONFIG_HOME']}/rund-trio)",
        "do not run `rund-trio certs` in a new directory",
    )


def copy_client_files(pki: Pki, directory: Path) -> None:
    directory.mkdir(parents=True)
    shutil.copy2(pki.ca, directory / "ca.pem")
    shutil.copy2(pki.cert("alice"), directory / "client.pem")
    shutil.copy2(pki.key("alice"), directory / "client-key.pem")


def test_certificates_in_the_config_directory_are_found_from_any_directory(
    pki: Pki, no_config: dict[str, str], tmp_path: Path, workdir: Path
) -> None:
    copy_client_files(pki, Path(no_config["XDG_CONFIG_HOME"]) / "rund-trio")
    daemon = spawn_daemon(pki.server_args(), cwd=tmp_path)
    try:
        result = rund(
            "client",
            "run",
            "--addr",
            daemon.addr,
            "--",
            "echo",
            "found",
            cwd=workdir,
            env=no_config,
        )
    finally:
        daemon.stop()
    assert (result.returncode, result.stdout) == (0, b"found\n"), result.stderr.decode()


def test_tls_in_the_working_directory_comes_before_the_config_directory(
    pki: Pki, other_pki: Pki, no_config: dict[str, str], tmp_path: Path
) -> None:
    """./tls/ holds the other PKI's CA: the error names it, found in ./tls/."""
    copy_client_files(pki, Path(no_config["XDG_CONFIG_HOME"]) / "rund-trio")
    shutil.copytree(other_pki.dir, tmp_path / "cwd" / "tls")
    daemon = spawn_daemon(pki.server_args(), cwd=tmp_path)
    try:
        result = rund(
            "client",
            "status",
            "--addr",
            daemon.addr,
            UNKNOWN_ULID,
            cwd=tmp_path / "cwd",
            env=no_config,
        )
    finally:
        daemon.stop()
    assert_one_line_error(
        result,
        "has a certificate that --ca does not vouch for",
        f"(--ca {tmp_path / 'cwd' / 'tls' / 'ca.pem'}, found in ./tls/)",
    )


def test_an_environment_variable_names_a_missing_file_and_where_it_came_from(
    pki: Pki, no_config: dict[str, str], workdir: Path
) -> None:
    env = {**no_config, "RUND_CA": str(workdir / "nope.pem")}
    result = rund(
        "client",
        "status",
        "--cert",
        pki.cert("alice"),
        "--key",
        pki.key("alice"),
        UNKNOWN_ULID,
        cwd=workdir,
        env=env,
    )
    assert_one_line_error(result, f"{workdir / 'nope.pem'} (from $RUND_CA) does not exist")
