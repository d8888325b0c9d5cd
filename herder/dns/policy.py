"""Routing policies for a name's A/AAAA answers, in Route 53's vocabulary.

Theory of operation
-------------------
A *policy name* (``[dns.names.NAME]``) is bound to a pool: its records are the pool's
servers (their IP addresses), and the pool state says which of them are usable -- a
server that is down, drained or in maintenance has an effective weight of 0 and
disappears from the answers. :func:`select` is pure: given the name's
:class:`NamePolicy`, the pool views of one snapshot and what is known about the client,
it returns the possible answers as weighted *variants*. The caller (the answer function)
picks one variant per query; the server caches the encoded variants, so a weighted pick
costs one random number, not a policy evaluation.

Tiers. Every policy first looks at the **active** servers (``backup = false``); only when
none of them is usable does it look at the **backup** tier (the pool's backup servers
plus, for ``failover``, the ``secondary`` pool). When no server of either tier is
usable, the name's **fallback** applies: ``all`` answers as if every server were up
(Route 53's behaviour), ``sorry`` answers the configured sorry records instead.

Policies (the tier's usable servers are "the candidates"):

* ``simple`` -- every candidate, in declared order, up to ``max_answers``.
* ``weighted`` -- one candidate, chosen with probability proportional to its weight.
* ``failover`` -- the active tier (primary) while any of it is usable, else the backup
  tier (secondary); each answer lists every usable server of its tier.
* ``multivalue`` -- up to ``max_answers`` candidates, in a random rotation per query (the
  variants are the rotations of a fixed shuffle, so each server appears equally often).
* ``geolocation`` (also ``ip``) -- candidates in the client's region (from the region
  map, by source address or ECS), else in the default region, else any; then as
  multivalue.
* ``latency`` -- candidates in the region with the lowest measured latency from the
  client's prefix (``[dns.latency]``) that has a usable server, else any; then as
  multivalue.

At the regional level of a map (:mod:`herder.dns.answer`), the candidates are first
restricted to the level's region (when the pool has servers in it) and the policy then
applies within that region; geolocation and latency need no client there, because the
mapping level already chose the region.

Pure: no I/O, no clock, no randomness (the caller picks a variant).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from herder.pool.state import PoolView

__all__ = ["FALLBACKS", "POLICIES", "Candidate", "NamePolicy", "Selection", "candidates", "region_up", "select"]

POLICIES = ("simple", "weighted", "failover", "multivalue", "geolocation", "ip", "latency")
FALLBACKS = ("all", "sorry")
#: Upper bound on precomputed rotations (variants) of one answer.
MAX_VARIANTS = 64


@dataclass(frozen=True, slots=True)
class NamePolicy:
    """How one name is answered. ``sorry`` holds IP addresses (A/AAAA answers) or one
    host name (a CNAME answer), used when ``fallback == "sorry"``."""

    name: bytes
    pool: str
    policy: str = "simple"
    ttl: int = 20
    max_answers: int = 8
    secondary: str | None = None
    fallback: str = "all"
    sorry: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A server as a possible record: its packed address and what the policy needs."""

    server: str
    family: int
    packed: bytes
    weight: int
    effective_weight: int
    region: str | None
    backup: bool

    @property
    def usable(self) -> bool:
        return self.effective_weight > 0


@dataclass(frozen=True, slots=True)
class Selection:
    """The possible answers: ``(weight, candidates)`` variants (pick one per query).

    ``sorry`` means the fallback chose the sorry records (``variants`` is empty then);
    ``used_region`` / ``used_latency`` say whether the client's region or latency row was
    consulted (the answer then depends on the client, and the ECS scope must say so).
    Empty variants without ``sorry``: the pool has no address of this family (NODATA).
    """

    variants: tuple[tuple[float, tuple[Candidate, ...]], ...] = ()
    sorry: bool = False
    used_region: bool = False
    used_latency: bool = False
    fallback: bool = False


def candidates(view: PoolView | None, family: int, *, backup_tier: bool = False) -> list[Candidate]:
    """The pool's servers with an IP address of ``family`` (4 or 6); servers named by host
    name cannot be DNS answers and are skipped. ``backup_tier`` marks every server as
    backup (a failover ``secondary`` pool)."""
    if view is None:
        return []
    out = []
    for sv in view.servers:
        try:
            ip = ipaddress.ip_address(sv.server.address.host)
        except ValueError:
            continue
        if ip.version != family:
            continue
        out.append(Candidate(sv.name, family, ip.packed, sv.weight, sv.effective_weight,
                             sv.server.region, backup_tier or sv.server.backup))
    return out


def region_up(view: PoolView | None, region: str) -> bool:
    """True when the pool has a usable server in ``region`` (any family). A pool with no
    server tagged with ``region`` at all counts as up there (it serves every region)."""
    if view is None:
        return True
    tagged = [sv for sv in view.servers if sv.server.region == region]
    if not tagged:
        return True
    return any(sv.effective_weight > 0 for sv in tagged)


def _rotations(cands: Sequence[Candidate], n: int) -> tuple[tuple[float, tuple[Candidate, ...]], ...]:
    """Rotations of a fixed shuffle (by a hash of the server names), each cut to ``n``."""
    order = sorted(cands, key=lambda c: (zlib.crc32(c.server.encode()), c.server))
    k = len(order)
    if k == 0:
        return ()
    step = max(1, -(-k // MAX_VARIANTS))
    return tuple((1.0, tuple((order[i:] + order[:i])[:n])) for i in range(0, k, step))


def _tiers(primary: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    return [c for c in primary if not c.backup], [c for c in primary if c.backup]


def _pick_group(groups: Sequence[list[Candidate]], healthy: bool) -> list[Candidate]:
    for g in groups:
        chosen = [c for c in g if c.usable] if healthy else list(g)
        if chosen:
            return chosen
    return []


def _arrange(policy: str, chosen: list[Candidate], n: int, healthy: bool) -> tuple[tuple[float, tuple[Candidate, ...]], ...]:
    if policy == "weighted":
        out = []
        for c in chosen:
            w = c.effective_weight if healthy else (c.weight or 1)
            if w > 0:
                out.append((float(w), (c,)))
        return tuple(out)
    if policy in ("simple", "failover"):
        return ((1.0, tuple(chosen[:n])),)
    return _rotations(chosen, n)


def select(
    policy: NamePolicy,
    pools: Mapping[str, PoolView],
    family: int,
    *,
    level_region: str | None = None,
    client_region: str | None = None,
    default_region: str | None = None,
    latency_order: Sequence[str] = (),
) -> Selection:
    """Evaluate ``policy`` for an A (``family`` 4) or AAAA (6) query.

    ``level_region`` is the region of the regional level answering (None outside maps);
    ``client_region`` and ``latency_order`` describe the client (used only by the
    geolocation and latency policies outside a regional level). Never raises for a
    missing pool: no pool means no records (NODATA), which config validation prevents.
    """
    cands = candidates(pools.get(policy.pool), family)
    if policy.policy == "failover" and policy.secondary:
        cands += candidates(pools.get(policy.secondary), family, backup_tier=True)
    if not cands:
        return Selection()
    if level_region is not None:
        here = [c for c in cands if c.region == level_region]
        if here:
            cands = here
    active, backup = _tiers(cands)
    kind = policy.policy
    used_region = used_latency = False
    if level_region is None and kind in ("geolocation", "ip"):
        used_region = True
        groups: list[list[Candidate]] = []
        for r in (client_region, default_region):
            if r is not None:
                groups += [[c for c in active if c.region == r], [c for c in backup if c.region == r]]
        groups += [active, backup]
    elif level_region is None and kind == "latency":
        used_latency = True
        groups = []
        for r in latency_order:
            groups += [[c for c in active if c.region == r], [c for c in backup if c.region == r]]
        groups += [active, backup]
    else:
        groups = [active, backup]
    chosen = _pick_group(groups, healthy=True)
    if chosen:
        return Selection(_arrange(kind, chosen, policy.max_answers, True), False, used_region, used_latency)
    if policy.fallback == "sorry":
        return Selection((), True, used_region, used_latency, fallback=True)
    chosen = _pick_group(groups, healthy=False)
    return Selection(_arrange(kind, chosen, policy.max_answers, False), False, used_region, used_latency,
                     fallback=True)
