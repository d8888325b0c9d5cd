"""TCP connect check: the server is healthy when it completes the handshake.

HAProxy's default ``check`` without ``option httpchk``; keepalived's ``TCP_CHECK``. The
connection is closed as soon as it is established. Config::

    [[pools.web.checks]]
    type = "tcp"
    inter = "2s"
    port = 8081          # optional: check another port than the server's
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from herder.health.base import Layer, ProbeResult, Target, check_table, register_probe
from herder.health.classify import connect_failure, timeout_result

__all__ = ["TcpProbe", "connect"]

log = logging.getLogger(__name__)


class _Closing(asyncio.Protocol):
    """Protocol of a connection that only needs to exist."""


async def connect(target: Target, protocol_factory, deadline: float) -> tuple[asyncio.BaseTransport, object]:
    """Open a TCP connection to ``target`` before the loop time ``deadline``.

    Raises TimeoutError (the deadline passed) or OSError (refused, unreachable...).
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout_at(deadline):
        return await loop.create_connection(protocol_factory, target.address.host, target.address.port)


class TcpProbe:
    """Connect, then close. Refused -> ``L4 connection refused``; no answer to the SYN
    within the timeout -> ``L4 timeout``."""

    kind = "tcp"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def check(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            transport, _ = await connect(target, _Closing, start + self.timeout)
        except TimeoutError:
            return timeout_result(connected=False).with_duration(loop.time() - start)
        except OSError as e:
            return connect_failure(e).with_duration(loop.time() - start)
        transport.close()
        return ProbeResult(True, Layer.L4OK, "L4 check passed", None, loop.time() - start)


def _factory(spec: Mapping[str, object], timeout: float) -> TcpProbe:
    return TcpProbe(timeout)


register_probe("tcp", check_table("tcp", {}), _factory)
