"""Discovery: which servers exist. One module per source kind, behind :mod:`herder.discovery.base`.

* :mod:`herder.discovery.base` -- the :class:`~herder.discovery.base.Source` interface and
  the registry of kinds;
* :mod:`herder.discovery.file` -- a watched JSON or TOML server list;
* :mod:`herder.discovery.dns` -- A/AAAA/SRV records, re-resolved at TTL expiry;
* :mod:`herder.discovery.engine` -- the ``discovery`` component that runs them.

The config's ``[[pools.NAME.servers]]`` are the static source (``"config"`` in the pool
state). Sources publish whole server sets into the pool state, which merges them with
health and admin state; nothing here decides routing.
"""
