"""Balancing algorithms: build an immutable picker per pool snapshot, then pick per request.

Typical use (see :mod:`herder.balance.base` for the rules and docs/balance.md for users)::

    from herder.balance import resolve

    policy = resolve(pool.balance, pool.balance_options)   # once per config
    picker = policy.build(pool_view.servers, previous=picker)  # on every snapshot
    key = policy.key.extract(src=client_ip, uri=uri, headers=headers)
    target = picker.pick(key)                               # per request; None: no server
    picker.on_connect(target.name) ... picker.on_release(target.name)

This package never imports asyncio, socket or pyroute2: it is a pure core.
"""

from herder.balance.base import (
    Algorithm,
    Alias,
    EmptyPicker,
    HashPicker,
    Picker,
    Policy,
    Target,
    algorithms,
    aliases,
    get,
    resolve,
    targets_from,
    usable_targets,
)
from herder.balance.keys import KeySpec

__all__ = [
    "Algorithm",
    "Alias",
    "EmptyPicker",
    "HashPicker",
    "KeySpec",
    "Picker",
    "Policy",
    "Target",
    "algorithms",
    "aliases",
    "get",
    "resolve",
    "targets_from",
    "usable_targets",
]
