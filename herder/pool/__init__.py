"""Pool model and the pool state (the single writer every data plane subscribes to)."""

from herder.pool.model import (
    Admin,
    AdminCause,
    AdminMode,
    Endpoint,
    Health,
    HealthState,
    Pool,
    Region,
    Server,
    Service,
    effective_weight,
)
from herder.pool.state import PoolState, PoolView, ServerView, Snapshot

__all__ = [
    "Admin",
    "AdminCause",
    "AdminMode",
    "Endpoint",
    "Health",
    "HealthState",
    "Pool",
    "PoolState",
    "PoolView",
    "Region",
    "Server",
    "ServerView",
    "Service",
    "Snapshot",
    "effective_weight",
]
