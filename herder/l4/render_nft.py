"""Render a :class:`~herder.l4.ruleset.Ruleset` as nftables objects, and diff two renderings.

Theory of operation
-------------------
:func:`render` turns a ruleset into an :class:`NftModel`: at most two tables, both owned by
herder and named after ``Ruleset.table``:

* ``table ip <name>`` for NAT services. A ``prerouting`` (and ``output``, for clients on
  the director itself) nat chain dispatches ``VIP . protocol . port`` through the verdict
  map ``services`` to one chain per virtual service. That chain chooses a destination
  id (persistence map, else the scheduling map), stores it in the conntrack mark, counts
  the connection, and DNATs through ``dnat_to`` (id -> address . port). Only a
  connection's first packet passes nat chains; conntrack does the rest, which is why
  established connections survive any change here. A ``forward`` filter chain counts
  packets and bytes per destination in both directions, keyed by the conntrack mark.
* ``table netdev <name>_dsr`` for direct-routing services: an ingress chain per device
  dispatches the same way; the service chain finds the flow in a dynamic flow map (the
  connection table LVS and Katran keep: there is no conntrack at ingress), else
  schedules it, refreshes the flow entry, counts, and forwards with ``fwd ip to``, which
  resolves the real server's MAC and rewrites both MAC addresses.

Every scheduling hash has the ruleset's explicit seed. Maps are declared with ``typeof``
(nft 1.0.6 cannot declare integer-keyed maps in JSON, and a ``typeof jhash ...`` map makes
``nft list`` segfault, hence ``typeof numgen inc mod N`` keys looked up with jhash).

:func:`diff` turns two models into the commands of one transaction (text for
``nft -f``), touching only what changed: map elements are deleted and re-added
(``add element`` on an existing key fails with EEXIST in 1.0.6), a chain whose rules
changed is flushed and refilled, new objects are added before anything refers to them
and old ones deleted after nothing does. Dynamic maps (persistence, flows) are never
diffed: the kernel owns their elements. Maps whose declaration can change carry the
changing parameter in their name, so a declaration never changes under one name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from herder.l4.ruleset import Forward, Ruleset, Scheduler, VirtualService

__all__ = ["NftChain", "NftMap", "NftModel", "NftTable", "diff", "full_text", "render", "service_id",
           "table_names"]

_EMPTY: Mapping[str, str | None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NftMap:
    """A named set or map: its declaration body, and its static elements (key -> value,
    None for a set). ``dynamic`` maps are filled by the kernel and never diffed."""

    name: str
    decl: str
    elements: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY)
    dynamic: bool = False
    kind: str = "map"
    #: A scheduling map kept dense: slot i -> mark ``slots[i]`` (instead of ``elements``),
    #: so a 65537-slot Maglev table is diffed as two integer arrays, not two dicts.
    slots: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class NftChain:
    """A chain: ``hook`` is the base-chain spec (``type nat hook ...;``) or None."""

    name: str
    rules: tuple[str, ...] = ()
    hook: str | None = None


@dataclass(frozen=True, slots=True)
class NftTable:
    family: str
    name: str
    counters: tuple[str, ...] = ()
    maps: Mapping[str, NftMap] = field(default_factory=lambda: MappingProxyType({}))
    chains: Mapping[str, NftChain] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def spec(self) -> str:
        return f"{self.family} {self.name}"


@dataclass(frozen=True, slots=True)
class NftModel:
    """The tables herder owns, keyed by ``"family name"``."""

    tables: Mapping[str, NftTable] = field(default_factory=lambda: MappingProxyType({}))


def table_names(name: str) -> tuple[str, str]:
    """The ``family name`` of herder's NAT table and of its DR table."""
    return f"ip {name}", f"netdev {name}_dsr"


def service_id(svc: VirtualService) -> str:
    """The suffix of a service's chain and map names: ``tcp_198_18_0_100_80``."""
    s = svc.spec
    return f"{s.proto}_{s.vip.replace('.', '_')}_{s.port}"


def _ifname(dev: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", dev)


def _mark(ident: int) -> str:
    return f"0x{ident:08x}"


def _n(ident: int) -> int:
    return ident & 0xFFFFFF


def _sched_expr(svc: VirtualService, seed: int) -> str:
    s = svc.spec
    size = max(1, len(svc.table))
    if s.scheduler in (Scheduler.RR, Scheduler.WRR):
        return f"numgen inc mod {size}"
    if s.scheduler is Scheduler.DH or s.hash_key == "destination":
        key = "ip daddr"
    elif s.hash_key == "flow":
        key = f"ip saddr . {s.proto} sport"
    else:
        key = "ip saddr"
    return f"jhash {key} mod {size} seed 0x{seed:08x}"


def _persist_key(svc: VirtualService) -> str:
    s = svc.spec
    return "ip saddr" if s.prefix_len == 32 else f"ip saddr & {s.netmask}"


def _slot_map(name: str, svc: VirtualService, mark: str) -> NftMap:
    return NftMap(name, f"typeof numgen inc mod 65537 : {mark};", slots=tuple(svc.table))


def _alive_set(name: str, svc: VirtualService, mark: str) -> NftMap:
    return NftMap(name, f"typeof {mark};", MappingProxyType({_mark(d): None for d in sorted(svc.alive)}),
                  kind="set")


def _counters(dests, out: bool) -> tuple[list[str], dict[str, dict[str, str | None]]]:
    names: list[str] = []
    maps: dict[str, dict[str, str | None]] = {"conn_ctr": {}, "in_ctr": {}}
    if out:
        maps["out_ctr"] = {}
    for d in dests:
        n = _n(d.id)
        for prefix, m in (("c", "conn_ctr"), ("i", "in_ctr"), ("o", "out_ctr")):
            if m in maps:
                names.append(f"{prefix}{n}")
                maps[m][_mark(d.id)] = f'"{prefix}{n}"'
    return names, maps


def _nat_table(rs: Ruleset, services: list[VirtualService]) -> NftTable:
    name = rs.table
    dests = [d for s in services for d in s.dests]
    counters, ctr_maps = _counters(dests, out=True)
    maps: dict[str, NftMap] = {
        "dnat_to": NftMap("dnat_to", "type mark : ipv4_addr . inet_service;",
                          MappingProxyType({_mark(d.id): f"{d.address} . {d.port}" for d in dests})),
        "services": NftMap("services", "typeof ip daddr . ip protocol . tcp dport : verdict;", MappingProxyType({
            f"{s.spec.vip} . {s.spec.proto} . {s.spec.port}": f"jump s_{service_id(s)}" for s in services})),
    }
    for m, elems in ctr_maps.items():
        maps[m] = NftMap(m, "type mark : counter;", MappingProxyType(elems))
    chains: dict[str, NftChain] = {
        "prerouting": NftChain("prerouting", ("ip daddr . ip protocol . th dport vmap @services",),
                               "type nat hook prerouting priority dstnat; policy accept;"),
        "output": NftChain("output", ("ip daddr . ip protocol . th dport vmap @services",),
                           "type nat hook output priority -100; policy accept;"),
        "stats": NftChain("stats", ("ct direction original counter name ct mark map @in_ctr",
                                    "ct direction reply counter name ct mark map @out_ctr"),
                          "type filter hook forward priority filter; policy accept;"),
    }
    for svc in services:
        sid = service_id(svc)
        t, a = f"t_{sid}", f"a_{sid}"
        maps[t] = _slot_map(t, svc, "ct mark")
        sched = f"ct mark set {_sched_expr(svc, rs.seed)} map @{t}"
        rules: list[str] = []
        if svc.spec.persistence_s:
            p = f"p_{sid}_{svc.spec.persistence_s}"
            pkey = _persist_key(svc)
            maps[a] = _alive_set(a, svc, "ct mark")
            maps[p] = NftMap(p, f"typeof ip saddr : ct mark; size 65536; flags dynamic,timeout; "
                                f"timeout {svc.spec.persistence_s}s;", dynamic=True)
            rules += [f"ct mark set {pkey} map @{p}", f"ct mark != @{a} {sched}",
                      f"update @{p} {{ {pkey} : ct mark }}"]
        else:
            rules.append(sched)
        rules.append(f"meta l4proto {svc.spec.proto} counter name ct mark map @conn_ctr dnat ip to ct mark map @dnat_to")
        chains[f"s_{sid}"] = NftChain(f"s_{sid}", tuple(rules))
    return NftTable("ip", name, tuple(counters), MappingProxyType(maps), MappingProxyType(chains))


def _dr_table(rs: Ruleset, services: list[VirtualService]) -> NftTable:
    dests = [d for s in services for d in s.dests]
    counters, ctr_maps = _counters(dests, out=False)
    tcp_t, fin_t, udp_t = rs.flow_timeouts
    maps: dict[str, NftMap] = {
        "fwd_to": NftMap("fwd_to", "typeof meta mark : ip daddr;",
                         MappingProxyType({_mark(d.id): d.address for d in dests})),
        "services": NftMap("services", "typeof ip daddr . ip protocol . tcp dport : verdict;", MappingProxyType({
            f"{s.spec.vip} . {s.spec.proto} . {s.spec.port}": f"jump s_{service_id(s)}" for s in services})),
    }
    for m, elems in ctr_maps.items():
        maps[m] = NftMap(m, "type mark : counter;", MappingProxyType(elems))
    chains: dict[str, NftChain] = {}
    for dev in sorted({s.spec.ingress_device or "" for s in services}):
        if not dev:
            continue
        chains[f"in_{_ifname(dev)}"] = NftChain(
            f"in_{_ifname(dev)}", ("ip daddr . ip protocol . th dport vmap @services",),
            f'type filter hook ingress device "{dev}" priority 0; policy accept;')
    for svc in services:
        s = svc.spec
        sid = service_id(svc)
        t, a = f"t_{sid}", f"a_{sid}"
        timeout = tcp_t if s.proto == "tcp" else udp_t
        f = f"f_{sid}_{timeout}"
        fkey = f"ip saddr . {s.proto} sport"
        maps[t] = _slot_map(t, svc, "meta mark")
        maps[a] = _alive_set(a, svc, "meta mark")
        maps[f] = NftMap(f, f"typeof ip saddr . {s.proto} sport : meta mark; size 262144; "
                            f"flags dynamic,timeout; timeout {timeout}s;", dynamic=True)
        rules = [f"meta mark set {fkey} map @{f}"]
        if s.persistence_s:
            p = f"p_{sid}_{s.persistence_s}"
            pkey = _persist_key(svc)
            maps[p] = NftMap(p, f"typeof ip saddr : meta mark; size 65536; flags dynamic,timeout; "
                                f"timeout {s.persistence_s}s;", dynamic=True)
            rules.append(f"meta mark != @{a} meta mark set {pkey} map @{p}")
        rules.append(f"meta mark != @{a} meta mark set {_sched_expr(svc, rs.seed)} map @{t} "
                     f"counter name meta mark map @conn_ctr")
        if s.persistence_s:
            rules.append(f"update @{p} {{ {pkey} : meta mark }}")
        if s.proto == "tcp":
            rules.append(f"tcp flags & (fin | rst) == 0 update @{f} {{ {fkey} : meta mark }}")
            rules.append(f"tcp flags & (fin | rst) != 0 update @{f} {{ {fkey} timeout {fin_t}s : meta mark }}")
        else:
            rules.append(f"update @{f} {{ {fkey} : meta mark }}")
        egress = s.egress_device or s.ingress_device
        rules.append(f'counter name meta mark map @in_ctr fwd ip to meta mark map @fwd_to device "{egress}"')
        chains[f"s_{sid}"] = NftChain(f"s_{sid}", tuple(rules))
    _, dr_name = table_names(rs.table)
    return NftTable("netdev", dr_name.split()[1], tuple(counters), MappingProxyType(maps), MappingProxyType(chains))


def render(rs: Ruleset) -> NftModel:
    """The nftables objects of ``rs`` (no table for a kind of service that is absent).

    Raises:
        ValueError: a DR service without an ingress device, or a TUN service (not
            supported: this kernel family has no IPIP support built in, and nftables
            cannot encapsulate).
    """
    nat = [s for s in rs.services if s.spec.forward is Forward.NAT]
    dr = [s for s in rs.services if s.spec.forward is Forward.DR]
    tun = [s for s in rs.services if s.spec.forward is Forward.TUN]
    if tun:
        raise ValueError(f"{tun[0].key}: tunnelling (ipvsadm -i) is not supported by the nftables "
                         "director; use NAT (-m) or direct routing (-g)")
    for s in dr:
        if not s.spec.ingress_device:
            raise ValueError(f"{s.key}: direct routing needs the device the VIP traffic arrives on")
    tables: dict[str, NftTable] = {}
    if nat:
        t = _nat_table(rs, nat)
        tables[t.spec] = t
    if dr:
        t = _dr_table(rs, dr)
        tables[t.spec] = t
    return NftModel(MappingProxyType(tables))


# --------------------------------------------------------------------------- text


def _elements(items: list[str], chunk: int = 4096) -> list[str]:
    return [", ".join(items[i:i + chunk]) for i in range(0, len(items), chunk)]


def _elem_text(k: str, v: str | None) -> str:
    return k if v is None else f"{k} : {v}"


def _slot_items(slots: tuple[int, ...], idx) -> list[str]:
    return [f"{i} : {_mark(slots[i])}" for i in idx]


def _add_map(t: NftTable, m: NftMap, out: list[str]) -> None:
    out.append(f"add {m.kind} {t.spec} {m.name} {{ {m.decl} }}")
    if m.slots:
        for part in _elements(_slot_items(m.slots, range(len(m.slots)))):
            out.append(f"add element {t.spec} {m.name} {{ {part} }}")
    elif m.elements and not m.dynamic:
        for part in _elements([_elem_text(k, v) for k, v in m.elements.items()]):
            out.append(f"add element {t.spec} {m.name} {{ {part} }}")


def _add_chain(t: NftTable, c: NftChain, out: list[str]) -> None:
    if c.hook:
        out.append(f"add chain {t.spec} {c.name} {{ {c.hook} }}")
    else:
        out.append(f"add chain {t.spec} {c.name}")


def _slot_diff(t: NftTable, n: str, old: tuple[int, ...], new: tuple[int, ...], dels: list[str],
               adds: list[str]) -> None:
    """Delete and re-add only the slots whose destination changed (numpy compare)."""
    a = np.asarray(old, dtype=np.int64)
    b = np.asarray(new, dtype=np.int64)
    k = min(len(a), len(b))
    changed = np.flatnonzero(a[:k] != b[:k])
    gone = np.concatenate((changed, np.arange(k, len(a)))).tolist()
    added = np.concatenate((changed, np.arange(k, len(b)))).tolist()
    for part in _elements([str(i) for i in gone]):
        dels.append(f"delete element {t.spec} {n} {{ {part} }}")
    for part in _elements(_slot_items(new, added)):
        adds.append(f"add element {t.spec} {n} {{ {part} }}")


def _table_diff(old: NftTable | None, new: NftTable | None, head: list[str], tail: list[str]) -> None:
    """Commands turning ``old`` into ``new`` (either may be None), in dependency order."""
    if new is None:
        if old is not None:
            tail.append(f"delete table {old.spec}")
        return
    t = new
    o_counters = set(old.counters) if old else set()
    o_maps: Mapping[str, NftMap] = old.maps if old else {}
    o_chains: Mapping[str, NftChain] = old.chains if old else {}
    if old is None:
        head.append(f"add table {t.spec}")
    # 1. new counters, empty chains, then maps (a verdict map's elements jump to chains)
    for c in t.counters:
        if c not in o_counters:
            head.append(f"add counter {t.spec} {c}")
    changed_decl = {n for n, m in t.maps.items() if n in o_maps and (o_maps[n].decl != m.decl
                                                                     or o_maps[n].kind != m.kind)}
    if changed_decl:
        raise ValueError(f"map declaration changed under the same name: {', '.join(sorted(changed_decl))}")
    for n, c in t.chains.items():
        if n not in o_chains:
            _add_chain(t, c, head)
    for n, m in t.maps.items():
        if n not in o_maps:
            _add_map(t, m, head)
    # 2. element changes of existing static maps: deletions, then additions
    # (verdict maps first delete their jumps to chains about to go, and may jump to new ones)
    dels: list[str] = []
    adds: list[str] = []
    for n, m in t.maps.items():
        om = o_maps.get(n)
        if om is None or m.dynamic:
            continue
        if m.slots is not None and om.slots is not None:
            _slot_diff(t, n, om.slots, m.slots, dels, adds)
            continue
        gone = [k for k in om.elements if k not in m.elements or om.elements[k] != m.elements[k]]
        new_items = [_elem_text(k, v) for k, v in m.elements.items()
                     if k not in om.elements or om.elements[k] != v]
        for part in _elements(gone):
            dels.append(f"delete element {t.spec} {n} {{ {part} }}")
        for part in _elements(new_items):
            adds.append(f"add element {t.spec} {n} {{ {part} }}")
    head.extend(dels)
    head.extend(adds)
    # 3. rules of new and changed chains
    for n, c in t.chains.items():
        oc = o_chains.get(n)
        if oc is not None and oc.rules == c.rules:
            continue
        if oc is not None:
            head.append(f"flush chain {t.spec} {n}")
        for r in c.rules:
            head.append(f"add rule {t.spec} {n} {r}")
    # 4. objects nothing refers to any more: chains, maps, then counters
    for n in o_chains:
        if n not in t.chains:
            tail.append(f"flush chain {t.spec} {n}")
    for n in o_chains:
        if n not in t.chains:
            tail.append(f"delete chain {t.spec} {n}")
    for n, m in o_maps.items():
        if n not in t.maps:
            tail.append(f"delete {m.kind} {t.spec} {n}")
    for c in o_counters:
        if c not in t.counters:
            tail.append(f"delete counter {t.spec} {c}")


def diff(old: NftModel | None, new: NftModel, *, owned: tuple[str, ...] = ()) -> list[str]:
    """The commands of one transaction that turn ``old`` into ``new``.

    With ``old`` None (nothing known about the kernel: the first apply), every table in
    ``owned`` (``family name`` strings) and in ``new`` is replaced: created if missing,
    deleted, recreated. That is also how a stale table of an earlier run is cleaned up.
    Returns an empty list when nothing changed.
    """
    head: list[str] = []
    tail: list[str] = []
    if old is None:
        for spec in sorted(set(owned) | set(new.tables)):
            head.append(f"add table {spec}")
            head.append(f"delete table {spec}")
        for t in new.tables.values():
            _table_diff(None, t, head, tail)
        return head + tail
    for spec in sorted(set(old.tables) | set(new.tables)):
        _table_diff(old.tables.get(spec), new.tables.get(spec), head, tail)
    return head + tail


def full_text(model: NftModel) -> str:
    """The whole model as one ``nft -f`` file that replaces herder's tables."""
    return "\n".join(diff(None, model)) + "\n"
