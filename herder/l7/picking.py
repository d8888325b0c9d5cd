"""The proxy's link to the balance library: a policy per pool, a picker per snapshot."""

from __future__ import annotations

import logging

from herder.balance import Picker, Policy, resolve
from herder.pool.state import PoolView

__all__ = ["build_picker", "policy_for"]

log = logging.getLogger(__name__)


def policy_for(view: PoolView) -> Policy:
    """The pool's balance policy (validated at config load, so this does not fail)."""
    return resolve(view.pool.balance, view.pool.balance_options)


def build_picker(view: PoolView, policy: Policy, previous: Picker | None) -> Picker:
    """A picker over the pool's servers; counters (connections, latency) carry over."""
    return policy.build(view.servers, previous=previous)
