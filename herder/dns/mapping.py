"""The Akamai-style two-level hierarchy: a mapping level in front of regional levels.

Theory of operation
-------------------
In the lecture's dig chain::

    cdn.cnn.com.                    56 IN CNAME ion-ma.turner.com.edgekey.net.
    ion-ma.turner.com.edgekey.net. 556 IN CNAME e12596.dscj.akamaiedge.net.
    e12596.dscj.akamaiedge.net.     20 IN A     23.62.97.19

the name servers of ``akamaiedge.net`` (the *top* or mapping level) look at ``(dscj,
client address)`` and delegate ``dscj.akamaiedge.net`` to the name servers of one region;
that region's name server (the *low* or regional level) picks the server, with a short
TTL. A :class:`MapDomain` is herder's ``dscj.akamaiedge.net``: a domain whose answers
depend on the client's region, in one of two modes:

``delegate`` (Akamai's)
    The domain is a zone of its own. For any name in it, the mapping level chooses the
    client's region and answers a referral -- ``NS`` records of that region's name
    servers, with glue, at the mapping TTL -- unless that region's level runs in this
    same process (it is *local*), in which case the regional answer is given directly.
    So one ``herder run`` can play every level (the client sees CNAME, CNAME, A), and
    the same config split over machines gives real referrals.

``cname``
    Each region has a subdomain ``REGION.DOMAIN``. A query for ``X.DOMAIN`` (a policy
    name) gets ``X.DOMAIN CNAME X.REGION.DOMAIN`` at the mapping TTL; ``X.REGION.DOMAIN``
    is answered by the region's level (here when local, else by a referral to the
    region's name servers).

The region is chosen from the client's region (region map, by source address or ECS),
skipping regions whose servers are all down in the map's pool: then the nearest region by
the latency table, the default region, and the remaining regions by name.

A server can also be a regional level only (``role = "region"``): it answers the domain
for its own region, whatever the client.

Pure: the functions here read a snapshot's pool views and return decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from herder.dns.policy import region_up
from herder.pool.model import frozen_map
from herder.pool.state import PoolView

__all__ = ["MODES", "ROLES", "MapDomain", "RegionServers", "choose_region"]

MODES = ("delegate", "cname")
ROLES = ("global", "region")
#: Default TTL of the mapping level's answers (the referral or the CNAME into a region).
DEFAULT_MAP_TTL = 20


@dataclass(frozen=True, slots=True)
class RegionServers:
    """A region's level as the mapping level refers to it: name servers with glue.

    ``name_servers`` pairs each name server's wire name with its addresses (text).
    """

    region: str
    name_servers: tuple[tuple[bytes, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class MapDomain:
    """One mapped domain (``[dns.maps.DOMAIN]``); see the module docstring. Compared by
    value (a reload with an unchanged map is no change); not hashable."""

    domain: bytes
    mode: str = "delegate"
    ttl: int = DEFAULT_MAP_TTL
    role: str = "global"
    #: With ``role = "region"``: the region this server answers for.
    region: str | None = None
    #: Regions whose level runs in this process; None means "those without name servers".
    local: frozenset[str] | None = None
    regions: Mapping[str, RegionServers] = field(default_factory=frozen_map)
    #: Pool whose per-region health decides whether a region can be chosen.
    pool: str | None = None

    @property
    def key(self) -> bytes:
        return self.domain.lower()

    def is_local(self, region: str) -> bool:
        """True when ``region``'s level is answered in this process."""
        if self.role == "region":
            return region == self.region
        if self.local is not None:
            return region in self.local
        rs = self.regions.get(region)
        return rs is None or not rs.name_servers

    def known_regions(self, region_map_regions: Iterable[str]) -> tuple[str, ...]:
        """Regions the map can send clients to: its own table's and the region map's."""
        return tuple(sorted(set(self.regions) | set(region_map_regions)))


def choose_region(
    m: MapDomain,
    candidates_in_order: Iterable[str | None],
    known: Iterable[str],
    pool: PoolView | None,
) -> str | None:
    """The first known region of ``candidates_in_order`` (client region, nearest by
    latency, default) whose servers in ``pool`` are up; then any known region that is up
    (by name); then the first known candidate even if down (the regional level's
    fallback decides what to answer); None if the map knows no region at all."""
    known_set = set(known)
    order = [r for r in candidates_in_order if r is not None and r in known_set]
    order += sorted(known_set)
    seen: set[str] = set()
    for r in order:
        if r in seen:
            continue
        seen.add(r)
        if region_up(pool, r):
            return r
    return order[0] if order else None
