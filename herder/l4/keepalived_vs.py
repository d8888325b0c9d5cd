"""keepalived.conf ``virtual_server`` / ``real_server`` blocks as herder L4 services.

The keepalived.conf importer (:mod:`herder.ha.keepalived_conf`, the VRRP layer's) parses
the file into statements and hands every top-level ``virtual_server`` and
``virtual_server_group`` statement to the handler this module registers with
``register_block_handler``: :func:`read_virtual_server`. It can also be called directly:

    read_virtual_server(stmt, loader)

where ``stmt`` is the block (``stmt.words``, ``stmt.line``, ``stmt.block``: the
statements inside) and ``loader`` has ``frag`` (the :class:`~herder.config.model.Fragment`
the pools and services are added to), ``ctx``, ``lines`` (a LineMap) and
``err(line, keyword, message)``.

Mapping (docs/l4.md has the table): ``virtual_server VIP PORT`` becomes a service and a
pool named ``tcp-VIP-PORT`` (``udp-`` with ``protocol UDP``); ``lb_algo`` the scheduler
(rr wrr sh dh mh), ``lb_kind`` the forwarding method (NAT, DR; TUN is refused),
``persistence_timeout``/``persistence_granularity`` the persistence, ``sorry_server`` a
backup server, ``real_server IP PORT`` a server with its ``weight``;
``inhibit_on_failure`` quiesces instead of removing a failed server. The checks map to
herder's probes: ``TCP_CHECK`` -> ``tcp``, ``HTTP_GET`` -> ``http`` (``url { path;
status_code }``, ``virtualhost`` as the Host), ``MISC_CHECK`` -> ``exec``
(``misc_path``); ``delay_loop`` is the interval, ``connect_timeout``/``misc_timeout``
the timeout, ``retry`` (``nb_get_retry``) the failures before DOWN, ``connect_port`` the
port. herder checks a pool with one set of checks, so the real servers of one
virtual server must carry the same checks. Without ``alpha`` servers start UP, as in
keepalived. Every other keyword is an error naming its line.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from herder.config.schema import INVALID, Ctx
from herder.pool.model import Endpoint, HealthState, Pool, Server, Service, frozen_map

__all__ = ["read_virtual_server"]

log = logging.getLogger(__name__)

ALGOS = ("rr", "wrr", "sh", "dh", "mh")
NO_EFFECT_VS = {"quorum", "quorum_up", "quorum_down", "hysteresis", "ha_suspend", "omega", "retry",
                "delay_before_retry", "warmup"}
CHECKS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "MISC_CHECK": "exec"}


def _ip(text: str) -> str:
    addr = ipaddress.ip_address(text)
    if addr.version != 4:
        raise ValueError(f"{text}: only IPv4 is supported by herder's L4 director")
    return str(addr)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} (1..65535)")
    return int(text)


def _num(st: Any) -> float:
    if len(st.args) != 1:
        raise ValueError(f"{st.keyword} needs one value")
    try:
        return float(st.args[0])
    except ValueError:
        raise ValueError(f"{st.keyword}: {st.args[0]!r} is not a number") from None


def _check(st: Any, loader: Any) -> dict[str, Any] | None:
    """The raw herder check table of a TCP_CHECK / HTTP_GET / MISC_CHECK block."""
    kind = CHECKS[st.keyword]
    raw: dict[str, Any] = {"type": kind}
    for s in st.block or ():
        if not s.words:
            continue
        kw = s.keyword
        try:
            if kw in ("connect_timeout", "misc_timeout"):
                raw["timeout"] = _num(s)
            elif kw in ("retry", "nb_get_retry"):
                raw["fall"] = max(1, int(_num(s)))
            elif kw == "connect_port":
                raw["port"] = _port(s.args[0] if s.args else "")
            elif kw == "connect_ip":
                raw["addr"] = _ip(s.args[0] if s.args else "")
            elif kw in ("delay_before_retry", "warmup", "bindto", "bind_port", "connect_timeout_ms"):
                pass  # accepted, no effect: herder retries on its own interval
            elif kw == "url" and kind == "http":
                for u in s.block or ():
                    if u.keyword == "path":
                        raw["path"] = u.args[0]
                    elif u.keyword == "status_code":
                        raw["expect_status"] = int(u.args[0]) if u.args[0].isdigit() else u.args[0]
                    elif u.keyword == "digest":
                        raise ValueError("url digest is not supported; check status_code instead")
                    elif u.words:
                        raise ValueError(f"url {u.keyword} is not supported")
            elif kw == "misc_path" and kind == "exec":
                raw["command"] = " ".join(s.args)
            elif kw == "misc_dynamic":
                raise ValueError("misc_dynamic (weights from exit codes) is not supported")
            else:
                raise ValueError(f"{st.keyword} {kw} is not supported")
        except (ValueError, IndexError) as e:
            loader.err(s.line, kw, str(e))
            return None
    if kind == "exec" and "command" not in raw:
        loader.err(st.line, st.keyword, "MISC_CHECK needs misc_path")
        return None
    return raw


def read_virtual_server(stmt: Any, loader: Any) -> None:
    """Read one ``virtual_server`` block into ``loader.frag`` (see the module docstring).

    Errors go to ``loader.err(line, keyword, message)``; a virtual server with an error
    adds nothing.
    """
    kw = stmt.keyword
    if kw != "virtual_server":
        loader.err(stmt.line, kw, f"{kw} is not supported; declare each virtual_server on its own")
        return
    if len(stmt.args) == 2 and stmt.args[0] in ("fwmark", "group"):
        loader.err(stmt.line, kw, f"virtual_server {stmt.args[0]} is not supported; use virtual_server IP PORT")
        return
    if len(stmt.args) != 2 or stmt.block is None:
        loader.err(stmt.line, kw, "expected virtual_server IP PORT { ... }")
        return
    try:
        vip, port = _ip(stmt.args[0]), _port(stmt.args[1])
    except ValueError as e:
        loader.err(stmt.line, kw, str(e))
        return
    ok = True
    settings: dict[str, Any] = {"forward": "nat", "scheduler": "wrr"}
    proto = "tcp"
    inter: float | None = None
    alpha = False
    virtualhost: str | None = None
    servers: list[Server] = []
    checks: list[tuple[int, dict[str, Any] | None]] = []
    quiesce: set[bool] = set()
    for s in stmt.block:
        k = s.keyword
        if not s.words:
            continue
        try:
            if k == "lb_algo":
                if not s.args or s.args[0] not in ALGOS:
                    raise ValueError(f"lb_algo {' '.join(s.args)!r}: herder's kernel path has {', '.join(ALGOS)} "
                                     "(the connection-counting schedulers need state nftables does not keep)")
                settings["scheduler"] = s.args[0]
            elif k == "lb_kind":
                kind = (s.args[0] if s.args else "").upper()
                if kind == "TUN":
                    raise ValueError("lb_kind TUN is not supported: this kernel has no IPIP; use NAT or DR")
                if kind not in ("NAT", "DR"):
                    raise ValueError(f"lb_kind {kind!r}: expected NAT or DR")
                settings["forward"] = kind.lower()
            elif k == "protocol":
                p = (s.args[0] if s.args else "").upper()
                if p not in ("TCP", "UDP"):
                    raise ValueError(f"protocol {p!r}: expected TCP or UDP")
                proto = p.lower()
            elif k == "persistence_timeout":
                settings["persistence_timeout"] = _num(s)
            elif k == "persistence_granularity":
                settings["persistence_granularity"] = str(ipaddress.IPv4Network(f"0.0.0.0/{s.args[0]}").netmask)
            elif k == "delay_loop":
                inter = _num(s)
            elif k == "alpha":
                alpha = True
            elif k == "virtualhost":
                virtualhost = s.args[0]
            elif k == "inhibit_on_failure":
                quiesce.add(True)
            elif k == "sorry_server":
                if len(s.args) != 2:
                    raise ValueError("expected sorry_server IP PORT")
                servers.append(Server("sorry", Endpoint(_ip(s.args[0]), _port(s.args[1])), 1, backup=True,
                                      meta=frozen_map({"check": False})))
            elif k == "real_server":
                srv, chk, inhibit = _real_server(s, loader)
                if srv is None:
                    ok = False
                    continue
                servers.append(srv)
                checks.append((s.line, chk))
                quiesce.add(inhibit)
            elif k in NO_EFFECT_VS:
                pass
            else:
                raise ValueError(f"unsupported virtual_server keyword {k!r}")
        except (ValueError, IndexError) as e:
            loader.err(s.line, k, str(e))
            ok = False
    kinds = {repr(c) for _, c in checks}
    if len(kinds) > 1:
        loader.err(checks[1][0], "real_server", "real servers of one virtual_server with different checks are "
                                                "not supported: herder checks a pool with one set of checks")
        ok = False
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        loader.err(stmt.line, kw, "the same real_server IP PORT appears twice")
        ok = False
    if not ok:
        return
    if True in quiesce:
        settings["on_failure"] = "quiesce"
    name = f"{proto}-{vip}-{port}"
    pool_checks: tuple = ()
    raw = checks[0][1] if checks else None
    if raw is not None:
        from herder.config import native

        raw = dict(raw)
        if inter is not None:
            raw.setdefault("inter", inter)
        raw.setdefault("rise", 1)
        if raw["type"] == "http" and virtualhost:
            raw["host"] = virtualhost
        sub = Ctx(loader.ctx.file)
        parsed = native._check_types[raw["type"]].parse(raw, (), sub)
        if parsed is INVALID:
            for e in sub.errors:
                loader.err(checks[0][0], "real_server", f"check: {e.key}: {e.message}")
            return
        pool_checks = (frozen_map(parsed),)
    pool = Pool(name, tuple(servers), balance=settings["scheduler"], checks=pool_checks,
                settings=frozen_map({"initial_state": HealthState.DOWN if alpha else HealthState.UP}))
    frag = loader.frag
    if name in frag.pools:
        loader.err(stmt.line, kw, f"virtual_server {vip} {port} ({proto}) is declared twice")
        return
    frag.pools[name] = pool
    frag.services[name] = Service(name, name, proto, (Endpoint(vip, port),), frozen_map(settings))
    for key, path in ((("pool", name), ("pools", name)), (("service", name), ("services", name))):
        loader.lines.record(path, stmt.line)
        frag.where[key] = (loader.ctx, path)
        frag.declared.add(key)
    loader.ctx.lines = loader.lines


def _real_server(st: Any, loader: Any) -> tuple[Server | None, dict[str, Any] | None, bool]:
    if len(st.args) != 2:
        loader.err(st.line, "real_server", "expected real_server IP PORT { ... }")
        return None, None, False
    try:
        ep = Endpoint(_ip(st.args[0]), _port(st.args[1]))
    except ValueError as e:
        loader.err(st.line, "real_server", str(e))
        return None, None, False
    weight = 1
    check: dict[str, Any] | None = None
    inhibit = False
    for s in st.block or ():
        if not s.words:
            continue
        k = s.keyword
        if k == "weight":
            if len(s.args) != 1 or not s.args[0].isdigit() or int(s.args[0]) > 65535:
                loader.err(s.line, k, f"weight {' '.join(s.args)!r}: expected 0..65535")
                return None, None, False
            weight = int(s.args[0])
        elif k == "inhibit_on_failure":
            inhibit = True
        elif k in CHECKS:
            if check is not None:
                loader.err(s.line, k, "one check per real_server (herder combines checks per pool)")
                return None, None, False
            check = _check(s, loader)
            if check is None:
                return None, None, False
        elif k in ("SSL_GET", "SMTP_CHECK", "DNS_CHECK", "BFD_CHECK", "FILE_CHECK", "PING_CHECK", "UDP_CHECK"):
            loader.err(s.line, k, f"{k} is not supported (TCP_CHECK, HTTP_GET and MISC_CHECK are)")
            return None, None, False
        elif k in ("notify_up", "notify_down", "uthreshold", "lthreshold", "delay_before_retry"):
            loader.err(s.line, k, f"real_server {k} is not supported")
            return None, None, False
        else:
            loader.err(s.line, k, f"unsupported real_server keyword {k!r}")
            return None, None, False
    meta = frozen_map({"check": check is not None})
    return Server(f"{ep.host}:{ep.port}", ep, weight, meta=meta), check, inhibit


def _register() -> None:
    try:
        from herder.ha.keepalived_conf import register_block_handler
    except ImportError:  # the keepalived importer is not there: nothing reads the blocks
        log.debug("herder.ha.keepalived_conf not available; virtual_server blocks are not read")
        return
    register_block_handler("virtual_server", read_virtual_server)
    register_block_handler("virtual_server_group", read_virtual_server)


_register()
