"""A short run of the load test (``just load`` runs it for minutes): a real
daemon subprocess, clients running Start/Status/Log/Stop, every byte checked."""

from __future__ import annotations

import trio

from loadtest.run import load_test


async def test_a_short_load_has_no_errors_lost_bytes_or_leaks() -> None:
    result = await trio.to_thread.run_sync(
        lambda: load_test(clients=10, seconds=8, warmup=3, max_running_jobs=6)
    )
    print(result.report())
    assert result.problems() == []
    assert result.tally.intended["Start at --max-running-jobs"] > 0
    assert result.tally.intended["Log beyond --output-cap"] > 0
    assert result.tally.bytes_checked > 0
