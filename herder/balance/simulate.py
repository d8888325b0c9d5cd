"""The balance simulator: how evenly a hashing algorithm spreads keys, and how many move.

Theory of operation
-------------------
For each algorithm and each churn step, :func:`simulate` builds a pool of ``servers``
servers (names ``s0000``, ``s0001``...; weights cycled from ``weights``), maps
``keys`` uniform 64-bit keys on it, then removes ``remove`` servers (chosen at random
with ``seed``) and/or adds ``add`` new ones, maps the same keys again, and measures:

* **max/mean load**, before and after: the most loaded server's share of the keys
  divided by its fair share (its weight's share), so 1.00 is perfect. For algorithms
  with a table (Maglev slots, ring arcs, map entries) the exact figure comes from the
  table (:meth:`HashPicker.ownership`), as in the Maglev paper's Figure 11; otherwise it
  is measured on the sampled keys, and sampling alone inflates it: the report states
  what a perfect balancer would show with as many keys.
* **moved**: the share of keys whose server changed;
* **minimum**: the least any algorithm must move to reach the new fair shares (the
  keys of removed servers, the new servers' shares: the total variation distance
  between the two share vectors);
* **shuffled**: among the keys whose server is still there, the share that moved to
  another server that was there before (not to a new one): movement nothing required.
  Ring hash and rendezvous hashing shuffle none; Maglev shuffles a few percent (its
  price for near-perfect balance; the paper's Figure 12 counts these plus the keys that
  had to move); map-based hashing shuffles most.

Everything is deterministic for a given seed. Only the hashing algorithms (those that
map a key to a server) can be simulated; the others do not remap keys.

This module is pure (numpy, no I/O); the CLI (herder/cli/balance.py) prints and plots.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from herder.balance.base import HashPicker, Policy, resolve

__all__ = ["Result", "Scenario", "format_report", "perfect_max_mean", "plot", "simulate"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One churn step: start with ``servers``, remove ``remove`` of them, add ``add``."""

    servers: int
    remove: int = 0
    add: int = 0

    def describe(self) -> str:
        parts = []
        if self.remove:
            parts.append(f"-{self.remove}")
        if self.add:
            parts.append(f"+{self.add}")
        return " ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class Result:
    """What one algorithm did in one scenario (shares are fractions, not percent)."""

    algorithm: str
    policy: str
    servers: int
    removed: int
    added: int
    max_mean_before: float
    max_mean_after: float
    exact: bool
    moved: float
    minimum: float
    shuffled: float
    build_ms: float

    @property
    def excess(self) -> float:
        """Keys moved beyond the minimum."""
        return self.moved - self.minimum

    def as_dict(self) -> dict:
        d = asdict(self)
        d["excess"] = self.excess
        return d


def _pool(n: int, weights: Sequence[int], first: int = 0) -> list[tuple[str, int]]:
    return [(f"s{i:04d}", int(weights[i % len(weights)])) for i in range(first, first + n)]


def _shares(pool: Sequence[tuple[str, int]]) -> dict[str, float]:
    total = sum(w for _, w in pool)
    return {name: w / total for name, w in pool}


def _max_mean(picker: HashPicker, owners: np.ndarray, nkeys: int) -> tuple[float, bool]:
    fair = np.array(picker.weights, dtype=np.float64) / picker.total_weight
    own = picker.ownership()
    if own is not None:
        return float((own / fair).max()), True
    counts = np.bincount(owners, minlength=len(picker.targets)) / nkeys
    return float((counts / fair).max()), False


def perfect_max_mean(servers: int, weights: Sequence[int], keys: int, seed: int = 1) -> float:
    """The max/mean a perfect balancer shows on ``keys`` random keys (sampling noise alone)."""
    pool = _pool(servers, weights)
    fair = np.array([w for _, w in pool], dtype=np.float64)
    fair /= fair.sum()
    counts = np.random.default_rng(seed).multinomial(keys, fair) / keys
    return float((counts / fair).max())


def _policy(spec: str, options: Mapping[str, object]) -> Policy:
    probe = resolve(spec)
    if not probe.algorithm.keyed:
        raise ValueError(f"{spec} does not map keys to servers, so there is nothing to simulate; "
                         "the simulator compares hashing algorithms: hash, ring, rendezvous, maglev "
                         "(or their aliases)")
    accepted = {o.name for o in probe.algorithm.options}
    mine = {k: v for k, v in options.items() if k.replace("-", "_") in accepted}
    policy = resolve(spec, mine)
    if policy.balance_factor:
        raise ValueError(f"{spec}: bounded loads depend on open connections; simulate without hash_balance_factor")
    return policy


def simulate(
    algorithms: Sequence[str],
    scenarios: Sequence[Scenario],
    *,
    weights: Sequence[int] = (1,),
    keys: int = 100_000,
    seed: int = 1,
    options: Mapping[str, object] | None = None,
) -> list[Result]:
    """Run every algorithm through every scenario; see the module docstring.

    ``options`` are algorithm options (``table_size``, ``points``...), each given only
    to the algorithms that have it.

    Raises:
        ValueError: an unknown or non-hashing algorithm, a bad option, an impossible
            scenario (removing all servers), or an option no algorithm takes.
    """
    options = dict(options or {})
    if not weights or any(int(w) <= 0 for w in weights):
        raise ValueError("weights must be positive integers")
    if keys < 1:
        raise ValueError("simulate at least one key")
    policies = [_policy(a, options) for a in algorithms]
    unused = [k for k in options if not any(k.replace("-", "_") in {o.name for o in p.algorithm.options}
                                            for p in policies)]
    if unused:
        raise ValueError(f"no algorithm here takes option {', '.join(unused)}")
    for sc in scenarios:
        if sc.servers < 1 or sc.remove < 0 or sc.add < 0:
            raise ValueError("servers must be at least 1; remove and add at least 0")
        if sc.remove >= sc.servers and not sc.add:
            raise ValueError(f"removing {sc.remove} of {sc.servers} servers leaves none")
    key_array = np.random.default_rng(seed).integers(0, 2**64, size=keys, dtype=np.uint64)
    results: list[Result] = []
    for sc in scenarios:
        before = _pool(sc.servers, weights)
        gone = set(random.Random(seed).sample([n for n, _ in before], min(sc.remove, sc.servers)))
        after = [p for p in before if p[0] not in gone] + _pool(sc.add, weights, first=sc.servers)
        share_a, share_b = _shares(before), _shares(after)
        minimum = sum(max(0.0, s - share_b.get(n, 0.0)) for n, s in share_a.items())
        ids = {n: i for i, n in enumerate(dict.fromkeys([n for n, _ in before] + [n for n, _ in after]))}
        survivors = np.array([ids[n] for n, _ in after], dtype=np.int64)
        old = np.array([ids[n] for n, _ in before], dtype=np.int64)
        for spec, policy in zip(algorithms, policies, strict=True):
            t0 = time.perf_counter()
            pa = policy.build(before)
            build_ms = (time.perf_counter() - t0) * 1000
            pb = policy.build(after)
            assert isinstance(pa, HashPicker) and isinstance(pb, HashPicker)
            ia = pa.lookup_many(key_array)
            ib = pb.lookup_many(key_array)
            # Compare servers by a global number (names are strings).
            ids_a = np.array([ids[n] for n in pa.names], dtype=np.int64)[ia]
            ids_b = np.array([ids[n] for n in pb.names], dtype=np.int64)[ib]
            moved = ids_a != ids_b
            stayed = np.isin(ids_a, survivors)
            shuffled = moved & stayed & np.isin(ids_b, old)
            mm_a, exact_a = _max_mean(pa, ia, keys)
            mm_b, exact_b = _max_mean(pb, ib, keys)
            results.append(Result(
                algorithm=spec,
                policy=policy.describe(),
                servers=sc.servers,
                removed=len(gone),
                added=sc.add,
                max_mean_before=mm_a,
                max_mean_after=mm_b,
                exact=exact_a and exact_b,
                moved=float(moved.mean()),
                minimum=minimum,
                shuffled=float(shuffled[stayed].mean()) if stayed.any() else 0.0,
                build_ms=build_ms,
            ))
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_report(results: Sequence[Result], *, weights: Sequence[int], keys: int, seed: int) -> str:
    """A self-explanatory text report: scenario, table, legend, and a verdict per row."""
    if not results:
        return "nothing simulated"
    n = results[0].servers
    wdesc = "all 1" if set(weights) == {1} else ", ".join(str(w) for w in weights) + " (cycled)"
    out = [
        f"{n} servers (weights {wdesc}), {keys:,} uniform random keys, seed {seed}",
        "",
    ]
    head = ("algorithm", "churn", "max/mean before", "max/mean after", "moved", "minimum",
            "excess", "shuffled", "build")
    rows = []
    prev = None
    for r in results:
        if prev is not None and (r.removed, r.added) != prev:
            rows.append(("",) * len(head))
        prev = (r.removed, r.added)
        mark = "" if r.exact else "*"
        churn = " ".join(x for x in (f"-{r.removed}" if r.removed else "", f"+{r.added}" if r.added else "") if x)
        rows.append((r.algorithm, churn or "none", f"{r.max_mean_before:.3f}{mark}", f"{r.max_mean_after:.3f}{mark}",
                     _pct(r.moved), _pct(r.minimum), _pct(r.excess), _pct(r.shuffled),
                     f"{r.build_ms:.1f} ms"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    noise = perfect_max_mean(n, weights, keys, seed)
    out += [
        "",
        "how to read this:",
        "  max/mean   load of the most loaded server divided by its fair share (1.000 is perfect);",
        "             exact, from the algorithm's table (Maglev slots, ring arcs, map entries).",
    ]
    if any(not r.exact for r in results):
        out.append(f"          *  measured on the sampled keys: a perfect balancer would show about {noise:.3f} "
                   f"with {keys:,} keys; use more --keys to see finer differences.")
    out += [
        "  moved      share of all keys whose server changed after the churn.",
        "  minimum    the least any algorithm must move: the keys of removed servers and the new servers'",
        "             fair share (total variation distance between the old and new fair shares).",
        "  excess     moved - minimum. Consistent hashing cannot always reach the minimum: a removed",
        "             server's keys go to its neighbours, not to the server added in its place.",
        "  shuffled   of the keys whose server is still there, the share that moved to another old",
        "             server: movement the churn did not call for. 0 for ring and rendezvous; Maglev's",
        "             price for its balance (the paper's Figure 12 plots it with the keys that had to move).",
        "  build      time to build the picker for the starting pool, on this machine.",
        "",
        "verdicts:",
    ]
    for r in results:
        stab = f"moved {_pct(r.moved)} for a minimum of {_pct(r.minimum)}, "
        if r.shuffled == 0:
            stab += "none between servers that stayed"
        elif r.shuffled < 0.05:
            stab += f"{_pct(r.shuffled)} of the other keys shuffled between servers that stayed"
        else:
            stab += f"reshuffles: {_pct(r.shuffled)} of the other keys changed server"
        imb = r.max_mean_before - 1
        if not r.exact:
            bal = f"balance within sampling noise ({r.max_mean_before:.3f} vs {noise:.3f})" \
                if r.max_mean_before <= noise * 1.05 else f"busiest server {100 * imb:.0f}% over its share"
        elif imb < 0.02:
            bal = "near-perfect balance"
        else:
            bal = f"busiest server {100 * imb:.0f}% over its share"
        out.append(f"  {r.algorithm:12s} [{r.policy}] churn {r.removed and f'-{r.removed}' or ''}"
                   f"{r.added and f'+{r.added}' or ''}: {bal}; {stab}.")
    return "\n".join(out)


def plot(results: Sequence[Result], path: str) -> None:
    """Write a PNG: keys moved (and the minimum) per churn step, and max/mean per algorithm.

    Raises:
        RuntimeError: matplotlib is not installed (``pip install 'herder[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("plotting needs matplotlib: pip install 'herder[plot]'") from e
    algos = list(dict.fromkeys(r.algorithm for r in results))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = sorted({(r.removed, r.added) for r in results})
    n = results[0].servers
    if len(steps) > 1:
        x = [100 * (rm + ad) / n for rm, ad in steps]
        for a in algos:
            by = {(r.removed, r.added): r for r in results if r.algorithm == a}
            ax1.plot(x, [100 * by[s].moved for s in steps], marker="o", label=a)
        mins = {(r.removed, r.added): r.minimum for r in results}
        ax1.plot(x, [100 * mins[s] for s in steps], "k--", label="minimum")
        ax1.set_xlabel("servers removed or added (% of the pool)")
    else:
        xs = range(len(algos))
        by_algo = {r.algorithm: r for r in results}
        ax1.bar(xs, [100 * by_algo[a].moved for a in algos], label="moved")
        ax1.bar(xs, [100 * by_algo[a].minimum for a in algos], fill=False, hatch="//", label="minimum")
        ax1.set_xticks(list(xs), algos)
    ax1.set_ylabel("keys moved (%)")
    ax1.set_title(f"Disruption ({n} servers)")
    ax1.legend()
    last = {r.algorithm: r for r in results}
    xs = range(len(algos))
    ax2.bar([x - 0.2 for x in xs], [last[a].max_mean_before for a in algos], width=0.4, label="before")
    ax2.bar([x + 0.2 for x in xs], [last[a].max_mean_after for a in algos], width=0.4, label="after")
    ax2.axhline(1.0, color="k", linestyle="--", linewidth=1)
    ax2.set_xticks(list(xs), [a + ("" if last[a].exact else "*") for a in algos])
    ax2.set_ylabel("max / mean load")
    ax2.set_title("Balance (1.0 is perfect; * measured on the sampled keys)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
