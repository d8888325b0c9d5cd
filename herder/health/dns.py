"""DNS check: query a name, expect an rcode and optionally records in the answer.

For pools of name servers (herder's own DNS layer, gdnsd, a resolver farm). Config::

    [[pools.ns.checks]]
    type = "dns"
    name = "www.example.test"
    qtype = "A"                      # any type dnspython knows
    expect_rcode = "NOERROR"         # the default
    expect_answer = ["192.0.2.10"]   # optional: each must be in the answer section
    protocol = "udp"                 # or "tcp"

Results: ``L7 rcode NOERROR`` (passed), ``L7 rcode NXDOMAIN`` (another rcode than
expected), ``L7 answer mismatch``, ``L7 timeout`` (no answer in time; over UDP there is
no connection to time out), ``L4 connection refused`` (an ICMP port unreachable, or a
refused TCP connection), ``L7 invalid response: ...``.

The query goes to the server's address (or the check's ``addr``/``port``) through
dnspython's asyncio query functions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from herder.config.schema import INVALID, Bool, Field, ListOf, Str
from herder.health.base import Layer, ProbeResult, Target, check_table, register_probe
from herder.health.classify import connect_failure, dns_result, timeout_result

__all__ = ["DnsProbe"]

log = logging.getLogger(__name__)


class DnsProbe:
    """One query per check (see the module docstring)."""

    kind = "dns"

    def __init__(self, timeout: float, name: str, *, qtype: str = "A", expect_rcode: str = "NOERROR",
                 expect_answer: tuple[str, ...] | None = None, protocol: str = "udp",
                 recurse: bool = True) -> None:
        self.timeout = timeout
        self.name = dns.name.from_text(name)
        self.qtype = dns.rdatatype.from_text(qtype)
        self.expect_rcode = expect_rcode.upper()
        self.expect_answer = expect_answer
        self.protocol = protocol
        self.recurse = recurse

    async def _ip(self, target: Target, deadline: float) -> str:
        ip = target.address.ip
        if ip is not None:
            return str(ip)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            infos = await loop.getaddrinfo(target.address.host, target.address.port, type=socket.SOCK_DGRAM)
        return str(infos[0][4][0])

    async def check(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout

        def done(r: ProbeResult) -> ProbeResult:
            return r.with_duration(loop.time() - start)

        query = dns.message.make_query(self.name, self.qtype)
        if not self.recurse:
            query.flags &= ~dns.flags.RD
        try:
            where = await self._ip(target, deadline)
            remaining = max(0.001, deadline - loop.time())
            if self.protocol == "tcp":
                resp = await dns.asyncquery.tcp(query, where, timeout=remaining, port=target.address.port)
            else:
                resp = await dns.asyncquery.udp(query, where, timeout=remaining, port=target.address.port)
        except (dns.exception.Timeout, TimeoutError):
            return done(timeout_result(connected=self.protocol == "udp"))
        except OSError as e:
            return done(connect_failure(e))
        except dns.exception.DNSException as e:
            return done(ProbeResult(False, Layer.L7RSP, f"L7 invalid response: {e}"))
        rcode = resp.rcode()
        answers = [rd.to_text() for rrset in resp.answer if rrset.rdtype == self.qtype for rd in rrset]
        return done(dns_result(dns.rcode.to_text(rcode), answers, self.expect_rcode, self.expect_answer,
                               int(rcode)))


def _build(v: dict, path, ctx):
    ok = True
    try:
        dns.name.from_text(v["name"])
    except dns.exception.DNSException as e:
        ctx.error((*path, "name"), f"bad DNS name {v['name']!r}: {e}")
        ok = False
    try:
        dns.rdatatype.from_text(v["qtype"])
        v["qtype"] = v["qtype"].upper()
    except dns.exception.DNSException:
        ctx.error((*path, "qtype"), f"unknown record type {v['qtype']!r}")
        ok = False
    try:
        dns.rcode.from_text(v["expect_rcode"])
        v["expect_rcode"] = v["expect_rcode"].upper()
    except dns.exception.DNSException:
        ctx.error((*path, "expect_rcode"), f"unknown rcode {v['expect_rcode']!r} (NOERROR, NXDOMAIN, SERVFAIL...)")
        ok = False
    if v["expect_answer"] is not None:
        v["expect_answer"] = tuple(v["expect_answer"])
    return v if ok else INVALID


TABLE = check_table("dns", {
    "name": Field(Str(what="a DNS name"), required=True),
    "qtype": Field(Str(pattern=r"[A-Za-z0-9]+", what="a record type (A, AAAA, SRV...)"), default="A"),
    "expect_rcode": Field(Str(pattern=r"[A-Za-z]+", what="an rcode (NOERROR, NXDOMAIN...)"), default="NOERROR"),
    "expect_answer": Field(ListOf(Str(), single_ok=True), doc="records (as text) the answer must contain"),
    "protocol": Field(Str(choices=("udp", "tcp")), default="udp"),
    "recurse": Field(Bool(), default=True, doc="set the RD (recursion desired) flag"),
}, build=_build)


def _factory(spec: Mapping[str, object], timeout: float) -> DnsProbe:
    answer = spec.get("expect_answer")
    return DnsProbe(
        timeout, str(spec["name"]), qtype=str(spec.get("qtype") or "A"),
        expect_rcode=str(spec.get("expect_rcode") or "NOERROR"),
        expect_answer=tuple(answer) if answer else None,  # type: ignore[arg-type]
        protocol=str(spec.get("protocol") or "udp"), recurse=bool(spec.get("recurse", True)),
    )


register_probe("dns", TABLE, _factory)
