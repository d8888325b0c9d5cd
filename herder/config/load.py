"""Loading configuration files of any supported format into one :class:`Config`.

This is the one place where importers plug in. An :class:`Importer` says whether it
recognises a file (by extension or by syntax) and turns it into a :class:`Fragment`;
fragments of all files are merged, names must be unique across files, and cross
references (a service's pool, a server's region) are checked last. Every error of every
file is collected and raised together as :class:`ConfigErrors`.

Formats: herder's TOML here; ``haproxy.cfg``, ``keepalived.conf`` and ``ipvsadm`` rules
register from their layers (see :data:`EXTENSION_MODULES`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path as FsPath

from herder.config.errors import ConfigError, ConfigErrors
from herder.config.model import Config, Fragment
from herder.config.native import load_toml
from herder.config.schema import Ctx
from herder.pool.model import frozen_map

__all__ = ["Importer", "detect", "load_files", "load_strings", "load_text", "register_config_check", "register_importer"]

log = logging.getLogger(__name__)

#: Modules imported before loading, so that their config sections, check types and
#: importers are registered. Each layer adds its module here.
EXTENSION_MODULES: list[str] = [
    "herder.api.server",
    "herder.health.engine",
    "herder.discovery.engine",
    "herder.l7.component",
    "herder.l7.haproxy_cfg",
    "herder.dns.server",
    "herder.l4.config",
    "herder.l4.director",
    "herder.l4.ipvsadm",
    "herder.l4.keepalived_vs",
    "herder.ha.vrrp.component",
    "herder.ha.keepalived_conf",
]


@dataclass(frozen=True)
class Importer:
    """A configuration format: ``detect(path, text)`` and ``load(path, text, ctx)``."""

    name: str
    detect: Callable[[str, str], bool]
    load: Callable[[str, str, Ctx], Fragment]
    description: str = ""


_importers: list[Importer] = []
_config_checks: list = []


def register_config_check(fn) -> None:
    """Add a check that needs the merged configuration (a reference from a layer's section
    to a pool or region, a service whose keys only make sense together).

    ``fn(config, report)`` either calls ``report(kind, name, sub, message)`` -- ``kind`` is
    ``"service"``, ``"pool"``, ``"region"`` or ``"section"``, ``sub`` a key path inside it --
    so that the error gets the declaring file and line, or returns a list of
    :class:`ConfigError` or ``"FILE:LINE: KEY: message"`` strings. Called only when every
    file parsed cleanly."""
    _config_checks.append(fn)


def _as_error(item) -> ConfigError:
    if isinstance(item, ConfigError):
        return item
    text = str(item)
    where, _, rest = text.partition(": ")
    file, _, line = where.rpartition(":")
    key, _, message = rest.partition(": ")
    if file and line.isdigit() and message:
        return ConfigError(file, int(line), key, message)
    return ConfigError(where if rest else "(config)", None, "", rest or text)


def register_importer(importer: Importer) -> None:
    """Add a format. Importers are asked in registration order; the first that detects
    the file loads it."""
    _importers[:] = [i for i in _importers if i.name != importer.name] + [importer]


def _detect_toml(path: str, text: str) -> bool:
    return path.endswith(".toml")


register_importer(Importer("herder", _detect_toml, load_toml, "herder's native TOML (*.toml)"))

_extensions_loaded = False


def _load_extensions() -> None:
    global _extensions_loaded
    if _extensions_loaded:
        return
    for mod in EXTENSION_MODULES:
        importlib.import_module(mod)
    _extensions_loaded = True


def detect(path: str, text: str) -> Importer | None:
    """The importer that recognises the file, or None."""
    _load_extensions()
    for imp in _importers:
        if imp.detect(path, text):
            return imp
    return None


def load_text(path: str, text: str) -> Fragment:
    """Load one file's text with the importer that recognises it (errors in the ctx)."""
    ctx = Ctx(path)
    imp = detect(path, text)
    if imp is None:
        known = "; ".join(i.description or i.name for i in _importers)
        ctx.errors.append(ConfigError(path, None, "", f"cannot tell the format of this file; herder reads: {known}"))
        return Fragment(ctx=ctx)
    return imp.load(path, text, ctx)


def load_files(paths: Iterable[str]) -> Config:
    """Load, merge and check ``paths``; raise :class:`ConfigErrors` with every problem.

    A file that cannot be read is an error of its own; the other files are still checked.
    """
    _load_extensions()
    paths = list(paths)
    errors: list[ConfigError] = []
    frags: list[Fragment] = []
    if not paths:
        raise ConfigErrors([ConfigError("(none)", None, "", "no configuration file given")])
    for p in paths:
        try:
            text = FsPath(p).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            errors.append(ConfigError(p, None, "", f"cannot read file: {reason}"))
            continue
        frag = load_text(p, text)
        errors.extend(frag.ctx.errors)
        frags.append(frag)
    config, merge_errors = merge(frags, tuple(paths), checks=not errors)
    errors.extend(merge_errors)
    if errors:
        raise ConfigErrors(errors)
    return config


def load_strings(sources: Iterable[tuple[str, str]]) -> Config:
    """Like :func:`load_files` for ``(name, text)`` pairs (built-in configs, tests)."""
    _load_extensions()
    sources = list(sources)
    frags = [load_text(name, text) for name, text in sources]
    errors = [e for f in frags for e in f.ctx.errors]
    config, merge_errors = merge(frags, (), checks=not errors)
    errors.extend(merge_errors)
    if errors:
        raise ConfigErrors(errors)
    return config


def merge(frags: list[Fragment], files: tuple[str, ...], checks: bool = False) -> tuple[Config, list[ConfigError]]:
    """Merge fragments (names unique across files) and check cross references; with
    ``checks`` (and no error so far), also run the registered configuration checks."""
    errors: list[ConfigError] = []
    pools: dict = {}
    services: dict = {}
    regions: dict = {}
    sections: dict = {}
    settings: dict = {}
    owner: dict[tuple, Fragment] = {}

    def err(frag: Fragment, key: tuple, message: str, sub: tuple = ()) -> None:
        ctx, path = frag.where.get(key, (frag.ctx, ()))
        before = len(ctx.errors)
        ctx.error((*path, *sub), message)
        errors.extend(ctx.errors[before:])

    def where(frag: Fragment, key: tuple) -> str:
        ctx, path = frag.where.get(key, (frag.ctx, ()))
        return ctx.where(path)

    for frag in frags:
        for kind, src, dst in (("pool", frag.pools, pools), ("service", frag.services, services),
                               ("region", frag.regions, regions)):
            for name, obj in src.items():
                key = (kind, name)
                if name in dst:
                    err(frag, key, f"duplicate {kind} {name!r} (also defined at {where(owner[key], key)})")
                    continue
                dst[name] = obj
                owner[key] = frag
        for name, value in frag.sections.items():
            key = ("section", name)
            if name in sections:
                prev = sections[name]
                if isinstance(prev, dict) and isinstance(value, dict):
                    dup = sorted(set(prev) & set(value))
                    if dup:
                        err(frag, key, f"duplicate {name} entr{'y' if len(dup) == 1 else 'ies'} "
                                       f"{', '.join(dup)} (also defined at {where(owner[key], key)})")
                    sections[name] = {**value, **prev}
                else:
                    err(frag, key, f"section [{name}] is already defined at {where(owner[key], key)}")
                continue
            sections[name] = value
            owner[key] = frag
        for k, v in frag.settings.items():
            settings.setdefault(k, v)

    declared = set().union(*(f.declared for f in frags)) if frags else set()
    for name, svc in services.items():
        # a service's own pool, and any pool its routing rules name (duck-typed: `.pools`)
        refs = [("pool", svc.pool)] if svc.pool else []
        refs += [("routing", p) for p in getattr(svc.settings.get("routing"), "pools", ())]
        for sub, ref in refs:
            if ref not in pools and ("pool", ref) not in declared:
                frag = owner[("service", name)]
                err(frag, ("service", name), f"service {name!r} names pool {ref!r}, which no file defines"
                    + (f" (defined pools: {', '.join(sorted(pools))})" if pools else ""), sub=(sub,))
    for pname, pool in pools.items():
        for s in pool.servers:
            if s.region is not None and s.region not in regions and ("region", s.region) not in declared:
                frag = owner[("pool", pname)]
                err(frag, ("server", pname, s.name),
                    f"server {s.name!r} names region {s.region!r}, which no file defines", sub=("region",))

    config = Config(
        files=files,
        log_level=str(settings.get("log_level", "info")),
        log_format=str(settings.get("log_format", "text")),
        pools=frozen_map(pools),
        services=frozen_map(services),
        regions=frozen_map(regions),
        sections=frozen_map(sections),
    )
    if checks and not errors:

        def report(kind: str, name: str, sub: tuple, message: str) -> None:
            frag = owner.get((kind, name))
            if frag is None:
                errors.append(ConfigError("(config)", None, f"{kind}s.{name}", message))
            else:
                err(frag, (kind, name), message, tuple(sub))

        for fn in _config_checks:
            errors.extend(_as_error(e) for e in (fn(config, report) or ()))
    return config, errors
