"""Escape attempts that the contained profile's own layers stop, each named
with the layer that stops it: the seccomp filter (EPERM before the kernel
looks at the arguments) and the missing capability (the kernel's own EPERM).

Every attempt is a system call with arguments chosen to be harmless where it
is *not* stopped (a reboot with a bad magic number, a module fd of -1, a
settimeofday that sets nothing, a mount in the job's own mount namespace), so
the same probe can run as a granted host job and in a test process with only
one layer applied. ``PROBE`` runs as ``python3 -S -c PROBE`` and prints one
JSON object: attempt -> errno (0: the call succeeded).

- through the daemon, a contained root job: every attempt fails (EPERM;
  ``clone3`` ENOSYS, so the C library falls back to ``clone``);
- a granted ``--host`` job: none fails with EPERM, the kernel answers it
  (the README: a host job has the daemon's powers);
- the seccomp filter alone (full capabilities): every attempt stopped;
- the capabilities alone (no filter): the attempts marked ``capabilities``
  stopped, the others not -- so those need the filter.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.isolation import capabilities, seccomp
from rund_trio.jobs.isolation_policy import IsolationPolicy
from tests.conftest import Daemon, Pki, start_daemon
from tests.integration.test_isolation import run

pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64", reason="system call numbers of x86_64"),
    pytest.mark.skipif(os.geteuid() != 0, reason="escapes of a root job: needs root"),
]

PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
U = ctypes.c_ulong

def call(number, *args):
    result = libc.syscall(ctypes.c_long(number), *args)
    return 0 if result >= 0 else ctypes.get_errno()

def clone_user_namespace():
    result = libc.syscall(ctypes.c_long(56), U(0x10000000 | 17), U(0), U(0), U(0), U(0))
    if result == 0:
        os._exit(0)  # the child, in its new user namespace
    if result < 0:
        return ctypes.get_errno()
    os.waitpid(result, 0)
    return 0

results = {
    "load a module": call(313, -1, b"", 0),
    "unload a module": call(176, b"rund_no_such_module", os.O_NONBLOCK),
    "reboot": call(169, 0, 0, 0, None),
    "load a kernel to kexec": call(246, U(0), U(0), None, U(0xFFFF0000)),
    "set the clock": call(164, None, None),
    "mount": call(165, b"none", b"/mnt", b"tmpfs", U(0), None),
    "unmount": call(166, b"/proc", 2),
    "swap on": call(167, b"/rund-no-such-file", 0),
    "open a file by handle": call(304, -100, None, 0),
    "keyctl": call(250, 0, -3, 0),
    "bpf": call(321, 0, None, 0),
    "enter a namespace": call(308, -1, 0),
    "clone3": call(435, None, 0),
    "clone a new user namespace": clone_user_namespace(),
    "unshare a new user namespace": call(272, 0x10000000),
}
print(json.dumps(results))
"""

SECCOMP = "seccomp"
CAPABILITIES = "capabilities"
ATTEMPTS: dict[str, tuple[str, ...]] = {
    "load a module": (SECCOMP, CAPABILITIES),
    "unload a module": (SECCOMP, CAPABILITIES),
    "reboot": (SECCOMP, CAPABILITIES),
    "load a kernel to kexec": (SECCOMP, CAPABILITIES),
    "set the clock": (SECCOMP, CAPABILITIES),
    "mount": (SECCOMP, CAPABILITIES),
    "unmount": (SECCOMP, CAPABILITIES),
    "swap on": (SECCOMP, CAPABILITIES),
    "open a file by handle": (SECCOMP,),  # and CAPABILITIES before Linux 6.9 relaxed it
    "keyctl": (SECCOMP,),
    "bpf": (SECCOMP,),  # and CAPABILITIES where kernel.unprivileged_bpf_disabled is set
    "enter a namespace": (SECCOMP,),
    "clone3": (SECCOMP,),
    "clone a new user namespace": (SECCOMP,),
    "unshare a new user namespace": (SECCOMP,),
}
"""Attempt -> the layers that stop it, each on its own."""
KERNEL_DEPENDENT = {"bpf", "open a file by handle"}
"""Attempts whose capability check depends on the kernel (its version, a sysctl)."""

CONTAINED_ERRNO = {name: errno.EPERM for name in ATTEMPTS} | {"clone3": errno.ENOSYS}


def probe_output(out: str) -> dict[str, int]:
    results: dict[str, int] = json.loads(out)
    assert set(results) == set(ATTEMPTS)
    return results


def probe_with(layer: str) -> dict[str, int]:
    """The probe in a child of this test process with only ``layer`` applied
    (root, as the tests run)."""
    bpf = seccomp.program(allow_tracing=True)
    keep = capabilities.contained_set(own_network=False)

    def apply() -> None:
        if layer == SECCOMP:
            seccomp.install(bpf)
        else:
            capabilities.confine(keep)

    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        preexec_fn=apply,  # between fork and exec: this layer only, then the probe
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return probe_output(done.stdout)


def explain(results: dict[str, int]) -> dict[str, str]:
    return {name: errno.errorcode.get(code, str(code)) for name, code in results.items()}


async def test_a_contained_root_job_fails_every_attempt(daemon: Daemon) -> None:
    status, out, err = await run(daemon, "python3", "-S", "-c", PROBE)
    assert status.exit_code.value == 0, err
    assert explain(probe_output(out)) == explain(CONTAINED_ERRNO)


async def test_a_granted_host_job_reaches_the_kernel_with_every_attempt(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    """Host jobs have the daemon's powers: no layer of the contained profile
    answers, the kernel does (with the daemon's capabilities; the arguments
    make every call harmless). Run with namespaces, so its mount and unmount
    stay in its own mount namespace."""
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(host_job_grants=("DNS:alice",))
    )
    status, out, err = await run(daemon, "python3", "-S", "-c", PROBE, profile=pb.JOB_PROFILE_HOST)
    assert status.exit_code.value == 0, err
    stopped = {name: code for name, code in explain(probe_output(out)).items() if code == "EPERM"}
    assert stopped == {}


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_the_seccomp_filter_alone_stops(attempt: str) -> None:
    assert explain(probe_with(SECCOMP))[attempt] == explain(CONTAINED_ERRNO)[attempt]


@pytest.mark.parametrize(
    "attempt", [name for name, layers in ATTEMPTS.items() if CAPABILITIES in layers]
)
def test_the_missing_capability_alone_stops(attempt: str) -> None:
    # ENOSYS: this kernel is built without the feature (modules, kexec) at all
    assert explain(probe_with(CAPABILITIES))[attempt] in ("EPERM", "ENOSYS")


@pytest.mark.parametrize(
    "attempt",
    [
        name
        for name, layers in ATTEMPTS.items()
        if CAPABILITIES not in layers and name not in KERNEL_DEPENDENT
    ],
)
def test_only_the_seccomp_filter_stops(attempt: str) -> None:
    """With Docker's capabilities and no filter, these succeed or get the
    kernel's own answer: the filter is what stops them."""
    assert explain(probe_with(CAPABILITIES))[attempt] not in ("EPERM", "ENOSYS")
