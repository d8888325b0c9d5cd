"""High availability for herder's directors.

* :mod:`herder.ha.vrrp` -- active/passive directors with VRRP (RFC 3768 v2, RFC 5798 v3):
  a sans-I/O packet codec and state machine, and the thin I/O around them (raw sockets,
  netlink, gratuitous ARP), interoperable with keepalived.
* :mod:`herder.ha.keepalived_conf` -- the keepalived.conf importer (``vrrp_*`` blocks).
"""
