"""A two-actor demo of the runtime: a client asks a server, in virtual time.

It exercises what every model run uses (spawn, ask, virtual time, the run log, metrics)
with nothing of the page model, so the runtime can be tried on its own.
"""

from __future__ import annotations

import attrs

from ..actor import Actor, handles
from ..system import ActorSystem


@attrs.frozen
class Request:
    number: int


@attrs.frozen
class Response:
    number: int
    served_at_ns: int


class Server(Actor):
    """Answers each request after a service time drawn from its own random stream."""

    def __init__(self, name: str, mean_service_ns: int) -> None:
        super().__init__(name)
        self.mean_service_ns = mean_service_ns

    @handles(Request)
    async def serve_request(self, request: Request) -> Response:
        await self.sleep_ns(int(self.random.expovariate(1 / self.mean_service_ns)))
        return Response(request.number, self.now_ns)


class Client(Actor):
    """Sends ``requests`` requests one at a time, thinking between them."""

    def __init__(self, name: str, server: Server, requests: int, think_ns: int) -> None:
        super().__init__(name)
        self.server = server
        self.requests = requests
        self.think_ns = think_ns

    async def run(self) -> None:
        latency = self.system.metrics.histogram(f"{self.name}.latency_ns")
        for number in range(self.requests):
            sent_ns = self.now_ns
            response = await self.server.ask(Request(number))
            latency.record(response.served_at_ns - sent_ns)
            self.log.debug("answered", number=number, latency_ns=response.served_at_ns - sent_ns)
            await self.sleep_ns(self.think_ns)


async def run_demo(
    system: ActorSystem, *, clients: int = 4, requests: int = 1000, service_ns: int = 50_000
) -> dict[str, object]:
    """Clients contend for one server; the queueing shows in latency and mailbox depth."""
    server = system.spawn(Server("server", service_ns))
    workers = [
        system.spawn(Client(f"client{i}", server, requests, think_ns=4 * service_ns))
        for i in range(clients)
    ]
    while any(worker.alive for worker in workers):
        await system.sleep_ns(service_ns * 100)
    summary: dict[str, object] = {
        "virtual_s": system.now_ns / 1e9,
        "server_mailbox": server.stats.as_dict(),
        "metrics": system.metrics.summary(),
    }
    system.log.info("demo_done", **summary)
    return summary
