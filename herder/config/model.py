"""The loaded configuration: what every file contributed, merged into one :class:`Config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from herder.config.schema import Ctx, Path
from herder.pool.model import Pool, Region, Service, frozen_map

__all__ = ["Config", "Fragment"]


@dataclass
class Fragment:
    """What one file (of any format) contributes, before merging.

    Importers fill it; ``where`` remembers, for each named object, the context and key path
    it came from, so that errors found after merging still name the right file and line.
    Keys of ``where`` are ``("pool", name)``, ``("service", name)``, ``("region", name)``,
    ``("section", name)`` and ``("server", pool, server)``.
    """

    ctx: Ctx
    settings: dict[str, object] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    #: Top-level sections registered by the layers (``api``, ``dns``, ``vrrp``...).
    sections: dict[str, object] = field(default_factory=dict)
    where: dict[tuple, tuple[Ctx, Path]] = field(default_factory=dict)
    #: ``(kind, name)`` of everything declared, including what failed to parse.
    declared: set[tuple[str, str]] = field(default_factory=set)
    #: Name of the importer that produced it ("herder", "haproxy", "keepalived"...).
    format: str = "herder"


@dataclass(frozen=True)
class Config:
    """Everything ``herder run`` starts from; immutable."""

    files: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    pools: Mapping[str, Pool] = field(default_factory=frozen_map)
    services: Mapping[str, Service] = field(default_factory=frozen_map)
    regions: Mapping[str, Region] = field(default_factory=frozen_map)
    sections: Mapping[str, object] = field(default_factory=frozen_map)

    def section(self, name: str, default: object = None) -> object:
        """A registered section's parsed value, or ``default`` when no file declared it."""
        return self.sections.get(name, default)
