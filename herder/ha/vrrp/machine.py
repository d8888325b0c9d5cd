"""The VRRP state machine of one virtual router instance: sans-I/O, time passed in.

Theory of operation
-------------------
One :class:`VrrpMachine` is one VRRP instance on one router (keepalived's
``vrrp_instance``). It follows RFC 5798 section 6.4 (and RFC 3768 section 6.4 for v2),
with keepalived's extensions (FAULT, preempt_delay, forced re-election after a dual
master). Like aioquic's ``QuicConnection`` it never reads a clock and never touches a
socket:

* inputs: :meth:`~VrrpMachine.start`, :meth:`~VrrpMachine.receive_advert` (the raw VRRP
  message with its IP source, destination and TTL), :meth:`~VrrpMachine.handle_timer`,
  :meth:`~VrrpMachine.set_tracking` (effective priority and faults from tracked scripts,
  interfaces and pools), :meth:`~VrrpMachine.promote` / :meth:`~VrrpMachine.demote`
  (sync groups) and :meth:`~VrrpMachine.shutdown`; every one takes ``now`` (seconds on
  any monotonic clock);
* outputs: :meth:`~VrrpMachine.next_action` returns the actions to perform, in order
  (frozen dataclasses: :class:`SendAdvert`, :class:`AddVips`, :class:`DelVips`,
  :class:`SendGratuitousArp`, :class:`SendNeighborAdvert`, :class:`Notify`), and
  :meth:`~VrrpMachine.get_timer` the absolute time at which :meth:`handle_timer` wants to
  be called (None: never). The I/O adapter re-arms one ``loop.call_at`` after every input.

States and transitions (:data:`TRANSITIONS`; a transition missing from the table is a bug
and raises :class:`LocalProtocolError`):

=============  ====================  ===========  ==================================================
from           event                 to           what is done (RFC 5798 section)
=============  ====================  ===========  ==================================================
INITIALIZE     startup               BACKUP       VIPs removed (stale ones, as keepalived does);
                                                  Master_Down_Timer = Master_Down_Interval (6.4.1)
INITIALIZE     startup (owner)       MASTER       priority 255 and initial state MASTER (6.4.1)
INITIALIZE     startup (fault)       FAULT        a tracked interface/script is down
BACKUP         master_down           MASTER       VIPs added, advert sent, GARP/NA (6.4.2)
BACKUP         promote               MASTER       a sync group member became master
MASTER         higher_priority       BACKUP       VIPs removed; Master_Down_Timer reset (6.4.3)
MASTER         demote                BACKUP       a sync group member left MASTER
BACKUP/MASTER  fault                 FAULT        MASTER first sends priority 0 and drops the VIPs
FAULT          fault_cleared         BACKUP       (or MASTER for an owner starting as master)
any            shutdown              INITIALIZE   MASTER sends priority 0 and drops the VIPs (6.4.3)
=============  ====================  ===========  ==================================================

Inside a state (no transition):

* BACKUP receives priority 0: Master_Down_Timer = Skew_Time, so the backup with the
  highest priority takes over at once (6.4.2). Any other advert resets the timer to
  Master_Down_Interval, unless preemption is on and the advert's priority is lower than
  ours: then it is discarded and the timer runs out (we preempt). ``preempt_delay``
  (keepalived) keeps accepting lower-priority adverts for that long after the first one.
  In v3 the backup learns the master's interval (Master_Adver_Interval, 6.4.2).
* MASTER: the Adver_Timer sends an advert every Advertisement_Interval. A priority-0
  advert is answered with an advert. A *lower*-priority advert means another router
  believes it is master (a dual master, e.g. after a partition heals): like keepalived we
  answer with an advert at once, so the other router yields, and send fresh gratuitous
  ARPs (``garp_lower_prio_repeat``, again after ``garp_lower_prio_delay``), so every
  host's ARP entry points at us again. An equal priority is decided by the primary
  address: the higher one wins (6.4.3).

Receiving (RFC 5798 section 7.1; RFC 3768 section 7.1). :meth:`receive_advert` drops and
counts (``stats.dropped[reason]``), never acts on, a packet with: a TTL other than 255
(``ttl``; not checked for unicast peers, as keepalived); bytes that do not decode
(``length``, ``version``, ``type``, ``checksum``...); our own source address (``own``); a
VRRP version other than ours (``version``); another VRID (``vrid``); v2 auth data
(``auth``); a v2 interval other than ours (``interval``: RFC 3768 requires it; v3 instead
learns the interval); a multicast packet where unicast is configured or the reverse
(``destination``); an address list that differs from ours (``address_list``), unless the
sender is the address owner (priority 255), which is processed. A differing address list
is also a *VRID collision*: another virtual router uses our VRID on this link. It is
logged (once per sender and list) and kept in :attr:`VrrpMachine.collisions`. The address
owner (configured priority 255) ignores adverts (``ignored``), as 7.1 asks.

Timings (pure helpers): :func:`skew_time` and :func:`master_down_interval` (RFC 5798
section 6.1 in centiseconds for v3; RFC 3768 section 6.1 in seconds for v2).

Deliberately not here: sockets, netlink, clocks, script execution, logging of
transitions (the adapter logs each :class:`Notify` with its cause). The machine logs only
protocol events an operator must see (drops, collisions, dual masters).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from herder.ha.vrrp.packet import (
    AUTH_NONE,
    MCAST_V4,
    MCAST_V6,
    TTL,
    Advert,
    IPAddress,
    MalformedPacket,
    decode,
)

__all__ = [
    "TRANSITIONS",
    "Action",
    "AddVips",
    "DelVips",
    "GarpPolicy",
    "InstanceConfig",
    "LocalProtocolError",
    "Notify",
    "SendAdvert",
    "SendGratuitousArp",
    "SendNeighborAdvert",
    "State",
    "Stats",
    "VrrpMachine",
    "effective_priority",
    "master_down_interval",
    "skew_time",
]

log = logging.getLogger(__name__)

PRIORITY_OWNER = 255  # RFC 5798 section 5.2.4: the IPvX address owner
PRIORITY_STOP = 0  # section 5.2.4: the master stopped participating


class State(enum.Enum):
    """RFC 5798 section 6.3 states, plus keepalived's FAULT; values are keepalived's words."""

    INITIALIZE = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


class LocalProtocolError(RuntimeError):
    """The machine was driven wrongly (a caller bug): e.g. started twice."""


#: The allowed transitions: ``TRANSITIONS[state][event] -> new state``.
TRANSITIONS: dict[State, dict[str, State]] = {
    State.INITIALIZE: {"startup": State.BACKUP, "startup_owner": State.MASTER, "startup_fault": State.FAULT},
    State.BACKUP: {"master_down": State.MASTER, "promote": State.MASTER, "fault": State.FAULT,
                   "shutdown": State.INITIALIZE},
    State.MASTER: {"higher_priority": State.BACKUP, "demote": State.BACKUP, "fault": State.FAULT,
                   "shutdown": State.INITIALIZE},
    State.FAULT: {"fault_cleared": State.BACKUP, "fault_cleared_owner": State.MASTER,
                  "shutdown": State.INITIALIZE},
}


# --------------------------------------------------------------------------- timing helpers


def skew_time(priority: int, master_adver_int_cs: int, version: int) -> float:
    """Skew_Time in seconds: how much longer a lower-priority backup waits.

    v3 (RFC 5798 section 6.1): ``((256 - Priority) * Master_Adver_Interval) / 256``
    centiseconds, in integer centiseconds as the RFC's unit. v2 (RFC 3768 section 6.1):
    ``(256 - Priority) / 256`` seconds.
    """
    if version == 2:
        return (256 - priority) / 256
    return ((256 - priority) * master_adver_int_cs // 256) / 100


def master_down_interval(priority: int, master_adver_int_cs: int, version: int) -> float:
    """Master_Down_Interval in seconds: ``3 * Master_Adver_Interval + Skew_Time`` (section 6.1)."""
    return 3 * master_adver_int_cs / 100 + skew_time(priority, master_adver_int_cs, version)


def effective_priority(base: int, adjust: int) -> int:
    """The priority advertised: ``base + adjust`` kept within 1..254 (keepalived).

    The address owner (255) is never adjusted, and tracking can never raise another
    router to 255 (keepalived.conf(5), ``priority``).
    """
    if base == PRIORITY_OWNER:
        return PRIORITY_OWNER
    return max(1, min(254, base + adjust))


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class GarpPolicy:
    """When gratuitous ARPs / unsolicited NAs are sent; keepalived's defaults."""

    #: Second set after becoming master (``garp_master_delay``, seconds; 0: none).
    master_delay_s: float = 5.0
    #: Messages per set on becoming master (``garp_master_repeat``).
    master_repeat: int = 5
    #: Periodic refresh while master (``garp_master_refresh``, seconds; 0: none).
    master_refresh_s: float = 0.0
    #: Messages per refresh (``garp_master_refresh_repeat``).
    master_refresh_repeat: int = 1
    #: Second set after a lower-priority advert reached the master (``garp_lower_prio_delay``).
    lower_prio_delay_s: float = 5.0
    #: Messages per set after a lower-priority advert (``garp_lower_prio_repeat``; 0: none).
    lower_prio_repeat: int = 5
    #: Pause between the messages of one set (``garp_interval`` / ``gna_interval``).
    interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """What one VRRP instance is configured with (the machine's view of it)."""

    name: str
    #: Virtual Router Identifier, 1..255.
    vrid: int
    #: Base priority, 1..255 (255: the address owner).
    priority: int = 100
    #: 2 (RFC 3768, IPv4 only) or 3 (RFC 5798).
    version: int = 2
    #: 4 or 6.
    family: int = 4
    #: Advertisement_Interval in seconds (v2: whole seconds; v3: centisecond resolution).
    advert_int_s: float = 1.0
    #: The virtual addresses, in advert order.
    vips: tuple[IPAddress, ...] = ()
    #: Preempt_Mode (RFC 5798 section 6.1); keepalived's ``nopreempt`` turns it off.
    preempt: bool = True
    #: keepalived ``preempt_delay``: accept lower-priority masters this long (seconds).
    preempt_delay_s: float = 0.0
    #: keepalived ``state MASTER``: only an address owner goes straight to MASTER.
    start_master: bool = False
    #: Adverts go to unicast peers (no TTL check, unicast destinations expected).
    unicast: bool = False
    #: keepalived ``lower_prio_no_advert``: do not answer a lower-priority advert (RFC behaviour).
    lower_prio_no_advert: bool = False
    #: keepalived ``higher_prio_send_advert``: advertise once more before yielding.
    higher_prio_send_advert: bool = False
    garp: GarpPolicy = field(default_factory=GarpPolicy)

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"{self.name}: VRID {self.vrid} is outside 1..255")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"{self.name}: priority {self.priority} is outside 1..255")
        if self.version not in (2, 3) or self.family not in (4, 6):
            raise ValueError(f"{self.name}: version {self.version} / family {self.family}")
        if self.version == 2 and self.family == 6:
            raise ValueError(f"{self.name}: VRRPv2 is IPv4 only")
        cs = self.advert_int_cs
        if self.version == 2 and (cs % 100 or not 100 <= cs <= 25500):
            raise ValueError(f"{self.name}: a VRRPv2 advert_int is whole seconds 1..255, not {self.advert_int_s}")
        if not 1 <= cs <= 4095:
            raise ValueError(f"{self.name}: advert_int {self.advert_int_s} s is outside 0.01..40.95 s")
        if any(v.version != self.family for v in self.vips):
            raise ValueError(f"{self.name}: every VIP must be IPv{self.family}")

    @property
    def advert_int_cs(self) -> int:
        """Advertisement_Interval in centiseconds (the v3 wire unit)."""
        return round(self.advert_int_s * 100)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send this advert to the group (or to every unicast peer)."""

    advert: Advert


@dataclass(frozen=True, slots=True)
class AddVips:
    """Add the virtual addresses to the interface (becoming master)."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class DelVips:
    """Remove the virtual addresses (leaving master, or stale ones at startup)."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class SendGratuitousArp:
    """Broadcast ``count`` gratuitous ARPs for each IPv4 address, ``interval_s`` apart."""

    addresses: tuple[IPAddress, ...]
    count: int
    interval_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class SendNeighborAdvert:
    """Send ``count`` unsolicited neighbour advertisements for each IPv6 address (RFC 4861 7.2.6)."""

    addresses: tuple[IPAddress, ...]
    count: int
    interval_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Notify:
    """A state transition happened: log it, run the notify scripts, tell the sync group."""

    instance: str
    old: State
    new: State
    cause: str
    priority: int


Action = SendAdvert | AddVips | DelVips | SendGratuitousArp | SendNeighborAdvert | Notify


@dataclass
class Stats:
    """Counters of one instance (keepalived's ``vrrp_stats``), for the status output."""

    adverts_received: int = 0
    adverts_sent: int = 0
    became_master: int = 0
    released_master: int = 0
    priority_zero_received: int = 0
    priority_zero_sent: int = 0
    #: Lower-priority adverts seen while master (dual masters).
    lower_priority_received: int = 0
    #: Packets dropped (RFC 5798 section 7.1), by reason.
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass
class Collision:
    """Adverts with our VRID but another address list: another virtual router on our VRID."""

    addresses: tuple[IPAddress, ...]
    priority: int
    count: int
    first_seen: float
    last_seen: float


# --------------------------------------------------------------------------- the machine


class VrrpMachine:
    """One VRRP instance. See the module docstring for the rules.

    Args:
        config: the instance's configuration.
        primary: our primary address on the interface (or ``unicast_src_ip``): the
            source of our adverts and the equal-priority tiebreak (RFC 5798 6.4.3).
    """

    def __init__(self, config: InstanceConfig, primary: IPAddress) -> None:
        if primary.version != config.family:
            raise ValueError(f"{config.name}: primary address {primary} is not IPv{config.family}")
        self.config = config
        self.primary = primary
        self.state = State.INITIALIZE
        #: When the current state was entered, and why.
        self.since: float | None = None
        self.cause = "not started"
        self.stats = Stats()
        #: VRID collisions seen, by sender.
        self.collisions: dict[IPAddress, Collision] = {}
        #: Master_Adver_Interval in centiseconds (learned from the master in v3).
        self.master_adver_int_cs = config.advert_int_cs
        #: The current master as far as we know (ourselves when MASTER), and its priority.
        self.master: IPAddress | None = None
        self.master_priority: int | None = None
        self.last_advert_at: float | None = None
        self._adjust = 0
        self._faults: tuple[str, ...] = ()
        self._actions: deque[Action] = deque()
        self._adver_at: float | None = None
        self._down_at: float | None = None
        self._down_cause = ""
        self._garp_at: float | None = None
        self._garp_set: tuple[int, str] = (0, "")
        self._refresh_at: float | None = None
        self._preempt_until: float | None = None
        self._lower_logged: IPAddress | None = None

    # ------------------------------------------------------------------ reading

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def effective_priority(self) -> int:
        """The priority we advertise: base plus tracking weights (keepalived's rules)."""
        return effective_priority(self.config.priority, self._adjust)

    @property
    def owner(self) -> bool:
        """True for the address owner (configured priority 255)."""
        return self.config.priority == PRIORITY_OWNER

    @property
    def faults(self) -> tuple[str, ...]:
        return self._faults

    @property
    def down_timer(self) -> float | None:
        """When the Master_Down_Timer expires (BACKUP only), else None: the timer whose
        precision decides how fast a failover is."""
        return self._down_at

    def get_timer(self) -> float | None:
        """The time at which :meth:`handle_timer` must next be called, or None."""
        times = [t for t in (self._adver_at, self._down_at, self._garp_at, self._refresh_at) if t is not None]
        return min(times) if times else None

    def next_action(self) -> Action | None:
        """The next action to perform, in order; None when there is nothing to do."""
        return self._actions.popleft() if self._actions else None

    def skew_time(self) -> float:
        return skew_time(self.effective_priority, self.master_adver_int_cs, self.config.version)

    def master_down_interval(self) -> float:
        return master_down_interval(self.effective_priority, self.master_adver_int_cs, self.config.version)

    def status(self) -> dict[str, Any]:
        """This instance as plain JSON data."""
        c = self.config
        return {
            "state": self.state.value,
            "since": self.since,
            "cause": self.cause,
            "vrid": c.vrid,
            "version": c.version,
            "family": f"IPv{c.family}",
            "priority": c.priority,
            "effective_priority": self.effective_priority,
            "advert_int": c.advert_int_s,
            "master_adver_int": self.master_adver_int_cs / 100,
            "master_down_interval": round(self.master_down_interval(), 3),
            "preempt": c.preempt,
            "preempt_delay": c.preempt_delay_s,
            "primary": str(self.primary),
            "master": None if self.master is None else str(self.master),
            "master_priority": self.master_priority,
            "vips": [str(v) for v in c.vips],
            "faults": list(self._faults),
            "stats": {
                "adverts_received": self.stats.adverts_received,
                "adverts_sent": self.stats.adverts_sent,
                "became_master": self.stats.became_master,
                "released_master": self.stats.released_master,
                "priority_zero_received": self.stats.priority_zero_received,
                "priority_zero_sent": self.stats.priority_zero_sent,
                "lower_priority_received": self.stats.lower_priority_received,
                "dropped": dict(sorted(self.stats.dropped.items())),
                "dropped_total": self.stats.dropped_total,
            },
            "collisions": [
                {"from": str(src), "addresses": [str(a) for a in col.addresses], "priority": col.priority,
                 "count": col.count}
                for src, col in self.collisions.items()
            ],
        }

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> None:
        """Leave INITIALIZE (the Startup event, RFC 5798 section 6.4.1)."""
        if self.state is not State.INITIALIZE:
            raise LocalProtocolError(f"{self.name}: start() in state {self.state.value}")
        # keepalived removes VIPs it may have left behind before it runs ("removing VIPs").
        if self.config.vips:
            self._emit(DelVips(self.config.vips))
        if self._faults:
            self._transition("startup_fault", now, "; ".join(self._faults))
        elif self.owner and self.config.start_master:
            self._become_master("startup_owner", now, "address owner (priority 255) starting as master")
        else:
            self._become_backup("startup", now, "startup")

    def shutdown(self, now: float) -> None:
        """The Shutdown event: a master sends priority 0 so a backup takes over at once."""
        if self.state is State.INITIALIZE:
            return
        if self.state is State.MASTER:
            self._leave_master(now, send_zero=True)
        self._clear_timers()
        self._transition("shutdown", now, "shutdown")

    def set_tracking(self, now: float, *, adjust: int = 0, faults: tuple[str, ...] | list[str] = ()) -> None:
        """New tracking results: ``adjust`` is the sum of the weights that apply now,
        ``faults`` the reasons to be in FAULT (empty: none).

        Entering FAULT from MASTER sends priority 0 (keepalived). A master whose effective
        priority changes advertises the new one at once, so a waiting backup can preempt
        without a further interval.
        """
        before = self.effective_priority
        self._adjust = adjust
        faults = tuple(faults)
        had = self._faults
        self._faults = faults
        if self.state is State.INITIALIZE:
            return
        if faults and self.state is not State.FAULT:
            if self.state is State.MASTER:
                self._leave_master(now, send_zero=True)
            self._clear_timers()
            self._transition("fault", now, "; ".join(faults))
            return
        if not faults and self.state is State.FAULT:
            cause = "fault cleared (was: " + "; ".join(had) + ")"
            if self.owner and self.config.start_master:
                self._become_master("fault_cleared_owner", now, cause)
            else:
                self._become_backup("fault_cleared", now, cause)
            return
        after = self.effective_priority
        if after != before:
            log.info("(%s) effective priority %d -> %d", self.name, before, after)
            if self.state is State.MASTER:
                self._send_advert(now)

    def promote(self, now: float, cause: str) -> None:
        """A sync group asks a BACKUP to become MASTER now (no-op in other states)."""
        if self.state is State.BACKUP:
            self._become_master("promote", now, cause)

    def demote(self, now: float, cause: str) -> None:
        """A sync group asks a MASTER to step down to BACKUP (no-op in other states)."""
        if self.state is State.MASTER:
            self._leave_master(now, send_zero=False)
            self._become_backup("demote", now, cause)

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        if self._down_at is not None and now >= self._down_at and self.state is State.BACKUP:
            self._down_at = None
            self._become_master("master_down", now, self._down_cause or "master down")
            return
        if self.state is not State.MASTER:
            return
        if self._adver_at is not None and now >= self._adver_at:
            self._send_advert(now)
        if self._garp_at is not None and now >= self._garp_at:
            count, reason = self._garp_set
            self._garp_at = None
            self._announce(count, reason)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._announce(self.config.garp.master_refresh_repeat, "periodic refresh")
            self._refresh_at = now + self.config.garp.master_refresh_s

    def receive_advert(self, pkt: bytes, src: IPAddress, now: float, *, ttl: int | None = TTL,
                       dst: IPAddress | None = None) -> str | None:
        """Process one received VRRP message (the IP payload).

        Args:
            pkt: the VRRP message.
            src: the IP source address.
            now: the current time.
            ttl: the IPv4 TTL / IPv6 hop limit it arrived with (None: unknown, not checked).
            dst: the IP destination (None: not checked).

        Returns:
            None if the advert was valid and processed; otherwise the reason it was
            dropped (also counted in ``stats.dropped``) or ``"ignored"`` (not running,
            in FAULT, or we are the address owner).
        """
        c = self.config
        if not c.unicast and ttl is not None and ttl != TTL:
            return self._drop("ttl", src, f"TTL/hop limit {ttl}, expected {TTL}")
        group = MCAST_V4 if c.family == 4 else MCAST_V6
        try:
            adv = decode(pkt, src, dst if dst is not None else group, family=c.family,
                         alt_dst=group if c.unicast else None)
        except MalformedPacket as e:
            return self._drop(e.reason, src, e.detail)
        if src == self.primary:
            return self._drop("own", src, "advert with our own source address")
        if adv.version != c.version:
            return self._drop("version", src, f"VRRPv{adv.version}, we run v{c.version}")
        if adv.vrid != c.vrid:
            return self._drop("vrid", src, f"VRID {adv.vrid}, ours is {c.vrid}")
        if adv.version == 2 and adv.auth_type != AUTH_NONE:
            return self._drop("auth", src, f"auth type {adv.auth_type}; only 0 (none) is supported")
        if adv.version == 2 and adv.interval_cs != c.advert_int_cs:
            return self._drop("interval", src, f"advert interval {adv.interval_s:g}s, ours {c.advert_int_s:g}s")
        if dst is not None and dst.is_multicast == c.unicast:
            return self._drop("destination", src, f"{'multicast' if dst.is_multicast else 'unicast'} advert to "
                              f"{dst}, we use {'unicast' if c.unicast else 'multicast'}")
        if adv.addresses != c.vips and set(adv.addresses) != set(c.vips):
            self._collision(adv, src, now)
            if adv.priority != PRIORITY_OWNER:
                return self._drop("address_list", src, "address list differs from ours (VRID collision)")
        if self.state in (State.INITIALIZE, State.FAULT) or self.owner:
            return "ignored"
        self.stats.adverts_received += 1
        self.last_advert_at = now
        if adv.priority == PRIORITY_STOP:
            self.stats.priority_zero_received += 1
        if self.state is State.BACKUP:
            self._backup_rx(adv, src, now)
        else:
            self._master_rx(adv, src, now)
        return None

    # ------------------------------------------------------------------ per-state receive

    def _backup_rx(self, adv: Advert, src: IPAddress, now: float) -> None:
        """RFC 5798 section 6.4.2, "If an ADVERTISEMENT is received"."""
        c = self.config
        ours = self.effective_priority
        if adv.priority == PRIORITY_STOP:
            self._down_at = now + self.skew_time()
            self._down_cause = f"master {src} released (priority 0 advert)"
            return
        delaying = c.preempt_delay_s > 0 and (self._preempt_until is None or now < self._preempt_until)
        if not c.preempt or adv.priority >= ours or delaying:
            if c.version == 3:
                self.master_adver_int_cs = adv.interval_cs
            self.master, self.master_priority = src, adv.priority
            self._down_at = now + self.master_down_interval()
            self._down_cause = f"master down: no advert from {src} for {self.master_down_interval():.3f}s"
            self._lower_logged = None
            if c.preempt_delay_s > 0:
                if adv.priority >= ours:
                    self._preempt_until = None
                elif self._preempt_until is None:
                    self._preempt_until = now + c.preempt_delay_s
                    log.info("(%s) lower-priority master %s (%d < %d): preempting in %.1fs (preempt_delay)",
                             self.name, src, adv.priority, ours, c.preempt_delay_s)
            return
        # Preempt: discard the lower-priority advert; the down timer runs out.
        self.master, self.master_priority = src, adv.priority
        self._down_cause = f"preempting lower-priority master {src} ({adv.priority} < {ours})"
        if self._lower_logged != src:
            self._lower_logged = src
            log.info("(%s) received lower priority (%d) advert from %s - discarding, preempting",
                     self.name, adv.priority, src)

    def _master_rx(self, adv: Advert, src: IPAddress, now: float) -> None:
        """RFC 5798 section 6.4.3, "If an ADVERTISEMENT is received", plus keepalived's
        forced re-election after a dual master."""
        c = self.config
        ours = self.effective_priority
        if adv.priority == PRIORITY_STOP:
            self._send_advert(now)
            return
        if adv.priority > ours or (adv.priority == ours and src > self.primary):
            if c.higher_prio_send_advert:
                self._send_advert(now)
            if c.version == 3:
                self.master_adver_int_cs = adv.interval_cs
            why = (f"higher priority advert from {src} ({adv.priority} > {ours})" if adv.priority > ours
                   else f"equal priority {ours} advert from higher address {src}")
            self._leave_master(now, send_zero=False)
            self.master, self.master_priority = src, adv.priority
            self._become_backup("higher_priority", now, why, keep_interval=True)
            return
        # Another router thinks it is master with a lower priority: a dual master. Tell it
        # (our advert makes it yield) and take the hosts' ARP entries back.
        self.stats.lower_priority_received += 1
        log.warning("(%s) received advert from %s with lower priority %d, ours %d%s", self.name, src,
                    adv.priority, ours, "" if c.lower_prio_no_advert else ", forcing new election")
        if not c.lower_prio_no_advert:
            self._send_advert(now)
        g = c.garp
        if g.lower_prio_repeat:
            reason = f"dual master healed: lower-priority master {src} seen"
            self._announce(g.lower_prio_repeat, reason)
            if g.lower_prio_delay_s > 0:
                self._garp_at = now + g.lower_prio_delay_s
                self._garp_set = (g.lower_prio_repeat, reason + " (second set)")

    # ------------------------------------------------------------------ transitions

    def _transition(self, event: str, now: float, cause: str) -> None:
        new = TRANSITIONS[self.state].get(event)
        if new is None:
            raise LocalProtocolError(f"{self.name}: no transition for {event!r} in state {self.state.value}")
        old = self.state
        self.state = new
        self.since = now
        self.cause = cause
        self._emit(Notify(self.name, old, new, cause, self.effective_priority))

    def _become_master(self, event: str, now: float, cause: str) -> None:
        c = self.config
        self._down_at = None
        self._preempt_until = None
        self.master, self.master_priority = self.primary, self.effective_priority
        self.master_adver_int_cs = c.advert_int_cs
        self._send_advert(now)
        if c.vips:
            self._emit(AddVips(c.vips))
        g = c.garp
        self._announce(g.master_repeat, "became master")
        if g.master_delay_s > 0:
            self._garp_at = now + g.master_delay_s
            self._garp_set = (g.master_repeat, "became master (second set)")
        self._refresh_at = now + g.master_refresh_s if g.master_refresh_s > 0 else None
        self.stats.became_master += 1
        self._transition(event, now, cause)

    def _leave_master(self, now: float, *, send_zero: bool) -> None:
        if send_zero:
            self._send_advert(now, priority=PRIORITY_STOP)
            self.stats.priority_zero_sent += 1
        if self.config.vips:
            self._emit(DelVips(self.config.vips))
        self._adver_at = self._garp_at = self._refresh_at = None
        self.stats.released_master += 1

    def _become_backup(self, event: str, now: float, cause: str, *, keep_interval: bool = False) -> None:
        if not keep_interval:
            self.master_adver_int_cs = self.config.advert_int_cs
        self._preempt_until = None
        self._lower_logged = None
        if event != "higher_priority":
            self.master = self.master_priority = None
        self._transition(event, now, cause)
        self._down_at = now + self.master_down_interval()
        who = f" from {self.master}" if self.master is not None else ""
        self._down_cause = f"master down: no advert{who} for {self.master_down_interval():.3f}s"

    def _clear_timers(self) -> None:
        self._adver_at = self._down_at = self._garp_at = self._refresh_at = None

    # ------------------------------------------------------------------ helpers

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _send_advert(self, now: float, priority: int | None = None) -> None:
        c = self.config
        prio = self.effective_priority if priority is None else priority
        self._emit(SendAdvert(Advert(version=c.version, vrid=c.vrid, priority=prio, interval_cs=c.advert_int_cs,
                                     addresses=c.vips, family=c.family)))
        self.stats.adverts_sent += 1
        if priority is None:
            self._adver_at = now + c.advert_int_s

    def _announce(self, count: int, reason: str) -> None:
        c = self.config
        if count <= 0 or not c.vips:
            return
        if c.family == 4:
            self._emit(SendGratuitousArp(c.vips, count, c.garp.interval_s, reason))
        else:
            self._emit(SendNeighborAdvert(c.vips, count, c.garp.interval_s, reason))

    def _drop(self, reason: str, src: IPAddress, detail: str) -> str:
        self.stats.drop(reason)
        log.debug("(%s) dropped advert from %s: %s", self.name, src, detail)
        return reason

    def _collision(self, adv: Advert, src: IPAddress, now: float) -> None:
        col = self.collisions.get(src)
        if col is not None and col.addresses == adv.addresses:
            col.count += 1
            col.last_seen = now
            col.priority = adv.priority
            return
        self.collisions[src] = Collision(adv.addresses, adv.priority, 1, now, now)
        log.warning("(%s) VRID %d collision: %s advertises %s (priority %d), we have %s",
                    self.name, self.config.vrid, src, ", ".join(map(str, adv.addresses)) or "no addresses",
                    adv.priority, ", ".join(map(str, self.config.vips)) or "no addresses")


def parse_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address object from text (a small helper for callers)."""
    return IPv6Address(text) if ":" in text else IPv4Address(text)
