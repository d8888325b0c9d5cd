"""The haproxy.cfg importer: an operator's HAProxy configuration, run by herder.

Sections ``global``, ``defaults``, ``frontend``, ``backend`` and ``listen`` become herder's
model: a ``listen NAME`` is a service and a pool of the same name; a ``frontend`` is a
service; a ``backend`` is a pool. ``defaults`` apply to the sections after them, as in
HAProxy. The lecture's ``listen NAME ADDR:PORT`` form (refused by HAProxy 2.6, which wants
``bind``) is accepted.

Every keyword is either supported, accepted with no effect (listed in
:data:`NO_EFFECT`, e.g. ``log``, ``daemon``: logging and process management are herder's
own), or an error naming its line -- never silently ignored. docs/haproxy-compat.md is the
full table.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from herder.config.errors import ConfigError
from herder.config.load import Importer, register_importer
from herder.config.model import Fragment
from herder.config.schema import INVALID, Ctx, parse_duration
from herder.l7.core.acl import Acl, AclError, Routing, parse_acl, parse_condition
from herder.l7.core.rules import REDIRECT_CODES, HttpRule
from herder.l7.proxy import RateLimit
from herder.pool.model import AdminMode, Endpoint, HealthState, Pool, Server, Service, frozen_map

__all__ = ["load_haproxy_cfg", "tokenize"]

SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "cache")

#: Keywords accepted and deliberately without effect in herder, per section kind.
NO_EFFECT = {
    "global": {"log", "daemon", "user", "group", "uid", "gid", "chroot", "pidfile", "nbthread", "nbproc",
               "maxconn", "stats", "ulimit-n", "master-worker", "quiet", "log-send-hostname", "node",
               "description", "ca-base", "crt-base", "tune.bufsize", "tune.maxrewrite", "ssl-default-bind-ciphers",
               "ssl-default-bind-options", "ssl-default-server-ciphers", "ssl-default-server-options",
               "spread-checks", "cpu-map"},
    "proxy": {"log", "description", "id", "enabled"},
    "option": {"httplog", "tcplog", "dontlognull", "log-health-checks", "logasap", "http-buffer-request",
               "allbackups"},
}


def tokenize(line: str) -> list[str]:
    """Split a haproxy.cfg line into words: whitespace, quotes, backslash escapes, ``#``."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    in_word = False
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                cur.append(line[i])
            else:
                cur.append(c)
        elif c in "\"'":
            quote = c
            in_word = True
        elif c == "\\" and i + 1 < len(line):
            i += 1
            cur.append(line[i])
            in_word = True
        elif c == "#":
            break
        elif c.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(c)
            in_word = True
        i += 1
    if quote:
        raise ValueError("unterminated quote")
    if in_word:
        words.append("".join(cur))
    return words


@dataclass
class _Proxy:
    """What one defaults/frontend/backend/listen section says, as HAProxy keeps it."""

    kind: str
    name: str
    line: int
    mode: str = "http"
    binds: list[Endpoint] = field(default_factory=list)
    balance: str = "roundrobin"
    balance_line: int = 0
    balance_options: dict[str, Any] = field(default_factory=dict)
    cookie: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)
    retries: int | None = None
    maxconn: int | None = None
    httpchk: dict[str, Any] | None = None
    http_check_expect: dict[str, Any] = field(default_factory=dict)
    default_server: dict[str, Any] = field(default_factory=dict)
    servers: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    acls: dict[str, Acl] = field(default_factory=dict)
    use_backend: list[tuple[int, Any, str]] = field(default_factory=list)
    default_backend: str | None = None
    default_backend_line: int = 0
    http_rules: list[HttpRule] = field(default_factory=list)
    rate_acls: dict[str, int] = field(default_factory=dict)
    stick_period: float | None = None
    stick_size: int = 100_000
    rate_limit: RateLimit | None = None
    tracked: bool = False
    cache_use: tuple[str, int] | None = None
    cache_store: str | None = None

    def inherit(self, d: _Proxy | None) -> None:
        if d is None:
            return
        self.mode = d.mode
        self.balance = d.balance
        self.balance_options = dict(d.balance_options)
        self.cookie = dict(d.cookie) if d.cookie else None
        self.options = dict(d.options)
        self.timeouts = dict(d.timeouts)
        self.retries = d.retries
        self.maxconn = d.maxconn
        self.httpchk = dict(d.httpchk) if d.httpchk else None
        self.http_check_expect = dict(d.http_check_expect)
        self.default_server = dict(d.default_server)


class _Loader:
    def __init__(self, path: str, text: str, ctx: Ctx) -> None:
        self.path = path
        self.text = text
        self.ctx = ctx
        self.frag = Fragment(ctx=ctx, format="haproxy")
        self.defaults: _Proxy | None = None
        self.proxies: list[_Proxy] = []
        self.caches: dict[str, dict[str, Any]] = {}
        self.cur_cache = ""
        self.lineno = 0

    def err(self, line: int, keyword: str, message: str) -> None:
        self.ctx.errors.append(ConfigError(self.path, line, keyword, message))

    # ------------------------------------------------------------------ parsing

    def run(self) -> Fragment:
        section: str | None = None
        cur: _Proxy | None = None
        for lineno, raw in enumerate(self.text.splitlines(), 1):
            try:
                words = tokenize(raw)
            except ValueError as e:
                self.err(lineno, "", str(e))
                continue
            if not words:
                continue
            kw = words[0]
            if kw in SECTIONS:
                section = kw
                cur = self.open_section(lineno, words)
                continue
            if section is None:
                self.err(lineno, kw, "keyword outside of any section (expected global, defaults, frontend, "
                                     "backend or listen first)")
                continue
            if section == "global":
                if kw not in NO_EFFECT["global"]:
                    self.err(lineno, kw, "unsupported global keyword")
                continue
            if section == "cache":
                try:
                    self.cache_keyword(lineno, words)
                except ValueError as e:
                    self.err(lineno, kw, str(e))
                continue
            assert cur is not None
            try:
                self.proxy_keyword(cur, lineno, words)
            except (ValueError, AclError) as e:
                self.err(lineno, " ".join(words[:2]) if kw in ("option", "timeout", "http-check") else kw, str(e))
        self.build()
        return self.frag

    def open_section(self, lineno: int, words: list[str]) -> _Proxy | None:
        kind = words[0]
        if kind == "global":
            return None
        if kind == "cache":
            if len(words) != 2:
                self.err(lineno, "cache", "cache needs a name: cache NAME")
            self.cur_cache = words[1] if len(words) > 1 else f"cache{lineno}"
            self.caches[self.cur_cache] = {"total": 64, "object": 1024 * 1024, "age": 60.0, "line": lineno}
            return None
        name = words[1] if len(words) > 1 else ""
        if kind != "defaults" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", name):
            self.err(lineno, kind, f"{kind} needs a name of letters, digits, '_', '-', '.', ':'")
            name = name or f"unnamed{lineno}"
        p = _Proxy(kind, name, lineno)
        p.inherit(self.defaults)
        rest = words[2:]
        if kind == "defaults":
            self.defaults = p
            return p
        if rest:
            if kind in ("listen", "frontend") and len(rest) == 1:
                try:
                    p.binds.extend(_binds(rest[0]))
                except ValueError as e:
                    self.err(lineno, kind, str(e))
            else:
                self.err(lineno, kind, f"unexpected words after the name: {' '.join(rest)}")
        self.proxies.append(p)
        return p

    def proxy_keyword(self, p: _Proxy, line: int, w: list[str]) -> None:
        kw = w[0]
        fe = p.kind in ("frontend", "listen", "defaults")
        be = p.kind in ("backend", "listen", "defaults")
        if kw in NO_EFFECT["proxy"]:
            return
        if kw == "mode":
            _need(w, 2, "mode http|tcp")
            if w[1] not in ("http", "tcp"):
                raise ValueError(f"mode {w[1]!r}: expected http or tcp")
            p.mode = w[1]
        elif kw == "bind" and fe and p.kind != "defaults":
            _need(w, 2, "bind ADDR:PORT")
            if len(w) > 2:
                raise ValueError(f"bind options are not supported: {' '.join(w[2:])}")
            p.binds.extend(_binds(w[1]))
        elif kw == "balance" and be:
            _need(w, 2, "balance ALGORITHM")
            p.balance = w[1]
            p.balance_line = line
            p.balance_options = _balance_args(w[1], w[2:])
        elif kw == "hash-type" and be:
            _need(w, 2, "hash-type map-based|consistent")
            if w[1] not in ("map-based", "consistent"):
                raise ValueError(f"hash-type {w[1]!r}: expected map-based or consistent")
            p.balance_options["hash_type"] = w[1]
        elif kw == "hash-balance-factor" and be:
            p.balance_options["hash_balance_factor"] = _int(w, 1)
        elif kw == "cookie" and be:
            p.cookie = _cookie(w)
        elif kw == "option":
            self.option(p, w)
        elif kw == "no" and len(w) > 2 and w[1] == "option":
            p.options.pop(w[2], None)
        elif kw == "timeout":
            _need(w, 3, "timeout NAME VALUE")
            if w[1] not in ("connect", "client", "server", "queue", "http-request", "http-keep-alive", "check",
                            "tunnel"):
                raise ValueError(f"unsupported timeout {w[1]!r}")
            p.timeouts[w[1]] = _duration(w[2])
        elif kw == "retries" and be:
            p.retries = _int(w, 1)
        elif kw == "maxconn":
            p.maxconn = _int(w, 1)
        elif kw == "http-check" and be:
            self.http_check(p, w)
        elif kw == "default-server" and be:
            p.default_server.update(_server_params(w[1:]))
        elif kw == "server" and be and p.kind != "defaults":
            _need(w, 3, "server NAME ADDR[:PORT] [params]")
            params = dict(p.default_server)
            params.update(_server_params(w[3:]))
            p.servers.append((line, w[1], w[2], params))
        elif kw == "acl" and fe and p.kind != "defaults":
            _need(w, 3, "acl NAME CRITERION [VALUES]")
            rate = _rate_acl(w[2:])
            if rate is not None:
                p.rate_acls[w[1]] = rate
            else:
                p.acls[w[1]] = parse_acl(w[1], w[2], w[3:])
        elif kw == "stick-table" and fe and p.kind != "defaults":
            self.stick_table(p, w)
        elif kw == "http-request" and p.kind != "defaults":
            self.lineno = line
            self.http_request(p, w)
        elif kw == "http-response" and p.kind != "defaults":
            if len(w) != 3 or w[1] != "cache-store":
                raise ValueError("only `http-response cache-store NAME` is supported")
            p.cache_store = w[2]
        elif kw == "use_backend" and fe and p.kind != "defaults":
            _need(w, 4, "use_backend NAME if|unless CONDITION")
            p.use_backend.append((line, parse_condition(w[2:], p.acls), w[1]))
        elif kw == "default_backend" and fe:
            _need(w, 2, "default_backend NAME")
            p.default_backend = w[1]
            p.default_backend_line = line
        else:
            where = {"frontend": "a frontend", "backend": "a backend", "defaults": "defaults", "listen": "listen"}
            raise ValueError(f"unsupported keyword in {where[p.kind]} section (see docs/haproxy-compat.md)")

    def option(self, p: _Proxy, w: list[str]) -> None:
        _need(w, 2, "option NAME")
        name = w[1]
        if name in NO_EFFECT["option"]:
            return
        if name in ("httpclose", "http-server-close", "http-keep-alive", "forceclose"):
            for m in ("httpclose", "http-server-close", "http-keep-alive", "forceclose"):
                p.options.pop(m, None)
            p.options[name] = True
        elif name == "forwardfor":
            opts: dict[str, Any] = {"header": "X-Forwarded-For", "except": ()}
            rest = w[2:]
            while rest:
                if rest[0] == "except" and len(rest) > 1:
                    opts["except"] = (*opts["except"], ipaddress.ip_network(rest[1], strict=False))
                    rest = rest[2:]
                elif rest[0] == "header" and len(rest) > 1:
                    opts["header"] = rest[1]
                    rest = rest[2:]
                elif rest[0] == "if-none":
                    raise ValueError("option forwardfor if-none is not supported")
                else:
                    raise ValueError(f"unexpected {rest[0]!r} (expected except NET or header NAME)")
            p.options["forwardfor"] = opts
        elif name == "redispatch":
            p.options["redispatch"] = True
        elif name == "httpchk":
            rest = w[2:]
            chk: dict[str, Any] = {"method": "OPTIONS", "path": "/", "version": "1.0"}
            if len(rest) == 1:
                chk["path"] = rest[0]
            elif len(rest) >= 2:
                chk["method"], chk["path"] = rest[0], rest[1]
                if len(rest) >= 3:
                    ver = rest[2]
                    if not ver.startswith("HTTP/1."):
                        raise ValueError(f"bad HTTP version {ver!r}")
                    chk["version"] = ver[5:8]
                    # HAProxy's old form smuggles headers into the version: "HTTP/1.1\r\nHost:\ www"
                    extra = ver[8:]
                    if extra:
                        m = re.fullmatch(r"\r\nHost: ?(\S+)", extra.replace("\\r\\n", "\r\n"))
                        if not m:
                            raise ValueError("only a Host header may follow the version in option httpchk")
                        chk["host"] = m.group(1)
                if len(rest) > 3:
                    raise ValueError("too many words for option httpchk [METHOD] URI [VERSION]")
            p.httpchk = chk
        else:
            raise ValueError(f"unsupported option {name!r} (see docs/haproxy-compat.md)")

    def cache_keyword(self, line: int, w: list[str]) -> None:
        c = self.caches[self.cur_cache]
        if w[0] == "total-max-size":
            c["total"] = _int(w, 1)  # megabytes
        elif w[0] == "max-object-size":
            c["object"] = _int(w, 1)  # bytes
        elif w[0] == "max-age":
            c["age"] = float(_int(w, 1))  # seconds
        elif w[0] == "process-vary":
            if len(w) != 2 or w[1] not in ("on", "off"):
                raise ValueError("process-vary on|off")
        else:
            raise ValueError("unsupported cache keyword (total-max-size, max-object-size, max-age, process-vary are)")

    def stick_table(self, p: _Proxy, w: list[str]) -> None:
        # only the rate-limit idiom: stick-table type ip size N expire T store http_req_rate(P)
        i = 1
        while i < len(w):
            k = w[i]
            v = w[i + 1] if i + 1 < len(w) else ""
            if k == "type" and v in ("ip", "ipv6"):
                i += 2
            elif k == "size":
                m = re.fullmatch(r"(\d+)([kmg]?)", v.lower())
                if not m:
                    raise ValueError(f"bad stick-table size {v!r}")
                p.stick_size = int(m.group(1)) * {"": 1, "k": 1000, "m": 10**6, "g": 10**9}[m.group(2)]
                i += 2
            elif k == "expire":
                _duration(v)
                i += 2
            elif k == "store":
                m = re.fullmatch(r"http_req_rate\((\w+)\)", v)
                if not m:
                    raise ValueError(f"stick-table store {v!r} is not supported (http_req_rate(PERIOD) is)")
                p.stick_period = _duration(m.group(1))
                i += 2
            else:
                raise ValueError(f"stick-table {k} {v} is not supported (type ip, size, expire, "
                                 "store http_req_rate(PERIOD) are)")
        if p.stick_period is None:
            raise ValueError("stick-table needs `store http_req_rate(PERIOD)`")

    def http_request(self, p: _Proxy, w: list[str]) -> None:
        _need(w, 2, "http-request ACTION [args] [if|unless COND]")
        action = w[1]
        args = w[2:]
        cond_words: list[str] = []
        for i, a in enumerate(args):
            if a in ("if", "unless"):
                cond_words, args = args[i:], args[:i]
                break
        if action == "cache-use":
            if len(args) != 1 or cond_words:
                raise ValueError("http-request cache-use NAME (without a condition)")
            p.cache_use = (args[0], self.lineno)
            return
        if action.startswith("track-sc"):
            if args[:1] != ["src"] or len(args) not in (1, 3) or (len(args) == 3 and args[1] != "table"):
                raise ValueError("only `http-request track-scN src [table NAME]` is supported")
            if cond_words:
                raise ValueError("a condition on track-sc is not supported")
            p.tracked = True
            return
        # anonymous ACLs: { sc_http_req_rate(0) gt 10 } or { path_beg /x }
        if "{" in cond_words:
            cond_words = self.anonymous_acls(p, cond_words)
        rate_names = [c.lstrip("!") for c in cond_words[1:] if c.lstrip("!") in p.rate_acls]
        if rate_names:
            if action != "deny" or len(cond_words) != 2 or cond_words[0] != "if" or cond_words[1].startswith("!"):
                raise ValueError("a request-rate ACL is supported only as `http-request deny [deny_status N] "
                                 "if RATE_ACL`")
            if p.stick_period is None or not p.tracked:
                raise ValueError("a request-rate limit needs `stick-table ... store http_req_rate(P)` and "
                                 "`http-request track-sc0 src` before it")
            status = _deny_status(args)
            p.rate_limit = RateLimit(p.rate_acls[rate_names[0]], p.stick_period, status, False, p.stick_size)
            return
        cond = parse_condition(cond_words, p.acls) if cond_words else None
        if action == "deny":
            p.http_rules.append(HttpRule("deny", status=_deny_status(args), cond=cond))
        elif action == "allow":
            if args:
                raise ValueError(f"unexpected {' '.join(args)}")
            p.http_rules.append(HttpRule("allow", cond=cond))
        elif action in ("set-header", "add-header"):
            if len(args) != 2:
                raise ValueError(f"http-request {action} NAME VALUE")
            p.http_rules.append(HttpRule(action, name=args[0].encode(), value=args[1].encode(), cond=cond))
        elif action == "del-header":
            if len(args) != 1:
                raise ValueError("http-request del-header NAME")
            p.http_rules.append(HttpRule(action, name=args[0].encode(), cond=cond))
        elif action == "redirect":
            if len(args) < 2 or args[0] not in ("location", "prefix"):
                raise ValueError("http-request redirect location|prefix URL [code N]")
            code = 302
            rest = args[2:]
            if rest[:1] == ["code"] and len(rest) >= 2 and rest[1].isdigit() and int(rest[1]) in REDIRECT_CODES:
                code = int(rest[1])
                rest = rest[2:]
            if rest:
                raise ValueError(f"redirect option {rest[0]!r} is not supported")
            p.http_rules.append(HttpRule("redirect", value=args[1].encode(), status=code,
                                         prefix=args[0] == "prefix", cond=cond))
        elif action == "set-priority-class":
            if len(args) != 1:
                raise ValueError("http-request set-priority-class INT")
            m = re.fullmatch(r"(?:int\()?(-?\d+)\)?", args[0])
            if not m or not -2047 <= int(m.group(1)) <= 2047:
                raise ValueError("set-priority-class takes an integer -2047..2047 (or int(N))")
            p.http_rules.append(HttpRule("set-priority-class", priority=int(m.group(1)), cond=cond))
        else:
            raise ValueError(f"http-request {action} is not supported (see docs/haproxy-compat.md)")

    def anonymous_acls(self, p: _Proxy, words: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(words):
            wd = words[i]
            neg = wd == "!{" or (wd == "!" and i + 1 < len(words) and words[i + 1] == "{")
            if wd in ("{", "!{") or (wd == "!" and neg):
                if wd == "!":
                    i += 1
                j = words.index("}", i)
                inner = words[i + 1:j]
                name = f"anon{len(p.acls) + len(p.rate_acls)}"
                rate = _rate_acl(inner)
                if rate is not None:
                    p.rate_acls[name] = rate
                else:
                    if not inner:
                        raise ValueError("empty anonymous ACL { }")
                    p.acls[name] = parse_acl(name, inner[0], inner[1:])
                out.append(("!" if neg else "") + name)
                i = j + 1
                continue
            out.append(wd)
            i += 1
        return out

    def http_check(self, p: _Proxy, w: list[str]) -> None:
        _need(w, 2, "http-check expect|send ...")
        if w[1] == "expect":
            rest = w[2:]
            neg = bool(rest) and rest[0] == "!"
            if neg:
                raise ValueError("negated http-check expect is not supported")
            if len(rest) != 2:
                raise ValueError("expected http-check expect status CODE | rstatus REGEX | string TEXT")
            kind, value = rest
            if kind == "status":
                p.http_check_expect["expect_status"] = value
            elif kind == "string":
                p.http_check_expect["expect_body"] = value
            else:
                raise ValueError(f"http-check expect {kind} is not supported (status and string are)")
        elif w[1] == "send":
            rest = w[2:]
            chk = dict(p.httpchk or {"method": "OPTIONS", "path": "/", "version": "1.0"})
            headers: dict[str, str] = dict(chk.get("headers", {}))
            while rest:
                if rest[0] == "meth" and len(rest) > 1:
                    chk["method"] = rest[1]
                elif rest[0] == "uri" and len(rest) > 1:
                    chk["path"] = rest[1]
                elif rest[0] == "ver" and len(rest) > 1:
                    chk["version"] = rest[1].removeprefix("HTTP/")
                elif rest[0] == "hdr" and len(rest) > 2:
                    if rest[1].lower() == "host":
                        chk["host"] = rest[2]
                    else:
                        headers[rest[1]] = rest[2]
                    rest = rest[3:]
                    continue
                elif rest[0] == "body" and len(rest) > 1:
                    chk["body"] = rest[1]
                else:
                    raise ValueError(f"unexpected {rest[0]!r} in http-check send")
                rest = rest[2:]
            if headers:
                chk["headers"] = headers
            p.httpchk = chk
        elif w[1] in ("disable-on-404",):
            raise ValueError("http-check disable-on-404 is not supported yet")
        else:
            raise ValueError(f"http-check {w[1]} is not supported (expect and send are)")

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        ctx = self.ctx
        for p in self.proxies:
            if p.mode == "tcp" and not self.tcp_ok(p):
                continue
            key = p.name
            if p.kind in ("backend", "listen"):
                pool = self.build_pool(p)
                if pool is not None:
                    self.frag.pools[key] = pool
                ctx.lines.record(("pools", key), p.line)
                self.frag.where[("pool", key)] = (ctx, ("pools", key))
                self.frag.declared.add(("pool", key))
                for line, sname, _, _ in p.servers:
                    ctx.lines.record(("pools", key, "servers", sname), line)
                    self.frag.where[("server", key, sname)] = (ctx, ("pools", key, "servers", sname))
            if p.kind in ("frontend", "listen"):
                if not p.binds:
                    self.err(p.line, p.kind, f"{p.name}: no bind address (add `bind ADDR:PORT`)")
                    continue
                default = p.name if p.kind == "listen" else (p.default_backend or "")
                if p.mode == "tcp":
                    # HAProxy's mode tcp is a full proxy: herder's L4 userspace relay
                    be = p if p.kind == "listen" else next(
                        (b for b in self.proxies if b.name == default and b.kind == "backend"), None)
                    if be is not None and be.mode != "tcp":
                        self.err(p.line, p.kind, f"{p.name}: mode tcp, but backend {default} is mode http")
                        continue
                    tcp_settings = {"engine": "relay", "scheduler": _TCP_BALANCE[be.balance if be else "roundrobin"]}
                    self.frag.services[key] = Service(key, default, "tcp", tuple(p.binds), frozen_map(tcp_settings))
                    ctx.lines.record(("services", key), p.line)
                    self.frag.where[("service", key)] = (ctx, ("services", key))
                    self.frag.declared.add(("service", key))
                    continue
                settings: dict[str, Any] = {}
                if p.use_backend:
                    settings["routing"] = Routing(tuple((cond, target) for _, cond, target in p.use_backend))
                _frontend_settings(p, settings)
                cache = self.cache_policy(p)
                if cache is None and p.default_backend:
                    be = next((b for b in self.proxies if b.name == p.default_backend and b.kind == "backend"), None)
                    cache = self.cache_policy(be) if be is not None else None
                if cache is not None:
                    settings["cache"] = cache
                self.frag.services[key] = Service(key, default, "http", tuple(p.binds), frozen_map(settings))
                ctx.lines.record(("services", key), p.line)
                if p.default_backend_line:
                    ctx.lines.record(("services", key, "pool"), p.default_backend_line)
                if p.use_backend:
                    ctx.lines.record(("services", key, "routing"), p.use_backend[0][0])
                self.frag.where[("service", key)] = (ctx, ("services", key))
                self.frag.declared.add(("service", key))

    def tcp_ok(self, p: _Proxy) -> bool:
        """mode tcp runs on the L4 relay: only what it can do is accepted."""
        ok = True
        if p.balance not in _TCP_BALANCE:
            self.err(p.balance_line or p.line, "balance", f"{p.name}: balance {p.balance} in mode tcp is not "
                     f"supported yet ({', '.join(_TCP_BALANCE)} are)")
            ok = False
        http_only = [k for k, v in (("cookie", p.cookie), ("use_backend", p.use_backend), ("http-request", p.http_rules),
                                    ("option forwardfor", p.options.get("forwardfor")), ("cache", p.cache_use))
                     if v]
        if http_only:
            self.err(p.line, p.kind, f"{p.name}: {', '.join(http_only)} need(s) mode http")
            ok = False
        return ok

    def cache_policy(self, p: _Proxy):
        if p.cache_use is None:
            return None
        from herder.l7.core.cache import CachePolicy

        name, line = p.cache_use
        c = self.caches.get(name)
        if c is None:
            self.err(line, "http-request cache-use", f"no cache section named {name!r}")
            return None
        if p.cache_store != name:
            self.err(line, "http-request cache-use", f"{p.name}: cache-use {name} needs "
                                                       f"`http-response cache-store {name}` in the same section")
            return None
        return CachePolicy(c["total"] * 1024 * 1024, c["object"], c["age"])

    def build_pool(self, p: _Proxy) -> Pool | None:
        from herder.config import native

        servers = []
        ok = True
        check_params: dict[str, Any] | None = None
        seen: dict[str, int] = {}
        for line, name, addr, params in p.servers:
            if name in seen:
                self.err(line, "server", f"duplicate server name {name!r} in {p.name} (first at line {seen[name]})")
                ok = False
                continue
            seen[name] = line
            try:
                ep = _server_address(addr)
                timing = {k: params[k] for k in ("inter", "fastinter", "downinter", "rise", "fall") if k in params}
                if params.get("check"):
                    if check_params is None:
                        check_params = timing
                    elif timing != check_params:
                        raise ValueError("check timing (inter/rise/fall) that differs between the servers of "
                                         "one backend is not supported yet; use default-server")
                meta: dict[str, Any] = {"check": bool(params.get("check"))}
                if "cookie" in params:
                    meta["cookie"] = params["cookie"]
                if "maxconn" in params:
                    meta["maxconn"] = params["maxconn"]
                if "check_port" in params:
                    meta["check_port"] = params["check_port"]
                servers.append(Server(
                    name=name, address=ep, weight=params.get("weight", 1), backup=params.get("backup", False),
                    admin=AdminMode.MAINT if params.get("disabled") else AdminMode.READY, meta=frozen_map(meta),
                ))
            except ValueError as e:
                self.err(line, "server", f"{name}: {e}")
                ok = False
        if not ok:
            return None
        from herder.balance import resolve

        try:
            resolve(p.balance, p.balance_options)
        except ValueError as e:
            self.err(p.balance_line or p.line, "balance", str(e))
            return None
        checks: tuple = ()
        if check_params is not None:
            raw: dict[str, Any] = {}
            if p.httpchk is not None:
                raw = {"type": "http", **{k: v for k, v in p.httpchk.items()}}
                raw.update(p.http_check_expect)
                if "expect_status" in raw and str(raw["expect_status"]).isdigit():
                    raw["expect_status"] = int(raw["expect_status"])
            else:
                raw = {"type": "tcp"}
            for k, v in check_params.items():
                raw[k] = v
            if "check" in p.timeouts:
                raw["timeout"] = p.timeouts["check"]
            spec = native._check_types.get(raw["type"])
            if spec is None:
                self.err(p.line, "check", f"{p.name}: health checks of type {raw['type']} are not available")
                return None
            sub = Ctx(self.path)
            parsed = spec.parse(raw, (), sub)
            if parsed is INVALID:
                for e in sub.errors:
                    self.err(p.line, "option httpchk", f"{p.name}: {e.key}: {e.message}")
                return None
            checks = (frozen_map(parsed),)
        # HAProxy starts a checked server UP; `fall` failed checks take it down
        settings: dict[str, Any] = {"initial_state": HealthState.UP}
        if p.cookie:
            settings["cookie"] = p.cookie
        if p.retries is not None:
            settings["retries"] = p.retries
        if p.options.get("redispatch"):
            settings["redispatch"] = True
        if "connect" in p.timeouts:
            settings["timeout_connect"] = p.timeouts["connect"]
        if "server" in p.timeouts:
            settings["timeout_server"] = p.timeouts["server"]
        if "queue" in p.timeouts:
            settings["timeout_queue"] = p.timeouts["queue"]
        elif any("maxconn" in params for _, _, _, params in p.servers):
            settings["timeout_queue"] = p.timeouts.get("connect", 5.0)  # HAProxy: queue defaults to connect
        if "forwardfor" in p.options:
            settings["forwardfor"] = p.options["forwardfor"]
        mode = _http_mode(p.options)
        if mode:
            settings["http_mode"] = mode
        return Pool(name=p.name, servers=tuple(servers), balance=p.balance,
                    balance_options=frozen_map(p.balance_options), checks=checks, settings=frozen_map(settings))


def _frontend_settings(p: _Proxy, settings: dict[str, Any]) -> None:
    if "forwardfor" in p.options:
        settings["forwardfor"] = p.options["forwardfor"]
    mode = _http_mode(p.options)
    if mode:
        settings["http_mode"] = mode
    for hk, sk in (("client", "timeout_client"), ("http-request", "timeout_http_request"),
                   ("http-keep-alive", "timeout_http_keep_alive")):
        if hk in p.timeouts:
            settings[sk] = p.timeouts[hk]
    if p.maxconn is not None:
        settings["maxconn"] = p.maxconn
    if p.http_rules:
        settings["http_rules"] = tuple(p.http_rules)
    if p.rate_limit is not None:
        settings["rate_limit"] = p.rate_limit


#: HAProxy balance algorithms that the L4 relay's schedulers provide, for mode tcp.
_TCP_BALANCE = {"roundrobin": "wrr", "static-rr": "wrr", "source": "sh"}


def _rate_acl(words: list[str]) -> int | None:
    """``sc_http_req_rate(0) gt 10`` (or sc0_http_req_rate) -> 10; None for other ACLs."""
    if not words or not re.fullmatch(r"sc_http_req_rate\(0\)|sc0_http_req_rate(\(\))?", words[0]):
        return None
    if len(words) != 3 or words[1] not in ("gt", "ge") or not words[2].isdigit():
        raise ValueError("a request-rate ACL reads `sc_http_req_rate(0) gt N`")
    n = int(words[2])
    return n if words[1] == "gt" else max(n - 1, 0)


def _deny_status(args: list[str]) -> int:
    if not args:
        return 403
    if len(args) == 2 and args[0] == "deny_status" and args[1].isdigit() and 200 <= int(args[1]) <= 599:
        return int(args[1])
    raise ValueError(f"unexpected {' '.join(args)} (expected deny_status N)")


def _http_mode(options: dict[str, Any]) -> str | None:
    if options.get("httpclose") or options.get("forceclose"):
        return "close"
    if options.get("http-server-close"):
        return "server-close"
    if options.get("http-keep-alive"):
        return "keep-alive"
    return None


def _need(w: list[str], n: int, usage: str) -> None:
    if len(w) < n:
        raise ValueError(f"missing argument; usage: {usage}")


def _int(w: list[str], i: int) -> int:
    _need(w, i + 1, f"{w[0]} NUMBER")
    if not w[i].isdigit():
        raise ValueError(f"expected a number, got {w[i]!r}")
    return int(w[i])


def _duration(text: str) -> float:
    return parse_duration(text, default_unit="ms")


def _binds(text: str) -> list[Endpoint]:
    out = []
    for part in text.split(","):
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad bind address {part!r} (expected ADDR:PORT)")
        host = host.strip("[]")
        if host in ("", "*"):
            host = "0.0.0.0"
        if "-" in port:
            raise ValueError("port ranges are not supported")
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError(f"port {p} is outside 1..65535")
        out.append(Endpoint(host, p))
    return out


def _server_address(text: str) -> Endpoint:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "80"
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {text!r} (expected ADDR[:PORT])")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise ValueError(f"bad server address {text!r}")
    return Endpoint(host, int(port))


_SERVER_FLAGS = {"check", "backup", "disabled"}
_SERVER_VALUES = {"weight", "inter", "fastinter", "downinter", "rise", "fall", "cookie", "maxconn", "port"}


def _server_params(words: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        k = words[i]
        if k in _SERVER_FLAGS:
            out[k] = True
            i += 1
            continue
        if k == "no-check":
            out["check"] = False
            i += 1
            continue
        if k not in _SERVER_VALUES:
            raise ValueError(f"unsupported server parameter {k!r}")
        if i + 1 >= len(words):
            raise ValueError(f"{k} needs a value")
        v = words[i + 1]
        if k in ("inter", "fastinter", "downinter"):
            out[k] = _duration(v)
        elif k == "cookie":
            out[k] = v
        elif k == "port":
            out["check_port"] = int(v)
        else:
            if not v.isdigit():
                raise ValueError(f"{k} expects a number, got {v!r}")
            out[k] = int(v)
            if k == "weight" and out[k] > 256:
                raise ValueError("weight must be 0..256")
        i += 2
    return out


def _cookie(w: list[str]) -> dict[str, Any]:
    _need(w, 2, "cookie NAME [insert|rewrite|prefix] [options]")
    c: dict[str, Any] = {"name": w[1], "mode": "rewrite"}
    i = 2
    while i < len(w):
        t = w[i]
        if t in ("insert", "rewrite", "prefix"):
            c["mode"] = t
        elif t in ("indirect", "nocache", "preserve", "httponly", "secure"):
            c[t] = True
        elif t == "domain" and i + 1 < len(w):
            c["domain"] = w[i + 1]
            i += 1
        else:
            raise ValueError(f"unsupported cookie option {t!r}")
        i += 1
    return c


def _balance_args(algo: str, args: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if algo.startswith("hdr(") and algo.endswith(")"):
        opts["header"] = algo[4:-1]
    if algo == "url_param" and args:
        opts["param"] = args[0]
        args = args[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("len", "depth") and i + 1 < len(args) and args[i + 1].isdigit():
            opts[a] = int(args[i + 1])
            i += 2
        elif a in ("whole", "use_domain_only"):
            opts[a] = True
            i += 1
        else:
            raise ValueError(f"unsupported balance argument {a!r}")
    return opts


def _detect(path: str, text: str) -> bool:
    if path.endswith((".cfg", "haproxy.conf")):
        return True
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        return s.split()[0] in SECTIONS
    return False


def load_haproxy_cfg(path: str, text: str, ctx: Ctx) -> Fragment:
    """Load a haproxy.cfg; every error goes to ``ctx`` with its line."""
    return _Loader(path, text, ctx).run()


register_importer(Importer("haproxy", _detect, load_haproxy_cfg, "haproxy.cfg (*.cfg, or a file starting with a "
                                                                 "global/defaults/frontend/backend/listen section)"))
