"""``rund-trio certs``, driven through its own argparse parser."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from rund_trio.cli import certs_cmd
from rund_trio.errors import ConfigError, RundError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rund-trio")
    subparsers = root.add_subparsers(dest="command", required=True)
    certs_cmd.add_parser(subparsers)
    return root


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(["certs", *argv])
    result: int = args.handler(args)
    return result


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> list[x509.GeneralName]:
    cert = load(path)
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_defaults_write_ca_server_and_one_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    assert run(["--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        f"wrote {out / name}"
        for name in (
            "ca.pem",
            "ca-key.pem",
            "server.pem",
            "server-key.pem",
            "client.pem",
            "client-key.pem",
        )
    )
    assert sans(out / "server.pem") == [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert sans(out / "client.pem") == [x509.DNSName("client")]
    assert stat.S_IMODE((out / "client-key.pem").stat().st_mode) == 0o600


def test_default_out_dir_is_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert run([]) == 0
    assert (tmp_path / "tls" / "ca.pem").is_file()


def test_second_run_keeps_files_and_adds_a_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    run(["--out", str(out)])
    ca = (out / "ca.pem").read_bytes()
    capsys.readouterr()
    run(["--out", str(out), "--client", "client", "--client", "alice"])
    lines = capsys.readouterr().out.splitlines()
    assert f"wrote {out / 'alice.pem'}" in lines
    assert f"kept {out / 'ca.pem'} (exists)" in lines
    assert not any(line.startswith("wrote") and "client" in line for line in lines)
    assert (out / "ca.pem").read_bytes() == ca
    load(out / "alice.pem").verify_directly_issued_by(load(out / "ca.pem"))


def test_force_regenerates_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tls"
    run(["--out", str(out)])
    ca = (out / "ca.pem").read_bytes()
    capsys.readouterr()
    run(["--out", str(out), "--force"])
    assert (out / "ca.pem").read_bytes() != ca
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_san_flag_adds_sans_to_the_named_client(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    run(
        [
            "--out", str(out),
            "--client", "alice",
            "--client", "bob@example.com",
            "--san", "alice=URI:spiffe://x/alice?a=b",
            "--san", "alice=IP:10.0.0.7",
        ]
    )  # fmt: skip
    assert sans(out / "alice.pem") == [
        x509.DNSName("alice"),
        x509.UniformResourceIdentifier("spiffe://x/alice?a=b"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
    ]
    assert sans(out / "bob@example.com.pem") == [x509.RFC822Name("bob@example.com")]


def test_no_san_flag_makes_an_anonymous_client(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    run(["--out", str(out), "--client", "anon", "--no-san", "anon"])
    with pytest.raises(x509.ExtensionNotFound):
        load(out / "anon.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_server_name_and_curve_flags(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    run(
        [
            "--out", str(out),
            "--server-name", "rund.lan",
            "--server-name", "192.0.2.1",
            "--server-curve", "P-384",
        ]
    )  # fmt: skip
    assert sans(out / "server.pem") == [
        x509.DNSName("rund.lan"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
    ]
    key = load(out / "server.pem").public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP384R1)


def test_days_flag(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    run(["--out", str(out), "--days", "7"])
    cert = load(out / "client.pem")
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--san", "nobody=DNS:x"], "there is no --client nobody"),
        (["--san", "client"], "must look like NAME=SAN"),
        (["--san", "client=FTP:x"], "must look like DNS:name"),
        (["--no-san", "nobody"], "there is no --client nobody"),
        (["--no-san", "client", "--san", "client=DNS:x"], "both --no-san and --san"),
        (["--days", "0"], "--days must be at least 1"),
        (["--client", "../x"], "client name"),
        (["--server-name", "a b"], "server name"),
    ],
)
def test_bad_flags_raise_one_line_config_errors(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run(["--out", str(tmp_path / "tls"), *argv])
    assert isinstance(info.value, RundError)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "tls").exists()


def test_server_curve_choices_are_enforced() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["certs", "--server-curve", "P-256"])


def test_help_documents_the_san_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["certs", "--help"])
    text = capsys.readouterr().out
    assert "--san NAME=SAN" in text
    assert "URI:x" in text
    assert "P-384" in text


def test_default_server_names_match_the_library() -> None:
    from rund_trio.tls.certs import DEFAULT_SERVER_NAMES

    assert certs_cmd.DEFAULT_SERVER_NAMES == DEFAULT_SERVER_NAMES
