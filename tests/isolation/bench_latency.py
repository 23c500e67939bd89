"""Start latency of a job, spawn → running, through each way of starting one.

Run as root: ``.venv/bin/python -m tests.isolation.bench_latency [N]`` (default
200 starts per mode). Prints p50/p99 in milliseconds of ``spawn()`` returning
(the helper's status fd read end of file, i.e. ``/bin/true`` was executed), and
of the whole run to the reaped end. Not collected by pytest.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import trio

from rund_trio.isolation.spec import Isolation, Namespaces
from rund_trio.process.base import ProcessSpec
from rund_trio.process.helper import HelperSpawner
from rund_trio.process.pidfd import ChildWaiter

SPEC = ProcessSpec(("/bin/true",), {"PATH": "/usr/bin:/bin"})


async def plain_posix_spawn() -> float:
    start = time.perf_counter()
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {}, setsid=True)
    running = time.perf_counter() - start  # posix_spawn returns after the exec
    await ChildWaiter(pid).wait()
    return running


def helper(isolation: Isolation) -> object:
    spawner = HelperSpawner(isolation)

    async def start() -> float:
        begin = time.perf_counter()
        process = await spawner.spawn(SPEC)
        running = time.perf_counter() - begin
        await process.wait()
        await process.aclose()
        return running

    return start


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(count: int) -> None:
    modes = {
        "posix_spawn /bin/true": plain_posix_spawn,
        "helper, no isolation": helper(Isolation.none()),
        "helper, default (pid+mnt+uts+ipc)": helper(Isolation(hostname="rund-bench")),
        "helper, default + net": helper(Isolation(namespaces=Namespaces(net=True))),
    }
    for name, start in modes.items():
        await start()  # type: ignore[operator]  # warm up (bytecode caches)
        samples = []
        for _ in range(count):
            samples.append(await start())  # type: ignore[operator]
        ms = [s * 1000 for s in samples]
        print(
            f"{name:36s} p50 {statistics.median(ms):7.2f} ms   p99 {percentile(ms, 0.99):7.2f} ms"
            f"   mean {statistics.fmean(ms):7.2f} ms  (n={count})"
        )


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 200)
