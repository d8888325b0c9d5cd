"""Key extraction: what a hashing algorithm hashes, computed from plain request fields.

Theory of operation
-------------------
Selection and key extraction are kept apart, as HAProxy keeps ``get_server_sh/uh/hh``
(which compute a hash) apart from the map and chash selectors, and as Envoy's
``computeHashKey()`` returns an optional hash. Algorithms never see a request: they get
an ``int`` (or None) from here.

Every function takes plain values (address strings or bytes, ports, a URI string, a
header value) and returns a 64-bit ``int``, or ``None`` when the request does not carry
what the key needs (no such header, no such URL parameter, an address that does not
parse). A None key makes a hashing algorithm spread the request as if it had a fresh
key, which is HAProxy's "round robin when the parameter is absent".

Hashes are fixed (BLAKE2b, see :mod:`herder.balance.hashing`): a key computed in one
process equals the key computed in any other. Addresses are hashed in packed form, so
``"192.0.2.1"``, ``b"\\xc0\\x00\\x02\\x01"`` and ``"::ffff:192.0.2.1"`` (what a dual-stack
socket reports) give the same key.

:class:`KeySpec` bundles a kind and its options (HAProxy's ``uri whole len 10 depth 3``,
``hdr(host) use_domain_only``, nginx's ``ip_hash`` /24 prefix) and extracts from keyword
fields, so the proxy computes a key with one call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from herder.balance.hashing import hash_bytes

__all__ = [
    "KEY_KINDS",
    "KeySpec",
    "address_bytes",
    "cookie_key",
    "cookie_value",
    "destination_key",
    "header_key",
    "query_param",
    "source_key",
    "source_port_key",
    "uri_key",
    "uri_part",
    "url_param_key",
    "value_key",
]

Address = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address

#: The kinds of key a pool can hash, with what each one reads.
KEY_KINDS: Mapping[str, str] = {
    "none": "no key: the algorithm spreads requests as if each had a fresh key",
    "source": "client address (HAProxy `source`, LVS `sh`, nginx `ip_hash` with prefix=24)",
    "source-port": "client address and port (LVS `sh-port`)",
    "destination": "destination address (LVS `dh`, `lblc`, `lblcr`)",
    "destination-port": "destination address and port",
    "uri": "request URI, options whole/len/depth/path_only (HAProxy `uri`)",
    "url_param": "value of a query-string parameter, url_param(NAME) (HAProxy `url_param`)",
    "hdr": "value of a request header, hdr(NAME), option use_domain_only (HAProxy `hdr`)",
    "cookie": "value of a cookie, cookie(NAME) (nginx `hash $cookie_NAME`)",
}

_NAMED = {"url_param", "hdr", "cookie"}


# --------------------------------------------------------------------------- addresses


def address_bytes(addr: Address | None, prefix: int | None = None, prefix6: int | None = None) -> bytes | None:
    """The packed form of an IP address (4 or 16 bytes), or None if it does not parse.

    Accepts text (``"192.0.2.1"``, ``"2001:db8::1"``, ``"[2001:db8::1]"``, with an
    optional ``%zone``), packed bytes, or ``ipaddress`` objects. IPv4-mapped IPv6
    addresses become IPv4. ``prefix`` keeps only the first ``prefix`` bits of an IPv4
    address (nginx ``ip_hash`` uses 24); ``prefix6`` does the same for IPv6.
    """
    if addr is None:
        return None
    try:
        if isinstance(addr, bytes) and len(addr) in (4, 16):
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(addr)
        elif isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            ip = addr
        else:
            text = addr.decode("ascii") if isinstance(addr, bytes) else addr
            text = text.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            text = text.split("%", 1)[0]
            ip = ipaddress.ip_address(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    packed = ip.packed
    bits = prefix if isinstance(ip, ipaddress.IPv4Address) else prefix6
    if bits is not None and 0 <= bits < 8 * len(packed):
        n = int.from_bytes(packed, "big")
        width = 8 * len(packed)
        n &= ((1 << bits) - 1) << (width - bits) if bits else 0
        packed = n.to_bytes(len(packed), "big")
    return packed


def source_key(addr: Address | None, *, prefix: int | None = None, prefix6: int | None = None) -> int | None:
    """Key of a client address (HAProxy ``balance source``, LVS ``sh``).

    With ``prefix=24`` this is nginx's ``ip_hash`` (the first three octets of an IPv4
    address; nginx hashes the whole IPv6 address). None if the address does not parse
    (a Unix socket peer, for example).
    """
    packed = address_bytes(addr, prefix, prefix6)
    return None if packed is None else hash_bytes(packed)


def source_port_key(addr: Address | None, port: int | None) -> int | None:
    """Key of a client address and port (LVS ``sh`` with ``sh-port``)."""
    packed = address_bytes(addr)
    if packed is None or port is None:
        return None
    return hash_bytes(packed + int(port).to_bytes(2, "big"))


def destination_key(addr: Address | None, port: int | None = None) -> int | None:
    """Key of a destination address, and port when given (LVS ``dh``, ``lblc``)."""
    packed = address_bytes(addr)
    if packed is None:
        return None
    if port is not None:
        packed += int(port).to_bytes(2, "big")
    return hash_bytes(packed)


# --------------------------------------------------------------------------- text values


def value_key(value: str | bytes | None) -> int | None:
    """Key of an arbitrary value; None stays None (an empty value is a value)."""
    if value is None:
        return None
    return hash_bytes(value)


def uri_part(uri: str, *, whole: bool = False, length: int | None = None, depth: int | None = None,
             path_only: bool = False) -> str:
    """The part of ``uri`` that HAProxy's ``balance uri`` hashes.

    Follows HAProxy's ``get_server_uh()``: the URI is first cut to ``length``
    characters; then it is read up to the ``?`` (unless ``whole``) or up to the slash
    that would open directory level ``depth + 1``, whichever comes first. With
    ``path_only``, a scheme and authority (``http://host:port``) are dropped first,
    so absolute and origin-form requests hash alike.

    >>> uri_part("/a/b/c?x=1", depth=2)
    '/a/b'
    >>> uri_part("/a/b/c?x=1", whole=True)
    '/a/b/c?x=1'
    """
    if path_only and "://" in uri[:16]:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        uri = rest[slash:] if slash >= 0 else "/"
    if length is not None and length > 0:
        uri = uri[:length]
    end = len(uri)
    slashes = 0
    stop_at = depth + 1 if depth is not None and depth > 0 else None
    for i, c in enumerate(uri):
        if c == "/":
            slashes += 1
            if stop_at is not None and slashes == stop_at:
                end = i
                break
        elif c == "?" and not whole:
            end = i
            break
    return uri[:end]


def uri_key(uri: str | None, *, whole: bool = False, length: int | None = None, depth: int | None = None,
            path_only: bool = False) -> int | None:
    """Key of a request URI (HAProxy ``balance uri [whole] [len N] [depth N] [path-only]``)."""
    if uri is None:
        return None
    return hash_bytes(uri_part(uri, whole=whole, length=length, depth=depth, path_only=path_only))


def query_param(uri: str | None, name: str) -> bytes | None:
    """The raw (percent-decoded) value of the first ``name=`` parameter of ``uri``'s query.

    A parameter given without ``=`` has the empty value. None when absent.
    """
    if not uri or "?" not in uri:
        return None
    query = uri.split("?", 1)[1].split("#", 1)[0]
    for part in query.split("&"):
        k, eq, v = part.partition("=")
        if unquote_to_bytes(k.replace("+", " ")) == name.encode():
            return unquote_to_bytes(v.replace("+", " ")) if eq else b""
    return None


def url_param_key(uri: str | None, name: str) -> int | None:
    """Key of a URL parameter's value (HAProxy ``balance url_param NAME``); None if absent."""
    return value_key(query_param(uri, name))


def _domain_only(value: str) -> str:
    # HAProxy's use_domain_only: hash only the domain name, without the port, the top
    # level domain and the sub-domains ("www.example.com:8080" -> "example").
    host = value.strip()
    if host.startswith("["):
        return host
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    labels = [p for p in host.split(".") if p]
    if len(labels) >= 2:
        return labels[-2]
    return host


def header_key(value: str | bytes | None, *, use_domain_only: bool = False) -> int | None:
    """Key of a header value (HAProxy ``balance hdr(NAME) [use_domain_only]``)."""
    if value is None:
        return None
    if use_domain_only:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        return hash_bytes(_domain_only(text.lower()))
    return hash_bytes(value)


def cookie_value(cookie_header: str | bytes | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie:`` header value, or None."""
    if cookie_header is None:
        return None
    text = cookie_header.decode("latin-1") if isinstance(cookie_header, bytes) else cookie_header
    for part in text.split(";"):
        k, eq, v = part.strip().partition("=")
        if eq and k.strip() == name:
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            return v
    return None


def cookie_key(cookie_header: str | bytes | None, name: str) -> int | None:
    """Key of a cookie's value, read from a ``Cookie:`` header value; None if absent."""
    return value_key(cookie_value(cookie_header, name))


# --------------------------------------------------------------------------- KeySpec

Headers = Mapping[str, str] | Callable[[str], str | None]


def _header(headers: Headers | None, name: str) -> str | None:
    if headers is None:
        return None
    if callable(headers):
        return headers(name)
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for k, v in headers.items():
            if k.lower() == lname:
                return v
    return value


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What to hash for a pool: a kind from :data:`KEY_KINDS` and its options.

    ``name`` is the header, cookie or URL parameter name for the kinds that need one.
    ``whole``, ``length``, ``depth`` and ``path_only`` apply to ``uri``;
    ``use_domain_only`` to ``hdr``; ``prefix`` and ``prefix6`` to ``source``.
    """

    kind: str = "none"
    name: str | None = None
    whole: bool = False
    length: int | None = None
    depth: int | None = None
    path_only: bool = False
    use_domain_only: bool = False
    prefix: int | None = None
    prefix6: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KEY_KINDS:
            raise ValueError(f"unknown key {self.kind!r}; expected one of {', '.join(KEY_KINDS)}")
        if self.kind in _NAMED and not self.name:
            raise ValueError(f"key {self.kind} needs a name: {self.kind}(NAME)")

    @classmethod
    def parse(cls, text: str, **options: object) -> KeySpec:
        """Parse ``"source"``, ``"uri"``, ``"hdr(host)"``, ``"cookie(sid)"``... plus options.

        Raises:
            ValueError: unknown kind, or a kind that needs a name without one.
        """
        text = text.strip()
        name = None
        if text.endswith(")") and "(" in text:
            text, name = text[:-1].split("(", 1)
            name = name.strip() or None
        kind = text.strip().lower().replace("_", "-")
        if kind == "url-param":
            kind = "url_param"
        kw = {k: v for k, v in options.items() if v is not None}
        return cls(kind=kind, name=name, **kw)  # type: ignore[arg-type]

    def __str__(self) -> str:
        s = self.kind + (f"({self.name})" if self.name else "")
        extras = []
        if self.whole:
            extras.append("whole")
        if self.length is not None:
            extras.append(f"len {self.length}")
        if self.depth is not None:
            extras.append(f"depth {self.depth}")
        if self.path_only:
            extras.append("path-only")
        if self.use_domain_only:
            extras.append("use_domain_only")
        if self.prefix is not None:
            extras.append(f"prefix {self.prefix}")
        if self.prefix6 is not None:
            extras.append(f"prefix6 {self.prefix6}")
        return " ".join([s, *extras])

    def extract(
        self,
        *,
        src: Address | None = None,
        src_port: int | None = None,
        dst: Address | None = None,
        dst_port: int | None = None,
        uri: str | None = None,
        headers: Headers | None = None,
    ) -> int | None:
        """The key of one request or connection, or None when it lacks what is needed.

        ``headers`` is a mapping (looked up case-insensitively) or a function from a
        header name to its value. Fields the kind does not read are ignored.
        """
        kind = self.kind
        if kind == "source":
            return source_key(src, prefix=self.prefix, prefix6=self.prefix6)
        if kind == "source-port":
            return source_port_key(src, src_port)
        if kind == "destination":
            return destination_key(dst)
        if kind == "destination-port":
            return destination_key(dst, dst_port) if dst_port is not None else None
        if kind == "uri":
            return uri_key(uri, whole=self.whole, length=self.length, depth=self.depth, path_only=self.path_only)
        assert self.name is not None or kind == "none"
        if kind == "url_param":
            return url_param_key(uri, self.name)  # type: ignore[arg-type]
        if kind == "hdr":
            return header_key(_header(headers, self.name), use_domain_only=self.use_domain_only)  # type: ignore[arg-type]
        if kind == "cookie":
            return cookie_key(_header(headers, "cookie"), self.name)  # type: ignore[arg-type]
        return None
