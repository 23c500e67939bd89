"""The Status counterpart: a minimal ``grpc.aio`` server of rund's
JobController Status over the same mutual TLS, for the bench to load with the
same client as the daemon (``python -m bench.grpc_aio PORT PKI_DIR``).

It answers every Status with one fixed ``JobStatus`` of a running job, the
size of the daemon's answer: it measures what gRPC costs, nothing else.
The PKI's server key is P-384 (BoringSSL does not offer P-521); the bench
measures warm connections, so the handshake is not in the figure.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from bench.daemon import CLIENT, Daemon, _collect, clean_env, rund_executable, unused_port
from rund_trio.api import rund_pb2 as pb


def _answer() -> pb.JobStatus:
    status = pb.JobStatus(
        state=pb.JOB_STATE_RUNNING, name="sleep", args=["600"], pid=12345, memory_current=4_000_000
    )
    status.started_at.FromSeconds(1_700_000_000)
    status.user_time.FromMilliseconds(3)
    status.system_time.FromMilliseconds(2)
    return status


async def serve(port: int, pki: Path) -> None:
    import grpc

    answer = _answer()

    async def status(request: pb.JobIdentifier, context: object) -> pb.JobStatus:
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "rund.JobController",
                {
                    "Status": grpc.unary_unary_rpc_method_handler(
                        status,
                        request_deserializer=pb.JobIdentifier.FromString,
                        response_serializer=pb.JobStatus.SerializeToString,
                    )
                },
            ),
        )
    )
    credentials = grpc.ssl_server_credentials(
        [((pki / "server-key.pem").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def make_pki(out: Path) -> Path:
    """A PKI like the bench's, with P-384 keys for the server and the client:
    BoringSSL offers no P-521 signatures, so grpcio cannot use the bench's."""
    subprocess.run(
        [
            rund_executable(),
            "certs",
            "--out",
            str(out),
            "--client",
            CLIENT,
            "--server-curve",
            "P-384",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env=clean_env(),
        timeout=60,
    )
    _reissue_on_p384(out / f"{CLIENT}.pem", out / f"{CLIENT}-key.pem", out)
    return out


def _reissue_on_p384(cert_path: Path, key_path: Path, pki: Path) -> None:
    """The same client certificate (names, extensions, validity) on a new P-384 key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
    old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(old.not_valid_after_utc)
    )
    for extension in old.extensions:
        if isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
            )
        else:
            builder = builder.add_extension(extension.value, extension.critical)
    certificate = builder.sign(ca_key, hashes.SHA512())  # type: ignore[arg-type]
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def spawn(pki: Path) -> Daemon:
    """The counterpart server in its own process, once it listens."""
    port = unused_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_aio", str(port), str(pki)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    output: list[str] = []
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    for raw in process.stderr:
        output.append(raw.decode(errors="replace"))
        if "listening on" in output[-1]:
            watchdog.cancel()
            threading.Thread(target=_collect, args=(process.stderr, output), daemon=True).start()
            return Daemon("grpc.aio", process, f"127.0.0.1:{port}", None, output)
    watchdog.cancel()
    process.wait()
    raise SystemExit("bench: the grpc.aio counterpart did not start:\n" + "".join(output))


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
