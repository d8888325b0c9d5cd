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

Every ``mode = "http"`` service with listeners becomes one :class:`HttpProxy`, kept in
step with the pool state by :class:`L7Component`: a reload (SIGHUP) that adds, removes or
changes a service, or changes the proxy settings of a pool it uses, applies without a
restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from herder.api.server import add_route
from herder.config.native import (
    register_pool_key,
    register_server_key,
    register_service_check,
    register_service_key,
)
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
from herder.l7.core.cache import CachePolicy
from herder.l7.core.cookie import CookiePolicy
from herder.l7.core.rules import REDIRECT_CODES, HttpRule
from herder.l7.proxy import HttpProxy, PoolSettings, ProxySettings, RateLimit
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
    return Routing(tuple(rules), dict(acls)) if ok else INVALID


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

HTTP_ACTIONS = ("allow", "deny", "redirect", "set-header", "add-header", "del-header", "set-priority-class",
                "track")


def _build_http_rule(v: dict, path, ctx):
    a = v["action"]
    need = {"set-header": ("name", "value"), "add-header": ("name", "value"), "del-header": ("name",),
            "redirect": ("location",), "set-priority-class": ("priority",)}.get(a, ())
    for k in need:
        if v.get(k) is None:
            ctx.error(path, f"action {a!r} needs key {k!r}")
            return INVALID
    if a == "redirect" and v["status"] is not None and v["status"] not in REDIRECT_CODES:
        ctx.error((*path, "status"), f"a redirect status is one of {', '.join(map(str, REDIRECT_CODES))}")
        return INVALID
    return v


HTTP_RULE = Table({
    "action": Field(Str(choices=HTTP_ACTIONS), required=True),
    "name": Field(Str(pattern=r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", what="a header name")),
    "value": Field(Str(nonempty=False, pattern=r"[^\r\n]*", what="a header value")),
    "location": Field(Str(what="a URL or path")),
    "prefix": Field(Bool(), default=False, doc="redirect: location is a prefix the request target is appended to"),
    "status": Field(Int(100, 599)),
    "priority": Field(Int(-2047, 2047)),
    "if": Field(Str(what="a condition")),
    "unless": Field(Str(what="a condition")),
}, build=_build_http_rule, what="an http_request rule")

RATE_LIMIT = Table({
    "requests": Field(Int(1, 10**9), required=True, doc="requests allowed per period per source"),
    "period": Field(Duration(min=0.001), default=10.0),
    "status": Field(Int(400, 599), default=429),
    "tracked_only": Field(Bool(), default=False, doc="count only requests a `track` rule selected"),
    "size": Field(Int(1, 10**8), default=100_000, doc="sources tracked at most"),
}, what="a rate_limit table")


CACHE = Table({
    "total_max_size": Field(Int(1024, 1 << 40), default=64 * 1024 * 1024, doc="bytes the cache may hold"),
    "max_object_size": Field(Int(1, 1 << 31), default=1024 * 1024, doc="largest response stored, in bytes"),
    "max_age": Field(Duration(), default=60.0, doc="longest a response stays fresh"),
}, build=lambda v, path, ctx: CachePolicy(v["total_max_size"], v["max_object_size"], v["max_age"]),
    what="a cache table")

for _key, _field in {
    "cache": Field(CACHE, doc="a shared HTTP cache in front of the pool (HAProxy cache section)"),
    "http_request": Field(ListOf(HTTP_RULE), doc="http-request rules, in order (ACLs from `routing.acl`)"),
    "rate_limit": Field(RATE_LIMIT, doc="per-source request rate limit (HAProxy stick-table http_req_rate)"),
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
    "timeout_queue": Field(Duration(), doc="how long a request may wait for a server below its maxconn (0: 503 at once)"),
    "forwardfor": Field(FORWARDFOR),
    "http_mode": Field(Str(choices=HTTP_MODES)),
}.items():
    register_pool_key(_key, _field)

register_server_key("cookie", Field(Str(what="a cookie value"), doc="value of the persistence cookie"))
register_server_key("maxconn", Field(Int(1, 1_000_000), doc="requests in flight at most; more wait in the queue"))


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
        timeout_queue=settings.get("timeout_queue", 0.0),
        forwardfor=ff, forwardfor_header=hdr, forwardfor_except=exc,
        http_mode=settings.get("http_mode", "keep-alive"),
    )


def proxy_settings(service, pools) -> ProxySettings:
    s = service.settings
    ff, hdr, exc = _forwardfor(s.get("forwardfor"))
    routing = s.get("routing")
    wanted = {service.pool, *(routing.pools if routing is not None else ())} - {""}
    rules = s.get("http_rules") or ()
    raw_rules = s.get("http_request")
    if raw_rules:
        rules = compile_rules(raw_rules, routing.acls if routing is not None else {})
    rl = s.get("rate_limit")
    if isinstance(rl, dict):
        rl = RateLimit(rl["requests"], rl["period"], rl["status"], rl["tracked_only"], rl["size"])
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
        rules=tuple(rules),
        rate_limit=rl,
        cache=s.get("cache"),
        pools={p: pool_settings(pools[p].settings) for p in wanted if p in pools},
    )


def _check_rules(v: dict, path, ctx) -> bool:
    """http_request conditions must name ACLs declared in ``routing.acl``."""
    routing = v.get("routing")
    acls = routing.acls if routing is not None else {}
    ok = True
    for i, r in enumerate(v.get("http_request") or ()):
        for word in ("if", "unless"):
            if r.get(word) is not None:
                try:
                    parse_condition([word, *r[word].split()], acls)
                except AclError as e:
                    ctx.error((*path, "http_request", i, word), str(e))
                    ok = False
    return ok


register_service_check(_check_rules)

_L7_SERVICE_KEYS = ("routing", "http_request", "rate_limit", "cache", "forwardfor", "http_mode", "timeout_client",
                    "timeout_http_request", "timeout_http_keep_alive")


def _check_http_keys(v: dict, path, ctx) -> bool:
    """HTTP keys on a tcp/udp/dns service would be silently unused: an error instead."""
    if v.get("mode", "http") == "http":
        return True
    bad = [k for k in _L7_SERVICE_KEYS if v.get(k) is not None]
    for k in bad:
        ctx.error((*path, k), f"{k!r} applies to mode http services, not to mode {v['mode']}")
    return not bad


register_service_check(_check_http_keys)


def compile_rules(raw: tuple[dict, ...], acls: dict) -> tuple[HttpRule, ...]:
    """HttpRules from checked ``http_request`` tables (conditions use the routing ACLs)."""
    out = []
    for r in raw:
        cond = None
        if r.get("if") is not None:
            cond = parse_condition(["if", *r["if"].split()], acls)
        elif r.get("unless") is not None:
            cond = parse_condition(["unless", *r["unless"].split()], acls)
        a = r["action"]
        out.append(HttpRule(
            action=a, name=(r.get("name") or "").encode(),
            value=(r.get("location") if a == "redirect" else r.get("value") or "").encode(),
            status=r.get("status") or 0, priority=r.get("priority") or 0, prefix=r.get("prefix", False), cond=cond,
        ))
    return tuple(out)


class L7Component:
    """Every ``mode = "http"`` service with listeners, reconciled with each snapshot.

    At start, one :class:`HttpProxy` per such service of the current snapshot (a listener
    that cannot be bound fails the start). Later snapshots (a SIGHUP reload) are compared
    with what runs: a new service starts, a removed one stops (its in-flight responses get
    half a second), a changed one is reconfigured in place, its listeners and connections
    kept, and the next request of each connection sees the change; a service whose
    listeners changed is restarted on the new ones (the old keeps serving if they cannot
    be bound). Snapshots that only change servers or health leave the proxies alone.
    """

    name = "l7"

    def __init__(self, rt: Runtime) -> None:
        self.pool_state = rt.pool_state
        self.report = _passive_reporter(rt)
        self.proxies: dict[str, HttpProxy] = {}
        self._inputs: tuple | None = None
        self._sub = None
        self._task: asyncio.Task | None = None
        self._again = False

    @staticmethod
    def _inputs_of(snap) -> tuple:
        """What the proxies' settings are made from: the services and the pools' settings
        (compared by identity: the pool state keeps the objects of an unchanged config)."""
        return (snap.services, tuple((n, v.pool.settings) for n, v in snap.pools.items()))

    @staticmethod
    def desired(snap) -> dict[str, ProxySettings]:
        pools = {n: v.pool for n, v in snap.pools.items()}
        return {svc.name: proxy_settings(svc, pools) for svc in snap.services.values()
                if svc.mode == "http" and svc.listen}

    async def start(self) -> None:
        snap = self.pool_state.snapshot
        self._inputs = self._inputs_of(snap)
        want = self.desired(snap)
        if want:
            from herder.l7 import proxy

            log.info("l7: the request path runs %s", "compiled" if proxy.COMPILED else "as plain Python")
        try:
            for name, settings in want.items():
                await self._start_proxy(name, settings)
        except BaseException:
            await self.stop()
            raise
        self._sub = self.pool_state.subscribe(self._on_snapshot, name="l7 services", replay=False)

    async def _start_proxy(self, name: str, settings: ProxySettings) -> HttpProxy:
        proxy = HttpProxy(name, settings, self.pool_state, self.report)
        await proxy.start()
        self.proxies[name] = proxy
        log.info("%s started", proxy.name)
        return proxy

    def _on_snapshot(self, snap) -> None:
        inputs = self._inputs_of(snap)
        old = self._inputs
        if old is not None and inputs[0] is old[0] and len(inputs[1]) == len(old[1]) \
                and all(a[1] is b[1] for a, b in zip(inputs[1], old[1], strict=True)):
            return  # servers or health changed, not what the proxies are made of
        self._inputs = inputs
        if self._task is not None and not self._task.done():
            self._again = True  # reconciled again once the running pass ends
            return
        self._task = asyncio.get_running_loop().create_task(self._reconcile())

    async def _reconcile(self) -> None:
        while True:
            self._again = False
            try:
                await self._reconcile_once(self.pool_state.snapshot)
            except Exception:
                log.exception("l7: applying the new services failed")
            if not self._again:
                return

    async def _reconcile_once(self, snap) -> None:
        want = self.desired(snap)
        for name in [n for n in self.proxies if n not in want]:
            proxy = self.proxies.pop(name)
            await proxy.stop()
            log.info("%s stopped: the service is gone from the configuration", proxy.name)
        for name, settings in want.items():
            proxy = self.proxies.get(name)
            if proxy is None:
                try:
                    await self._start_proxy(name, settings)
                except OSError as e:
                    log.error("http %s: cannot listen on %s (%s); not started", name,
                              ", ".join(str(ep) for ep in settings.listen), e.strerror or e)
                continue
            if settings == proxy.settings:
                continue
            if settings.listen == proxy.settings.listen:
                proxy.reconfigure(settings)
                log.info("%s reconfigured", proxy.name)
                continue
            # new listeners: the old proxy lets go of its ports first (a port may be kept)
            await proxy.stop()
            del self.proxies[name]
            try:
                await self._start_proxy(name, settings)
            except OSError as e:
                log.error("http %s: cannot listen on %s (%s); back on %s", name,
                          ", ".join(str(ep) for ep in settings.listen), e.strerror or e,
                          ", ".join(str(ep) for ep in proxy.settings.listen))
                await self._start_proxy(name, proxy.settings)

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
            self._task = None
        proxies, self.proxies = self.proxies, {}
        for proxy in proxies.values():
            await proxy.stop()


def _api_status(runtime: Runtime, request) -> tuple[int, object]:
    comps = [c for c in runtime.components if isinstance(c, L7Component)]
    proxies = [p for c in comps for p in c.proxies.values()]
    if not proxies:
        return 404, {"error": "no http service is running"}
    return 200, {"services": [p.status() for p in proxies]}


add_route("GET", "/l7", _api_status)


def _factory(rt: Runtime) -> list[L7Component]:
    # Always present: a reload may add an http service.
    return [L7Component(rt)]


def _passive_reporter(rt: Runtime):
    """Where the proxy's per-server outcomes go: the health engine's passive detector
    (HAProxy ``observe``/``error-limit``, Envoy outlier detection)."""
    from herder.health.engine import checker_for

    checker = checker_for(rt)
    if checker is None:
        return None
    return checker.observe


register_component("l7", _factory, order=50)

__all__ = ["L7Component", "pool_settings", "proxy_settings"]
