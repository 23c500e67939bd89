"""The one-line diagnosis of a connection failure, from the error the transport raised."""

from __future__ import annotations

import errno
import socket
import ssl

import anyio
import pytest

from rund_trio.client.diagnose import Side, check_dial_address, diagnose_connect, diagnose_lost
from rund_trio.errors import ConfigError

ADDR = "daemon.lan:8000"


def test_a_reset_after_the_daemon_answered_is_the_daemon_going_away() -> None:
    error = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    diagnosis = diagnose_lost(error, ADDR, answered=True)
    assert diagnosis.side is Side.DAEMON
    assert "shut down or restarted" in diagnosis.message


def test_a_reset_after_the_daemon_answered_reads_as_its_clean_close() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert diagnose_lost(reset, ADDR, answered=True) == diagnose_lost(None, ADDR, answered=True)


def test_a_close_before_the_daemon_answered_is_a_certificate_refusal() -> None:
    diagnosis = diagnose_lost(None, ADDR, answered=False)
    assert diagnosis.side is Side.CLIENT_CERT
    assert "give it with --cert/--key" in diagnosis.message
    assert "reuses its CA" in diagnosis.message


def test_a_certificate_alert_is_a_refusal_even_after_an_answer() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"  # type: ignore[misc]
    assert diagnose_lost(alert, ADDR, answered=True).side is Side.CLIENT_CERT


def test_an_error_wrapped_by_anyio_is_diagnosed_by_its_cause() -> None:
    wrapped = OSError("All connection attempts failed")
    wrapped.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    assert diagnose_connect(wrapped, ADDR, "daemon.lan").message.startswith(
        f"nothing listens on {ADDR} (connection refused)"
    )


def test_a_name_that_does_not_resolve_names_the_host() -> None:
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    diagnosis = diagnose_connect(error, ADDR, "daemon.lan")
    assert diagnosis.message.startswith("cannot find host 'daemon.lan'")


def test_end_of_stream_in_the_handshake_is_not_a_rund_trio_daemon_or_an_old_tls() -> None:
    diagnosis = diagnose_connect(anyio.EndOfStream(), ADDR, "daemon.lan")
    assert diagnosis.side is Side.ADDRESS
    assert "closed the connection during the TLS handshake" in diagnosis.message


@pytest.mark.parametrize("addr", ["http://localhost:8000", "https://h/x", "grpc://[::1]:9"])
def test_a_url_is_refused_as_addr(addr: str) -> None:
    with pytest.raises(ConfigError, match="is a URL"):
        check_dial_address(addr)


@pytest.mark.parametrize("addr", ["localhost:8000", "[::1]:8000", ":8000"])
def test_host_port_is_accepted_as_addr(addr: str) -> None:
    check_dial_address(addr)
