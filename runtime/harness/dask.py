"""Connecting to a Dask cluster for ``--scheduler``: an address that is not one, a listener that
is not a scheduler, and a scheduler without workers are each a clear error within a stated time.

``distributed.Client(address, timeout=...)`` alone is not enough: its timeout bounds the TCP
connect, not the handshake after it, so a listener that accepts and never answers holds it for
minutes, and one that answers with something else (an HTTP server) can make it read a garbage
frame length. So the address is first asked for its identity (the ``identity`` operation every
Dask server answers, ``distributed.core.Server``) under one overall deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .config import ConfigError

CONNECT_TIMEOUT_S = 10.0
WORKER_TIMEOUT_S = 30.0  # how long a sweep waits, by default, for the cluster to have a worker
SCHEMES_WITH_PORTS = ("tcp", "tls")


def connect_dask(address: str, worker_timeout_s: float) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` that has at least one worker."""
    try:
        from distributed import Client  # type: ignore[import-untyped,unused-ignore]
        from distributed.comm.addressing import parse_address  # type: ignore[import-untyped,unused-ignore]
        from distributed.comm.registry import backends  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ConfigError(
            "--scheduler", ["Dask is not installed: pip install 'pagehint[dask]'"]
        ) from None
    _check_address(address, parse_address, set(backends))
    try:
        identity = asyncio.run(asyncio.wait_for(_identity(address), CONNECT_TIMEOUT_S))
    except TimeoutError:
        raise _refused(
            address, f"no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    except Exception as error:  # refused, reset, or a reply that is not Dask's protocol
        reason = str(error) or type(error).__name__
        raise _refused(address, f"cannot reach a Dask scheduler there ({reason})") from None
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise _refused(
            address, f"what answers there is not a Dask scheduler ({kind or identity!r})"
        )
    client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    try:
        client.wait_for_workers(1, timeout=worker_timeout_s)
    except TimeoutError:
        client.close()
        raise _refused(
            address,
            f"the scheduler has no workers (waited {worker_timeout_s:g} s; --worker-timeout)",
        ) from None
    return client


def _check_address(address: str, parse_address: Any, schemes: set[str]) -> None:
    try:
        scheme, location = parse_address(address)
    except ValueError as error:
        raise _refused(address, f"not a scheduler address: {error}") from None
    if scheme not in schemes:
        raise _refused(
            address,
            f"unknown scheme {scheme!r} (Dask's: {', '.join(sorted(schemes))}); a scheduler's "
            "address looks like tcp://HOST:8786",
        )
    host, _, port = location.rpartition(":")
    if scheme in SCHEMES_WITH_PORTS and not (host and port.isdigit()):
        raise _refused(address, "expected tcp://HOST:PORT, such as tcp://10.0.0.5:8786")


async def _identity(address: str) -> Any:
    from distributed.comm.core import connect  # type: ignore[import-untyped,unused-ignore]

    comm = await connect(address, timeout=CONNECT_TIMEOUT_S)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _refused(address: str, why: str) -> ConfigError:
    return ConfigError("--scheduler", [f"{address}: {why}"])
