"""Finding a job: visible to certificates sharing a SAN with its owner's, and
looked up the same way whether it exists or not."""

from __future__ import annotations

from rund_trio.jobs.table import JobTable
from rund_trio.tls.identity import Identity

JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
MISSING = "01BX5ZZKBKACTAV9WEVGEMMVRZ"
ALICE = Identity.of("DNS:alice", "email:alice@example.com")
ALICE_LAPTOP = Identity.of("DNS:alice-laptop", "email:alice@example.com")
BOB = Identity.of("DNS:bob", "email:bob@example.com")


class ProbeLog(dict[tuple[str, str], str]):
    """An index that records every key it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[tuple[str, str]] = []

    def get(self, key: tuple[str, str], default: str | None = None) -> str | None:  # type: ignore[override]
        self.probes.append(key)
        return super().get(key, default)


def test_the_owner_and_a_certificate_sharing_a_san_find_the_job() -> None:
    table: JobTable[str] = JobTable()
    table.add(JOB, ALICE, "job")
    assert table.find(JOB, ALICE) == "job"
    assert table.find(JOB, ALICE_LAPTOP) == "job"


def test_a_stranger_an_anonymous_caller_and_an_unknown_id_find_nothing() -> None:
    table: JobTable[str] = JobTable()
    table.add(JOB, ALICE, "job")
    assert table.find(JOB, BOB) is None
    assert table.find(JOB, Identity()) is None
    assert table.find(MISSING, ALICE) is None


def test_a_strangers_lookup_probes_exactly_what_a_lookup_of_an_unknown_id_does() -> None:
    index = ProbeLog()
    table: JobTable[str] = JobTable(index)
    table.add(JOB, ALICE, "job")
    table.find(JOB, BOB)
    not_yours = [(san, job_id.replace(JOB, "ID")) for san, job_id in index.probes]
    index.probes.clear()
    table.find(MISSING, BOB)
    missing = [(san, job_id.replace(MISSING, "ID")) for san, job_id in index.probes]
    assert not_yours == missing
    assert sorted(san for san, _ in missing) == sorted(BOB.sans)  # one probe per SAN, no more
