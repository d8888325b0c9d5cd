"""VRRP for herder's directors: two or more directors share virtual IPs; one is master.

Modules, split by side effect (keepalived's vrrp.c mixes all three; we do not):

* :mod:`~herder.ha.vrrp.packet` -- the wire codec for VRRP v2 and v3 (pure);
* :mod:`~herder.ha.vrrp.machine` -- the RFC 5798 section 6.4 state machine (pure, time
  passed in, actions out);
* :mod:`~herder.ha.vrrp.io` -- raw protocol-112 sockets and the asyncio driver that feeds
  the machine and re-arms its one timer;
* :mod:`~herder.ha.vrrp.actions` -- what actions do to the host: VIPs and the virtual MAC
  through netlink, gratuitous ARP and unsolicited neighbour advertisements;
* :mod:`~herder.ha.vrrp.track` -- tracked scripts, interfaces and herder's own pools;
* :mod:`~herder.ha.vrrp.notify` -- notify scripts, run in order;
* :mod:`~herder.ha.vrrp.settings` -- the ``[vrrp]`` configuration section;
* :mod:`~herder.ha.vrrp.component` -- the runtime component and the ``/vrrp`` status route.

This package's ``__init__`` imports nothing, so that importing the pure modules never
pulls in sockets or netlink.
"""
