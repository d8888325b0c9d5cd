"""Benchmark runner: ``python -m bench [--quick] [NAME ...]`` (``make bench``).

Each benchmark is a module ``bench/bench_<name>.py`` that defines::

    DESCRIPTION: str
    def run(quick: bool) -> list[Row]

and measures herder *and its anchor in the same run* (haproxy, nginx, gdnsd, keepalived,
or a published figure when no tool exists, such as the Maglev paper's build time). The
runner prints one table per benchmark with the ratio herder/anchor, and writes every row
to bench/results/<name>.json. Absolute numbers are printed too, but the ratio is what
means something on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from bench.common import Row, format_table

HERE = Path(__file__).parent


def discover() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(discover())})")
    p.add_argument("--quick", action="store_true", help="shorter runs (smoke test of the benchmark itself)")
    args = p.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = 0
    for name in names:
        mod = importlib.import_module(f"bench.bench_{name}")
        print(f"\n== {name}: {mod.DESCRIPTION}", flush=True)
        t0 = time.monotonic()
        try:
            rows: list[Row] = mod.run(args.quick)
        except Exception as e:  # one broken benchmark must not hide the others
            print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
            failed += 1
            continue
        print(format_table(rows), flush=True)
        print(f"   ({time.monotonic() - t0:.1f} s)")
        (out_dir / f"{name}.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
