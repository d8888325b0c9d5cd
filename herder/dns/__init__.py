"""herder's authoritative DNS: request routing by name, Akamai-style and Route 53-style.

Modules, from the wire inwards:

* :mod:`herder.dns.wire` -- the fast query parser and response encoder (hand-written;
  dnspython is used for zone files, the slow paths and the tests);
* :mod:`herder.dns.answer` -- the pure answer function ``(query, client, view) -> response``;
* :mod:`herder.dns.zone` -- zones from master files and from the config;
* :mod:`herder.dns.geo` -- region maps (longest-prefix match, ECS scope) and latency tables;
* :mod:`herder.dns.policy` -- simple, weighted, failover, multivalue, geolocation, latency;
* :mod:`herder.dns.mapping` -- the two-level (mapping level / regional level) hierarchy;
* :mod:`herder.dns.config` -- the ``[dns]`` section; :mod:`herder.dns.server` -- the
  UDP/TCP component and its answer cache.

User guide: docs/dns.md.
"""
