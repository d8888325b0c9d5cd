"""Cookie persistence as HAProxy does it: ``cookie NAME insert|rewrite|prefix ...``.

* **insert** -- the proxy adds ``Set-Cookie: NAME=<server's cookie value>`` to a response
  unless the client already sent a cookie that routes to this server. With ``indirect``
  the cookie is removed from requests before they reach the server. A server's own
  ``Set-Cookie`` of the same name is left alone (HAProxy's ``preserve`` behaviour).
* **prefix** -- the server sets ``NAME=xyz``; the client receives ``NAME=A~xyz``; a request
  carrying ``NAME=A~xyz`` sticks to server A, which sees ``NAME=xyz`` again.
* **rewrite** -- the server sets ``NAME=anything``; the client receives ``NAME=A``.

Options ``nocache`` (add ``Cache-Control: private`` when a cookie is inserted so shared
caches do not store it), ``httponly``, ``secure``, ``domain``. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CookiePolicy", "request_cookie", "response_cookies"]

SEP = b"~"


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    name: bytes
    mode: str = "insert"
    indirect: bool = False
    nocache: bool = False
    preserve: bool = False
    httponly: bool = False
    secure: bool = False
    domain: bytes | None = None

    @property
    def reads_server_cookies(self) -> bool:
        """True when responses' Set-Cookie headers must be examined (prefix, rewrite)."""
        return self.mode in ("prefix", "rewrite")


def request_cookie(cookie_values: list[bytes], policy: CookiePolicy) -> tuple[bytes | None, list[bytes] | None]:
    """Find the persistence cookie in a request's ``Cookie`` header values.

    Returns ``(server_cookie_value, new_cookie_values)``: the value that names a server (or
    None), and the Cookie header values to forward when they must change (None: forward
    unchanged; an empty list: drop the header).
    """
    name = policy.name
    found: bytes | None = None
    changed = False
    out: list[bytes] = []
    for header in cookie_values:
        if name not in header:
            out.append(header)
            continue
        kept: list[bytes] = []
        for part in header.split(b";"):
            p = part.strip()
            k, eq, v = p.partition(b"=")
            if not eq or k != name:
                if p:
                    kept.append(p)
                continue
            if policy.mode == "prefix":
                sid, sep, rest = v.partition(SEP)
                if sep:
                    found = found or sid
                    kept.append(k + b"=" + rest)
                    changed = True
                else:
                    kept.append(p)
            else:
                found = found or v
                if policy.mode == "insert" and policy.indirect:
                    changed = True
                    continue
                kept.append(p)
        if kept:
            out.append(b"; ".join(kept))
    return found, (out if changed else None)


def response_cookies(
    set_cookies: list[bytes], policy: CookiePolicy, server_cookie: bytes | None, client_had_it: bool
) -> tuple[list[bytes], bool]:
    """The Set-Cookie values to send to the client, and whether ``Cache-Control: private``
    must be added (``nocache`` and a cookie was inserted).

    ``set_cookies`` are the server's values when :attr:`CookiePolicy.reads_server_cookies`
    (they are returned rewritten), else empty. ``server_cookie`` is the chosen server's
    cookie value (None: the server takes part in no persistence: nothing is added).
    """
    if server_cookie is None:
        return set_cookies, False
    name = policy.name
    if policy.mode == "insert":
        if client_had_it:
            return set_cookies, False
        attrs = b"; path=/"
        if policy.domain:
            attrs += b"; domain=" + policy.domain
        if policy.httponly:
            attrs += b"; HttpOnly"
        if policy.secure:
            attrs += b"; Secure"
        return [*set_cookies, name + b"=" + server_cookie + attrs], policy.nocache
    out = []
    for sc in set_cookies:
        k, eq, rest = sc.partition(b"=")
        if k.strip() != name or not eq:
            out.append(sc)
            continue
        value, semi, attrs = rest.partition(b";")
        if policy.mode == "prefix":
            out.append(name + b"=" + server_cookie + SEP + value + semi + attrs)
        else:  # rewrite
            out.append(name + b"=" + server_cookie + semi + attrs)
    return out, False
