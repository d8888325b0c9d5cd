"""``herder ipvsadm``: the ipvsadm command language over herder's nftables director.

Theory of operation
-------------------
ipvsadm edits the kernel's IPVS table one command at a time and prints it back. This
kernel has no IPVS, so herder keeps the table itself: :class:`IpvsTable` (virtual
services with their real servers, as ipvsadm declared them) is stored per network
namespace in :func:`herder.l4.director.state_dir`, together with the ruleset last
applied. Every command that changes the table is turned into a new ruleset
(:func:`herder.l4.plan.plan` over a pool state built from the table), diffed against the
applied one and applied in one nftables transaction; the stored table changes only if
the kernel took the update, so a refused update leaves both as they were. ``-R``
applies a whole file in one transaction.

Supported: ``-A/-E/-D`` (``-t``/``-u``, ``-s``, ``-p [timeout]``, ``-M``, ``-b``),
``-a/-e/-d`` (``-r``, ``-m``/``-g``/``-i``, ``-w``), ``-C``, ``-Z``, ``-L``/``-l`` (``-n``,
``--stats``, ``--rate``, ``-c``, ``--exact``), ``-S``, ``-R``; combined short flags
(``-Ln``). Output is ipvsadm's layout: the same header, columns and widths, services
and destinations sorted as ipvsadm sorts them. Addresses are always printed numerically
(herder does no reverse DNS lookups). Firewall-mark services (``-f``), thresholds
(``-x``/``-y``), IPv6, and the connection-counting schedulers (``lc``, ``wlc``, ``sed``,
``nq``, ``lblc``...) are refused with a message, except that ``-A`` without ``-s``
(ipvsadm's default ``wlc``) uses ``wrr`` and says so.

When ``herder run`` directs L4 services in this namespace, ``-L``/``-S`` show its table
and the changing commands are refused: the running configuration owns the table.

The parsing, the table model and the formatting are pure functions (tested without
root); :func:`main` does the I/O.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TextIO

from herder.config.errors import ConfigError
from herder.config.load import Importer, register_importer
from herder.config.model import Fragment
from herder.config.schema import Ctx
from herder.l4.ruleset import (
    Forward,
    Ruleset,
    Scheduler,
    VirtualServiceSpec,
    ruleset_from_json,
    ruleset_to_json,
)
from herder.pool.model import Endpoint, Pool, Server, Service, frozen_map
from herder.pool.state import PoolState

__all__ = [
    "Command",
    "IpvsDest",
    "IpvsError",
    "IpvsService",
    "IpvsTable",
    "format_list",
    "format_save",
    "load_ipvsadm_rules",
    "main",
    "parse_args",
    "parse_rules",
]

log = logging.getLogger(__name__)

VERSION_LINE = "IP Virtual Server version 1.2.1 (size=4096)"
DEFAULT_PERSISTENCE = 300
SUPPORTED_SCHEDULERS = tuple(s.value for s in Scheduler)
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
SCHED_FLAGS = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
FLAG_ALIASES = {"flag-1": 0, "flag-2": 1}


class IpvsError(ValueError):
    """A command ipvsadm would refuse (the message says why, as ipvsadm would)."""


# --------------------------------------------------------------------------- table model


@dataclass
class IpvsDest:
    """A real server of a virtual service."""

    address: str
    port: int
    forward: Forward = Forward.DR
    weight: int = 1


@dataclass
class IpvsService:
    """A virtual service as ipvsadm declares it."""

    proto: str
    vip: str
    port: int
    scheduler: str = "wlc"
    persistent: int | None = None
    netmask: str = "255.255.255.255"
    flags: tuple[str, ...] = ()
    dests: list[IpvsDest] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.proto}:{self.vip}:{self.port}"

    @property
    def name(self) -> str:
        """herder's name for the service and its pool: ``tcp-192.168.0.1-80``."""
        return f"{self.proto}-{self.vip}-{self.port}"

    def dest(self, address: str, port: int) -> IpvsDest | None:
        for d in self.dests:
            if d.address == address and d.port == port:
                return d
        return None


def _sort_key_service(s: IpvsService) -> tuple:
    return (6 if s.proto == "tcp" else 17, int(ipaddress.IPv4Address(s.vip)), s.port)


def _sort_key_dest(d: IpvsDest) -> tuple:
    return (int(ipaddress.IPv4Address(d.address)), d.port)


@dataclass
class IpvsTable:
    """The virtual services ipvsadm commands built (in insertion order)."""

    services: list[IpvsService] = field(default_factory=list)

    def find(self, proto: str, vip: str, port: int) -> IpvsService | None:
        for s in self.services:
            if s.proto == proto and s.vip == vip and s.port == port:
                return s
        return None

    def sorted(self) -> list[IpvsService]:
        return sorted(self.services, key=_sort_key_service)

    def copy(self) -> IpvsTable:
        return IpvsTable([replace(s, dests=[replace(d) for d in s.dests]) for s in self.services])

    # ---------------------------------------------------------------- commands

    def apply(self, cmd: Command) -> None:
        """Apply one changing command (``A E D a e d C``). Raises IpvsError."""
        op = cmd.op
        if op == "C":
            self.services.clear()
            return
        if op in ("A", "E", "D", "a", "e", "d") and cmd.vip is None:
            raise IpvsError("Service address required (-t or -u)")
        svc = self.find(cmd.proto, cmd.vip, cmd.port)  # type: ignore[arg-type]
        if op == "A":
            if svc is not None:
                raise IpvsError("Service already exists")
            self.services.append(IpvsService(
                cmd.proto, cmd.vip, cmd.port, cmd.scheduler or "wlc",  # type: ignore[arg-type]
                cmd.persistent, cmd.netmask or "255.255.255.255", cmd.flags or ()))
            return
        if svc is None:
            raise IpvsError("No such service")
        if op == "E":
            if cmd.scheduler is not None:
                svc.scheduler = cmd.scheduler
            svc.persistent = cmd.persistent
            if cmd.netmask is not None:
                svc.netmask = cmd.netmask
            if cmd.flags is not None:
                svc.flags = cmd.flags
        elif op == "D":
            self.services.remove(svc)
        else:
            if cmd.rip is None:
                raise IpvsError("Real server address required (-r)")
            rport = cmd.rport if cmd.rport is not None else svc.port
            d = svc.dest(cmd.rip, rport)
            if op == "a":
                if d is not None:
                    raise IpvsError("Destination already exists")
                svc.dests.append(IpvsDest(cmd.rip, rport, cmd.forward or Forward.DR,
                                          cmd.weight if cmd.weight is not None else 1))
            elif d is None:
                raise IpvsError("No such destination")
            elif op == "e":
                if cmd.forward is not None:
                    d.forward = cmd.forward
                if cmd.weight is not None:
                    d.weight = cmd.weight
            else:
                svc.dests.remove(d)

    # ---------------------------------------------------------------- to herder

    def pools_and_specs(self, devices: dict[str, tuple[str | None, str | None]] | None = None) -> tuple[
            list[Pool], list[VirtualServiceSpec]]:
        """herder's pools and virtual-service specs for this table.

        ``devices`` maps a service key to its DR (ingress, egress) devices.

        Raises:
            IpvsError: a service mixes forwarding methods, uses tunnelling, or a scheduler
                the kernel path does not have.
        """
        pools: list[Pool] = []
        specs: list[VirtualServiceSpec] = []
        for s in self.services:
            fwds = {d.forward for d in s.dests}
            if len(fwds) > 1:
                raise IpvsError(f"{s.key}: real servers with different forwarding methods in one service "
                                "are not supported (herder programs one method per virtual service)")
            fwd = fwds.pop() if fwds else Forward.NAT
            if fwd is Forward.TUN:
                raise IpvsError("tunnelling (-i) is not supported: this kernel has no IPIP and nftables cannot "
                                "encapsulate; use -m (NAT) or -g (direct routing)")
            sched = _kernel_scheduler(s.scheduler)
            servers = tuple(Server(f"{d.address}:{d.port}", Endpoint(d.address, d.port), d.weight) for d in s.dests)
            pools.append(Pool(s.name, servers, balance=sched.value))
            port_flag = f"{sched.value}-port" in s.flags
            hash_key = "destination" if sched is Scheduler.DH else ("flow" if port_flag else "source")
            ing, eg = (devices or {}).get(s.key, (None, None))
            specs.append(VirtualServiceSpec(
                name=s.name, proto=s.proto, vip=s.vip, port=s.port, pool=s.name, forward=fwd, scheduler=sched,
                hash_key=hash_key, persistence_s=s.persistent or 0, netmask=s.netmask,
                on_failure="quiesce", ingress_device=ing, egress_device=eg, flags=s.flags))
        return pools, specs

    def to_json(self) -> list[dict[str, Any]]:
        return [{"proto": s.proto, "vip": s.vip, "port": s.port, "scheduler": s.scheduler,
                 "persistent": s.persistent, "netmask": s.netmask, "flags": list(s.flags),
                 "dests": [{"address": d.address, "port": d.port, "forward": d.forward.value, "weight": d.weight}
                           for d in s.dests]} for s in self.services]

    @classmethod
    def from_json(cls, data: Iterable[dict[str, Any]]) -> IpvsTable:
        return cls([IpvsService(s["proto"], s["vip"], int(s["port"]), s["scheduler"], s.get("persistent"),
                                s.get("netmask", "255.255.255.255"), tuple(s.get("flags", ())),
                                [IpvsDest(d["address"], int(d["port"]), Forward(d["forward"]), int(d["weight"]))
                                 for d in s.get("dests", ())]) for s in data])


def _kernel_scheduler(name: str) -> Scheduler:
    try:
        return Scheduler(name)
    except ValueError:
        raise IpvsError(f"scheduler {name!r} is not available in herder's kernel path (it needs connection "
                        f"counts nftables does not keep); use one of {', '.join(SUPPORTED_SCHEDULERS)}") from None


# --------------------------------------------------------------------------- parsing


@dataclass
class Command:
    """One parsed ipvsadm command line."""

    op: str
    proto: str = "tcp"
    vip: str | None = None
    port: int = 0
    scheduler: str | None = None
    persistent: int | None = None
    netmask: str | None = None
    flags: tuple[str, ...] | None = None
    rip: str | None = None
    rport: int | None = None
    forward: Forward | None = None
    weight: int | None = None
    numeric: bool = False
    stats: bool = False
    rate: bool = False
    conns: bool = False
    exact: bool = False
    notes: tuple[str, ...] = ()


_OPS = {"-A": "A", "--add-service": "A", "-E": "E", "--edit-service": "E", "-D": "D", "--delete-service": "D",
        "-C": "C", "--clear": "C", "-R": "R", "--restore": "R", "-S": "S", "--save": "S", "-a": "a",
        "--add-server": "a", "-e": "e", "--edit-server": "e", "-d": "d", "--delete-server": "d", "-L": "L",
        "-l": "L", "--list": "L", "-Z": "Z", "--zero": "Z", "-h": "h", "--help": "h", "-v": "v", "--version": "v"}
_NOARG = {"-n": "numeric", "--numeric": "numeric", "-c": "conns", "--connection": "conns", "--stats": "stats",
          "--rate": "rate", "--exact": "exact", "-X": "exact"}
_FWD = {"-g": Forward.DR, "--gatewaying": Forward.DR, "-m": Forward.NAT, "--masquerading": Forward.NAT,
        "-i": Forward.TUN, "--ipip": Forward.TUN}
_WITHARG = {"-t", "--tcp-service", "-u", "--udp-service", "-f", "--fwmark-service", "-s", "--scheduler", "-M",
            "--netmask", "-b", "--sched-flags", "-r", "--real-server", "-w", "--weight", "-x", "--u-threshold",
            "-y", "--l-threshold", "--tun-type", "--pe", "-O"}
_SHORT_NOARG = {"L", "l", "n", "c", "g", "m", "i", "C", "S", "Z", "h", "v", "X"}


def _expand(argv: Sequence[str]) -> list[str]:
    """Split combined short flags: ``-Ln`` -> ``-L -n``."""
    out: list[str] = []
    for a in argv:
        if re.fullmatch(r"-[A-Za-z]{2,}", a) and all(c in _SHORT_NOARG for c in a[1:]):
            out.extend(f"-{c}" for c in a[1:])
        else:
            out.append(a)
    return out


def _ipv4(text: str, what: str) -> str:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise IpvsError(f"illegal {what} address: {text!r} (an IPv4 address; herder does not resolve names)") from None
    if addr.version != 4:
        raise IpvsError(f"illegal {what} address: {text}: IPv6 is not supported by herder's L4 director")
    return str(addr)


def _port(text: str, proto: str, what: str) -> int:
    if text.isdigit():
        p = int(text)
    else:
        try:
            p = socket.getservbyname(text, proto)
        except OSError:
            raise IpvsError(f"illegal {what} port: {text!r}") from None
    if not 0 < p < 65536:
        raise IpvsError(f"illegal {what} port: {text} (1..65535)")
    return p


def _addrport(text: str, proto: str, what: str, need_port: bool) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    addr = _ipv4(host, what)
    if not port:
        if need_port:
            raise IpvsError(f"{what} port required in {text!r} (ADDRESS:PORT)")
        return addr, None
    return addr, _port(port, proto, what)


def parse_args(argv: Sequence[str]) -> Command:
    """Parse one ipvsadm command line (without the program name).

    Raises:
        IpvsError: an unknown option, a missing or bad argument, an unsupported feature.
    """
    args = _expand(argv)
    if args and args[0] == "ipvsadm":
        args = args[1:]
    op: str | None = None
    cmd = Command(op="")
    notes: list[str] = []
    service_text: tuple[str, str] | None = None
    real_text: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if "=" in a and a.startswith("--"):
            a, val = a.split("=", 1)
            args[i + 1:i + 1] = [val]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a in _OPS:
            if op is not None and _OPS[a] != op:
                raise IpvsError(f"only one command at a time ({a} after -{op})")
            op = _OPS[a]
        elif a in _NOARG:
            setattr(cmd, _NOARG[a], True)
        elif a in _FWD:
            cmd.forward = _FWD[a]
        elif a in ("-p", "--persistent"):
            if nxt is not None and nxt.isdigit():
                cmd.persistent = int(nxt)
                i += 1
            else:
                cmd.persistent = DEFAULT_PERSISTENCE
            if not 1 <= cmd.persistent <= 31 * 86400:
                raise IpvsError(f"illegal timeout for persistent service: {cmd.persistent}")
        elif a in _WITHARG:
            if nxt is None:
                raise IpvsError(f"option {a} needs an argument")
            i += 1
            if a in ("-t", "--tcp-service"):
                service_text = ("tcp", nxt)
            elif a in ("-u", "--udp-service"):
                service_text = ("udp", nxt)
            elif a in ("-f", "--fwmark-service"):
                raise IpvsError("firewall-mark services (-f) are not supported; use -t or -u")
            elif a in ("-s", "--scheduler"):
                if nxt not in IPVS_SCHEDULERS:
                    raise IpvsError(f"unknown scheduler {nxt!r}; herder's kernel path has "
                                    f"{', '.join(SUPPORTED_SCHEDULERS)}")
                _kernel_scheduler(nxt)
                cmd.scheduler = nxt
            elif a in ("-M", "--netmask"):
                try:
                    cmd.netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{nxt}").netmask)
                except ValueError:
                    raise IpvsError(f"illegal virtual server netmask: {nxt}") from None
            elif a in ("-b", "--sched-flags"):
                cmd.flags = tuple(f.strip() for f in nxt.split(",") if f.strip())
            elif a in ("-r", "--real-server"):
                real_text = nxt
            elif a in ("-w", "--weight"):
                if not nxt.isdigit() or int(nxt) > 65535:
                    raise IpvsError(f"illegal weight specified: {nxt} (0..65535)")
                cmd.weight = int(nxt)
            elif a in ("-x", "--u-threshold", "-y", "--l-threshold"):
                raise IpvsError("connection thresholds (-x, -y) are not supported by herder's kernel path")
            else:
                raise IpvsError(f"option {a} is not supported by herder")
        else:
            raise IpvsError(f"unknown option {a!r}")
        i += 1
    if op is None:
        if cmd.numeric or cmd.stats or cmd.rate or cmd.conns or not args:
            op = "L"
        else:
            raise IpvsError("no command given (-A, -E, -D, -a, -e, -d, -C, -L, -S, -R, -Z)")
    cmd.op = op
    if service_text is not None:
        cmd.proto = service_text[0]
        vip, port = _addrport(service_text[1], cmd.proto, "virtual", need_port=True)
        cmd.vip, cmd.port = vip, port or 0
    if real_text is not None:
        cmd.rip, cmd.rport = _addrport(real_text, cmd.proto, "real server", need_port=False)
    if op in ("A", "E", "D", "a", "e", "d") and cmd.vip is None:
        raise IpvsError("Service address required: -t ADDRESS:PORT or -u ADDRESS:PORT")
    if op in ("a", "e", "d") and cmd.rip is None:
        raise IpvsError("real server required: -r ADDRESS[:PORT]")
    if op == "A" and cmd.scheduler is None:
        cmd.scheduler = "wrr"
        notes.append("no -s given: ipvsadm's default wlc counts connections, which herder's kernel path does "
                     "not; using wrr")
    if cmd.netmask is not None and cmd.persistent is None and op in ("A", "E"):
        raise IpvsError("-M (netmask) only applies to persistent services (-p)")
    if cmd.flags:
        allowed = SCHED_FLAGS.get(cmd.scheduler or "", ())
        for f in cmd.flags:
            if f not in allowed:
                raise IpvsError(f"scheduler flag {f!r} does not apply to scheduler {cmd.scheduler or '(none)'}"
                                + (f"; it takes {', '.join(allowed)}" if allowed else ""))
    if cmd.forward is Forward.TUN and op in ("a", "e"):
        raise IpvsError("tunnelling (-i) is not supported: this kernel has no IPIP and nftables cannot "
                        "encapsulate; use -m (NAT) or -g (direct routing)")
    cmd.notes = tuple(notes)
    return cmd


def parse_rules(text: str) -> list[tuple[int, Command]]:
    """Parse a rules file (``ipvsadm -S`` output, or ``ipvsadm ...`` lines) into commands.

    Blank lines and ``#`` comments are skipped. Raises IpvsError naming the line.
    """
    out: list[tuple[int, Command]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            cmd = parse_args(line.split())
        except IpvsError as e:
            raise IpvsError(f"line {n}: {e}") from None
        if cmd.op not in ("A", "E", "D", "a", "e", "d", "C"):
            raise IpvsError(f"line {n}: -{cmd.op} cannot be restored (only -A -E -D -a -e -d -C)")
        out.append((n, cmd))
    return out


# --------------------------------------------------------------------------- formatting


@dataclass(frozen=True, slots=True)
class DestStats:
    """Counters of one destination (or a service total)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    active: int = 0
    inactive: int = 0


def _largenum(n: int, exact: bool) -> str:
    if exact:
        s = str(n)
        return f"{n:>{9 if len(s) <= 8 else len(s) + 1}}"
    if n < 100_000_000:
        return f"{n:9d}"
    for limit, div, unit in ((10**9, 10**3, "K"), (10**11, 10**6, "M"), (10**14, 10**9, "G")):
        if n < limit:
            return f"{n // div:8d}{unit}"
    return f"{n // 1_000_000_000_000:8d}T"


def _svc_name(s: IpvsService) -> str:
    return f"{s.proto.upper()}  {s.vip}:{s.port}"


def _sched_flags_text(s: IpvsService) -> str:
    flags = [f for f in s.flags if f in SCHED_FLAGS.get(s.scheduler, ())]
    return f" ({','.join(flags)})" if flags else ""


def format_list(table: IpvsTable, *, stats: dict[tuple[str, str, int], DestStats] | None = None,
                mode: str = "list", exact: bool = False,
                rates: dict[tuple[str, str, int], tuple[int, int, int, int, int]] | None = None,
                only: str | None = None) -> str:
    """``ipvsadm -L -n`` output (``mode``: ``list``, ``stats`` or ``rate``).

    ``stats`` is keyed by (service key, real address, real port); a service's totals are
    the sums over its destinations. ``rates`` values are (cps, inpps, outpps, inbps,
    outbps). ``only`` restricts the listing to one service key (``-L -t VIP:PORT``).
    """
    stats = stats or {}
    rates = rates or {}
    lines: list[str] = []
    if only is None:
        lines.append(VERSION_LINE)
    if mode == "stats":
        lines.append(f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} {'InBytes':>8} "
                     f"{'OutBytes':>8}")
        lines.append("  -> RemoteAddress:Port")
    elif mode == "rate":
        lines.append(f"{'Prot LocalAddress:Port':<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8} {'InBPS':>8} "
                     f"{'OutBPS':>8}")
        lines.append("  -> RemoteAddress:Port")
    else:
        lines.append("Prot LocalAddress:Port Scheduler Flags")
        lines.append("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")
    for s in table.sorted():
        if only is not None and s.key != only:
            continue
        dests = sorted(s.dests, key=_sort_key_dest)
        name = _svc_name(s)[:33]
        if mode == "stats":
            tot = [0] * 5
            for d in dests:
                st = stats.get((s.key, d.address, d.port), DestStats())
                for i, v in enumerate((st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes)):
                    tot[i] += v
            lines.append(f"{name:<33}" + "".join(_largenum(v, exact) for v in tot))
        elif mode == "rate":
            tot = [0] * 5
            for d in dests:
                for i, v in enumerate(rates.get((s.key, d.address, d.port), (0, 0, 0, 0, 0))):
                    tot[i] += v
            lines.append(f"{name:<33} {tot[0]:8d} {tot[1]:8d} {tot[2]:8d}" + _largenum(tot[3], exact)
                         + _largenum(tot[4], exact))
        else:
            line = f"{_svc_name(s)} {s.scheduler}{_sched_flags_text(s)}"
            if s.persistent:
                line += f" persistent {s.persistent}"
                if s.netmask != "255.255.255.255":
                    line += f" mask {s.netmask}"
            lines.append(line)
        for d in dests:
            dname = f"{d.address}:{d.port}"[:28]
            st = stats.get((s.key, d.address, d.port), DestStats())
            if mode == "stats":
                lines.append(f"  -> {dname:<28}" + "".join(_largenum(v, exact) for v in
                                                          (st.conns, st.inpkts, st.outpkts, st.inbytes,
                                                           st.outbytes)))
            elif mode == "rate":
                r = rates.get((s.key, d.address, d.port), (0, 0, 0, 0, 0))
                lines.append(f"  -> {dname:<28} {r[0]:8d} {r[1]:8d} {r[2]:8d}" + _largenum(r[3], exact)
                             + _largenum(r[4], exact))
            else:
                lines.append(f"  -> {dname:<28} {d.forward.ipvs_name:<7} {d.weight:<6d} {st.active:<10d} "
                             f"{st.inactive:<10d}")
    return "\n".join(lines) + "\n"


def format_save(table: IpvsTable) -> str:
    """``ipvsadm -S -n`` output: one ``-A`` line per service, one ``-a`` line per server."""
    lines: list[str] = []
    for s in table.sorted():
        sw = "-t" if s.proto == "tcp" else "-u"
        line = f"-A {sw} {s.vip}:{s.port} -s {s.scheduler}"
        flags = [f for f in s.flags if f in SCHED_FLAGS.get(s.scheduler, ())]
        if flags:
            line += f" -b {','.join(flags)}"
        if s.persistent:
            line += f" -p {s.persistent}"
            if s.netmask != "255.255.255.255":
                line += f" -M {s.netmask}"
        lines.append(line)
        for d in sorted(s.dests, key=_sort_key_dest):
            lines.append(f"-a {sw} {s.vip}:{s.port} -r {d.address}:{d.port} {d.forward.ipvs_switch} -w {d.weight}")
    return "\n".join(lines) + ("\n" if lines else "")


_CT_STATES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
              "LAST_ACK", "LISTEN", "SYNACK")


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One connection for ``-L -c``."""

    proto: str
    expire_s: int
    state: str
    source: str
    virtual: str
    destination: str


def format_connections(entries: Iterable[ConnEntry]) -> str:
    """``ipvsadm -L -n -c`` output."""
    lines = ["IPVS connection entries",
             f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18}"]
    for e in entries:
        m, s = divmod(max(0, e.expire_s), 60)
        lines.append(f"{e.proto.upper():<3} {m:02d}:{s:02d}  {e.state:<11} {e.source:<18} {e.virtual:<18} "
                     f"{e.destination}")
    return "\n".join(lines) + "\n"


def table_from_ruleset(rs: Ruleset) -> IpvsTable:
    """The ipvsadm view of a director's ruleset (effective weights, quiesced at 0)."""
    out = IpvsTable()
    for vs in rs.services:
        s = vs.spec
        flags = tuple(s.flags)
        if s.hash_key == "flow" and s.scheduler in (Scheduler.SH, Scheduler.MH) and not flags:
            flags = (f"{s.scheduler.value}-port",)
        out.services.append(IpvsService(
            s.proto, s.vip, s.port, s.scheduler.value, s.persistence_s or None, s.netmask, flags,
            [IpvsDest(d.address, d.port, d.forward, d.weight) for d in vs.dests]))
    return out


# --------------------------------------------------------------------------- importer


def load_ipvsadm_rules(path: str, text: str, ctx: Ctx) -> Fragment:
    """The ipvsadm-rules importer: ``ipvsadm -S`` output (or ``ipvsadm`` command lines) as
    herder pools and ``tcp``/``udp`` services, each error with its line."""
    frag = Fragment(ctx=ctx, format="ipvsadm")
    table = IpvsTable()
    lines_of: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            cmd = parse_args(line.split())
            if cmd.op not in ("A", "E", "D", "a", "e", "d", "C"):
                raise IpvsError(f"-{cmd.op} is not a rule (only -A -E -D -a -e -d -C)")
            table.apply(cmd)
            if cmd.op == "A":
                lines_of[f"{cmd.proto}:{cmd.vip}:{cmd.port}"] = n
        except IpvsError as e:
            ctx.errors.append(ConfigError(path, n, line.split()[0] if line.split() else "", str(e)))
    for s in table.services:
        line = lines_of.get(s.key)
        try:
            pools, specs = IpvsTable([s]).pools_and_specs()
        except IpvsError as e:
            ctx.errors.append(ConfigError(path, line, "-A", str(e)))
            continue
        pool, spec = pools[0], specs[0]
        settings = {"forward": spec.forward.value, "scheduler": spec.scheduler.value, "hash_key": spec.hash_key,
                    "on_failure": "quiesce"}
        if spec.persistence_s:
            settings["persistence_timeout"] = float(spec.persistence_s)
            settings["persistence_granularity"] = spec.netmask
        frag.pools[s.name] = pool
        frag.services[s.name] = Service(s.name, s.name, s.proto, (Endpoint(s.vip, s.port),), frozen_map(settings))
        for key in (("pool", s.name), ("service", s.name)):
            frag.declared.add(key)
        ctx.lines.record(("pools", s.name), line or 1)
        ctx.lines.record(("services", s.name), line or 1)
        frag.where[("pool", s.name)] = (ctx, ("pools", s.name))
        frag.where[("service", s.name)] = (ctx, ("services", s.name))
    return frag


def _detect(path: str, text: str) -> bool:
    base = os.path.basename(path)
    if base.endswith((".ipvsadm", ".ipvs")) or base in ("ipvsadm.rules", "ipvsadm"):
        return True
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    return bool(re.match(r"(ipvsadm\s+)?-[AaC]\b", first))


register_importer(Importer("ipvsadm", _detect, load_ipvsadm_rules,
                           "ipvsadm rules (ipvsadm -S output; *.ipvsadm, ipvsadm.rules)"))


# --------------------------------------------------------------------------- I/O


class _Store:
    """The table and the applied ruleset of this namespace, in the state directory."""

    def __init__(self) -> None:
        from herder.l4.director import state_dir

        self.dir = state_dir()
        self.path = self.dir / "ipvsadm.json"

    def load(self) -> tuple[IpvsTable, Ruleset | None]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return IpvsTable(), None
        except (OSError, ValueError) as e:
            raise IpvsError(f"cannot read {self.path}: {e}") from None
        rs = ruleset_from_json(data["ruleset"]) if data.get("ruleset") else None
        return IpvsTable.from_json(data.get("table", ())), rs

    def remove(self) -> None:
        try:
            self.path.unlink()
            self.dir.rmdir()
        except OSError:
            pass

    def save(self, table: IpvsTable, rs: Ruleset | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps({"table": table.to_json(),
                                   "ruleset": ruleset_to_json(rs, tables=True) if rs else None}))
        tmp.replace(self.path)


def _resolve(table: IpvsTable) -> dict[str, tuple[str | None, str | None]]:
    from herder.l4.director import resolve_devices

    out: dict[str, tuple[str | None, str | None]] = {}
    for s in table.services:
        if s.dests and all(d.forward is Forward.DR for d in s.dests):
            spec = VirtualServiceSpec(s.name, s.proto, s.vip, s.port, s.name, forward=Forward.DR)
            try:
                r = resolve_devices(spec, [d.address for d in s.dests])
            except ValueError as e:
                raise IpvsError(str(e)) from None
            out[s.key] = (r.ingress_device, r.egress_device)
    return out


def commit(table: IpvsTable, previous: Ruleset | None, backend=None) -> Ruleset:
    """Plan ``table`` and apply the difference to ``previous`` in one transaction.

    Raises:
        IpvsError: the table cannot be programmed, or nftables refused the update
            (nothing changed).
    """
    from herder.l4.apply_nft import Applier, ApplyError, NftError, default_backend
    from herder.l4.plan import plan
    from herder.l4.render_nft import render

    pools, specs = table.pools_and_specs(_resolve(table))
    ps = PoolState()
    ps.load(pools)
    rs = plan(ps.snapshot, specs, previous=previous)
    try:
        be = backend or default_backend()
    except NftError as e:
        raise IpvsError(str(e)) from None
    applier = Applier(be)
    if previous is not None:
        # Diff against the stored ruleset only if the kernel still has its tables (the
        # namespace may be new, or somebody flushed the ruleset): else replace them.
        try:
            model = render(previous)
            have = {f"{t['table']['family']} {t['table']['name']}"
                    for t in be.list_json("tables").get("nftables", ()) if "table" in t}
            applier.model = model if set(model.tables) <= have else None
        except (ValueError, NftError):
            applier.model = None
    try:
        applier.apply(rs)
    except ApplyError as e:
        raise IpvsError(str(e)) from None
    finally:
        if backend is None:
            be.close()
    return rs


def _counters(rs: Ruleset) -> dict[str, tuple[int, int]]:
    """Named counter -> (packets, bytes), from herder's tables (empty when unreadable)."""
    from herder.l4.apply_nft import NftError, default_backend
    from herder.l4.render_nft import render

    out: dict[str, tuple[int, int]] = {}
    try:
        model = render(rs)
        be = default_backend()
    except (ValueError, NftError):
        return out
    try:
        for spec in model.tables:
            try:
                data = be.list_json(f"counters table {spec}")
            except NftError:
                continue
            for item in data.get("nftables", ()):
                c = item.get("counter")
                if c:
                    out[f"{spec}/{c['name']}"] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
    finally:
        be.close()
    return out


def _conntrack() -> list[dict[str, str]]:
    """conntrack entries of this namespace as dicts (empty without the conntrack tool)."""
    from herder import proc

    try:
        res = proc.run_sync(["conntrack", "-L"], timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for line in res.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        e: dict[str, str] = {"proto": parts[0], "timeout": parts[2]}
        if parts[3].isupper():
            e["state"] = parts[3]
        seen: dict[str, int] = {}
        for p in parts:
            if "=" in p:
                k, v = p.split("=", 1)
                seen[k] = seen.get(k, 0) + 1
                e[f"{k}{seen[k]}"] = v
        out.append(e)
    return out


class FlowEntry(NamedTuple):
    """One DR flow-table entry."""

    service: str
    source: str
    sport: int
    timeout: int | None
    expires_s: int
    mark: int


def _flow_entries(rs: Ruleset) -> list[FlowEntry]:
    """DR flow-table entries (an element timeout marks a flow after FIN/RST)."""
    from herder.l4.apply_nft import NftError, default_backend
    from herder.l4.render_nft import render, service_id

    out: list[FlowEntry] = []
    try:
        model = render(rs)
        be = default_backend()
    except (ValueError, NftError):
        return out
    try:
        for spec, t in model.tables.items():
            if not spec.startswith("netdev"):
                continue
            for vs in rs.services:
                sid = service_id(vs)
                for name, m in t.maps.items():
                    if not (m.dynamic and name.startswith(f"f_{sid}_")):
                        continue
                    try:
                        data = be.list_json(f"map {spec} {name}")
                    except NftError:
                        continue
                    for item in data.get("nftables", ()):
                        for el in (item.get("map") or {}).get("elem", ()):
                            key, val = el
                            meta = key.get("elem", {}) if isinstance(key, dict) else {}
                            k = meta.get("val", key)
                            conc = k.get("concat") if isinstance(k, dict) else None
                            if not conc:
                                continue
                            mark = int(val, 0) if isinstance(val, str) else int(val)
                            out.append(FlowEntry(vs.key, str(conc[0]), int(conc[1]), meta.get("timeout"),
                                                 int(meta.get("expires", 0) or 0), mark))
    finally:
        be.close()
    return out


def gather_stats(rs: Ruleset) -> dict[tuple[str, str, int], DestStats]:
    """Counters and connection counts of every destination of a programmed ruleset."""
    from herder.l4.render_nft import table_names

    ctr = _counters(rs)
    nat_t, dr_t = table_names(rs.table)
    active: dict[int, int] = {}
    inactive: dict[int, int] = {}
    if any(vs.spec.forward is Forward.NAT for vs in rs.services):
        for e in _conntrack():
            mark = int(e.get("mark1", "0") or 0)
            if mark:
                if e.get("state") == "ESTABLISHED":
                    active[mark] = active.get(mark, 0) + 1
                else:
                    inactive[mark] = inactive.get(mark, 0) + 1
    for f in _flow_entries(rs):
        if f.timeout is None:
            active[f.mark] = active.get(f.mark, 0) + 1
        else:
            inactive[f.mark] = inactive.get(f.mark, 0) + 1
    out: dict[tuple[str, str, int], DestStats] = {}
    for vs in rs.services:
        t = nat_t if vs.spec.forward is Forward.NAT else dr_t
        for d in vs.dests:
            n = d.id & 0xFFFFFF
            c = ctr.get(f"{t}/c{n}", (0, 0))
            i = ctr.get(f"{t}/i{n}", (0, 0))
            o = ctr.get(f"{t}/o{n}", (0, 0))
            out[(vs.key, d.address, d.port)] = DestStats(c[0], i[0], o[0], i[1], o[1], active.get(d.id, 0),
                                                         inactive.get(d.id, 0))
    return out


def connections(rs: Ruleset) -> list[ConnEntry]:
    """Every connection of herder's virtual services (conntrack for NAT, flow tables for DR)."""
    by_id = {d.id: d for d in rs.dests}
    out: list[ConnEntry] = []
    for e in _conntrack():
        mark = int(e.get("mark1", "0") or 0)
        d = by_id.get(mark)
        if d is None:
            continue
        vs = rs.service(d.service)
        if vs is None:
            continue
        state = e.get("state", "UDP" if e["proto"] == "udp" else "NONE")
        out.append(ConnEntry(e["proto"], int(e["timeout"]) if e["timeout"].isdigit() else 0, state,
                             f"{e.get('src1')}:{e.get('sport1')}", f"{vs.spec.vip}:{vs.spec.port}",
                             f"{d.address}:{d.port}"))
    for f in _flow_entries(rs):
        d = by_id.get(f.mark)
        vs = rs.service(f.service)
        if d is None or vs is None:
            continue
        state = "UDP" if vs.spec.proto == "udp" else ("ESTABLISHED" if f.timeout is None else "FIN_WAIT")
        out.append(ConnEntry(vs.spec.proto, f.expires_s, state, f"{f.source}:{f.sport}",
                             f"{vs.spec.vip}:{vs.spec.port}", f"{d.address}:{d.port}"))
    return out


def _rates(rs: Ruleset, interval: float) -> dict[tuple[str, str, int], tuple[int, int, int, int, int]]:
    a = gather_stats(rs)
    time.sleep(interval)
    b = gather_stats(rs)
    out = {}
    for k, y in b.items():
        x = a.get(k, DestStats())
        out[k] = tuple(int(round((yv - xv) / interval)) for yv, xv in (
            (y.conns, x.conns), (y.inpkts, x.inpkts), (y.outpkts, x.outpkts), (y.inbytes, x.inbytes),
            (y.outbytes, x.outbytes)))
    return out  # type: ignore[return-value]


USAGE = """\
herder ipvsadm: the ipvsadm command language, programmed into nftables.

  herder ipvsadm -A|-E -t|-u VIP:PORT [-s SCHED] [-b FLAGS] [-p [TIMEOUT]] [-M NETMASK]
  herder ipvsadm -D -t|-u VIP:PORT
  herder ipvsadm -C
  herder ipvsadm -R < RULES             (one transaction for the whole file)
  herder ipvsadm -S [-n]
  herder ipvsadm -a|-e -t|-u VIP:PORT -r RIP[:PORT] [-m|-g] [-w WEIGHT]
  herder ipvsadm -d -t|-u VIP:PORT -r RIP[:PORT]
  herder ipvsadm -L|-l [-t|-u VIP:PORT] [-n] [--stats|--rate|-c] [--exact]
  herder ipvsadm -Z

Schedulers: rr wrr sh dh mh. Forwarding: -m (NAT), -g (direct routing; the default, as in
ipvsadm). -i (tunnelling), -f, -x/-y and IPv6 are not supported. See docs/l4.md.

examples (the lecture's three lines, addresses changed):
  herder ipvsadm -A -t 198.18.0.100:80 -s rr
  herder ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.11:80 -m
  herder ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.12:80 -m
  herder ipvsadm -L -n
"""


def main(argv: Sequence[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run one ipvsadm command in this network namespace; the exit status."""
    from herder.l4.director import read_director_state

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    quiet = logging.getLogger("herder.l4")
    if not quiet.handlers:
        # errors reach the user once, as this command's own message
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    try:
        cmd = parse_args(list(argv))
    except IpvsError as e:
        print(f"herder ipvsadm: {e}", file=err)
        return 2
    for note in cmd.notes:
        print(f"herder ipvsadm: {note}", file=err)
    if cmd.op == "h":
        out.write(USAGE)
        return 0
    if cmd.op == "v":
        print("ipvsadm v1.31 (herder, nftables)", file=out)
        return 0
    director = read_director_state()
    store = _Store()
    try:
        if director is not None:
            rs = ruleset_from_json(director["ruleset"])
            table = table_from_ruleset(rs)
            if cmd.op not in ("L", "S"):
                print(f"herder ipvsadm: the L4 table of this namespace belongs to herder run (pid "
                      f"{director['pid']}); change its configuration instead", file=err)
                return 1
        else:
            table, rs = store.load()
        if cmd.op == "L":
            only = f"{cmd.proto}:{cmd.vip}:{cmd.port}" if cmd.vip else None
            if only is not None and table.find(cmd.proto, cmd.vip, cmd.port) is None:  # type: ignore[arg-type]
                print("herder ipvsadm: No such service", file=err)
                return 1
            if cmd.conns:
                out.write(format_connections(connections(rs) if rs else []))
            elif cmd.rate:
                out.write(format_list(table, mode="rate", rates=_rates(rs, 1.0) if rs else {}, exact=cmd.exact,
                                      only=only))
            else:
                out.write(format_list(table, stats=gather_stats(rs) if rs else {},
                                      mode="stats" if cmd.stats else "list", exact=cmd.exact, only=only))
            return 0
        if cmd.op == "S":
            out.write(format_save(table))
            return 0
        if cmd.op == "Z":
            if rs is not None:
                from herder.l4.apply_nft import default_backend
                from herder.l4.render_nft import render

                be = default_backend()
                try:
                    for spec in render(rs).tables:
                        be.list_json(f"reset counters table {spec}")
                finally:
                    be.close()
            return 0
        new = table.copy()
        if cmd.op == "R":
            text = (stdin or sys.stdin).read()
            for _, c in parse_rules(text):
                new.apply(c)
        else:
            new.apply(cmd)
        new_rs = commit(new, rs)
        if new.services:
            store.save(new, new_rs)
        else:
            store.remove()
        for p in new_rs.problems:
            print(f"herder ipvsadm: note: {p}", file=err)
        return 0
    except IpvsError as e:
        print(f"herder ipvsadm: {e}", file=err)
        return 1
    except OSError as e:
        print(f"herder ipvsadm: {e}", file=err)
        return 1
