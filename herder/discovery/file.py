"""File discovery: a JSON or TOML list of servers, watched; an edit applies without restart.

Config::

    [[pools.web.discovery]]
    type = "file"
    path = "servers.json"     # relative to the directory of the config file
    format = "auto"           # "json", "toml", or by the file's extension
    interval = "1s"           # how often the file is looked at

The file holds server tables with exactly the keys of ``[[pools.NAME.servers]]`` (name,
address, port, weight, backup, region, admin, and any key a layer registered), validated
by the same schema, so an error names the file, the line and the key::

    [{"name": "web1", "address": "127.0.0.1:8081"},
     {"name": "web2", "address": "127.0.0.1:8082", "weight": 2}]

or, in either format, a table with one key ``servers``::

    [[servers]]
    name = "web1"
    address = "127.0.0.1:8081"

Watching: the file's size, mtime and inode are looked at every ``interval``; when they
change (and every tenth look regardless) the content is read and, if it differs from the
last content, parsed. A valid file replaces this source's servers in the pool: new names
are added, missing names removed, changed ones updated. A malformed file is rejected
with one ERROR line listing every problem with file:line, and the last good set stays.
A file that disappears also keeps the last set (a warning says so); an empty server list
(``[]`` or ``servers = []``) is a valid edit that removes every server of this source.
An empty TOML file is rejected (it has no ``servers`` key), which protects against a
truncated write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
from collections.abc import Mapping

from herder.config.errors import ConfigError
from herder.config.lines import LineMap
from herder.config.lines import scan as toml_lines
from herder.config.native import server_spec
from herder.config.schema import INVALID, Ctx, Duration, Field, ListOf, Str, Table
from herder.discovery.base import PollingSource, register_source
from herder.pool.model import Server
from herder.pool.state import PoolState

__all__ = ["FileSource", "json_lines", "parse_servers"]

log = logging.getLogger(__name__)

_TOML_ERR = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


# --------------------------------------------------------------------------- parsing (pure)


def json_lines(text: str) -> LineMap:
    """The line of each value of a JSON document (which ``json`` does not tell).

    Paths are as in :mod:`herder.config.lines`: keys as str, array indexes as int. Never
    raises: on anything odd it returns what it recorded so far.
    """
    lm = LineMap()
    n = len(text)
    pos = 0
    line = 1

    def ws() -> None:
        nonlocal pos, line
        while pos < n and text[pos] in " \t\r\n":
            if text[pos] == "\n":
                line += 1
            pos += 1

    def string() -> str:
        nonlocal pos
        start = pos
        pos += 1
        while pos < n and text[pos] != '"':
            pos += 2 if text[pos] == "\\" else 1
        pos += 1
        return json.loads(text[start:pos])

    def value(path: tuple) -> None:
        nonlocal pos
        ws()
        lm.record(path, line)
        if pos >= n:
            raise ValueError("eof")
        c = text[pos]
        if c == "{":
            pos += 1
            while True:
                ws()
                if text[pos] == "}":
                    pos += 1
                    return
                if text[pos] == ",":
                    pos += 1
                    continue
                key = string()
                ws()
                if text[pos] != ":":
                    raise ValueError("expected :")
                pos += 1
                value((*path, key))
        elif c == "[":
            pos += 1
            idx = 0
            while True:
                ws()
                if text[pos] == "]":
                    pos += 1
                    return
                if text[pos] == ",":
                    pos += 1
                    continue
                value((*path, idx))
                idx += 1
        elif c == '"':
            string()
        else:
            while pos < n and text[pos] not in ",]} \t\r\n":
                pos += 1

    try:
        value(())
    except (ValueError, IndexError):
        pass
    return lm


def detect_format(path: str, text: str) -> str:
    """``json`` or ``toml``: by extension, else by the first character."""
    low = path.lower()
    if low.endswith(".json"):
        return "json"
    if low.endswith(".toml"):
        return "toml"
    return "json" if text.lstrip()[:1] in ("[", "{") else "toml"


def parse_servers(path: str, text: str, fmt: str = "auto") -> tuple[tuple[Server, ...] | None, list[ConfigError]]:
    """Parse and validate a server file.

    Args:
        path: the file's name, used in errors.
        text: its content.
        fmt: ``json``, ``toml`` or ``auto``.

    Returns:
        ``(servers, [])`` for a valid file, ``(None, errors)`` otherwise; every error
        names the file, the line (where known) and the key.
    """
    if fmt == "auto":
        fmt = detect_format(path, text)
        if fmt == "json" and not path.lower().endswith(".json"):
            # No extension to go by: "[[servers]]" starts like JSON but is TOML.
            try:
                json.loads(text)
            except json.JSONDecodeError:
                try:
                    tomllib.loads(text)
                    fmt = "toml"
                except tomllib.TOMLDecodeError:
                    pass
    ctx = Ctx(path)
    doc: object
    if fmt == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            return None, [ConfigError(path, e.lineno, "", f"JSON syntax error: {e.msg} (column {e.colno})")]
        ctx.lines = json_lines(text)
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = _TOML_ERR.match(str(e))
            if m:
                return None, [ConfigError(path, int(m.group("line")), "",
                                          f"TOML syntax error: {m.group('msg')} (column {m.group('col')})")]
            return None, [ConfigError(path, None, "", f"TOML syntax error: {e}")]
        ctx.lines = toml_lines(text)
    base: tuple
    if isinstance(doc, list):
        items, base = doc, ()
    elif isinstance(doc, dict):
        extra = sorted(k for k in doc if k != "servers")
        for k in extra:
            ctx.error((k,), f"unknown key {k!r}; a server file holds only 'servers'")
        if "servers" not in doc:
            ctx.error((), "no 'servers' key (write servers = [] for a deliberately empty set)")
            return None, ctx.errors
        items, base = doc["servers"], ("servers",)
    else:
        return None, [ConfigError(path, 1, "", "expected a list of servers or a table with 'servers'")]
    # The config's own server schema: a server in a file is exactly a server in the
    # config (it is private to herder.config.native, but there is one truth of what a
    # server table is, and this is it).
    spec = ListOf(server_spec(), unique_key="name")
    servers = spec.parse(items, base, ctx)
    if servers is INVALID or ctx.errors:
        return None, ctx.errors
    return tuple(servers), []


# --------------------------------------------------------------------------- the source


class FileSource(PollingSource):
    """Watch one server file (see the module docstring)."""

    kind = "file"

    def __init__(self, pool_state: PoolState, pool: str, spec: Mapping[str, object]) -> None:
        path = str(spec["path"])
        super().__init__(pool_state, pool, spec, path)
        self.path = path
        self.format = str(spec.get("format") or "auto")
        self.interval = float(spec.get("interval") or 1.0)  # type: ignore[arg-type]
        self.first_timeout = 5.0
        self.retry_s = self.interval
        self._stat: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._looks = 0
        self._missing = False

    async def poll(self) -> float:
        # Small files, read on the loop: a stat and a read of a few KiB cost less than a
        # round trip to a thread.
        self._looks += 1
        try:
            st = os.stat(self.path)
        except OSError as e:
            if not self._missing:
                self._missing = True
                kept = len(self.servers) if self.servers is not None else 0
                log.warning("pool %s: discovery %s: cannot read the file (%s); keeping the last %d server(s)",
                            self.pool, self.source, e.strerror or e, kept)
            return self.interval
        if self._missing:
            log.info("pool %s: discovery %s: the file is back", self.pool, self.source)
            self._missing = False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._stat and self._looks % 10:
            return self.interval
        self._stat = sig
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            log.warning("pool %s: discovery %s: cannot read the file: %s", self.pool, self.source, e.strerror or e)
            return self.interval
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return self.interval
        self._digest = digest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self._reject([ConfigError(self.path, None, "", f"not UTF-8: {e}")])
            return self.interval
        servers, errors = parse_servers(self.path, text, self.format)
        if servers is None:
            self._reject(errors)
        else:
            self.publish(servers)
        return self.interval

    def _reject(self, errors: list[ConfigError]) -> None:
        kept = len(self.servers) if self.servers is not None else 0
        log.error("pool %s: discovery %s: edit rejected, keeping the last %d server(s): %s",
                  self.pool, self.source, kept, "; ".join(str(e) for e in errors))


def _build(v: dict, path, ctx: Ctx) -> dict:
    # A relative path is relative to the config file that names it, not to the cwd.
    p = v["path"]
    if not os.path.isabs(p) and ctx.file and os.path.dirname(ctx.file):
        v["path"] = os.path.normpath(os.path.join(os.path.dirname(ctx.file), p))
    return v


TABLE = Table({
    "type": Field(Str(), required=True),
    "path": Field(Str(what="a file path"), required=True,
                  doc="JSON or TOML server list; relative to the config file's directory"),
    "format": Field(Str(choices=("auto", "json", "toml")), default="auto"),
    "interval": Field(Duration(min=0.01), default=1.0, doc="how often the file is looked at"),
}, build=_build, what="a file discovery table")

register_source("file", TABLE, FileSource)
