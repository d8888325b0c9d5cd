"""Pure HTTP/1.x pieces of the L7 proxy: request heads out, response heads in, errors.

Theory of operation
-------------------
The proxy parses *requests* fully (httptools/llhttp, strict: it rejects Content-Length with
Transfer-Encoding, duplicate or invalid Content-Length, bad chunk sizes, bare CR or LF,
obsolete line folding) because routing needs their headers. It does *not* parse response
headers one by one: measured on this machine kind, a proxy that rebuilds every response
header in Python loses about 30%. A response head is scanned once with one compiled regex
for the few headers the proxy must act on (framing, hop-by-hop, Set-Cookie when cookie
persistence rewrites it) and is passed through byte for byte unless one of those is present.

Hop-by-hop headers (RFC 9110 §7.6.1) -- Connection, Keep-Alive, Proxy-Connection, TE,
Trailer, Transfer-Encoding (re-framed by us), Upgrade, and any header named in Connection
-- are never forwarded as received; the proxy writes its own Connection header when the
framing of its side needs it.

Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ResponseHead",
    "error_response",
    "parse_response_head",
    "response_head_memo",
    "scan_response_head",
]

MAX_HEAD = 64 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
# Only the headers the proxy must act on; everything else stays as the server sent it.
_INTERESTING = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade"
    rb"|set-cookie|cache-control|vary|expires|date)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)",
    re.I,
)


class BadResponse(Exception):
    """The server's response cannot be relayed safely (the proxy answers 502)."""


@dataclass(slots=True)
class ResponseHead:
    """What the proxy needs to know about a response head, and the head to send on.

    ``head`` is the head without its final blank line and without hop-by-hop headers;
    ``length`` is the Content-Length (None if absent); ``chunked`` and ``close_delimited``
    say how the body is framed (RFC 9112 §6.3).
    """

    status: int
    minor: int
    head: bytes
    length: int | None
    chunked: bool
    close_delimited: bool
    server_close: bool
    upgrade: bool
    set_cookies: list[bytes]
    cacheable_hint: bytes | None
    #: Headers the cache needs (None when absent).
    vary: bytes | None = None
    expires: bytes | None = None
    date: bytes | None = None
    has_set_cookie: bool = False
    #: A 1xx other than 101: another head follows.
    informational: bool = False
    #: A final response framed by its Content-Length (or without a body), no protocol switch:
    #: what a proxy's fast path handles.
    plain: bool = False


_HOP_LIST = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"proxy-connection", b"te",
             b"trailer", b"upgrade")
_COOKIE_LIST = (b"set-cookie",)
_CACHE_LIST = (b"set-cookie", b"cache-control", b"vary", b"expires", b"date")


def _scan(raw: bytes, names: tuple[bytes, ...]) -> list[tuple[bytes, bytes, int, int]] | None:
    """Find the headers called ``names``: (name, value, start, end) with raw[start:end] the
    whole "\r\nName: value" line. None when the head needs the careful (regex) scan:
    whitespace before a colon, which a proxy must not pass on as is (RFC 9112 §5.1)."""
    low = raw.lower()
    if b" :" in low or b"\t:" in low:
        return None
    out = []
    n = len(raw)
    for name in names:
        needle = b"\r\n" + name + b":"
        i = low.find(needle)
        while i >= 0:
            vs = i + len(needle)
            e = low.find(b"\r\n", vs)
            if e < 0:
                e = n
            out.append((name, raw[vs:e].strip(b" \t"), i, e))
            i = low.find(needle, e)
    return out


def _scan_careful(raw: bytes) -> list[tuple[bytes, bytes, int, int]]:
    out = []
    for hm in _INTERESTING.finditer(raw + b"\r\n"):
        out.append((hm.group(1).lower(), hm.group(2), hm.start(), min(hm.end(), len(raw))))
    return out


_MEMOS: dict[tuple[bool, bool, bool], dict[bytes, ResponseHead]] = {}
_MEMO_MAX = 1024


def response_head_memo(*, head_request: bool, want_cookies: bool, want_cache: bool) -> dict[bytes, ResponseHead]:
    """The heads already scanned with these flags (raw head -> :class:`ResponseHead`).

    A hot path looks a head up here directly and calls :func:`parse_response_head` on a
    miss (which fills it). The values must be treated as read-only.
    """
    memo = _MEMOS.get((head_request, want_cookies, want_cache))
    if memo is None:
        memo = _MEMOS[(head_request, want_cookies, want_cache)] = {}
    return memo


def parse_response_head(raw: bytes, *, request_method: bytes, want_cookies: bool,
                        want_cache: bool = False) -> ResponseHead:
    """Like :func:`scan_response_head`, remembered: a server sends the same head over and
    over (its Date changes once a second), so most heads are a dictionary lookup. The
    result must be treated as read-only."""
    memo = response_head_memo(head_request=request_method == b"HEAD", want_cookies=want_cookies,
                              want_cache=want_cache)
    rh = memo.get(raw)
    if rh is None:
        rh = scan_response_head(raw, request_method=request_method, want_cookies=want_cookies,
                                want_cache=want_cache)
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[raw] = rh
    return rh


def scan_response_head(raw: bytes, *, request_method: bytes, want_cookies: bool,
                       want_cache: bool = False) -> ResponseHead:
    """Scan a response head (``raw`` ends just before the blank line) for what matters.

    ``want_cookies``: Set-Cookie values are returned (and removed from the head, for the
    proxy to rewrite); ``want_cache``: the headers the cache decides on are returned.

    Raises :class:`BadResponse` on anything a proxy must not pass on (bad status line,
    conflicting Content-Length, unknown transfer coding).
    """
    nl = raw.find(b"\r\n")
    first = raw if nl < 0 else raw[:nl]
    m = _STATUS_LINE.fullmatch(first)
    if not m:
        raise BadResponse(f"bad status line {first[:60]!r}")
    minor = int(m.group(1))
    status = int(m.group(2))
    length: int | None = None
    chunked = False
    server_close = minor == 0
    upgrade = False
    set_cookies: list[bytes] = []
    cache_control: bytes | None = None
    vary = expires = date = None
    has_set_cookie = False
    strip: list[bytes] = []
    spans: list[tuple[int, int]] = []
    conn_tokens: list[bytes] = []
    names = _HOP_LIST + (_CACHE_LIST if want_cache else _COOKIE_LIST if want_cookies else ())
    found = _scan(raw, names)
    careful = found is None
    if found is None:
        found = _scan_careful(raw)
    for name, value, start, end in found:
        if name == b"content-length":
            if not value.isdigit():
                raise BadResponse(f"invalid Content-Length {value[:20]!r}")
            v = int(value)
            if length is not None and v != length:
                raise BadResponse("conflicting Content-Length headers")
            length = v
            continue
        if name == b"set-cookie":
            has_set_cookie = True
            if want_cookies:
                set_cookies.append(value)
                strip.append(name)
                spans.append((start, end))
            continue
        if name == b"cache-control":
            cache_control = value
            continue
        if name == b"vary":
            vary = value if vary is None else vary + b"," + value
            continue
        if name == b"expires":
            expires = value
            continue
        if name == b"date":
            date = value
            continue
        if name == b"upgrade" and status == 101:
            upgrade = True  # the protocol switched to must reach the client
            continue
        strip.append(name)
        spans.append((start, end))
        lv = value.lower()
        if name == b"transfer-encoding":
            codings = [c.strip() for c in lv.split(b",") if c.strip()]
            if not codings or codings[-1] != b"chunked":
                raise BadResponse(f"unsupported Transfer-Encoding {value[:40]!r}")
            chunked = True
        elif name in (b"connection", b"proxy-connection"):
            toks = [t.strip() for t in lv.split(b",") if t.strip()]
            if b"close" in toks:
                server_close = True
            elif b"keep-alive" in toks and minor == 0:
                server_close = False
            conn_tokens.extend(t for t in toks if t not in (b"close", b"keep-alive", b"upgrade"))
        elif name == b"upgrade":
            upgrade = True
    no_body = request_method == b"HEAD" or status < 200 or status in (204, 304)
    both = chunked and length is not None
    if chunked:
        length = None  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
    close_delimited = not no_body and not chunked and length is None and status != 101
    if no_body:
        length, chunked, close_delimited = 0, False, False
    head = raw
    if conn_tokens or both or careful:
        if strip or conn_tokens or both:
            head = _strip_headers(raw, set(strip) | set(conn_tokens) | ({b"content-length"} if both else set()))
    elif spans:
        # the common case (a server's own "Connection: keep-alive"): cut the found lines out
        spans.sort()
        parts = []
        pos = 0
        for a, b in spans:
            parts.append(raw[pos:a])
            pos = b
        parts.append(raw[pos:])
        head = b"".join(parts)
    return ResponseHead(status, minor, head, length, chunked, close_delimited, server_close,
                        upgrade and status == 101, set_cookies, cache_control, vary, expires, date,
                        has_set_cookie, 100 <= status < 200 and status != 101,
                        length is not None and status >= 200)


def _strip_headers(raw: bytes, names: set[bytes]) -> bytes:
    lines = raw.split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        colon = line.find(b":")
        if colon > 0 and line[:colon].strip().lower() in names:
            continue
        out.append(line)
    return b"\r\n".join(out)


_REASONS = {
    400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Payload Too Large", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}

_ERROR_TEXT = {
    400: b"Your browser sent an invalid request.",
    403: b"Request forbidden by administrative rules.",
    408: b"Your browser didn't send a complete request in time.",
    429: b"You sent too many requests in a given amount of time.",
    431: b"Your browser sent a request with too large headers.",
    500: b"An internal server error occurred.",
    501: b"The method is not implemented.",
    502: b"The server returned an invalid or incomplete response.",
    503: b"No server is available to handle this request.",
    504: b"The server didn't respond in time.",
}


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Error")


def error_response(status: int, *, close: bool = True, extra: bytes = b"") -> bytes:
    """A small HTML error page as HAProxy serves it (``Connection: close`` by default)."""
    r = reason(status)
    body = b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, r, _ERROR_TEXT.get(status, b""))
    return (b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nCache-Control: no-cache\r\nContent-Type: text/html\r\n%s%s\r\n%s"
            % (status, r, len(body), extra, b"Connection: close\r\n" if close else b"", body))
