"""``herder realserver setup|teardown``: prepare a real server for direct server return.

A DSR real server must accept packets addressed to the VIP without ever answering ARP
for it (otherwise the router may learn the real server's MAC for the VIP and bypass the
director: the lecture's "ARP race"). The lecture's fix is a *non-ARPing loopback
alias*; on Linux that is:

* the VIP on ``lo`` as a /32 (accepted as a local address, never announced);
* ``arp_ignore = 1``: answer ARP only for addresses configured on the interface the
  request arrived on (the VIP is on ``lo``, so no answer);
* ``arp_announce = 2``: never use the VIP as the source of the server's own ARP requests.

The kernel applies the larger of ``conf.all`` and ``conf.<interface>``, so both are set
for ``all`` and for every interface that is up. ``setup`` records the previous values
in the namespace's state directory and reports each change; ``teardown`` removes the
VIP and, when no VIP set up by herder remains, restores the recorded values.

:func:`plan_setup` is pure (tested without root); :func:`setup`/:func:`teardown` do the
I/O in the current network namespace.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from herder import proc

__all__ = ["Change", "plan_setup", "setup", "teardown"]

log = logging.getLogger(__name__)

ARP_SYSCTLS = {"arp_ignore": "1", "arp_announce": "2"}


@dataclass(frozen=True, slots=True)
class Change:
    """One change made (or to make): ``what`` is a sysctl name or ``address``."""

    what: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        if self.what == "address":
            return f"added {self.new} to lo" if self.new else f"removed {self.old} from lo"
        return f"{self.what}: {self.old} -> {self.new}"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def plan_setup(vips: list[str], lo_addresses: set[str], sysctls: Mapping[str, str],
               interfaces: list[str]) -> list[Change]:
    """The changes ``setup`` makes, given the current state (pure).

    Args:
        vips: the VIPs (IPv4 addresses).
        lo_addresses: addresses already on ``lo``.
        sysctls: current values of the relevant ``net.ipv4.conf.*`` sysctls.
        interfaces: interfaces that are up (besides ``lo``).

    Raises:
        ValueError: a VIP that is not an IPv4 address.
    """
    out: list[Change] = []
    for v in vips:
        addr = ipaddress.ip_address(v)
        if addr.version != 4:
            raise ValueError(f"{v}: only IPv4 VIPs are supported")
        if str(addr) not in lo_addresses:
            out.append(Change("address", None, f"{addr}/32"))
    for scope in ["all", *interfaces]:
        for key, want in ARP_SYSCTLS.items():
            name = f"net.ipv4.conf.{scope}.{key}"
            cur = sysctls.get(name)
            if cur is not None and cur != want:
                out.append(Change(name, cur, want))
    return out


def _state_path() -> Path:
    from herder.l4.director import state_dir

    return state_dir() / "realserver.json"


def _current() -> tuple[set[str], dict[str, str], list[str]]:
    res = proc.run_sync(["ip", "-j", "-4", "addr", "show"], timeout=5)
    if res.returncode != 0:
        raise OSError(res.stderr.decode(errors="replace").strip())
    links = json.loads(res.stdout.decode() or "[]")
    lo = {a["local"] for link in links if link.get("ifname") == "lo" for a in link.get("addr_info", ())}
    ifaces = [link["ifname"] for link in links if link.get("ifname") != "lo" and "UP" in link.get("flags", ())]
    values: dict[str, str] = {}
    for scope in ["all", *ifaces]:
        for key in ARP_SYSCTLS:
            name = f"net.ipv4.conf.{scope}.{key}"
            try:
                values[name] = _sysctl_path(name).read_text().strip()
            except OSError:
                pass
    return lo, values, ifaces


def setup(vips: list[str]) -> list[Change]:
    """Prepare this namespace as a DR real server for ``vips``; the changes made.

    Raises:
        ValueError: a bad VIP. OSError: a change failed (earlier ones stay, and are
        recorded for teardown).
    """
    lo, values, ifaces = _current()
    changes = plan_setup(vips, lo, values, ifaces)
    path = _state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {"vips": [], "sysctls": {}}
    done: list[Change] = []
    try:
        for c in changes:
            if c.what == "address":
                res = proc.run_sync(["ip", "addr", "add", str(c.new), "dev", "lo"], timeout=5)
                if res.returncode != 0:
                    raise OSError(f"ip addr add {c.new} dev lo: {res.stderr.decode(errors='replace').strip()}")
                state["vips"].append(str(c.new).split("/")[0])
            else:
                _sysctl_path(c.what).write_text(str(c.new))
                state["sysctls"].setdefault(c.what, c.old)
            done.append(c)
            log.info("realserver: %s", c)
    finally:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state))
    return done


def teardown(vips: list[str]) -> list[Change]:
    """Undo :func:`setup` for ``vips``; the changes made."""
    lo, _, _ = _current()
    path = _state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {"vips": [], "sysctls": {}}
    done: list[Change] = []
    for v in vips:
        addr = str(ipaddress.ip_address(v))
        if addr in lo:
            res = proc.run_sync(["ip", "addr", "del", f"{addr}/32", "dev", "lo"], timeout=5)
            if res.returncode != 0:
                raise OSError(f"ip addr del {addr}/32 dev lo: {res.stderr.decode(errors='replace').strip()}")
            done.append(Change("address", f"{addr}/32", None))
        if addr in state["vips"]:
            state["vips"].remove(addr)
    if not state["vips"]:
        for name, old in state["sysctls"].items():
            try:
                cur = _sysctl_path(name).read_text().strip()
                if cur != old:
                    _sysctl_path(name).write_text(str(old))
                    done.append(Change(name, cur, old))
            except OSError:
                continue
        state["sysctls"] = {}
    if state["vips"] or state["sysctls"]:
        path.write_text(json.dumps(state))
    else:
        try:
            path.unlink()
            path.parent.rmdir()
        except OSError:
            pass
    for c in done:
        log.info("realserver: %s", c)
    return done
