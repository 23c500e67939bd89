"""The counterparts: the machine's floor (posix_spawn + wait of /bin/true, a
local 1 GB pipe) and OpenSSH on loopback (a private sshd on its own port with
a temporary host key and authorized key)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SIZE_BYTES = {"K": 1024, "M": 1024**2, "G": 1024**3}


def size_bytes(size: str) -> int:
    return int(size[:-1]) * SIZE_BYTES[size[-1]] if size[-1] in SIZE_BYTES else int(size)


def spawn_true(count: int) -> list[float]:
    """posix_spawn + waitpid of /bin/true, ``count`` times; milliseconds each."""
    samples = []
    for _ in range(count):
        begin = time.perf_counter()
        pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
        os.waitpid(pid, 0)
        samples.append((time.perf_counter() - begin) * 1000)
    return samples


def shell_seconds(script: str, repeat: int) -> list[float]:
    """Wall time of ``bash -c SCRIPT``, ``repeat`` times."""
    out = []
    for _ in range(repeat):
        begin = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, timeout=300)
        out.append(time.perf_counter() - begin)
    return out


def wall_times(
    argv: list[str], repeat: int, *, env: dict[str, str] | None = None, timeout: float = 30
) -> tuple[list[float], int]:
    """Whole-process wall time (ms) of ``argv``, ``repeat`` times; and how many failed."""
    samples, failures = [], 0
    for _ in range(repeat):
        begin = time.perf_counter()
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            timeout=timeout,
        )
        samples.append((time.perf_counter() - begin) * 1000)
        if result.returncode != 0:
            failures += 1
            if failures == 1:
                print(f"bench: {argv[0]} failed: {result.stderr.decode(errors='replace')[-400:]}")
    return samples, failures


def read_stream(argv: list[str], max_seconds: float) -> tuple[int, float, bool]:
    """Run ``argv`` and read its stdout to the end (1 MiB reads, discarded) or
    until ``max_seconds``: bytes read, seconds, whether it was cut short."""
    begin = time.perf_counter()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    got = 0
    cut = False
    try:
        while chunk := os.read(fd, 1 << 20):
            got += len(chunk)
            if time.perf_counter() - begin > max_seconds:
                cut = True
                break
    finally:
        elapsed = time.perf_counter() - begin
        if process.poll() is None and cut:
            process.kill()
        process.stdout.close()
        process.wait(timeout=30)
    return got, elapsed, cut


# ---------------------------------------------------------------- OpenSSH


def find_sshd() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.access(p, os.X_OK)), None
    )


def ensure_openssh() -> str | None:
    """sshd's path, installing Debian's openssh-server (as root) when missing;
    None (with the reason printed) if that is not possible."""
    sshd = find_sshd()
    if sshd and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return sshd
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("bench: no sshd and cannot apt-get install openssh-server: OpenSSH skipped")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"]
    print("bench: installing openssh-server (apt-get)")
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL)
    sshd = find_sshd()
    if sshd is None:
        print("bench: openssh-server could not be installed: OpenSSH skipped")
    return sshd


@dataclass
class Sshd:
    port: int
    user: str
    identity: Path

    def argv(self, *command: str) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.identity),
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
            *command,
        ]


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port")


@contextlib.contextmanager
def running_sshd(workdir: Path, preferred_port: int = 2222) -> Iterator[Sshd | None]:
    """A private sshd on 127.0.0.1 for the block (None if unavailable);
    stopped, and everything it made removed, afterwards."""
    sshd = ensure_openssh()
    if sshd is None:
        yield None
        return
    d = workdir / "ssh"
    d.mkdir(mode=0o700)
    for key in ("host_key", "id_ed25519"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
    port = _free_port(preferred_port)
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "UseDNS no\nPrintMotd no\nMaxStartups 100\nLogLevel ERROR\n"
    )
    made_run_dir = False
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):  # privilege separation dir
        os.makedirs("/run/sshd", mode=0o755)
        made_run_dir = True
    with open(d / "sshd.log", "wb") as log:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(d / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        server = Sshd(port, getpass.getuser(), d / "id_ed25519")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if (
                subprocess.run(
                    server.argv("true"), stdin=subprocess.DEVNULL, capture_output=True, timeout=10
                ).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        else:
            print(
                "bench: sshd did not come up: OpenSSH skipped\n"
                + (d / "sshd.log").read_text(errors="replace")[-1000:]
            )
            yield None
            return
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if made_run_dir:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")
