"""herder's native TOML format (documented in docs/config.md).

The root schema is assembled from what the layers register:

* :func:`register_section` -- a top-level table (``[api]``, ``[dns]``, ``[vrrp]``...);
* :func:`register_pool_key`, :func:`register_server_key`, :func:`register_service_key` --
  extra keys of a pool, a server or a service; their parsed values land in
  ``Pool.settings``, ``Server.meta`` and ``Service.settings``;
* :func:`register_check_type` -- a health-check kind, selected by ``type = "..."`` in a
  ``[[pools.NAME.checks]]`` table.

The layers register at import time; :data:`herder.config.load.EXTENSION_MODULES` lists the
modules to import before a file is checked.
"""

from __future__ import annotations

import difflib
import re
import tomllib

from herder.config.errors import ConfigError
from herder.config.lines import scan
from herder.config.model import Fragment
from herder.config.schema import (
    INVALID,
    Addr,
    Bool,
    Cidr,
    Ctx,
    Field,
    Int,
    ListOf,
    MapOf,
    Path,
    Spec,
    Str,
    Table,
    describe,
)
from herder.pool.model import AdminMode, Endpoint, HealthState, Pool, Region, Server, Service, frozen_map

__all__ = [
    "load_toml",
    "server_spec",
    "register_check_type",
    "register_pool_key",
    "register_section",
    "register_server_key",
    "register_service_key",
]

_sections: dict[str, Spec] = {}
_pool_keys: dict[str, Field] = {}
_server_keys: dict[str, Field] = {}
_service_keys: dict[str, Field] = {}
_check_types: dict[str, Table] = {}
_service_checks: list = []

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def register_section(name: str, spec: Spec) -> None:
    """Add a top-level table ``[name]``; its parsed value is ``Config.sections[name]``.

    A table of named entries (a :class:`MapOf`) may be split across files; any other
    section may be declared by one file only.
    """
    _sections[name] = spec


def register_pool_key(name: str, f: Field) -> None:
    """Add a key to ``[pools.NAME]``; the parsed value goes to ``Pool.settings[name]``."""
    _pool_keys[name] = f


def register_server_key(name: str, f: Field) -> None:
    """Add a key to a server table; the parsed value goes to ``Server.meta[name]``."""
    _server_keys[name] = f


def register_service_key(name: str, f: Field) -> None:
    """Add a key to ``[services.NAME]``; the parsed value goes to ``Service.settings[name]``."""
    _service_keys[name] = f


def register_service_check(fn) -> None:
    """Add a cross-key check of a service: ``fn(values, path, ctx) -> bool`` sees the
    service's parsed keys (registered ones included), reports errors through ``ctx`` and
    returns False when the service is invalid."""
    _service_checks.append(fn)


def register_check_type(kind: str, table: Table) -> None:
    """Add a health-check kind: ``[[pools.NAME.checks]]`` with ``type = kind`` is parsed by
    ``table`` (which must itself declare the ``type`` key)."""
    _check_types[kind] = table


def check_types() -> list[str]:
    return sorted(_check_types)


class _CheckSpec(Spec):
    expected = "a check table with a type"

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.bad(value, path, ctx)
        kind = value.get("type")
        if kind is None:
            ctx.error(path, f"missing required key 'type' (one of: {', '.join(check_types()) or 'none registered'})")
            return INVALID
        table = _check_types.get(kind) if isinstance(kind, str) else None
        if table is None:
            ctx.error((*path, "type"), f"unknown check type {describe(kind)}; expected one of: "
                      f"{', '.join(check_types()) or 'none registered'}")
            return INVALID
        parsed = table.parse(value, path, ctx)
        return parsed if parsed is INVALID else frozen_map(parsed)


class _Scalar(Spec):
    expected = "a string, number or boolean"

    def parse(self, value, path, ctx):
        if isinstance(value, (str, int, float, bool)):
            return value
        return self.bad(value, path, ctx)


_SCALAR = _Scalar()


def server_spec() -> Table:
    """The schema of one server table (``[[pools.NAME.servers]]``, discovery files), with
    every registered server key."""
    fields = {
        "name": Field(Str(pattern=NAME, what="a server name (letters, digits, _ - .)"), required=True),
        "address": Field(Str(what='an address "host:port" or "host"'), required=True,
                         doc="host:port, or a host with `port` given separately"),
        "port": Field(Int(1, 65535)),
        "weight": Field(Int(0, 65535), default=1),
        "backup": Field(Bool(), default=False),
        "region": Field(Str(pattern=NAME)),
        "admin": Field(Str(choices=("ready", "drain", "maint")), default="ready"),
        **_server_keys,
    }
    return Table(fields, build=_build_server, what="a server table")


def _build_server(v: dict, path: Path, ctx: Ctx):
    addr = Addr(default_port=v["port"])
    ep = addr.parse(v["address"], (*path, "address"), ctx)
    if ep is INVALID:
        return INVALID
    if v["port"] is not None and ":" in v["address"] and not v["address"].startswith("["):
        ctx.error((*path, "port"), "port given twice: in `address` and in `port`")
        return INVALID
    assert isinstance(ep, Endpoint)
    meta = {k: v[k] for k in _server_keys if v.get(k) is not None}
    return Server(
        name=v["name"], address=ep, weight=v["weight"], region=v["region"], backup=v["backup"],
        admin=AdminMode[v["admin"].upper()], meta=frozen_map(meta),
    )


def _pool_spec() -> Table:
    fields = {
        "balance": Field(Str(what="a balance algorithm name"), default="roundrobin",
                         doc="an algorithm or alias of herder.balance (docs/balance.md)"),
        "balance_options": Field(MapOf(_SCALAR, name_pattern=r"[A-Za-z_][A-Za-z0-9_-]*"), default={},
                                 doc="the algorithm's options (table_size, hash_type, key...)"),
        "servers": Field(ListOf(server_spec(), unique_key="name"), default=()),
        "checks": Field(ListOf(_CheckSpec()), default=()),
        "initial_state": Field(Str(choices=("down", "up")), default="down",
                               doc="state of a checked server before its first check"),
        **_pool_keys,
    }
    return Table(fields, build=_build_pool, what="a pool table")


def _build_pool(v: dict, path: Path, ctx: Ctx):
    name = str(path[-1])
    settings = {k: v[k] for k in _pool_keys if v.get(k) is not None}
    settings["initial_state"] = HealthState(v["initial_state"])
    balance_options = dict(v["balance_options"])
    from herder.balance import resolve

    try:
        resolve(v["balance"], balance_options)
    except ValueError as e:
        key = "balance_options" if balance_options and "option" in str(e) else "balance"
        ctx.error((*path, key), str(e))
        return INVALID
    return Pool(
        name=name, servers=tuple(v["servers"]), balance=v["balance"],
        balance_options=frozen_map(balance_options), checks=tuple(v["checks"]),
        settings=frozen_map(settings),
    )


def _service_spec() -> Table:
    fields = {
        "pool": Field(Str(pattern=NAME, what="a pool name"), required=True),
        "mode": Field(Str(choices=("http", "tcp", "udp", "dns")), default="http"),
        "listen": Field(ListOf(Addr(), single_ok=True), default=()),
        **_service_keys,
    }
    return Table(fields, build=_build_service, what="a service table")


def _build_service(v: dict, path: Path, ctx: Ctx):
    if not all([fn(v, path, ctx) for fn in _service_checks]):
        return INVALID
    settings = {k: v[k] for k in _service_keys if v.get(k) is not None}
    return Service(name=str(path[-1]), pool=v["pool"], mode=v["mode"], listen=tuple(v["listen"]),
                   settings=frozen_map(settings))


def _region_spec() -> Table:
    return Table({
        "prefixes": Field(ListOf(Cidr()), default=()),
        "description": Field(Str(nonempty=False), default=""),
    }, build=lambda v, path, ctx: Region(str(path[-1]), tuple(v["prefixes"]), v["description"]),
        what="a region table")


HERDER_SECTION = Table({
    "log_level": Field(Str(choices=("debug", "info", "warning", "error")), default=None),
    "log_format": Field(Str(choices=("text", "json")), default=None),
}, what="the [herder] table")


def root_spec() -> Table:
    """The whole document's schema, with every registered extension."""
    fields = {
        "herder": Field(HERDER_SECTION),
        "pools": Field(MapOf(_pool_spec(), NAME)),
        "services": Field(MapOf(_service_spec(), NAME)),
        "regions": Field(MapOf(_region_spec(), NAME)),
        **{k: Field(s) for k, s in _sections.items()},
    }
    return Table(fields, what="a herder configuration")


_TOML_ERR = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def load_toml(path: str, text: str, ctx: Ctx) -> Fragment:
    """Parse herder's native TOML; every error goes to ``ctx`` (nothing is raised)."""
    frag = Fragment(ctx=ctx, format="herder")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_ERR.match(str(e))
        if m:
            ctx.errors.append(ConfigError(path, int(m.group("line")), "",
                                          f"TOML syntax error: {m.group('msg')} (column {m.group('col')})"))
        else:
            ctx.errors.append(ConfigError(path, None, "", f"TOML syntax error: {e}"))
        return frag
    ctx.lines = scan(text)
    root = root_spec()
    # Each top-level table is parsed on its own so that one bad table does not hide the
    # valid ones from the cross-file checks; every error is recorded either way.
    parsed: dict[str, object] = {}
    for key, value in doc.items():
        f = root.fields.get(key)
        if f is None:
            hint = difflib.get_close_matches(key, list(root.fields), 1)
            ctx.error((key,), f"unknown top-level table {key!r}" + (f"; did you mean {hint[0]!r}?" if hint
                      else f"; expected one of: {', '.join(sorted(root.fields))}"))
            continue
        v = f.spec.parse(value, (key,), ctx)
        if v is not INVALID:
            parsed[key] = v
    # Remember every declared name, valid or not, so that a reference to a pool that has
    # errors of its own is not reported a second time as a reference to nothing.
    for kind, table in (("pool", "pools"), ("service", "services"), ("region", "regions")):
        if isinstance(doc.get(table), dict):
            for name in doc[table]:
                frag.declared.add((kind, name))
                frag.where.setdefault((kind, name), (ctx, (table, name)))
    herder = parsed.get("herder") or {}
    frag.settings = {k: v for k, v in herder.items() if v is not None}
    for name, pool in (parsed.get("pools") or {}).items():
        frag.pools[name] = pool
        frag.where[("pool", name)] = (ctx, ("pools", name))
        for i, s in enumerate(pool.servers):
            frag.where[("server", name, s.name)] = (ctx, ("pools", name, "servers", i))
    for name, svc in (parsed.get("services") or {}).items():
        frag.services[name] = svc
        frag.where[("service", name)] = (ctx, ("services", name))
    for name, reg in (parsed.get("regions") or {}).items():
        frag.regions[name] = reg
        frag.where[("region", name)] = (ctx, ("regions", name))
    for name in _sections:
        if parsed.get(name) is not None:
            frag.sections[name] = parsed[name]
            frag.where[("section", name)] = (ctx, (name,))
    return frag

