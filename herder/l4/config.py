"""The L4 layer's native configuration: service keys, the ``[l4]`` section, specs from a config.

Native TOML (docs/l4.md)::

    [l4]
    backend = "auto"            # auto | nft | nft-cli | userspace | recording
    vip_device = "eth0"         # optional: the director adds (and at exit removes) the VIPs here

    [services.web]
    mode = "tcp"                # tcp or udp: an L4 virtual service
    listen = "198.18.0.100:80"  # the VIP and port (several allowed)
    pool = "web"
    forward = "nat"             # nat (ipvsadm -m) | dr (-g); tun (-i) is refused on this kernel
    scheduler = "wrr"           # rr | wrr | sh | dh | mh
    persistence_timeout = "300s"
    persistence_granularity = "255.255.255.0"
    on_failure = "remove"       # or "quiesce" (keepalived inhibit_on_failure)

Every ``mode = "tcp"``/``"udp"`` service becomes one :class:`VirtualServiceSpec` per
listen address (:func:`specs_from_config`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from herder.config.load import register_config_check
from herder.config.native import register_section, register_service_key
from herder.config.schema import Bool, Duration, Field, Int, Spec, Str, Table
from herder.l4.ruleset import DEFAULT_SEED, Forward, Scheduler, VirtualServiceSpec
from herder.pool.model import Service

__all__ = ["L4Settings", "SCHEDULERS", "l4_settings", "spec_for", "specs_from_config", "specs_from_services"]

log = logging.getLogger(__name__)

SCHEDULERS = tuple(s.value for s in Scheduler)
FORWARDS = {"nat": Forward.NAT, "masq": Forward.NAT, "masquerade": Forward.NAT, "dr": Forward.DR,
            "route": Forward.DR, "direct": Forward.DR, "tun": Forward.TUN, "tunnel": Forward.TUN}
BACKENDS = ("auto", "nft", "nft-cli", "userspace", "recording")


class _Netmask(Spec):
    expected = 'an IPv4 netmask such as "255.255.255.0" (or a prefix length such as 24)'

    def parse(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return self.bad(value, path, ctx)
        try:
            return str(ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask)
        except ValueError as e:
            return self.bad(value, path, ctx, str(e))


class _Prime(Spec):
    expected = "a prime table size such as 65537 (LVS mh uses 251)"

    def parse(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            return self.bad(value, path, ctx)
        if value < 3 or any(value % d == 0 for d in range(2, int(value ** 0.5) + 1)) or value > 1_000_003:
            return self.bad(value, path, ctx, "not a prime in 3..1000003")
        return value


for _key, _field in {
    "forward": Field(Str(choices=tuple(FORWARDS)), doc="L4 forwarding method: nat, dr (tun is refused)"),
    "scheduler": Field(Str(choices=SCHEDULERS), doc="L4 scheduler: rr, wrr, sh, dh, mh (default wrr)"),
    "hash_key": Field(Str(choices=("source", "flow", "destination")),
                      doc="what sh/mh hash: source address, flow (address and port); mh defaults to flow"),
    "persistence_timeout": Field(Duration(min=0), doc="L4 persistence (ipvsadm -p); 0 or absent: off"),
    "persistence_granularity": Field(_Netmask(), doc="netmask grouping clients for persistence (ipvsadm -M)"),
    "on_failure": Field(Str(choices=("remove", "quiesce")),
                        doc="a server failing its checks: removed, or quiesced (weight 0, flows continue)"),
    "device": Field(Str(pattern=r"[A-Za-z0-9_.:-]{1,15}", what="an interface name"),
                    doc="DR: the interface VIP traffic arrives on (default: the VIP's)"),
    "table_size": Field(_Prime(), doc="mh: Maglev table size, a prime (65537)"),
    "engine": Field(Str(choices=("auto", "kernel", "relay")),
                    doc="auto: as [l4] backend says; relay: always the userspace relay (a full proxy, "
                        "as HAProxy's mode tcp); kernel: always nftables"),
}.items():
    register_service_key(_key, _field)

register_section("l4", Table({
    "backend": Field(Str(choices=BACKENDS), default="auto",
                     doc="auto: nftables when root and available, else the userspace relay"),
    "table": Field(Str(pattern=r"[A-Za-z][A-Za-z0-9_]{0,24}", what="an nftables table name"), default="herder"),
    "seed": Field(Int(0, 0xFFFFFFFF), default=DEFAULT_SEED, doc="jhash seed; the same on every director"),
    "vip_device": Field(Str(pattern=r"[A-Za-z0-9_.:-]{1,15}", what="an interface name"),
                        doc="add each VIP as /32 here at start and remove it at stop"),
    "keep_on_exit": Field(Bool(), default=False, doc="leave the nftables tables in place at stop"),
    "flow_timeout_tcp": Field(Duration(min=1), default=900.0, doc="DR flow table: established TCP"),
    "flow_timeout_tcpfin": Field(Duration(min=1), default=120.0, doc="DR flow table: TCP after FIN/RST"),
    "flow_timeout_udp": Field(Duration(min=1), default=300.0, doc="DR flow table: UDP"),
}, what="the [l4] table"))


@dataclass(frozen=True, slots=True)
class L4Settings:
    """The ``[l4]`` section, with defaults."""

    backend: str = "auto"
    table: str = "herder"
    seed: int = DEFAULT_SEED
    vip_device: str | None = None
    keep_on_exit: bool = False
    flow_timeouts: tuple[int, int, int] = (900, 120, 300)


def l4_settings(section: Mapping[str, object] | None) -> L4Settings:
    """L4Settings from the parsed ``[l4]`` section (None: all defaults)."""
    if not section:
        return L4Settings()
    s = section
    return L4Settings(
        backend=str(s.get("backend") or "auto"), table=str(s.get("table") or "herder"),
        seed=int(s.get("seed") if s.get("seed") is not None else DEFAULT_SEED),  # type: ignore[arg-type]
        vip_device=s.get("vip_device") or None,  # type: ignore[arg-type]
        keep_on_exit=bool(s.get("keep_on_exit")),
        flow_timeouts=(int(s.get("flow_timeout_tcp") or 900), int(s.get("flow_timeout_tcpfin") or 120),  # type: ignore[arg-type]
                       int(s.get("flow_timeout_udp") or 300)),  # type: ignore[arg-type]
    )


def spec_for(svc: Service, host: str, port: int) -> VirtualServiceSpec:
    """The spec of one listen address of an L4 service.

    Raises:
        ValueError: naming ``services.NAME`` (a VIP that is no IPv4 address...).
    """
    s = svc.settings
    sched = Scheduler(str(s.get("scheduler") or "wrr"))
    hash_key = s.get("hash_key")
    if hash_key is None:
        hash_key = "destination" if sched is Scheduler.DH else ("flow" if sched is Scheduler.MH else "source")
    persistence = s.get("persistence_timeout") or 0
    try:
        return VirtualServiceSpec(
            name=svc.name, proto=svc.mode, vip=host, port=port, pool=svc.pool,
            forward=FORWARDS[str(s.get("forward") or "nat")], scheduler=sched, hash_key=str(hash_key),
            persistence_s=int(round(float(persistence))),  # type: ignore[arg-type]
            netmask=str(s.get("persistence_granularity") or "255.255.255.255"),
            on_failure=str(s.get("on_failure") or "remove"),
            table_size=int(s.get("table_size") or 65537),  # type: ignore[call-overload]
            ingress_device=s.get("device") or None,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise ValueError(f"services.{svc.name}: {e}") from None


def specs_from_services(services: Iterable[Service]) -> list[VirtualServiceSpec]:
    """One spec per listen address of every ``tcp``/``udp`` service.

    Raises:
        ValueError: a bad service (named), or two services on the same VIP, port and protocol.
    """
    out: list[VirtualServiceSpec] = []
    seen: dict[str, str] = {}
    for svc in services:
        if svc.mode not in ("tcp", "udp"):
            continue
        if not svc.listen:
            raise ValueError(f"services.{svc.name}: an L4 service needs `listen` (the VIP and port)")
        for ep in svc.listen:
            spec = spec_for(svc, ep.host, ep.port)
            if spec.key in seen:
                raise ValueError(f"services.{svc.name}: {spec.key} is also declared by services.{seen[spec.key]}")
            seen[spec.key] = svc.name
            out.append(spec)
    return out


def specs_from_config(config) -> list[VirtualServiceSpec]:
    """The L4 specs of a loaded :class:`~herder.config.model.Config`."""
    return specs_from_services(config.services.values())


_L4_KEYS = ("forward", "scheduler", "hash_key", "persistence_timeout", "persistence_granularity", "on_failure",
            "device", "table_size", "engine")


def _config_check(config, report) -> None:
    """`herder check` sees what only the combination of a service's keys reveals (a VIP that
    is not an IPv4 address, two services on one VIP and port, L4 keys on an HTTP service...),
    with the service's line."""
    seen: dict[str, str] = {}
    for svc in config.services.values():
        if svc.mode not in ("tcp", "udp"):
            for key in _L4_KEYS:
                if key in svc.settings:
                    report("service", svc.name, (key,), f"{key!r} applies to mode tcp or udp services, "
                                                        f"not to mode {svc.mode}")
            continue
        if not svc.listen:
            report("service", svc.name, ("listen",), "an L4 service needs `listen` (the VIP and port)")
            continue
        for ep in svc.listen:
            try:
                spec = spec_for(svc, ep.host, ep.port)
            except ValueError as e:
                report("service", svc.name, ("listen",), str(e).removeprefix(f"services.{svc.name}: "))
                continue
            if spec.key in seen:
                report("service", svc.name, ("listen",), f"{spec.key} is also declared by services.{seen[spec.key]}")
            seen.setdefault(spec.key, svc.name)


register_config_check(_config_check)
