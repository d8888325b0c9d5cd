"""The balancing interface: targets, pickers, the algorithm registry and resolved policies.

Theory of operation
-------------------
An algorithm is used in two steps, as Envoy builds a ``MaglevTable`` or ``Ring`` on each
host-set update and then calls ``chooseHost(hash, attempt) const``:

1. **Build** (cold path, on every pool snapshot): :meth:`Policy.build` turns a pool's
   servers (``ServerView`` objects, or ``(name, weight)`` pairs, or :class:`Target`) into
   an immutable :class:`Picker`. Targets are sorted by name first, so the result does
   not depend on the order in which servers were declared or discovered. Servers whose
   effective weight is 0 are left out. Then only the first non-empty *tier* is kept:
   active servers by priority (``Server.meta["priority"]``, lower first), and backup
   servers only when no active server is usable (HAProxy ``backup``; with
   ``allbackups`` off, only the first backup by name).
2. **Pick** (hot path, per request or connection):
   ``picker.pick(key, attempt=0, avoid=None)`` returns a :class:`Target` or None.
   ``key`` is an ``int`` from :mod:`herder.balance.keys` (or None); ``attempt`` counts
   retries; ``avoid`` names the server that just failed. A picker's tables are never
   modified after the build.

What a picker may change: counters it owns. Every picker counts connections
(:meth:`Picker.on_connect`, :meth:`Picker.on_release`); peak-EWMA also keeps latency
(:meth:`Picker.on_latency`); round robin keeps its position; lblc/lblcr keep their
locality tables. Passing the old picker as ``previous`` to the next build carries these
over by server name, so a pool change does not forget open connections.

Retries. A hashing picker ranks every target for a key (its own preference order:
clockwise on the ring, by score for rendezvous, by re-hashing for Maglev), and
``attempt=n`` returns the n-th target of that ranking: attempts 0..N-1 of one key are N
different servers. Algorithms without a key cannot know what an earlier attempt chose,
so they take ``avoid``: a retry with ``avoid=<name>`` never returns that server when
another is usable.

Registry. Each algorithm lives in ``herder/balance/<name>.py`` and registers itself at
the bottom of its module with :func:`register` (aioquic's
``register_congestion_control``, HAProxy's ``lb_ops_register``). The registry key, the
module name and the config value are the same word (``static-rr`` is ``static_rr.py``,
since a module name cannot hold a dash). The spellings of ipvsadm, HAProxy and nginx are
aliases (:func:`register_alias`), which may preset options (``rr`` is ``roundrobin``
with weights ignored; ``hdr(host)`` is ``hash`` with ``key = "hdr(host)"``).
:func:`resolve` turns a spelling and options into a validated :class:`Policy`.
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType

import numpy as np

from herder.balance.hashing import M64, mix64, rehash
from herder.balance.keys import KeySpec
from herder.pool.state import ServerView

__all__ = [
    "BACKUP_TIER",
    "Algorithm",
    "Alias",
    "EmptyPicker",
    "HashPicker",
    "MODULES",
    "Option",
    "Picker",
    "Policy",
    "Target",
    "TargetLike",
    "algorithms",
    "aliases",
    "get",
    "interleave",
    "register",
    "register_alias",
    "resolve",
    "targets_from",
    "usable_targets",
]

#: Tier offset of backup servers: every active tier comes before every backup tier.
BACKUP_TIER = 1 << 20

#: Algorithm modules, imported on the first registry lookup (each registers itself).
MODULES = (
    "roundrobin",
    "static_rr",
    "leastconn",
    "lc",
    "sed",
    "nq",
    "hash",
    "ring",
    "rendezvous",
    "maglev",
    "random",
    "p2c",
    "peak_ewma",
    "fo",
    "ovf",
    "first",
    "lblc",
    "lblcr",
)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    """One server as an algorithm sees it.

    ``weight`` is the effective weight (0 means never picked). ``tier`` orders fallback
    groups (lower first; backups at :data:`BACKUP_TIER` and above). ``maxconn`` is the
    server's connection limit when it has one (used by ``first``, ``fo``). ``view`` is
    the ``ServerView`` the target came from, if any.
    """

    name: str
    weight: int
    tier: int = 0
    maxconn: int | None = None
    view: ServerView | None = field(default=None, compare=False, repr=False)


TargetLike = ServerView | Target | tuple[str, int]


def _meta_int(meta: Mapping[str, object], key: str) -> int | None:
    value = meta.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def targets_from(items: Iterable[TargetLike]) -> tuple[Target, ...]:
    """Normalise servers into targets sorted by name (weight-0 targets are kept).

    A ``ServerView`` gives its ``effective_weight``, its tier (``meta["priority"]``,
    plus :data:`BACKUP_TIER` for a backup) and ``meta["maxconn"]``. A ``(name, weight)``
    pair gives an active target of tier 0.

    Raises:
        ValueError: a negative weight, or two targets with the same name (caller bugs).
    """
    out: list[Target] = []
    for item in items:
        if isinstance(item, Target):
            t = item
        elif isinstance(item, ServerView):
            meta = item.server.meta
            tier = _meta_int(meta, "priority") or 0
            if item.server.backup:
                tier += BACKUP_TIER
            t = Target(item.name, item.effective_weight, tier, _meta_int(meta, "maxconn"), item)
        else:
            name, weight = item
            t = Target(str(name), int(weight))
        if t.weight < 0:
            raise ValueError(f"target {t.name!r} has a negative weight {t.weight}")
        out.append(t)
    out.sort(key=lambda t: t.name)
    for a, b in pairwise(out):
        if a.name == b.name:
            raise ValueError(f"two targets are called {a.name!r}")
    return tuple(out)


def usable_targets(targets: Sequence[Target], *, allbackups: bool = True) -> tuple[Target, ...]:
    """The targets an algorithm balances over: weight above 0, first non-empty tier only.

    Empty when nothing is usable (empty pool, everything down, all weights 0). Backups
    (tier >= :data:`BACKUP_TIER`) are returned only when no active target is usable;
    with ``allbackups`` False only the first of them by name (HAProxy's default).
    """
    live = [t for t in targets if t.weight > 0]
    if not live:
        return ()
    tier = min(t.tier for t in live)
    chosen = [t for t in live if t.tier == tier]
    if tier >= BACKUP_TIER and not allbackups:
        chosen = chosen[:1]
    return tuple(chosen)


def interleave(weights: Sequence[int], limit: int = 1 << 16) -> np.ndarray:
    """A weighted, evenly interleaved sequence of target indices (a "map").

    Index ``i`` appears ``w_i / g`` times (``g`` the gcd of the weights), spread as
    evenly as possible: entry k of target i sits at virtual time ``(k + 0.5) / w_i``
    (Webster's divisor method), ties by index. If the length would exceed ``limit``,
    weights are scaled down proportionally (at least 1 entry each). Used by
    ``static-rr`` (walked with a cursor) and map-based ``hash`` (indexed by hash).
    """
    w = np.asarray(weights, dtype=np.int64)
    if w.size == 0:
        return np.zeros(0, dtype=np.int32)
    g = int(np.gcd.reduce(w))
    w = w // max(g, 1)
    total = int(w.sum())
    if total > limit:
        w = np.maximum(1, (w * limit) // total)
        total = int(w.sum())
    idx = np.repeat(np.arange(w.size, dtype=np.int64), w)
    starts = np.repeat(np.cumsum(w) - w, w)
    k = np.arange(total, dtype=np.int64) - starts
    vt = (2 * k + 1) / (2.0 * w[idx])
    order = np.lexsort((idx, vt))
    return idx[order].astype(np.int32)


# --------------------------------------------------------------------------- pickers


class Picker:
    """An immutable choice over targets, plus the counters its algorithm owns.

    Subclasses implement :meth:`pick`. Construction takes the usable targets (sorted by
    name, weight above 0, at least one), the validated options, and the previous picker
    of the same pool (or None) to carry counters over.
    """

    #: Registry name of the algorithm.
    algorithm = ""
    #: True when the key decides the server (the hashing algorithms).
    keyed = False
    #: False when the algorithm never reads the connection counters (round robin, random,
    #: hashing): a caller may skip :meth:`on_connect` / :meth:`on_release` on its hot path
    #: (:meth:`connections` then reads 0).
    counts_load = True

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        self.targets: tuple[Target, ...] = tuple(targets)
        self.names: tuple[str, ...] = tuple(t.name for t in self.targets)
        self.weights: tuple[int, ...] = tuple(t.weight for t in self.targets)
        self.total_weight = sum(self.weights)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.options: Mapping[str, object] = MappingProxyType(dict(options or {}))
        self.tier: int | None = self.targets[0].tier if self.targets else None
        self.conns: list[int] = [0] * len(self.targets)
        if previous is not None:
            for i, name in enumerate(self.names):
                j = previous.index.get(name)
                if j is not None:
                    self.conns[i] = previous.conns[j]

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.algorithm} {len(self.targets)} targets>"

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        """Choose a target.

        Args:
            key: the request's key (:mod:`herder.balance.keys`), or None. Hashing
                algorithms map it to a server; with None they spread requests as if
                each had a fresh key. Other algorithms ignore it, except ``random``
                and ``p2c``, which use it as their random draw when given.
            attempt: 0 for the first try, n for the n-th retry. For hashing
                algorithms attempts 0..N-1 of one key are N distinct servers.
            avoid: name of a server not to return when another one is usable
                (the one that just failed).

        Returns:
            The chosen target, or None when there is nothing to choose from (empty
            pool, all servers down or at weight 0), or, for ``first``, ``fo`` and
            ``ovf`` only, when every server is at its limit.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------- counters

    def on_connect(self, name: str) -> None:
        """A connection or request was sent to ``name`` (counts for lc, p2c, bounded...)."""
        i = self.index.get(name)
        if i is not None:
            self.conns[i] += 1
            self._load_changed(i)

    def on_release(self, name: str) -> None:
        """A connection or request to ``name`` ended. Unknown names are ignored."""
        i = self.index.get(name)
        if i is not None and self.conns[i] > 0:
            self.conns[i] -= 1
            self._load_changed(i)

    def on_latency(self, name: str, latency_s: float, now_s: float) -> None:
        """A response from ``name`` took ``latency_s``, observed at monotonic ``now_s``.

        Only latency-aware algorithms (peak-EWMA) use it; the others ignore it.
        """

    def connections(self, name: str) -> int:
        """Open connections counted for ``name`` (0 for an unknown name)."""
        i = self.index.get(name)
        return 0 if i is None else self.conns[i]

    def _load_changed(self, i: int) -> None:
        """Hook: the connection count of target ``i`` changed."""


class EmptyPicker(Picker):
    """The picker of a pool with nothing usable: every pick is None."""

    def __init__(self, algorithm: str = "", previous: Picker | None = None) -> None:
        super().__init__((), None, None)
        self.algorithm = algorithm
        #: Same shape as Maglev's table, for the L4 director: no slots.
        self.table: tuple[int, ...] = ()
        #: The last non-empty picker, so that counters survive an outage of the whole pool.
        self.carry: Picker | None = previous.carry if isinstance(previous, EmptyPicker) else previous

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        return None


class HashPicker(Picker):
    """Base of the hashing algorithms: the key decides, retries follow a ranking.

    Subclasses implement :meth:`_lookup` (mixed 64-bit hash -> target index) and may
    override :meth:`_candidates` (the key's preference order, repeats allowed) and
    :meth:`lookup_many` (vectorised lookups for the simulator).
    """

    keyed = True
    counts_load = False

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._fresh = 0

    def hash_key(self, key: int | None) -> int:
        """The mixed 64-bit hash a key is looked up with (a fresh one for None)."""
        if key is None:
            self._fresh += 1
            return mix64(self._fresh ^ 0x5DEECE66D)
        return mix64(key & M64)

    def _lookup(self, h: int) -> int:
        raise NotImplementedError

    def _candidates(self, h: int) -> Iterator[int]:
        """Target indices in preference order for hash ``h``; repeats are allowed."""
        yield self._lookup(h)
        n = 1
        while True:
            yield self._lookup(rehash(h, n))
            n += 1

    def _candidate_limit(self) -> int:
        """How many candidates :meth:`ranked` reads before completing in index order."""
        return 4 * len(self.targets) + 16

    def ranked(self, h: int) -> Iterator[int]:
        """Every target index once, in hash ``h``'s preference order.

        The order starts with :meth:`_candidates`; if those repeat too much (a target
        with a tiny share), the remaining targets follow in index order.
        """
        n = len(self.targets)
        seen: set[int] = set()
        limit = self._candidate_limit()
        tries = 0
        for i in self._candidates(h):
            if i not in seen:
                seen.add(i)
                yield i
                if len(seen) == n:
                    return
            tries += 1
            if tries >= limit:
                break
        for i in range(n):
            if i not in seen:
                yield i

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        h = self.hash_key(key)
        if attempt == 0 and avoid is None:
            return self.targets[self._lookup(h)]
        return self.targets[self._rank_pick(h, attempt, avoid)]

    def _rank_pick(self, h: int, attempt: int, avoid: str | None) -> int:
        n = len(self.targets)
        skip = attempt % n
        avoid_i = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        first = -1
        for rank, i in enumerate(self.ranked(h)):
            if i == avoid_i:
                continue
            if first < 0:
                first = i
            if rank >= skip:
                return i
        return first

    def lookup_many(self, keys: np.ndarray) -> np.ndarray:
        """Attempt-0 target index of each key (vectorised where the algorithm allows)."""
        return np.fromiter((self._lookup(mix64(int(k))) for k in keys), dtype=np.int64, count=len(keys))

    def ownership(self) -> np.ndarray | None:
        """Exact share of the key space owned by each target, when the algorithm has a
        table (Maglev slots, ring arcs, map entries); None otherwise."""
        return None


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class Option:
    """One option of an algorithm: its type, default and meaning."""

    name: str
    type: type
    default: object
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    #: Extra validation: returns an error message, or None when the value is fine.
    check: Callable[[object], str | None] | None = None

    def convert(self, value: object, where: str = "") -> object:
        """``value`` as this option's type (strings from a config or the CLI are parsed).

        Raises:
            ValueError: the value does not fit (the message names ``where``).
        """
        label = f"{where}option {self.name}"
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    out: object = value
                elif str(value).lower() in ("1", "true", "yes", "on"):
                    out = True
                elif str(value).lower() in ("0", "false", "no", "off"):
                    out = False
                else:
                    raise ValueError
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out = int(value)  # type: ignore[call-overload]
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)  # type: ignore[arg-type]
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"{label}: {value!r} is not a {self.type.__name__}") from None
        if self.minimum is not None and isinstance(out, (int, float)) and out < self.minimum:
            raise ValueError(f"{label}: {out} is below the minimum {self.minimum:g}")
        if self.choices and out not in self.choices:
            raise ValueError(f"{label}: {out!r} is not one of {', '.join(self.choices)}")
        if self.check is not None and (problem := self.check(out)):
            raise ValueError(f"{label}: {problem}")
        return out


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A registered algorithm: its name, picker factory, and what it reads.

    ``default_key`` is the key kind a hashing algorithm hashes when the pool does not
    say (``"source"``); ``"none"`` for algorithms that can use a key but do not need
    one; None for algorithms that never read a key. ``counts`` and ``latency`` say
    whether the algorithm needs :meth:`Picker.on_connect`/``on_release`` and
    :meth:`Picker.on_latency` to be called.
    """

    name: str
    factory: Callable[[Sequence[Target], Mapping[str, object], Picker | None], Picker]
    summary: str
    origin: str = ""
    keyed: bool = False
    default_key: str | None = None
    options: tuple[Option, ...] = ()
    counts: bool = False
    latency: bool = False

    def option(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None


@dataclass(frozen=True, slots=True)
class Alias:
    """Another tool's spelling of an algorithm, possibly with preset options."""

    name: str
    target: str
    origin: str
    options: Mapping[str, object] = field(default_factory=dict)
    note: str = ""


_ALGORITHMS: dict[str, Algorithm] = {}
_ALIASES: dict[str, Alias] = {}
_loaded = False


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(algorithm: Algorithm) -> Algorithm:
    """Add ``algorithm`` to the registry (called at the bottom of its module)."""
    key = _norm(algorithm.name)
    if key in _ALGORITHMS and _ALGORITHMS[key] is not algorithm:
        raise ValueError(f"balance algorithm {algorithm.name!r} registered twice")
    _ALGORITHMS[key] = algorithm
    return algorithm


def register_alias(name: str, target: str, origin: str, note: str = "", **options: object) -> None:
    """Make ``name`` (as spelled by ``origin``: ipvsadm, HAProxy, nginx) mean ``target``."""
    _ALIASES[_norm(name)] = Alias(name, target, origin, MappingProxyType(dict(options)), note)


def _load() -> None:
    global _loaded
    if not _loaded:
        for m in MODULES:
            importlib.import_module(f"herder.balance.{m}")
        _loaded = True


def algorithms() -> list[Algorithm]:
    """Every registered algorithm, in :data:`MODULES` order."""
    _load()
    order = {m: i for i, m in enumerate(MODULES)}
    return sorted(_ALGORITHMS.values(), key=lambda a: order.get(a.name.replace("-", "_"), len(order)))


def aliases() -> list[Alias]:
    """Every alias, sorted by name."""
    _load()
    return sorted(_ALIASES.values(), key=lambda a: _norm(a.name))


def get(name: str) -> Algorithm:
    """The algorithm registered as ``name`` (canonical names only; see :func:`resolve`).

    Raises:
        KeyError: no such algorithm.
    """
    _load()
    return _ALGORITHMS[_norm(name)]


# --------------------------------------------------------------------------- policies

#: Options every algorithm accepts.
COMMON_OPTIONS = (
    Option("allbackups", bool, True, "when only backups are usable, balance over all of them "
           "(HAProxy `option allbackups`); off: the first backup by name only"),
)
#: Options of algorithms that read a key; they describe the key (see keys.KeySpec).
KEY_OPTIONS = (
    Option("key", str, None, "what to hash: source, source-port, destination, destination-port, "
           "uri, url_param(NAME), hdr(NAME), cookie(NAME), none"),
    Option("whole", bool, False, "uri: hash the query string too (HAProxy `whole`)"),
    Option("len", int, None, "uri: hash at most this many characters (HAProxy `len`)", minimum=1),
    Option("depth", int, None, "uri: hash at most this many directory levels (HAProxy `depth`)", minimum=1),
    Option("path_only", bool, False, "uri: drop scheme and authority first (HAProxy `path-only`)"),
    Option("use_domain_only", bool, False, "hdr: hash only the domain name (HAProxy `use_domain_only`)"),
    Option("prefix", int, None, "source: keep only this many leading bits of an IPv4 address "
           "(nginx ip_hash: 24)", minimum=0),
    Option("prefix6", int, None, "source: keep only this many leading bits of an IPv6 address", minimum=0),
)
_KEY_FIELDS = {"whole": "whole", "len": "length", "depth": "depth", "path_only": "path_only",
               "use_domain_only": "use_domain_only", "prefix": "prefix", "prefix6": "prefix6"}
#: Options of the hashing algorithms.
HASH_OPTIONS = (
    Option("hash_balance_factor", int, 0, "bounded loads: no server gets more than factor/100 "
           "times its fair share of open connections (HAProxy `hash-balance-factor`; 0: off)", minimum=0),
)


@dataclass(frozen=True)
class Policy:
    """A resolved, validated balance setting for one pool: what to hash and how to pick.

    ``options`` are the algorithm's own options with defaults filled in. ``key`` says
    what the proxy hashes for each request (``KeySpec(kind="none")`` when nothing).
    ``balance_factor`` > 0 wraps hashing pickers in bounded loads.
    """

    algorithm: Algorithm
    options: Mapping[str, object]
    key: KeySpec = field(default_factory=KeySpec)
    balance_factor: int = 0
    allbackups: bool = True
    spec: str = ""

    @property
    def name(self) -> str:
        return self.algorithm.name

    def build(self, servers: Iterable[TargetLike], previous: Picker | None = None) -> Picker:
        """An immutable picker over ``servers`` (see the module docstring for the rules).

        Args:
            servers: ``ServerView`` objects (all of a pool's, usable or not),
                ``(name, weight)`` pairs or :class:`Target` objects.
            previous: the pool's previous picker, whose counters are carried over.

        Returns:
            A picker; an :class:`EmptyPicker` when no server is usable.
        """
        targets = usable_targets(targets_from(servers), allbackups=self.allbackups)
        if not targets:
            return EmptyPicker(self.algorithm.name, previous)
        if isinstance(previous, EmptyPicker):
            previous = previous.carry
        inner_previous = getattr(previous, "inner", None) or previous
        picker = self.algorithm.factory(targets, self.options, inner_previous)
        if self.balance_factor:
            from herder.balance.bounded import BoundedLoad

            picker = BoundedLoad(picker, self.balance_factor, previous)  # type: ignore[arg-type]
        return picker

    def describe(self) -> str:
        """One line: the algorithm, its options, the key."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        out = self.algorithm.name + (f" ({opts})" if opts else "")
        if self.key.kind != "none":
            out += f", key {self.key}"
        if self.balance_factor:
            out += f", hash_balance_factor {self.balance_factor}"
        return out


_NGINX_VARS = {"$remote_addr": "source", "$binary_remote_addr": "source", "$request_uri": "uri",
               "$uri": "uri", "$document_uri": "uri", "$server_addr": "destination"}


def _nginx_key(var: str) -> tuple[str, dict[str, object]]:
    if var in _NGINX_VARS:
        kind = _NGINX_VARS[var]
        return kind, ({"whole": True} if var == "$request_uri" else {})
    for prefix, kind in (("$http_", "hdr"), ("$cookie_", "cookie"), ("$arg_", "url_param")):
        if var.startswith(prefix) and len(var) > len(prefix):
            name = var[len(prefix):]
            if kind == "hdr":
                name = name.replace("_", "-")
            return f"{kind}({name})", {}
    raise ValueError(f"herder cannot hash the nginx variable {var}; use one of "
                     f"{', '.join(_NGINX_VARS)}, $http_NAME, $cookie_NAME, $arg_NAME")


def _parse_words(head: str, algo: str, words: list[str], opts: dict[str, object]) -> str:
    """Apply the words that follow an algorithm name (HAProxy and nginx syntax).

    ``head`` is the name as written (normalised), ``algo`` the algorithm it resolved
    to. Returns the algorithm name, which ``random two`` changes to ``p2c``.
    """
    i = 0
    while i < len(words):
        w = words[i]
        lw = w.lower()
        nxt = words[i + 1] if i + 1 < len(words) else None
        if lw == "whole":
            opts["whole"] = True
        elif lw == "path-only":
            opts["path_only"] = True
        elif lw == "use_domain_only":
            opts["use_domain_only"] = True
        elif lw in ("len", "depth"):
            if nxt is None:
                raise ValueError(f"{w!r} needs a number after it")
            opts[lw] = nxt
            i += 1
        elif lw in ("consistent", "map-based"):
            opts["hash_type"] = lw
        elif lw == "two" and algo == "random":
            algo = "p2c"
            opts["choices"] = 2
        elif lw == "least_conn" and algo == "p2c":
            pass  # nginx "random two least_conn": what p2c compares anyway
        elif w.startswith("$"):
            kind, extra = _nginx_key(w)
            opts["key"] = kind
            opts.update(extra)
        elif head == "url-param" and opts.get("key") is None:
            opts["key"] = f"url_param({w})"
        else:
            raise ValueError(f"unexpected {w!r} after the algorithm name")
        i += 1
    return algo


def resolve(spec: str, options: Mapping[str, object] | None = None) -> Policy:
    """Turn a balance setting into a :class:`Policy`.

    ``spec`` is an algorithm name or alias, optionally written as HAProxy or nginx
    write it: ``"maglev"``, ``"wlc"``, ``"hdr(host) use_domain_only"``,
    ``"uri whole len 32 depth 3"``, ``"url_param userid"``, ``"random(2)"``,
    ``"random two least_conn"``, ``"hash $request_uri consistent"``. ``options``
    (a pool's ``balance_options``) win over what the spelling implies; string values
    are converted. ``hash_type = "consistent"`` turns the map-based ``hash`` (and its
    aliases ``source``, ``uri``, ...) into ``ring``, as HAProxy's ``hash-type`` does.

    Raises:
        ValueError: unknown algorithm (with suggestions), unknown or invalid option.
    """
    _load()
    words = spec.split()
    if not words:
        raise ValueError("empty balance algorithm name")
    head, rest = words[0], words[1:]
    arg = None
    if head.endswith(")") and "(" in head:
        head, arg = head[:-1].split("(", 1)
    key = _norm(head)
    opts: dict[str, object] = {}
    if key in _ALIASES:
        alias = _ALIASES[key]
        name = _norm(alias.target)
        opts.update(alias.options)
    elif key in _ALGORITHMS:
        name = key
    else:
        known = sorted(set(_ALGORITHMS) | set(_ALIASES))
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; see `herder balance list`"
        raise ValueError(f"unknown balance algorithm {head!r}{hint}")
    if arg is not None:
        if key in ("hdr", "cookie", "url-param"):
            opts["key"] = f"{key.replace('-', '_')}({arg})"
        elif key == "random":
            try:
                draws = int(arg)
            except ValueError:
                raise ValueError(f"random({arg}): the number of draws must be an integer") from None
            if draws > 1:
                name = "p2c"
                opts["choices"] = draws
        else:
            raise ValueError(f"{head} takes no argument in parentheses")
    name = _parse_words(key, name, rest, opts)
    if options:
        opts.update({k.replace("-", "_"): v for k, v in options.items()})
    if key in ("hdr", "cookie", "url-param") and opts.get("key") is None:
        raise ValueError(f"{head} needs a name: {head}(NAME)" + (" or url_param NAME" if key == "url-param" else ""))
    hash_type = opts.pop("hash_type", None)
    if hash_type is not None:
        hash_type = str(hash_type).lower().replace("_", "-")
        if hash_type not in ("consistent", "map-based"):
            raise ValueError(f"hash_type {hash_type!r} is not consistent or map-based")
        if hash_type == "consistent" and name == "hash":
            name = "ring"
        elif hash_type == "map-based" and name != "hash":
            raise ValueError(f"hash_type map-based does not apply to {name}")
        elif hash_type == "consistent" and not _ALGORITHMS[name].keyed:
            raise ValueError(f"hash_type consistent does not apply to {name}, which does not hash")
    return _policy(_ALGORITHMS[name], opts, spec)


def _policy(algo: Algorithm, opts: Mapping[str, object], spec: str) -> Policy:
    where = f"{algo.name}: "
    algo_opts = {o.name: o.default for o in algo.options}
    key_text: str | None = None
    key_fields: dict[str, object] = {}
    factor = 0
    allbackups = True
    accepted = [o.name for o in algo.options] + [o.name for o in COMMON_OPTIONS]
    if algo.default_key is not None:
        accepted += [o.name for o in KEY_OPTIONS]
    if algo.keyed:
        accepted += [o.name for o in HASH_OPTIONS]
    for raw, value in opts.items():
        name = raw.replace("-", "_")
        if name not in accepted:
            raise ValueError(f"{where}unknown option {raw!r}; accepted: {', '.join(accepted)}")
        if (o := algo.option(name)) is not None:
            algo_opts[name] = o.convert(value, where)
        elif name == "allbackups":
            allbackups = bool(COMMON_OPTIONS[0].convert(value, where))
        elif name == "hash_balance_factor":
            factor = int(HASH_OPTIONS[0].convert(value, where))  # type: ignore[arg-type]
            if 0 < factor < 100:
                raise ValueError(f"{where}hash_balance_factor {factor} must be 0 (off) or at least 100")
        elif name == "key":
            key_text = None if value is None else str(value)
        else:
            o = next(o for o in KEY_OPTIONS if o.name == name)
            key_fields[_KEY_FIELDS[name]] = o.convert(value, where)
    kind = key_text or algo.default_key or "none"
    try:
        key = KeySpec.parse(kind, **key_fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}{e}") from None
    return Policy(algo, MappingProxyType(algo_opts), key, factor, allbackups, spec)


def is_prime(n: int) -> bool:
    """True when ``n`` is prime (trial division; fine for table sizes)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True
