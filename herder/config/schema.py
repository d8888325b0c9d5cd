"""A small declarative schema for herder's TOML: validates, converts, and reports every error.

Theory of operation
-------------------
A :class:`Spec` turns one raw TOML value into a Python value, or reports why it cannot
through :meth:`Ctx.error` and returns :data:`INVALID`. Specs never raise on bad input and
never stop at the first error: a :class:`Table` checks every key, so ``herder check``
lists all problems of a file at once. Every error carries the key path; the context turns
the path into a line number with the document's :class:`~herder.config.lines.LineMap`.

Unknown keys are always errors (with a "did you mean" hint): a misspelt key silently
ignored is how a health check ends up never configured.

Layers extend the native format by registering specs (``herder.config.native``), never by
parsing TOML themselves.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from herder.config.errors import ConfigError
from herder.config.lines import LineMap
from herder.pool.model import Endpoint

__all__ = [
    "INVALID",
    "Addr",
    "Bool",
    "Cidr",
    "Ctx",
    "Duration",
    "Field",
    "Float",
    "Int",
    "ListOf",
    "MapOf",
    "OneOf",
    "Parsed",
    "Spec",
    "Str",
    "Table",
    "describe",
    "parse_duration",
]

Path = tuple[str | int, ...]


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


#: Returned by a spec whose value was rejected (the error is already recorded).
INVALID: Any = _Invalid()


def dotted(path: Path) -> str:
    """``("pools", "web", "servers", 1, "weight")`` -> ``pools.web.servers[1].weight``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + (p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"')
    return out


def describe(value: object) -> str:
    """How a raw value is shown in an error: its TOML type and a short repr."""
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    r = repr(value)
    if len(r) > 40:
        r = r[:37] + "..."
    return f"{kind} {r}"


@dataclass
class Ctx:
    """Where errors of one file go, and how their lines are found."""

    file: str
    lines: LineMap = field(default_factory=LineMap)
    errors: list[ConfigError] = field(default_factory=list)

    def error(self, path: Path, message: str) -> None:
        self.errors.append(ConfigError(self.file, self.lines.line(path), dotted(path), message))

    def where(self, path: Path) -> str:
        line = self.lines.line(path)
        return f"{self.file}:{line}" if line else self.file


class Spec:
    """Base class: ``parse(value, path, ctx)`` returns the converted value or INVALID."""

    expected = "a value"

    def parse(self, value: object, path: Path, ctx: Ctx) -> Any:
        raise NotImplementedError

    def bad(self, value: object, path: Path, ctx: Ctx, detail: str = "") -> Any:
        msg = f"expected {self.expected}, got {describe(value)}"
        if detail:
            msg += f" ({detail})"
        ctx.error(path, msg)
        return INVALID


@dataclass
class Str(Spec):
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    nonempty: bool = True
    what: str = "a string"

    def __post_init__(self) -> None:
        if self.choices:
            self.expected = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            self.expected = self.what

    def parse(self, value, path, ctx):
        if not isinstance(value, str):
            return self.bad(value, path, ctx)
        if self.nonempty and not value:
            return self.bad(value, path, ctx, "must not be empty")
        if self.choices and value not in self.choices:
            hint = difflib.get_close_matches(value, self.choices, 1)
            return self.bad(value, path, ctx, f"did you mean {hint[0]!r}?" if hint else "")
        if self.pattern and not re.fullmatch(self.pattern, value):
            return self.bad(value, path, ctx)
        return value


@dataclass
class Int(Spec):
    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        lo = "" if self.min is None else str(self.min)
        hi = "" if self.max is None else str(self.max)
        self.expected = f"an integer {lo}..{hi}" if (lo or hi) else "an integer"

    def parse(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            return self.bad(value, path, ctx)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return self.bad(value, path, ctx, "out of range")
        return value


@dataclass
class Float(Spec):
    min: float | None = None
    max: float | None = None
    expected: str = "a number"

    def parse(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.bad(value, path, ctx)
        v = float(value)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            return self.bad(value, path, ctx, f"must be within {self.min}..{self.max}")
        return v


class Bool(Spec):
    expected = "true or false"

    def parse(self, value, path, ctx):
        if not isinstance(value, bool):
            return self.bad(value, path, ctx)
        return value


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, default_unit: str = "s") -> float:
    """``"2s"``, ``"100ms"``, ``"1m30s"`` or ``"1.5"`` (in ``default_unit``) -> seconds.

    Raises ValueError on anything else. HAProxy's configs use milliseconds as the default
    unit; herder's TOML uses seconds; importers pass their own default.
    """
    t = text.strip()
    if not t:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t) * _UNITS[default_unit]
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)", t):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"bad duration {text!r}")
    return total


@dataclass
class Duration(Spec):
    """Seconds as a number, or a string with units (``"2s"``, ``"100ms"``)."""

    min: float = 0.0
    expected: str = 'a duration (seconds as a number, or a string such as "2s" or "100ms")'

    def parse(self, value, path, ctx):
        if isinstance(value, bool):
            return self.bad(value, path, ctx)
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = parse_duration(value)
            except ValueError:
                return self.bad(value, path, ctx)
        else:
            return self.bad(value, path, ctx)
        if v < self.min:
            return self.bad(value, path, ctx, f"must be at least {self.min} s")
        return v


def parse_endpoint(text: str, default_port: int | None = None) -> Endpoint:
    """``host:port``, ``[v6]:port``, or a bare host/IP when ``default_port`` is given."""
    t = text.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", t)
    if m:
        host, port = m.group(1), m.group(2)
        ipaddress.IPv6Address(host)
    elif t.count(":") == 1:
        host, port = t.split(":")
    elif t.count(":") > 1:
        ipaddress.IPv6Address(t)
        host, port = t, None
    else:
        host, port = t, None
    if not host or not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise ValueError(f"bad host in {text!r}")
    if port is None:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        p = default_port
    else:
        if not port.isdigit():
            raise ValueError(f"bad port in {text!r}")
        p = int(port)
    if not 0 < p < 65536:
        raise ValueError(f"port {p} is outside 1..65535")
    if re.fullmatch(r"[0-9.]+", host):
        ipaddress.IPv4Address(host)  # 300.1.2.3 is not a host name
    return Endpoint(host, p)


@dataclass
class Addr(Spec):
    """An endpoint: ``"127.0.0.1:8080"``, ``"[::1]:53"``, ``"backend.local:80"``."""

    default_port: int | None = None
    expected: str = 'an address "host:port" (IPv6 as "[addr]:port")'

    def parse(self, value, path, ctx):
        if not isinstance(value, str):
            return self.bad(value, path, ctx)
        try:
            return parse_endpoint(value, self.default_port)
        except ValueError as e:
            return self.bad(value, path, ctx, str(e))


class Cidr(Spec):
    expected = 'a network prefix such as "198.18.0.0/24"'

    def parse(self, value, path, ctx):
        if not isinstance(value, str):
            return self.bad(value, path, ctx)
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError as e:
            return self.bad(value, path, ctx, str(e))


@dataclass
class ListOf(Spec):
    item: Spec
    min_len: int = 0
    single_ok: bool = False  # accept a lone item as a one-element list
    #: For arrays of tables: a key whose values must be unique across the elements.
    unique_key: str | None = None

    def __post_init__(self) -> None:
        self.expected = f"an array of {self.item.expected}"

    def parse(self, value, path, ctx):
        if self.single_ok and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list):
            return self.bad(value, path, ctx)
        if len(value) < self.min_len:
            return self.bad(value, path, ctx, f"needs at least {self.min_len} element(s)")
        out = [self.item.parse(v, (*path, i), ctx) for i, v in enumerate(value)]
        dup = False
        if self.unique_key:
            seen: dict[object, int] = {}
            for i, v in enumerate(value):
                k = v.get(self.unique_key) if isinstance(v, dict) else None
                if k is None or isinstance(k, (list, dict)):
                    continue
                if k in seen:
                    ctx.error((*path, i, self.unique_key), f"duplicate {self.unique_key} {k!r} "
                              f"(first used at {ctx.where((*path, seen[k]))})")
                    dup = True
                else:
                    seen[k] = i
        return INVALID if dup or any(v is INVALID for v in out) else tuple(out)


@dataclass
class Parsed(Spec):
    """A string turned into a value by ``func``; a ValueError from it becomes the error's
    detail. For the many "text that must parse as X" keys (IP addresses, domain names...)."""

    func: Callable[[str], Any]
    expected: str = "a value"

    def parse(self, value, path, ctx):
        if not isinstance(value, str):
            return self.bad(value, path, ctx)
        try:
            return self.func(value)
        except (ValueError, UnicodeError) as e:
            return self.bad(value, path, ctx, str(e))


@dataclass
class OneOf(Spec):
    """The first option whose test accepts the raw value parses it (a string or a table)."""

    options: tuple[tuple[Callable[[object], bool], Spec], ...]
    expected: str = "a value"

    def parse(self, value, path, ctx):
        for accepts, spec in self.options:
            if accepts(value):
                return spec.parse(value, path, ctx)
        return self.bad(value, path, ctx)


@dataclass
class Field:
    """One key of a table: its spec, whether it is required, its default and its doc."""

    spec: Spec
    required: bool = False
    default: Any = None
    doc: str = ""


@dataclass
class Table(Spec):
    """A TOML table with known keys. ``build(values, path, ctx)`` turns the checked values
    (a dict with every field, defaults filled in) into the result; it may report more
    errors through ``ctx`` (cross-field checks) and return INVALID."""

    fields: Mapping[str, Field]
    build: Callable[[dict, Path, Ctx], Any] | None = None
    what: str = "a table"

    def __post_init__(self) -> None:
        self.expected = self.what

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.bad(value, path, ctx)
        out: dict[str, Any] = {}
        ok = True
        for k, v in value.items():
            f = self.fields.get(k)
            if f is None:
                hint = difflib.get_close_matches(k, list(self.fields), 1)
                msg = f"unknown key {k!r}"
                msg += f"; did you mean {hint[0]!r}?" if hint else f"; expected one of: {', '.join(sorted(self.fields))}"
                ctx.error((*path, k), msg)
                ok = False
                continue
            pv = f.spec.parse(v, (*path, k), ctx)
            if pv is INVALID:
                ok = False
            out[k] = pv
        for k, f in self.fields.items():
            if k not in value:
                if f.required:
                    ctx.error(path, f"missing required key {k!r} ({f.spec.expected})")
                    ok = False
                else:
                    out[k] = f.default
        if not ok:
            return INVALID
        return self.build(out, path, ctx) if self.build else out


@dataclass
class MapOf(Spec):
    """A table of named entries (``[pools.NAME]``): each value parsed by ``item``; the name
    is passed to ``item`` through the path. Names must match ``name_pattern``."""

    item: Spec
    name_pattern: str = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
    expected: str = "a table of named entries"

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.bad(value, path, ctx)
        out = {}
        for name, v in value.items():
            if not re.fullmatch(self.name_pattern, name):
                ctx.error((*path, name), f"bad name {name!r}: use letters, digits, '_', '-', '.'")
                continue
            pv = self.item.parse(v, (*path, name), ctx)
            if pv is not INVALID:
                out[name] = pv
        return out
