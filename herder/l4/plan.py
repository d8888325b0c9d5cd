"""The L4 plan: a pool snapshot and the declared virtual services in, a :class:`Ruleset` out.

Theory of operation
-------------------
:func:`plan` is a pure function (no I/O, no clock; the layering test enforces that this
module imports no asyncio, socket or pyroute2). For every virtual service it reads the
servers of its pool in the snapshot and sorts each into one of three groups:

* **serving** -- effective weight above 0: in the scheduling table, takes new flows;
* **quiesced** -- weight 0 but still allowed to finish what it has: an operator's weight
  0 or drain (``ServerView.accepts_persistent``), or a server failing its health checks
  in a service with ``on_failure = "quiesce"`` (keepalived ``inhibit_on_failure``). It
  stays a destination (``ipvsadm -L`` shows it with weight 0), its existing NAT
  connections, persistence entries and DR flow-table entries stay valid, and it gets no
  new flow;
* **removed** -- everything else (down, in maintenance, gone): not a destination; flows
  that still point to it are rescheduled (DR) or left to conntrack (NAT).

Backup servers serve only when no active server does (keepalived's sorry server).

Scheduling tables (slot -> destination id):

* ``rr``: every serving destination once, in server-name order (weights ignored, as
  LVS rr does), walked by a per-rule counter (nft ``numgen inc``);
* ``wrr``: the weights interleaved smoothly (Webster's divisor method) into a sequence of
  ``sum(w)/gcd`` slots, walked by the counter;
* ``sh``/``dh``: LVS's 256-bucket table, each destination filling ``weight`` consecutive
  buckets in turn, indexed by a seeded jhash of the source (``sh``) or destination
  (``dh``) address;
* ``mh``: the Maglev table of :mod:`herder.balance.maglev` (65537 slots by default),
  indexed by a seeded jhash of the source address (and port with ``mh-port``). The table
  depends only on the server names and weights, so a reload or a second director
  computes the same one; a server change rewrites only the slots it touches.

Destination ids are stable: a (service, server) pair keeps the id it had in
``previous``; new pairs take fresh numbers that were never used in this run.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from herder.balance.maglev import maglev_table
from herder.l4.ruleset import (
    DEFAULT_SEED,
    MARK_BASE,
    Dest,
    Forward,
    Ruleset,
    Scheduler,
    VirtualService,
    VirtualServiceSpec,
)
from herder.pool.model import HealthState
from herder.pool.state import ServerView, Snapshot

__all__ = ["LVS_HASH_BUCKETS", "hash_table", "interleave", "plan", "wrr_table"]

#: LVS's sh/dh table size (IP_VS_SH_TAB_SIZE, IP_VS_DH_TAB_SIZE).
LVS_HASH_BUCKETS = 256
#: Longest wrr sequence; larger weight sums are scaled down.
MAX_WRR_SLOTS = 65536


def interleave(weights: Sequence[int], limit: int = MAX_WRR_SLOTS) -> list[int]:
    """A smooth weighted sequence of indices: index i appears ``w_i / gcd`` times, its
    k-th entry at virtual time ``(k + 0.5) / w_i`` (ties by index). Weights must be > 0.
    If the sequence would be longer than ``limit``, the weights are scaled down
    proportionally (each keeps at least one entry)."""
    if not weights:
        return []
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    ws = [w // g for w in weights]
    total = sum(ws)
    if total > limit:
        ws = [max(1, w * limit // total) for w in ws]
    entries = [((2 * k + 1) / (2 * w), i) for i, w in enumerate(ws) for k in range(w)]
    entries.sort()
    return [i for _, i in entries]


def wrr_table(weights: Sequence[int]) -> list[int]:
    """The wrr sequence (indices into ``weights``); see :func:`interleave`."""
    return interleave(weights)


def hash_table(weights: Sequence[int], buckets: int = LVS_HASH_BUCKETS) -> list[int]:
    """LVS's sh/dh table: walk the destinations in order, each taking ``weight``
    consecutive buckets, until ``buckets`` are filled (``ip_vs_sh_reassign``)."""
    if not weights:
        return []
    out: list[int] = []
    i = count = 0
    while len(out) < buckets:
        out.append(i)
        count += 1
        if count >= weights[i]:
            i = (i + 1) % len(weights)
            count = 0
    return out


def _ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def _classify(view: ServerView, spec: VirtualServiceSpec) -> str:
    """``serving``, ``quiesced`` or ``removed`` (see the module docstring)."""
    if view.effective_weight > 0:
        return "serving"
    if view.accepts_persistent:
        return "quiesced"
    if (spec.on_failure == "quiesce" and view.health.state is HealthState.DOWN
            and view.admin.mode.name != "MAINT"):
        return "quiesced"
    return "removed"


def _table(spec: VirtualServiceSpec, names: list[str], weights: list[int]) -> list[int]:
    """Slot -> index into ``names`` for the spec's scheduler (empty without servers)."""
    if not names:
        return []
    sched = spec.scheduler
    if sched is Scheduler.RR:
        return list(range(len(names)))
    if sched is Scheduler.WRR:
        return wrr_table(weights)
    if sched in (Scheduler.SH, Scheduler.DH):
        return hash_table(weights)
    return maglev_table(names, weights, spec.table_size)  # type: ignore[return-value]  (an int array)


def plan(
    snapshot: Snapshot,
    specs: Iterable[VirtualServiceSpec],
    *,
    previous: Ruleset | None = None,
    table: str = "herder",
    seed: int = DEFAULT_SEED,
    flow_timeouts: tuple[int, int, int] = (900, 120, 300),
) -> Ruleset:
    """Compute the ruleset for ``specs`` over the pools of ``snapshot``.

    Args:
        snapshot: the pool state's current snapshot.
        specs: the virtual services; their keys must be distinct.
        previous: the ruleset planned before (destination ids are kept), or None.
        table: the nftables table name herder owns.
        seed: the jhash seed of every hashing scheduler.
        flow_timeouts: DR flow-table timeouts (TCP, TCP after FIN/RST, UDP), seconds.

    Returns:
        The new :class:`Ruleset`. A spec whose pool the snapshot lacks yields a service
        with no destinations (and a note in ``problems``); servers that cannot be
        programmed (a host name instead of an IPv4 address) are left out with a note.

    Raises:
        ValueError: two specs with the same key (a caller bug: the config rejects it).
    """
    specs = sorted(specs, key=lambda s: s.key)
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"virtual service(s) declared twice: {', '.join(dup)}")
    old_ids: Mapping[tuple[str, str], int] = previous.ids if previous is not None else {}
    next_id = previous.next_id if previous is not None else 1
    ids: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    services: list[VirtualService] = []
    for spec in specs:
        view = snapshot.pools.get(spec.pool)
        if view is None:
            problems.append(f"{spec.key}: pool {spec.pool!r} does not exist")
            services.append(VirtualService(spec, (), (), frozenset()))
            continue
        groups: dict[str, list[ServerView]] = {"serving": [], "quiesced": []}
        for v in sorted(view.servers, key=lambda v: v.name):
            if not _ipv4(v.server.address.host):
                problems.append(f"{spec.key}: server {v.name} has address {v.server.address.host!r}, "
                                "not an IPv4 address; left out")
                continue
            group = _classify(v, spec)
            if group != "removed":
                groups[group].append(v)
        active = [v for v in groups["serving"] if not v.server.backup]
        backups = [v for v in groups["serving"] if v.server.backup]
        serving = active or backups
        # A backup server that is not needed is quiesced, like any server without new flows.
        quiet = groups["quiesced"] + (backups if active else [])
        dests: list[Dest] = []
        for v, w in [(v, v.effective_weight) for v in serving] + [(v, 0) for v in quiet]:
            port = v.server.address.port
            if spec.forward is not Forward.NAT and port != spec.port:
                problems.append(f"{spec.key}: server {v.name} port {port} ignored: "
                                f"{spec.forward.value} cannot map ports (VIP port {spec.port} used)")
                port = spec.port
            k = (spec.key, v.name)
            ident = old_ids.get(k)
            if ident is None:
                ident = MARK_BASE | next_id
                next_id += 1
            ids[k] = ident
            dests.append(Dest(ident, spec.key, v.name, v.server.address.host, port, w, v.weight, spec.forward))
        dests.sort(key=lambda d: d.server)
        names = [d.server for d in dests if d.weight > 0]
        weights = [d.weight for d in dests if d.weight > 0]
        by_name = {d.server: d.id for d in dests}
        slots = _table(spec, names, weights)
        ids_of = [by_name[n] for n in names]
        table_ids = tuple(ids_of[i] for i in slots) if len(slots) < 4096 else tuple(
            np.asarray(ids_of, dtype=np.int64)[np.asarray(slots, dtype=np.int64)].tolist())
        services.append(VirtualService(spec, tuple(dests), table_ids, frozenset(d.id for d in dests)))
    return Ruleset(
        services=tuple(services), table=table, seed=seed, next_id=next_id,
        ids=MappingProxyType(ids), problems=tuple(problems), flow_timeouts=flow_timeouts,
    )
