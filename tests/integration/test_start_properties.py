"""Property: whatever a client puts in a Start request — names and arguments
empty, unicode, huge or with NUL bytes, limits at and beyond their bounds — the
daemon answers with a job that can be Status'ed and Stopped, or with a precise
error status and a message a person can read; never UNKNOWN or INTERNAL, and
it keeps serving.

Hypothesis runs each example in a fresh trio run, so the daemon is a real
``rund-trio serve`` subprocess shared by the module, reached over mTLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from ulid import ULID

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.jobs.spec import MAX_ARGV_BYTES
from rund_trio.rpc import TransportConfig
from tests.cli.conftest import running_daemon
from tests.conftest import Pki

MAX_REQUEST = TransportConfig().max_request_size
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
LIMITS = {
    "max_cpu_bandwidth": UINT32_MAX,
    "max_memory_usage": UINT64_MAX,
    "max_rbps": UINT64_MAX,
    "max_wbps": UINT64_MAX,
    "max_riops": UINT64_MAX,
    "max_wiops": UINT64_MAX,
}
ERROR_CODES = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
T = TypeVar("T")
HARMLESS_PROGRAMS = ("true", "echo", "sleep")
"""The only programs that can run: every other name is made unresolvable."""


@pytest.fixture(scope="module")
def daemon_addr(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tls = pki.server_tls()
    server_args = ["--ca", tls.ca, "--cert", tls.cert, "--key", tls.key]
    with running_daemon(server_args, cwd=tmp_path_factory.mktemp("daemon")) as daemon:
        yield daemon.addr


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any unicode text without NUL (NUL bytes are drawn on purpose below)."""
    return st.text(st.characters(exclude_characters="\0"), max_size=max_size)


def with_nul(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, b: f"{a}\0{b}", text, text)


names = st.one_of(
    st.just(""),
    st.sampled_from(HARMLESS_PROGRAMS),
    st.sampled_from(HARMLESS_PROGRAMS),
    text(40).map(lambda text: f"no-such-program-{text}"),
    with_nul(text(10)),
    st.integers(0, 300_000).map(lambda size: "n" * size),
)
arguments = st.one_of(
    st.lists(text(30), max_size=8),
    st.lists(text(30), max_size=8),
    st.lists(with_nul(text(5)), min_size=1, max_size=3),
    st.builds(
        lambda size, count: ["a" * size] * count, st.integers(0, 200_000), st.integers(0, 30)
    ),
)


@st.composite
def start_requests(draw: st.DrawFn) -> pb.JobStartRequest:
    request = pb.JobStartRequest(name=draw(names), args=draw(arguments))
    if draw(st.booleans()):
        for field in draw(st.sets(st.sampled_from(sorted(LIMITS)), min_size=1)):
            maximum = LIMITS[field]
            value = draw(st.sampled_from([0, 1, maximum]) | st.integers(0, maximum))
            getattr(request, field).value = value
    return request


def request_of(name: str, *args: str, **limits: int) -> pb.JobStartRequest:
    request = pb.JobStartRequest(name=name, args=args)
    for field, value in limits.items():
        getattr(request, field).value = value
    return request


BOUNDARIES = [
    request_of(""),
    request_of("echo", "héllo", "日本語", "🙂", "\u202e", ""),
    request_of("echo", *["a" * 200_000] * 6),  # over the argv cap, under the request cap
    request_of("echo", *["a" * 200_000] * 25),  # over the request cap
    request_of("n" * 300_000),
    *[request_of("true", **{field: value}) for field in LIMITS for value in (0, 1)],
    *[request_of("true", **{field: maximum}) for field, maximum in LIMITS.items()],
]
"""Examples always tried, whatever hypothesis draws."""


def apply_examples(requests: list[pb.JobStartRequest]) -> Callable[[T], T]:
    def decorate(test: T) -> T:
        for request in reversed(requests):
            test = example(request=request)(test)
        return test

    return decorate


def argv_bytes(request: pb.JobStartRequest) -> int:
    return sum(len(arg.encode()) + 1 for arg in [request.name, *request.args])


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=start_requests())
@apply_examples(BOUNDARIES)
async def test_start_answers_a_job_or_a_precise_error_and_keeps_serving(
    daemon_addr: str, pki: Pki, request: pb.JobStartRequest
) -> None:
    async with RundClient.connect(daemon_addr, pki.client_tls("alice").client_context()) as rund:
        try:
            job_id = await rund.start(request)
        except RpcError as error:
            event(error.code)
            assert error.code in ERROR_CODES, error
            assert error.message.strip(), error
            if request.ByteSize() > MAX_REQUEST:
                assert error.code == "RESOURCE_EXHAUSTED" and "--max-request-size" in error.message
            elif not request.name or "\0" in "".join([request.name, *request.args]):
                assert error.code == "INVALID_ARGUMENT"
            elif argv_bytes(request) > MAX_ARGV_BYTES:
                assert error.code == "RESOURCE_EXHAUSTED" and "--max-argv-bytes" in error.message
        else:
            event("started")
            assert request.name in HARMLESS_PROGRAMS
            assert str(ULID.from_str(job_id)) == job_id
            status = await rund.status(job_id)
            assert (status.name, list(status.args)) == (request.name, list(request.args))
            assert (await rund.stop(job_id)).state != pb.JOB_STATE_RUNNING
        # The same connection, and so the daemon, still serves.
        with pytest.raises(RpcError) as unknown:
            await rund.status(UNKNOWN_JOB)
        assert unknown.value.code == "NOT_FOUND"
