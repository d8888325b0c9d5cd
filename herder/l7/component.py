"""The L7 layer's place in herder: its config keys and its runtime component.

Native TOML (docs/l7.md)::

    [services.www]
    pool = "web"
    mode = "http"
    listen = "127.0.0.1:8080"
    forwardfor = true            # or { header = "X-Client-IP", except = ["127.0.0.0/8"] }
    http_mode = "keep-alive"     # keep-alive | server-close | close (HAProxy option httpclose)
    timeout_client = "30s"

    [pools.web]
    balance = "roundrobin"
    cookie = { name = "JSESSIONID", mode = "prefix" }
    retries = 3
    redispatch = true

    [[pools.web.servers]]
    name = "webA"
    address = "127.0.0.1:18081"
    cookie = "A"

Every ``mode = "http"`` service with listeners becomes one :class:`HttpProxy`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from herder.config.native import register_pool_key, register_server_key, register_service_key
from herder.config.schema import (
    INVALID,
    Bool,
    Cidr,
    Duration,
    Field,
    Int,
    ListOf,
    MapOf,
    OneOf,
    Str,
    Table,
)
from herder.l7.core.acl import AclError, Routing, parse_acl, parse_condition
from herder.l7.core.cookie import CookiePolicy
from herder.l7.proxy import HttpProxy, PoolSettings, ProxySettings
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

log = logging.getLogger(__name__)

HTTP_MODES = ("keep-alive", "server-close", "close")

_FORWARDFOR_TABLE = Table({
    "header": Field(Str(pattern=r"[A-Za-z0-9-]+", what="a header name"), default="X-Forwarded-For"),
    "except": Field(ListOf(Cidr(), single_ok=True), default=()),
}, what="a forwardfor table")

FORWARDFOR = OneOf(
    ((lambda v: isinstance(v, bool), Bool()), (lambda v: isinstance(v, dict), _FORWARDFOR_TABLE)),
    expected="true, false, or a table { header = ..., except = [...] }",
)

COOKIE = Table({
    "name": Field(Str(pattern=r"[A-Za-z0-9_.!#$%&'*+^`|~-]+", what="a cookie name"), required=True),
    "mode": Field(Str(choices=("insert", "rewrite", "prefix")), default="insert"),
    "indirect": Field(Bool(), default=False),
    "nocache": Field(Bool(), default=False),
    "preserve": Field(Bool(), default=False),
    "httponly": Field(Bool(), default=False),
    "secure": Field(Bool(), default=False),
    "domain": Field(Str(what="a cookie domain")),
}, what="a cookie table")



def _build_acl(v: dict, path, ctx):
    args = (["-i"] if v["ignore_case"] else []) + list(v["values"])
    try:
        return parse_acl(str(path[-1]), v["criterion"], args)
    except AclError as e:
        ctx.error(path, str(e))
        return INVALID


def _build_rule(v: dict, path, ctx):
    if (v["if"] is None) == (v["unless"] is None):
        ctx.error(path, "give exactly one of `if` or `unless`")
        return INVALID
    return v


def _build_routing(v: dict, path, ctx):
    acls = v["acl"]
    rules = []
    ok = True
    for i, r in enumerate(v["use"]):
        words = ["if", *r["if"].split()] if r["if"] is not None else ["unless", *r["unless"].split()]
        try:
            rules.append((parse_condition(words, acls), r["pool"]))
        except AclError as e:
            ctx.error((*path, "use", i), str(e))
            ok = False
    return Routing(tuple(rules)) if ok else INVALID


ROUTING = Table({
    "acl": Field(MapOf(Table({
        "criterion": Field(Str(what="an ACL criterion (src, path_beg, hdr(host), method...)"), required=True),
        "values": Field(ListOf(Str(), min_len=1, single_ok=True), required=True),
        "ignore_case": Field(Bool(), default=False),
    }, build=_build_acl, what="an ACL table")), default={}),
    "use": Field(ListOf(Table({
        "pool": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a pool name"), required=True),
        "if": Field(Str(what="a condition such as \"is_api || !is_web\"")),
        "unless": Field(Str(what="a condition")),
    }, build=_build_rule, what="a routing rule")), default=()),
}, build=_build_routing, what="a routing table")

for _key, _field in {
    "routing": Field(ROUTING, doc="ACLs and use_pool rules (HAProxy acl / use_backend)"),
    "forwardfor": Field(FORWARDFOR, doc="add X-Forwarded-For (HAProxy option forwardfor)"),
    "http_mode": Field(Str(choices=HTTP_MODES), doc="keep-alive, server-close or close"),
    "timeout_client": Field(Duration(), doc="idle client timeout (30s)"),
    "timeout_http_request": Field(Duration(), doc="time to receive a complete request head (10s)"),
    "timeout_http_keep_alive": Field(Duration(), doc="idle time between two requests (10s)"),
    "maxconn": Field(Int(1, 1_000_000), doc="concurrent client connections"),
}.items():
    register_service_key(_key, _field)

for _key, _field in {
    "cookie": Field(COOKIE, doc="cookie persistence (HAProxy cookie)"),
    "retries": Field(Int(0, 100), doc="connection retries (3)"),
    "redispatch": Field(Bool(), doc="retry on another server (HAProxy option redispatch)"),
    "timeout_connect": Field(Duration(), doc="connect timeout (5s)"),
    "timeout_server": Field(Duration(), doc="server inactivity timeout (30s)"),
    "forwardfor": Field(FORWARDFOR),
    "http_mode": Field(Str(choices=HTTP_MODES)),
}.items():
    register_pool_key(_key, _field)

register_server_key("cookie", Field(Str(what="a cookie value"), doc="value of the persistence cookie"))


def _forwardfor(value) -> tuple[bool, bytes, tuple]:
    if value is None or value is False:
        return False, b"X-Forwarded-For", ()
    if value is True:
        return True, b"X-Forwarded-For", ()
    return True, value["header"].encode(), tuple(value["except"])


def pool_settings(settings) -> PoolSettings:
    """PoolSettings from a pool's ``settings`` mapping (native or imported config)."""
    ff, hdr, exc = _forwardfor(settings.get("forwardfor"))
    c = settings.get("cookie")
    cookie = None
    if c:
        cookie = CookiePolicy(
            name=c["name"].encode(), mode=c.get("mode", "insert"), indirect=c.get("indirect", False),
            nocache=c.get("nocache", False), preserve=c.get("preserve", False),
            httponly=c.get("httponly", False), secure=c.get("secure", False),
            domain=c["domain"].encode() if c.get("domain") else None,
        )
    return PoolSettings(
        cookie=cookie,
        retries=settings.get("retries", 3),
        redispatch=settings.get("redispatch", False),
        timeout_connect=settings.get("timeout_connect", 5.0),
        timeout_server=settings.get("timeout_server", 30.0),
        forwardfor=ff, forwardfor_header=hdr, forwardfor_except=exc,
        http_mode=settings.get("http_mode", "keep-alive"),
    )


def proxy_settings(service, pools) -> ProxySettings:
    s = service.settings
    ff, hdr, exc = _forwardfor(s.get("forwardfor"))
    routing = s.get("routing")
    wanted = {service.pool, *(routing.pools if routing is not None else ())} - {""}
    return ProxySettings(
        listen=service.listen,
        pool=service.pool,
        timeout_client=s.get("timeout_client", 30.0),
        timeout_http_request=s.get("timeout_http_request", 10.0),
        timeout_http_keep_alive=s.get("timeout_http_keep_alive", 10.0),
        forwardfor=ff, forwardfor_header=hdr, forwardfor_except=exc,
        http_mode=s.get("http_mode", "keep-alive"),
        maxconn=s.get("maxconn", 10000),
        routing=routing,
        pools={p: pool_settings(pools[p].settings) for p in wanted if p in pools},
    )


def _factory(rt: Runtime) -> list[HttpProxy]:
    out = []
    report = _passive_reporter(rt)
    for svc in rt.config.services.values():
        if svc.mode != "http" or not svc.listen:
            continue
        out.append(HttpProxy(svc.name, proxy_settings(svc, rt.config.pools), rt.pool_state, report))
    return out


def _passive_reporter(rt: Runtime):
    """Where the proxy's per-server errors go: the health engine's passive detector."""
    def report(pool: str, server: str, ok: bool, why: str) -> None:
        obs = getattr(rt, "passive_health", None)
        if obs is not None:
            obs(pool, server, ok, why)
        elif not ok:
            log.debug("pool %s: server %s: %s", pool, server, why)
    return report


register_component("l7", _factory, order=50)

__all__ = ["pool_settings", "proxy_settings"]
