"""ACLs and routing conditions as HAProxy writes them: ``acl NAME CRITERION [-i] VALUE...``
and ``use_backend POOL if COND``.

A condition is ``[!]acl [!]acl ... [|| [!]acl ...]``: ACLs side by side are ANDed, ``||``
(or ``or``) separates alternatives, ``!`` negates one ACL; ``unless`` negates the whole.

Criteria supported: ``src`` (CIDR prefixes), ``path`` (exact), ``path_beg``, ``path_end``,
``path_sub``, ``path_reg``, ``method``, ``hdr(NAME)`` (exact), ``hdr_beg(NAME)``,
``hdr_end(NAME)``, ``hdr_sub(NAME)``, ``hdr_reg(NAME)``; ``-i`` ignores case. ``hdr(host)``
compares the whole value, port included, exactly as HAProxy does.

Pure: requests are seen through :class:`RequestView` (method, target, headers, client IP).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Acl", "AclError", "Condition", "RequestView", "Routing", "parse_acl", "parse_condition"]


class AclError(ValueError):
    """An ACL or condition that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class RequestView:
    method: bytes
    target: bytes
    headers: Sequence[tuple[bytes, bytes]]
    client_ip: str

    @property
    def path(self) -> bytes:
        q = self.target.find(b"?")
        return self.target if q < 0 else self.target[:q]

    def header(self, name: bytes) -> list[bytes]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]


_HDR = re.compile(r"(hdr|hdr_beg|hdr_end|hdr_sub|hdr_reg)\(([A-Za-z0-9-]+)\)")
CRITERIA = ("src", "path", "path_beg", "path_end", "path_sub", "path_reg", "method",
            "hdr(NAME)", "hdr_beg(NAME)", "hdr_end(NAME)", "hdr_sub(NAME)", "hdr_reg(NAME)")


@dataclass(frozen=True)
class Acl:
    """A named test on a request."""

    name: str
    criterion: str
    values: tuple[str, ...]
    ignore_case: bool = False
    test: Callable[[RequestView], bool] | None = None

    def __call__(self, req: RequestView) -> bool:
        assert self.test is not None
        return self.test(req)


def _string_test(kind: str, values: list[bytes], icase: bool) -> Callable[[bytes], bool]:
    if icase:
        values = [v.lower() for v in values]
    if kind == "":
        vs = set(values)
        return (lambda s: s.lower() in vs) if icase else (lambda s: s in vs)
    if kind == "beg":
        t = tuple(values)
        return (lambda s: s.lower().startswith(t)) if icase else (lambda s: s.startswith(t))
    if kind == "end":
        t = tuple(values)
        return (lambda s: s.lower().endswith(t)) if icase else (lambda s: s.endswith(t))
    if kind == "sub":
        return (lambda s: any(v in s.lower() for v in values)) if icase else (lambda s: any(v in s for v in values))
    if kind == "reg":
        try:
            rx = [re.compile(v, re.I if icase else 0) for v in values]
        except re.error as e:
            raise AclError(f"bad regular expression: {e}") from None
        return lambda s: any(r.search(s) for r in rx)
    raise AclError(f"unknown match kind {kind!r}")


def parse_acl(name: str, criterion: str, args: Sequence[str]) -> Acl:
    """Build an ACL from HAProxy's words: ``parse_acl("is_api", "path_beg", ["/api"])``."""
    icase = False
    vals: list[str] = []
    for a in args:
        if a == "-i":
            icase = True
        elif a in ("-m", "-f"):
            raise AclError(f"ACL flag {a} is not supported")
        else:
            vals.append(a)
    if not vals:
        raise AclError(f"acl {name}: {criterion} needs at least one value")
    bvals = [v.encode() for v in vals]
    test: Callable[[RequestView], bool]
    if criterion == "src":
        try:
            nets = [ipaddress.ip_network(v, strict=False) for v in vals]
        except ValueError as e:
            raise AclError(f"acl {name}: {e}") from None

        def test(r: RequestView) -> bool:
            try:
                a = ipaddress.ip_address(r.client_ip)
            except ValueError:
                return False
            return any(a in n for n in nets)
    elif criterion == "method":
        ms = {v.upper() for v in bvals}
        test = lambda r: r.method in ms  # noqa: E731
    elif criterion.startswith("path"):
        kind = criterion[5:] if criterion != "path" else ""
        if criterion not in ("path", "path_beg", "path_end", "path_sub", "path_reg"):
            raise AclError(f"acl {name}: unknown criterion {criterion!r}; supported: {', '.join(CRITERIA)}")
        st = _string_test(kind, bvals, icase)
        test = lambda r: st(r.path)  # noqa: E731
    else:
        m = _HDR.fullmatch(criterion)
        if not m:
            raise AclError(f"acl {name}: unknown criterion {criterion!r}; supported: {', '.join(CRITERIA)}")
        kind = m.group(1)[4:] if "_" in m.group(1) else ""
        hname = m.group(2).encode()
        st = _string_test(kind, bvals, icase)
        test = lambda r: any(st(v) for v in r.header(hname))  # noqa: E731
    return Acl(name, criterion, tuple(vals), icase, test)


@dataclass(frozen=True)
class Condition:
    """An OR of ANDs of possibly negated ACLs, possibly negated as a whole (``unless``)."""

    alternatives: tuple[tuple[tuple[bool, Acl], ...], ...]
    negate: bool = False
    text: str = ""

    def __call__(self, req: RequestView) -> bool:
        hit = any(all(acl(req) != neg for neg, acl in alt) for alt in self.alternatives)
        return hit != self.negate


def parse_condition(words: Sequence[str], acls: dict[str, Acl]) -> Condition:
    """``["if", "is_api", "||", "!is_web"]`` -> Condition; unknown ACL names are errors."""
    if not words or words[0] not in ("if", "unless"):
        raise AclError("a condition starts with 'if' or 'unless'")
    negate = words[0] == "unless"
    alts: list[tuple[tuple[bool, Acl], ...]] = []
    cur: list[tuple[bool, Acl]] = []
    for w in words[1:]:
        if w in ("||", "or"):
            if not cur:
                raise AclError("empty alternative before '||'")
            alts.append(tuple(cur))
            cur = []
            continue
        neg = w.startswith("!")
        name = w[1:] if neg else w
        if name not in acls:
            raise AclError(f"unknown ACL {name!r}" + (f"; declared: {', '.join(sorted(acls))}" if acls else ""))
        cur.append((neg, acls[name]))
    if not cur:
        raise AclError("condition has no ACL")
    alts.append(tuple(cur))
    return Condition(tuple(alts), negate, " ".join(words))


@dataclass(frozen=True)
class Routing:
    """A service's ordered routing rules: the first condition that holds picks the pool."""

    rules: tuple[tuple[Condition, str], ...]
    #: The ACLs declared with the rules (http-request rules may use them too).
    acls: dict = field(default_factory=dict)

    @property
    def pools(self) -> tuple[str, ...]:
        """Every pool the rules may route to (checked against the config's pools)."""
        return tuple(dict.fromkeys(p for _, p in self.rules))

    def route(self, req: RequestView) -> str | None:
        for cond, pool in self.rules:
            if cond(req):
                return pool
        return None
