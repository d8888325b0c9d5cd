"""A fake LAN for VRRP state machines: routers, a hand-advanced clock, no sockets, no sleeps.

Like aioquic's ``client_and_server()``/``roundtrip_until_done()`` and h11's
``ConnectionPair``: every action a machine emits is performed here (adverts are encoded
and delivered to every other connected router, VIPs are held in a set, notifies
recorded), and :meth:`Lan.run` advances the clock from timer to timer. Every loop is
guarded so a machine that keeps talking fails the test instead of hanging it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

from herder.ha.vrrp.machine import (
    AddVips,
    DelVips,
    InstanceConfig,
    Notify,
    SendAdvert,
    SendGratuitousArp,
    SendNeighborAdvert,
    State,
    VrrpMachine,
)
from herder.ha.vrrp.packet import MCAST_V4, MCAST_V6, Advert

MAX_ROUNDS = 10_000


@dataclass
class Router:
    """One router on the fake LAN, with what its actions did."""

    name: str
    address: IPv4Address
    machine: VrrpMachine
    connected: bool = True
    vips: set = field(default_factory=set)
    sent: list[tuple[float, Advert]] = field(default_factory=list)
    garps: list[tuple[float, object]] = field(default_factory=list)
    notifies: list[tuple[float, Notify]] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.machine.state

    def transitions(self) -> list[tuple[str, str]]:
        return [(n.old.value, n.new.value) for _, n in self.notifies]


class Lan:
    """Routers joined by one multicast segment, driven by a hand-advanced clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.routers: list[Router] = []
        #: Pairs of routers that cannot hear each other (a partition), both still running.
        self.cut: set[frozenset[str]] = set()

    def add(self, name: str, address: str, config: InstanceConfig, *, start: bool = True) -> Router:
        r = Router(name, ip_address(address), VrrpMachine(config, ip_address(address)))  # type: ignore[arg-type]
        self.routers.append(r)
        if start:
            r.machine.start(self.now)
            self.pump()
        return r

    def replace(self, router: Router, config: InstanceConfig | None = None) -> Router:
        """The router comes back (a restarted process): a fresh machine, started now."""
        router.machine = VrrpMachine(config or router.machine.config, router.address)
        router.connected = True
        router.machine.start(self.now)
        self.pump()
        return router

    def crash(self, router: Router) -> None:
        """The router disappears without a word (SIGKILL, cable cut): no priority 0."""
        router.connected = False

    def partition(self, a: Router, b: Router) -> None:
        """``a`` and ``b`` stop hearing each other but both keep running (split brain)."""
        self.cut.add(frozenset((a.name, b.name)))

    def heal(self, a: Router, b: Router) -> None:
        self.cut.discard(frozenset((a.name, b.name)))

    def group(self, router: Router):
        return MCAST_V4 if router.machine.config.family == 4 else MCAST_V6

    def pump(self) -> None:
        """Perform every pending action of every router, delivering adverts at once."""
        for _ in range(MAX_ROUNDS):
            busy = False
            for r in self.routers:
                while (a := r.machine.next_action()) is not None:
                    busy = True
                    self._perform(r, a)
            if not busy:
                return
        raise AssertionError("too many rounds: the machines keep talking")

    def _perform(self, r: Router, a: object) -> None:
        if isinstance(a, SendAdvert):
            r.sent.append((self.now, a.advert))
            if not r.connected:
                return
            pkt = a.advert.encode(r.address, self.group(r))
            for other in self.routers:
                if (other is not r and other.connected and other.machine.state is not State.INITIALIZE
                        and frozenset((r.name, other.name)) not in self.cut):
                    other.verdicts.append(other.machine.receive_advert(pkt, r.address, self.now, ttl=255,
                                                                       dst=self.group(r)))
        elif isinstance(a, AddVips):
            r.vips |= set(a.addresses)
        elif isinstance(a, DelVips):
            r.vips -= set(a.addresses)
        elif isinstance(a, (SendGratuitousArp, SendNeighborAdvert)):
            r.garps.append((self.now, a))
        elif isinstance(a, Notify):
            r.notifies.append((self.now, a))
        else:  # pragma: no cover
            raise AssertionError(f"unknown action {a!r}")

    def next_timer(self) -> float | None:
        times = [t for r in self.routers if r.connected and (t := r.machine.get_timer()) is not None]
        return min(times) if times else None

    def run(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, firing every timer on the way."""
        until = self.now + seconds
        for _ in range(MAX_ROUNDS):
            t = self.next_timer()
            if t is None or t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            for r in self.routers:
                if r.connected and (rt := r.machine.get_timer()) is not None and rt <= self.now:
                    r.machine.handle_timer(self.now)
            self.pump()
        raise AssertionError("too many timer rounds")

    def run_until(self, predicate, limit: float) -> float:
        """Advance until ``predicate()`` holds (checked after every timer); the time it took."""
        start = self.now
        until = self.now + limit
        for _ in range(MAX_ROUNDS):
            if predicate():
                return self.now - start
            t = self.next_timer()
            if t is None or t > until:
                raise AssertionError(f"condition not reached within {limit}s")
            self.run(t - self.now)
        raise AssertionError("too many timer rounds")

    def inject(self, to: Router, pkt: bytes, src: str, *, ttl: int | None = 255, dst=None) -> str | None:
        """Deliver raw bytes to one router, as if received from ``src``."""
        verdict = to.machine.receive_advert(pkt, ip_address(src), self.now, ttl=ttl,  # type: ignore[arg-type]
                                            dst=dst if dst is not None else self.group(to))
        self.pump()
        return verdict


def masters(lan: Lan) -> list[str]:
    return [r.name for r in lan.routers if r.connected and r.state is State.MASTER]
