"""Balancing: picks per second for every algorithm, and the Maglev table build time.

Method. The process pins itself to one core (core 0 when the machine has several).

* **Picks/s.** A pool of 100 servers with weights 1..4 (and 1000 servers for the
  algorithms whose pick cost grows with N), built once; then ``picker.pick(key)`` in a
  tight loop over precomputed 64-bit keys (keys are ignored by the algorithms that do not
  hash). Algorithms that count connections get random open-connection counts first, so
  their scores differ as in service, and the loop does not change them. There is no tool
  to compare in-process picks with, so these rows have no anchor; they say what one
  core of the proxy spends per choice.
* **Maglev build.** ``maglev_table`` for M = 65537 slots and N = 1000 servers of equal
  weight, the median of several builds, against the Maglev paper's figure for the same
  table in C++ (about 1.8 ms, NSDI'16 section 5.3); lower is better, and herder's goal
  is under 50 ms. Rows for N = 100, 10 and 3 show the cost for smaller pools (fewer
  servers means more rounds: the build must stay fast for every pool size).
"""

from __future__ import annotations

import os
import random
import statistics
import time

from bench.common import Row, pin
from herder.balance import algorithms, resolve
from herder.balance.maglev import DEFAULT_TABLE_SIZE, maglev_table

DESCRIPTION = "balancing: picks/s per algorithm on one core; Maglev build M=65537 N=1000 vs the paper's 1.8 ms"

PAPER_BUILD_MS = 1.8
GOAL_BUILD_MS = 50.0


def _servers(n: int) -> list[tuple[str, int]]:
    return [(f"server-{i:04d}", 1 + i % 4) for i in range(n)]


def picks_per_second(name: str, n: int, seconds: float) -> float:
    """Picks per second of ``name`` over ``n`` servers, measured for about ``seconds``."""
    options = {"seed": 1} if name in ("random", "p2c", "peak_ewma") else {}
    picker = resolve(name, options).build(_servers(n))
    rng = random.Random(7)
    if name not in ("ovf", "first", "fo"):  # those would refuse once full
        for server in picker.names:
            for _ in range(rng.randrange(20)):
                picker.on_connect(server)
    keys = [rng.getrandbits(64) for _ in range(4096)]
    pick = picker.pick
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for k in keys:
            pick(k)
        done += len(keys)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - t0)


def build_ms(n: int, repeats: int) -> tuple[float, float]:
    """Median and best Maglev build time, milliseconds, for ``n`` equal servers."""
    names = [f"server-{i:04d}" for i in range(n)]
    weights = [1] * n
    maglev_table(names, weights, DEFAULT_TABLE_SIZE)  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        maglev_table(names, weights, DEFAULT_TABLE_SIZE)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def run(quick: bool) -> list[Row]:
    pin(os.getpid(), 0)
    seconds = 0.05 if quick else 0.4
    rows: list[Row] = []
    for algo in algorithms():
        sizes = (100, 1000) if algo.name in ("rendezvous", "roundrobin", "leastconn") else (100,)
        for n in sizes:
            rate = picks_per_second(algo.name, n, seconds)
            rows.append(Row(f"{algo.name} pick, {n} servers", "picks/s", rate, None, "-",
                            note="keyed" if algo.keyed else ""))
    median, best = build_ms(1000, 3 if quick else 9)
    verdict = "meets" if median < GOAL_BUILD_MS else "MISSES"
    rows.append(Row("maglev build M=65537 N=1000", "ms", median, PAPER_BUILD_MS, "Maglev paper (C++)",
                    higher_is_better=False, note=f"best {best:.1f} ms; {verdict} the {GOAL_BUILD_MS:.0f} ms goal"))
    for n in (100, 10, 3):
        median, best = build_ms(n, 2 if quick else 5)
        rows.append(Row(f"maglev build M=65537 N={n}", "ms", median, None, "-", higher_is_better=False,
                        note=f"best {best:.1f} ms"))
    return rows
