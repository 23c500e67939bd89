"""The standard gRPC Health Checking Protocol (``grpc.health.v1.Health``).

The daemon reports on itself (service ``""``) and on ``rund.JobController``,
both alike: SERVING once jobs can start, NOT_SERVING from the moment it
begins to shut down. ``grpc_health_probe`` and load balancers ask ``Check``;
``Watch`` streams every change, so a watcher sees NOT_SERVING before the
daemon closes its connection (see ``shutting_down``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator

import trio

from rund_trio.api.grpc_health.v1 import health_pb2 as pb
from rund_trio.api.grpc_health.v1.health_grpc import HealthServicer
from rund_trio.errors import UnknownService

SERVICES = ("", "rund.JobController")
"""What the daemon reports on: itself as a whole, and its job service."""

Status = pb.HealthCheckResponse.ServingStatus

NOTIFY_TIMEOUT = 1.0
"""Seconds ``shutting_down`` waits for watchers to be sent NOT_SERVING."""


class HealthService(HealthServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self) -> None:
        self._status: Status.ValueType = pb.HealthCheckResponse.NOT_SERVING
        self._changed = trio.lowlevel.ParkingLot()
        self._generation = 0
        """Counts status changes; a watcher knows what it has sent by it."""
        self._watchers: dict[int, int] = {}
        """Each open Watch stream: the generation it last sent."""
        self._sent = trio.lowlevel.ParkingLot()
        self._keys = itertools.count()

    @property
    def status(self) -> Status.ValueType:
        return self._status

    def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for every service from now on."""
        status = pb.HealthCheckResponse.SERVING if serving else pb.HealthCheckResponse.NOT_SERVING
        if status != self._status:
            self._status = status
            self._generation += 1
            self._changed.unpark_all()

    async def shutting_down(self, timeout: float = NOTIFY_TIMEOUT) -> None:
        """Report NOT_SERVING and return once every Watch stream has sent it to
        its client (written to the socket), or after ``timeout`` seconds for
        clients that do not read."""
        self.set_serving(False)
        with trio.move_on_after(timeout):
            while any(sent < self._generation for sent in self._watchers.values()):
                await self._sent.park()

    def _lookup(self, service: str) -> Status.ValueType:
        if service not in SERVICES:
            raise UnknownService(
                f"this daemon reports on no service {service!r}: ask about "
                + " or ".join(repr(name) for name in SERVICES)
            )
        return self._status

    async def Check(self, request: pb.HealthCheckRequest) -> pb.HealthCheckResponse:
        return pb.HealthCheckResponse(status=self._lookup(request.service))

    async def List(self, request: pb.HealthListRequest) -> pb.HealthListResponse:
        response = pb.HealthListResponse()
        for name in SERVICES:
            response.statuses[name].status = self._status
        return response

    async def Watch(self, request: pb.HealthCheckRequest) -> AsyncIterator[pb.HealthCheckResponse]:
        """The status now, then at each change, until the client goes away. An
        unknown service is SERVICE_UNKNOWN (and stays so), as the protocol says."""
        if request.service not in SERVICES:
            yield pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVICE_UNKNOWN)
            await trio.sleep(math.inf)
        key = next(self._keys)
        self._watchers[key] = -1
        try:
            while True:
                generation = self._generation
                # The transport returns from ``yield`` once the message is on the socket.
                yield pb.HealthCheckResponse(status=self._status)
                self._watchers[key] = generation
                self._sent.unpark_all()
                while generation == self._generation:
                    await self._changed.park()
        finally:
            del self._watchers[key]
            self._sent.unpark_all()
