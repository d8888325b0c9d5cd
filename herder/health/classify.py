"""Turning what a probe saw into a :class:`~herder.health.base.ProbeResult` with its reason.

Theory of operation
-------------------
The probes (tcp.py, http.py, exec.py, dns.py) do the I/O and hand what they saw to the
functions here: an exception from ``connect``, the bytes of an HTTP response, an exit
status, a DNS rcode and answer. Each function returns the result with the layer that
decided it and the operator-facing reason, always spelled the same way:

==========================================  ==========  ===================================
what happened                               layer       reason
==========================================  ==========  ===================================
TCP connect succeeded                       L4OK        ``L4 check passed``
connection refused (RST to the SYN)         L4CON       ``L4 connection refused``
reset, unreachable, other socket errors     L4CON       ``L4 connection reset``, ...
no SYN-ACK within the timeout               L4TOUT      ``L4 timeout``
connected, no complete answer in time       L7TOUT      ``L7 timeout``
HTTP status outside the expected set        L7STS       ``L7 status 500``
HTTP body lacks the expected substring      L7RSP       ``L7 body mismatch``
not HTTP, or closed before an answer        L7RSP       ``L7 invalid response: ...``
HTTP answer as expected                     L7OK        ``L7 status 200``
DNS rcode other than expected               L7STS       ``L7 rcode NXDOMAIN``
DNS answer lacks an expected record         L7RSP       ``L7 answer mismatch``
DNS answer as expected                      L7OK        ``L7 rcode NOERROR``
exec exited 0 / non-zero                    PROCOK/ERR  ``exit status 0`` / ``exit status 1``
exec died of a signal                       PROCERR     ``killed by signal 9 (SIGKILL)``
exec overran its timeout                    PROCTOUT    ``timeout after 2.0s: killed``
==========================================  ==========  ===================================

The small HTTP/1.x response reader lives here too (status line, headers, Content-Length
and chunked bodies): it is all a check needs, and keeping it pure keeps it testable
without sockets. This module never imports asyncio or socket.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from herder.health.base import Layer, ProbeResult

__all__ = [
    "HttpHead",
    "StatusRanges",
    "connect_failure",
    "dechunk",
    "dns_result",
    "exit_result",
    "format_seconds",
    "http_result",
    "parse_http_head",
    "parse_status_expect",
    "response_complete",
    "status_matches",
    "timeout_result",
]

#: How much of a response body a check reads at most (HAProxy's ``tune.chksize``).
MAX_BODY = 16384
#: How large a response head may be.
MAX_HEAD = 16384

StatusRanges = tuple[tuple[int, int], ...]

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNABORTED: "connection aborted",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EPIPE: "connection reset",
}


def format_seconds(s: float) -> str:
    """``2`` -> ``2.0s``, ``0.25`` -> ``0.25s``: one decimal unless more are needed."""
    return f"{s:.1f}s" if round(s, 1) == s else f"{s:g}s"


def connect_failure(exc: BaseException) -> ProbeResult:
    """The result of a connect that raised ``exc`` (a timeout or an OSError)."""
    if isinstance(exc, TimeoutError):
        return ProbeResult(False, Layer.L4TOUT, "L4 timeout")
    if isinstance(exc, OSError):
        what = _ERRNO_REASONS.get(exc.errno or 0)
        if what is None:
            what = f"connection error: {exc.strerror or exc}"
        return ProbeResult(False, Layer.L4CON, f"L4 {what}", exc.errno)
    return ProbeResult(False, Layer.L4CON, f"L4 connection error: {type(exc).__name__}: {exc}")


def timeout_result(connected: bool) -> ProbeResult:
    """A check that timed out, before (L4) or after (L7) the connection was established."""
    if connected:
        return ProbeResult(False, Layer.L7TOUT, "L7 timeout")
    return ProbeResult(False, Layer.L4TOUT, "L4 timeout")


# --------------------------------------------------------------------------- HTTP


def parse_status_expect(value: object) -> StatusRanges:
    """``200``, ``"200-399"``, ``"2xx"``, or a list of those -> sorted inclusive ranges.

    Raises:
        ValueError: with what was wrong (the config layer turns it into a file:line error).
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError("empty list of statuses")
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"not a status: {item!r}")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str):
            t = item.strip().lower()
            if len(t) == 3 and t[0].isdigit() and t[1:] == "xx":
                lo, hi = int(t[0]) * 100, int(t[0]) * 100 + 99
            elif "-" in t:
                a, _, b = t.partition("-")
                if not (a.strip().isdigit() and b.strip().isdigit()):
                    raise ValueError(f"bad status range {item!r}")
                lo, hi = int(a), int(b)
            elif t.isdigit():
                lo = hi = int(t)
            else:
                raise ValueError(f"bad status {item!r}")
        else:
            raise ValueError(f"not a status: {item!r}")
        if not (100 <= lo <= 599 and 100 <= hi <= 599) or lo > hi:
            raise ValueError(f"status {item!r} is outside 100..599 or reversed")
        out.append((lo, hi))
    return tuple(sorted(out))


def status_matches(status: int, ranges: StatusRanges) -> bool:
    """True when ``status`` lies in one of ``ranges``."""
    return any(lo <= status <= hi for lo, hi in ranges)


@dataclass(frozen=True, slots=True)
class HttpHead:
    """A parsed HTTP/1.x response head. Header names are lower-cased."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    #: Bytes the head took in the buffer (the body starts there).
    length: int

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (lower-case), or None."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    @property
    def content_length(self) -> int | None:
        v = self.header("content-length")
        if v is None or not v.strip().isdigit():
            return None
        return int(v.strip())

    @property
    def chunked(self) -> bool:
        te = self.header("transfer-encoding")
        return te is not None and te.strip().lower().endswith("chunked")


def parse_http_head(buf: bytes) -> HttpHead | None:
    """Parse a response head from the start of ``buf``.

    Returns:
        The head, or None when ``buf`` does not hold a whole head yet.

    Raises:
        ValueError: the bytes are not an HTTP/1.x response (or the head is too large).
    """
    if not buf.startswith(b"HTTP/"[: len(buf)]):
        raise ValueError("not an HTTP response")
    end = buf.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = buf.find(b"\n\n")
        sep = 2
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("response head too large")
        return None
    lines = buf[:end].decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise ValueError("bad status line")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError("bad header line")
        headers.append((name.lower(), value.strip()))
    return HttpHead(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", tuple(headers), end + sep)


def dechunk(data: bytes) -> bytes | None:
    """The payload of a chunked body, or None while the last chunk has not arrived.

    Raises:
        ValueError: on a malformed chunk size line.
    """
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("bad chunk size") from None
        if size == 0:
            return bytes(out)
        start = eol + 2
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        pos = start + size + 2


def response_complete(buf: bytes, head_only: bool) -> bool:
    """True when ``buf`` holds all a check needs: the head when ``head_only`` (no body
    to match, a HEAD request) or the status has no body; else the whole body (by
    Content-Length or chunked), or :data:`MAX_BODY` bytes of it. A body delimited by the
    end of the connection is complete only at EOF, which the caller sees. Raises
    ValueError like :func:`parse_http_head`."""
    head = parse_http_head(buf)
    if head is None:
        return False
    if head_only or head.status in (204, 304) or head.status < 200:
        return True
    body = buf[head.length :]
    if len(body) >= MAX_BODY:
        return True
    if head.chunked:
        return dechunk(body) is not None
    cl = head.content_length
    if cl is not None:
        return len(body) >= cl
    return False


def http_result(buf: bytes, expect_status: StatusRanges, expect_body: str | None, *, eof: bool) -> ProbeResult:
    """Classify the response bytes of a check.

    Args:
        buf: everything received.
        expect_status: the accepted statuses.
        expect_body: a substring the body must contain, or None.
        eof: the server closed the connection (an incomplete head is then invalid).
    """
    try:
        head = parse_http_head(buf)
    except ValueError as e:
        return ProbeResult(False, Layer.L7RSP, f"L7 invalid response: {e}")
    if head is None:
        if not buf:
            return ProbeResult(False, Layer.L7RSP, "L7 invalid response: connection closed without a response")
        return ProbeResult(False, Layer.L7RSP, "L7 invalid response: truncated head")
    if not status_matches(head.status, expect_status):
        return ProbeResult(False, Layer.L7STS, f"L7 status {head.status}", head.status)
    if expect_body is not None:
        body = buf[head.length :]
        if head.chunked:
            try:
                payload = dechunk(body)
            except ValueError:
                return ProbeResult(False, Layer.L7RSP, "L7 invalid response: bad chunk", head.status)
            body = payload if payload is not None else body
        elif head.content_length is not None:
            body = body[: head.content_length]
        if expect_body.encode() not in body[:MAX_BODY]:
            return ProbeResult(False, Layer.L7RSP, "L7 body mismatch", head.status)
    return ProbeResult(True, Layer.L7OK, f"L7 status {head.status}", head.status)


def http_request(method: str, path: str, version: str, host: str | None,
                 headers: Iterable[tuple[str, str]] = (), body: str | None = None) -> bytes:
    """The bytes of a check request. HTTP/1.1 requests say ``Connection: close``."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host:
        lines.append(f"Host: {host}")
    names = set()
    for k, v in headers:
        names.add(k.lower())
        lines.append(f"{k}: {v}")
    if "user-agent" not in names:
        lines.append("User-Agent: herder-health-check")
    if version == "1.1" and "connection" not in names:
        lines.append("Connection: close")
    data = body.encode() if body else b""
    if data or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


# --------------------------------------------------------------------------- exec


def exit_result(returncode: int | None, timed_out: bool, timeout: float) -> ProbeResult:
    """Classify how an exec check ended (keepalived MISC_CHECK: exit 0 is success).

    ``returncode`` is negative for a signal, as subprocess reports it.
    """
    if timed_out:
        return ProbeResult(False, Layer.PROCTOUT, f"timeout after {format_seconds(timeout)}: killed")
    if returncode is None:
        return ProbeResult(False, Layer.PROCERR, "no exit status")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return ProbeResult(False, Layer.PROCERR, f"killed by signal {-returncode} ({name})", returncode)
    if returncode == 0:
        return ProbeResult(True, Layer.PROCOK, "exit status 0", 0)
    return ProbeResult(False, Layer.PROCERR, f"exit status {returncode}", returncode)


# --------------------------------------------------------------------------- DNS


def dns_result(rcode: str, answers: Sequence[str], expect_rcode: str,
               expect_answer: Sequence[str] | None, code: int | None = None) -> ProbeResult:
    """Classify a DNS answer.

    Args:
        rcode: the answer's rcode mnemonic (``NOERROR``, ``NXDOMAIN``...).
        answers: the text of each record of the answer section of the queried type.
        expect_rcode: the rcode a healthy server gives.
        expect_answer: records that must all be present in ``answers`` (compared as text,
            case-insensitively, trailing dots ignored), or None.
        code: the numeric rcode, kept in the result.
    """
    if rcode != expect_rcode:
        return ProbeResult(False, Layer.L7STS, f"L7 rcode {rcode}", code)
    if expect_answer:
        have = {_norm(a) for a in answers}
        missing = [a for a in expect_answer if _norm(a) not in have]
        if missing:
            return ProbeResult(False, Layer.L7RSP, "L7 answer mismatch", code)
    return ProbeResult(True, Layer.L7OK, f"L7 rcode {rcode}", code)


def _norm(text: str) -> str:
    return text.strip().rstrip(".").lower()
