"""What the state machine's actions do to the host: VIPs, the virtual MAC, GARP and NA.

Theory of operation
-------------------
* **Netlink** (:class:`Netlink`): addresses and links through pyroute2's ``IPRoute``.
  pyroute2 0.9's synchronous API runs its own event loop (so it cannot run inside ours)
  and its asyncio API cannot run on uvloop (no AF_NETLINK datagram transport), so every
  netlink call runs on one dedicated worker thread that owns one ``IPRoute``; callers
  ``await`` it. Calls are serialised, which is also the order the machine asked for.
* **VIPs on the failover path** (:class:`AddressSocket`): adding and removing VIPs is
  on the failover's critical path, so it does not go through the netlink thread (a
  thread hop and pyroute2's request machinery cost 1 to 6 ms, measured by
  bench/bench_vrrp.py). The request is encoded with pyroute2's ``ifaddrmsg`` and
  written to a NETLINK_ROUTE socket from the event loop's thread: rtnetlink handles a
  request inside ``send()``, so the address exists when ``send()`` returns and the
  kernel's ACK is already queued (about 0.1 ms in all).
* **VIPs** (:meth:`HostActions.add_vips` / :meth:`HostActions.del_vips`): added with
  their prefix length (host /32 or /128 when the config gave none, as keepalived) on the
  instance's interface, or its VMAC, or the VIP's own ``dev``; IPv6 VIPs skip duplicate
  address detection (``IFA_F_NODAD``), otherwise the address would stay tentative for a
  second after a failover. Adding a present address and deleting an absent one are not
  errors (a restart after SIGKILL finds its old VIPs; keepalived removes them too).
* **Gratuitous ARP** (:func:`garp_frame`): an ARP *request* broadcast with sender and
  target protocol address both the VIP, sender hardware address the interface's (or the
  VMAC's) MAC and target hardware address ff:ff:ff:ff:ff:ff, written to an AF_PACKET
  socket: the form keepalived sends, which Linux uses to update an existing neighbour
  entry (and a bridge to re-learn the MAC's port). keepalived's defaults
  (``vrrp_garp_master_repeat 5``, ``vrrp_garp_master_delay 5``, refresh 0, interval 0)
  live in :class:`~herder.ha.vrrp.machine.GarpPolicy`; the machine decides when, this
  module only sends.
* **Unsolicited neighbour advertisements** (:func:`na_message`, RFC 4861 section 7.2.6):
  ICMPv6 type 136 to ff02::1 with the Override flag and a target link-layer address
  option, hop limit 255, through a raw ICMPv6 socket (the kernel fills in the checksum
  and the link-local source).
* **VMAC** (:meth:`HostActions.ensure_vmac`): keepalived's ``use_vmac``: a macvlan
  (mode private) named ``vrrp.<VRID>`` on the instance's interface with the RFC 5798
  section 7.3 MAC ``00:00:5e:00:01:<VRID>``, up on every router of the group. The VIPs go
  on it, so the hosts' ARP entry for a VIP never changes on failover; the gratuitous ARPs
  re-teach the switches where that MAC now is. As keepalived does, the base interface gets
  ``arp_ignore=1`` and ``arp_filter=1`` (only the VMAC answers ARP for the VIP) and the
  VMAC ``arp_ignore=1``; herder adds ``arp_announce=2`` on the base interface
  (:meth:`SysctlGuard.vmac` says why); the old values are restored when herder stops. Adverts are
  sent and received on the VMAC (a macvlan in private mode hands multicast frames from
  its own MAC only to itself, not to the base interface).

Everything here is I/O; the pure frame builders are at the top so tests can check them
without root.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, Protocol, TypeVar

__all__ = [
    "ActionBackend",
    "HostActions",
    "LinkInfo",
    "Netlink",
    "garp_frame",
    "mac_bytes",
    "na_message",
    "vmac_address",
]

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
T = TypeVar("T")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
IFA_F_NODAD = 0x02
IFF_UP = 0x1
IFF_RUNNING = 0x40
ALL_NODES = IPv6Address("ff02::1")


# --------------------------------------------------------------------------- pure builders


def mac_bytes(mac: str) -> bytes:
    """``"00:00:5e:00:01:33"`` -> 6 bytes."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def vmac_address(vrid: int, family: int = 4) -> str:
    """The virtual router MAC of RFC 5798 section 7.3: 00-00-5E-00-01-{VRID} (IPv6: -02-)."""
    return f"00:00:5e:00:{1 if family == 4 else 2:02x}:{vrid:02x}"


def garp_frame(mac: bytes, address: IPv4Address) -> bytes:
    """A gratuitous ARP request for ``address`` from ``mac``, as a whole Ethernet frame."""
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)  # Ethernet, IPv4, hlen 6, plen 4, REQUEST
    arp += mac + address.packed + BROADCAST + address.packed
    return eth + arp + b"\0" * 18  # pad to the 60-byte Ethernet minimum


def na_message(mac: bytes, target: IPv6Address) -> bytes:
    """An unsolicited ICMPv6 neighbour advertisement (RFC 4861 sections 4.4 and 7.2.6).

    Flags: Override set, Solicited clear, Router clear. Option 2 (target link-layer
    address) carries ``mac``. The checksum is left 0: the kernel computes it for raw
    ICMPv6 sockets.
    """
    flags = 0x20000000  # O
    return struct.pack("!BBHI", 136, 0, 0, flags) + target.packed + struct.pack("!BB", 2, 1) + mac


# --------------------------------------------------------------------------- netlink


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What herder needs to know of one interface."""

    index: int
    name: str
    mac: str
    up: bool
    kind: str | None = None

    @property
    def mac_bytes(self) -> bytes:
        return mac_bytes(self.mac)


class Netlink:
    """pyroute2 ``IPRoute`` calls on one worker thread (see the module docstring)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vrrp-netlink")
        self._ipr: Any = None

    def _run(self, fn: Callable[[Any], T]) -> T:
        if self._ipr is None:
            from pyroute2 import IPRoute  # imported here: only the worker thread needs it

            self._ipr = IPRoute()
        return fn(self._ipr)

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(ipr)`` on the netlink thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn)

    async def close(self) -> None:
        def close(ipr: Any) -> None:
            ipr.close()

        if self._ipr is not None:
            try:
                await self.call(close)
            except Exception:  # closing must not fail a stop
                log.debug("closing netlink failed", exc_info=True)
        self._pool.shutdown(wait=False)

    @staticmethod
    def _link_info(msg: Any) -> LinkInfo:
        flags = msg["flags"]
        linkinfo = msg.get("IFLA_LINKINFO")
        kind = linkinfo.get("IFLA_INFO_KIND") if linkinfo is not None else None
        return LinkInfo(msg["index"], msg.get("IFLA_IFNAME"), msg.get("IFLA_ADDRESS") or "00:00:00:00:00:00",
                        bool(flags & IFF_UP) and bool(flags & IFF_RUNNING), kind)

    async def link(self, name: str) -> LinkInfo | None:
        """The interface called ``name``, or None."""
        def get(ipr: Any) -> LinkInfo | None:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                return None
            return self._link_info(ipr.link("get", index=idx[0])[0])

        return await self.call(get)

    async def links(self) -> list[LinkInfo]:
        return await self.call(lambda ipr: [self._link_info(m) for m in ipr.link("dump")])

    async def addresses(self, index: int, family: int) -> list[tuple[IPInterface, int, int]]:
        """``(address/prefix, scope, flags)`` of one interface, in kernel order."""
        fam = socket.AF_INET if family == 4 else socket.AF_INET6

        def get(ipr: Any) -> list[tuple[IPInterface, int, int]]:
            out = []
            for m in ipr.addr("dump", family=fam, index=index):
                a = m.get("IFA_ADDRESS")
                if a is None:
                    continue
                flags = m.get("IFA_FLAGS") or m["flags"]
                out.append((IPv4Interface(f"{a}/{m['prefixlen']}") if family == 4 else
                            IPv6Interface(f"{a}/{m['prefixlen']}"), m["scope"], flags))
            return out

        return await self.call(get)

    async def ensure_macvlan(self, base: int, name: str, mac: str) -> tuple[LinkInfo, bool]:
        """A macvlan ``name`` on ``base`` with ``mac``, up; ``(link, created)``.

        An existing interface of that name (left by a killed herder or keepalived) is
        reused when it is a macvlan with the right MAC, and replaced otherwise.
        """
        def ensure(ipr: Any) -> tuple[LinkInfo, bool]:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                cur = self._link_info(ipr.link("get", index=idx[0])[0])
                if cur.kind == "macvlan" and cur.mac.lower() == mac.lower():
                    ipr.link("set", index=cur.index, state="up")
                    return self._link_info(ipr.link("get", index=cur.index)[0]), False
                ipr.link("del", index=idx[0])
            ipr.link("add", ifname=name, kind="macvlan", link=base, macvlan_mode="private", address=mac)
            idx = ipr.link_lookup(ifname=name)
            ipr.link("set", index=idx[0], state="up")
            return self._link_info(ipr.link("get", index=idx[0])[0]), True

        return await self.call(ensure)

    async def delete_link(self, name: str) -> bool:
        def delete(ipr: Any) -> bool:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                return False
            ipr.link("del", index=idx[0])
            return True

        return await self.call(delete)


# --------------------------------------------------------------------------- fast address changes

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
_NLMSGHDR = struct.Struct("=IHHII")


class AddressSocket:
    """RTM_NEWADDR / RTM_DELADDR from the caller's thread (see the module docstring)."""

    def __init__(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        s.bind((0, 0))
        s.settimeout(1.0)  # the ACK is queued before send() returns; this only bounds a broken kernel
        self._sock = s
        self._seq = 0

    def change(self, add: bool, index: int, iface: IPInterface, label: str | None = None) -> int:
        """Add or delete one address; 0, or the errno the kernel answered."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        self._seq += 1
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        msg["scope"] = 0
        addr = str(iface.ip)
        if iface.version == 4:
            attrs: list[tuple[str, Any]] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
            if label and add:
                attrs.append(("IFA_LABEL", label))
        else:
            attrs = [("IFA_ADDRESS", addr)]
            if add:
                msg["flags"] = IFA_F_NODAD
                attrs.append(("IFA_FLAGS", IFA_F_NODAD))
        msg["attrs"] = attrs
        msg["header"]["type"] = RTM_NEWADDR if add else RTM_DELADDR
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | ((NLM_F_CREATE | NLM_F_EXCL) if add else 0)
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(msg.data)
        for _ in range(16):
            data = self._sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq == self._seq:
                    return -struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0]
                off += max(length, _NLMSGHDR.size)
        raise OSError(errno.EPROTO, "no netlink ACK for an address change")

    def close(self) -> None:
        self._sock.close()


# --------------------------------------------------------------------------- sysctls


def read_sysctl(key: str) -> str | None:
    """A sysctl of this network namespace, by path (``net/ipv4/conf/eth0/arp_ignore``:
    slashes, because interface names may contain dots), or None."""
    try:
        with open("/proc/sys/" + key, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> bool:
    try:
        with open("/proc/sys/" + key, "w", encoding="ascii") as f:
            f.write(value)
        return True
    except OSError as e:
        log.warning("cannot set %s=%s: %s", key, value, e.strerror or e)
        return False


def _conf(ifname: str, name: str) -> str:
    # interface names may contain dots (vrrp.51): /proc/sys/net/ipv4/conf/vrrp.51/...
    return f"net/ipv4/conf/{ifname}/{name}"


# --------------------------------------------------------------------------- host actions


class ActionBackend(Protocol):
    """What the driver needs done; :class:`HostActions` does it on this host.

    Every method is synchronous and quick (a netlink request, a raw frame): the driver
    calls them inline, the moment the machine asks, so nothing on the failover path
    waits for another loop iteration or thread."""

    def add_vips(self, addresses: Iterable[IPAddress]) -> None: ...

    def del_vips(self, addresses: Iterable[IPAddress]) -> None: ...

    def announce(self, addresses: Iterable[IPAddress]) -> None:
        """One gratuitous ARP (IPv4) or unsolicited NA (IPv6) per address."""
        ...


class HostActions:
    """The actions of one instance on this host: its VIPs on its interface (or VMAC), and
    its gratuitous ARPs / neighbour advertisements."""

    def __init__(self, netlink: Netlink, name: str, vips: dict[IPAddress, tuple[IPInterface, str | None, str | None]],
                 link: LinkInfo, announce_link: LinkInfo) -> None:
        """``vips`` maps each VIP to (address/prefix, dev or None, label or None); ``link``
        is where VIPs without ``dev`` go; ``announce_link`` sends GARP/NA (its MAC is used)."""
        self.netlink = netlink
        self.name = name
        self.vips = vips
        self.link = link
        self.announce_link = announce_link
        self._dev_index: dict[str, int] = {}
        self._addrs: AddressSocket | None = None
        self._packet: socket.socket | None = None
        self._icmp6: socket.socket | None = None
        self.garps_sent = 0

    async def open(self, family: int) -> None:
        """Resolve the VIPs' interfaces and open the sockets now, not at the first failover.

        Binding a packet socket that has a protocol hook waits for an RCU grace period
        (``synchronize_net``): about 10 ms measured here, which a first GARP created on
        demand would add to the failover. The packet socket is opened with protocol 0
        (send only: it never receives, registers no hook, and queues nothing).
        """
        for _iface, dev, _label in self.vips.values():
            if dev is not None and dev not in self._dev_index:
                info = await self.netlink.link(dev)
                if info is None:
                    raise RuntimeError(f"({self.name}) VIP interface {dev} does not exist")
                self._dev_index[dev] = info.index
        self._addrs = AddressSocket()
        if family == 4:
            self._packet_socket()
        else:
            self._icmp6_socket()

    def _index(self, dev: str | None) -> int:
        return self.link.index if dev is None else self._dev_index[dev]

    def add_vips(self, addresses: Iterable[IPAddress]) -> None:
        assert self._addrs is not None, "open() first"
        for a in addresses:
            iface, dev, label = self.vips[a]
            err = self._addrs.change(True, self._index(dev), iface, label)
            if err not in (0, errno.EEXIST):
                log.error("(%s) cannot add VIP %s: %s", self.name, iface, os.strerror(err))

    def del_vips(self, addresses: Iterable[IPAddress]) -> None:
        assert self._addrs is not None, "open() first"
        for a in addresses:
            iface, dev, _ = self.vips[a]
            err = self._addrs.change(False, self._index(dev), iface)
            if err not in (0, errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                log.error("(%s) cannot remove VIP %s: %s", self.name, iface, os.strerror(err))

    def announce(self, addresses: Iterable[IPAddress]) -> None:
        """One GARP (IPv4) or unsolicited NA (IPv6) per address (the driver repeats it)."""
        mac = self.announce_link.mac_bytes
        for a in addresses:
            try:
                if a.version == 4:
                    self._packet_socket().send(garp_frame(mac, a))  # type: ignore[arg-type]
                else:
                    self._icmp6_socket().sendto(na_message(mac, a), (str(ALL_NODES), 0, 0,  # type: ignore[arg-type]
                                                                     self.announce_link.index))
                self.garps_sent += 1
            except OSError as e:
                log.warning("(%s) cannot send %s for %s on %s: %s", self.name,
                            "gratuitous ARP" if a.version == 4 else "neighbour advert", a,
                            self.announce_link.name, e.strerror or e)

    def _packet_socket(self) -> socket.socket:
        if self._packet is None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind((self.announce_link.name, 0))
            s.setblocking(False)
            self._packet = s
        return self._packet

    def _icmp6_socket(self) -> socket.socket:
        if self._icmp6 is None:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.announce_link.name.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.announce_link.index)
            s.setblocking(False)
            self._icmp6 = s
        return self._icmp6

    def close(self) -> None:
        for s in (self._packet, self._icmp6):
            if s is not None:
                s.close()
        self._packet = self._icmp6 = None
        if self._addrs is not None:
            self._addrs.close()
            self._addrs = None


class SysctlGuard:
    """Sets sysctls and remembers the old values, to put them back at stop."""

    def __init__(self) -> None:
        self._saved: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        old = read_sysctl(key)
        if old is None:
            log.warning("sysctl %s does not exist here", key)
            return
        if old != value and write_sysctl(key, value):
            self._saved.setdefault(key, old)
            log.info("set %s = %s (was %s)", key, value, old)

    def vmac(self, base: str, vmac: str) -> None:
        """Settings for a VMAC: only the VMAC answers ARP for the VIPs (keepalived's
        arp_ignore/arp_filter), and the base interface never names a VIP as the sender of
        its own ARP requests (arp_announce=2, herder's addition: with the default 0, a
        reply from the VIP to a host makes the base interface ask "who has <host> tell
        <VIP>", and the host then points its entry for the VIP at the base MAC, which
        defeats the VMAC; measured in tests/netns/test_vrrp.py)."""
        self.set(_conf(base, "arp_ignore"), "1")
        self.set(_conf(base, "arp_filter"), "1")
        self.set(_conf(base, "arp_announce"), "2")
        self.set(_conf(vmac, "arp_ignore"), "1")

    def restore(self) -> None:
        for key, old in self._saved.items():
            if os.path.exists("/proc/sys/" + key):
                write_sysctl(key, old)
        self._saved.clear()
