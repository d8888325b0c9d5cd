"""``herder balance ...``: list the balancing algorithms, and simulate the hashing ones."""

from __future__ import annotations

import argparse
import json
import sys

from herder.balance import algorithms, aliases
from herder.balance.simulate import Scenario, format_report, plot, simulate

FORMATTER = argparse.RawDescriptionHelpFormatter

LIST_DESCRIPTION = """\
List every balancing algorithm herder has, with its options, and every alias: the
spellings of ipvsadm, HAProxy and nginx that a pool's `balance` setting also accepts.
docs/balance.md describes each one in detail.
"""

LIST_EPILOG = """\
examples:
  herder balance list
  herder balance list --json | jq '.algorithms[].name'
"""

SIMULATE_DESCRIPTION = """\
Compare hashing algorithms the way the Maglev paper does (NSDI'16, Figures 11 and 12):
build a pool of N servers, map uniform random keys onto it, remove and/or add servers,
map the same keys again, and report for each algorithm

  max/mean   how much the busiest server gets over its fair share (1.000 is perfect)
  moved      the share of keys whose server changed
  minimum    the least any algorithm must move for that churn
  excess     moved - minimum: keys moved for nothing
  shuffled   keys whose server is still there that moved to another old server

The report ends with a legend and a one-line verdict per algorithm. Only algorithms that
map a key to a server can be simulated: hash (map-based), ring, rendezvous, maglev and
their aliases (source, uri, sh, mh, ketama, ...).
"""

SIMULATE_EPILOG = """\
examples:
  herder balance simulate                                  maglev, ring, rendezvous; 1000 servers, remove 10
  herder balance simulate --algorithms maglev,ring,rendezvous --servers 1000 --remove 10
  herder balance simulate --remove 1,2,5,10 --plot fig12.png   a sweep, plotted (needs matplotlib)
  herder balance simulate --algorithms maglev,hash --servers 100 --add 1
  herder balance simulate --weights 1,2,4 --servers 30 --remove 3 --keys 1000000
  herder balance simulate -o table_size=655373 --algorithms maglev   the paper's larger table
  herder balance simulate --json > result.json

--remove and --add take one number or a comma-separated list; every combination is one
churn step. Options given with -o go to the algorithms that have them.
"""


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers >= 0")
    return values


def _option(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name.strip(), value.strip()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("balance", help="balancing algorithms: list them, simulate hashing under churn",
                       description="Inspect herder's balancing algorithms outside a running configuration.",
                       epilog="examples:\n  herder balance list\n  herder balance simulate --remove 10\n"
                              "  herder balance simulate --help\n",
                       formatter_class=FORMATTER)
    p.set_defaults(func=lambda args: _usage(p))
    bsub = p.add_subparsers(dest="balance_command", metavar="COMMAND")

    ls = bsub.add_parser("list", help="list algorithms, their options and aliases",
                         description=LIST_DESCRIPTION, epilog=LIST_EPILOG, formatter_class=FORMATTER)
    ls.add_argument("--json", action="store_true", help="print JSON instead of text")
    ls.set_defaults(func=cmd_list)

    sim = bsub.add_parser("simulate", help="compare hashing algorithms' balance and disruption (Maglev Fig. 12)",
                          description=SIMULATE_DESCRIPTION, epilog=SIMULATE_EPILOG, formatter_class=FORMATTER)
    sim.add_argument("--algorithms", default="maglev,ring,rendezvous", metavar="A,B,...",
                     help="algorithms or aliases to compare (default: maglev,ring,rendezvous)")
    sim.add_argument("--servers", type=int, default=1000, metavar="N", help="servers in the pool (default 1000)")
    sim.add_argument("--remove", type=_ints, default=[10], metavar="K[,K...]",
                     help="servers to remove, chosen at random (default 10)")
    sim.add_argument("--add", type=_ints, default=[0], metavar="K[,K...]", help="servers to add (default 0)")
    sim.add_argument("--weights", type=_ints, default=[1], metavar="W[,W...]",
                     help="server weights, cycled over the servers (default: all 1)")
    sim.add_argument("--keys", type=int, default=100_000, metavar="K", help="uniform random keys (default 100000)")
    sim.add_argument("--seed", type=int, default=1, help="seed for the keys and the servers removed (default 1)")
    sim.add_argument("-o", "--option", type=_option, action="append", default=[], metavar="NAME=VALUE",
                     help="algorithm option, e.g. table_size=655373 or points=320; repeatable")
    sim.add_argument("--plot", metavar="FILE.png", help="also write a PNG plot (needs matplotlib: herder[plot])")
    sim.add_argument("--json", action="store_true", help="print the results as JSON instead of the report")
    sim.set_defaults(func=cmd_simulate)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    algos = algorithms()
    names = aliases()
    if args.json:
        print(json.dumps({
            "algorithms": [{
                "name": a.name, "summary": a.summary, "origin": a.origin, "hashes_keys": a.keyed,
                "default_key": a.default_key, "counts_connections": a.counts, "uses_latency": a.latency,
                "options": [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help}
                            for o in a.options],
            } for a in algos],
            "aliases": [{"name": x.name, "algorithm": x.target, "origin": x.origin,
                         "options": {k: v for k, v in x.options.items() if v is not None}, "note": x.note}
                        for x in names],
        }, indent=2))
        return 0
    width = max(len(a.name) for a in algos)
    print("algorithms (the value of a pool's `balance`):\n")
    for a in algos:
        print(f"  {a.name.ljust(width)}  {a.summary}")
        extra = [f"from {a.origin}"] if a.origin else []
        if a.keyed:
            extra.append(f"hashes a key (default: {a.default_key})")
        elif a.default_key:
            extra.append("uses a key if given")
        if a.counts:
            extra.append("counts connections")
        if a.latency:
            extra.append("uses latency")
        print(f"  {' ' * width}  ({'; '.join(extra)})")
        for o in a.options:
            print(f"  {' ' * width}    {o.name} = {o.default!r}: {o.help}")
    aw = max(len(x.name) for x in names)
    print("\naliases:\n")
    for x in names:
        preset = ", ".join(f"{k}={v}" for k, v in x.options.items() if v is not None)
        note = "; ".join(s for s in (preset, x.note) if s)
        print(f"  {x.name.ljust(aw)}  -> {x.target:10s} ({x.origin}){': ' + note if note else ''}")
    print("\nHAProxy and nginx forms are accepted too: `hdr(host) use_domain_only`, `uri whole depth 2`,\n"
          "`url_param userid`, `random(2)`, `random two least_conn`, `hash $request_uri consistent`.\n"
          "Options common to all: allbackups. Hashing algorithms also take key, its options "
          "(whole, len, depth,\npath_only, use_domain_only, prefix, prefix6) and hash_balance_factor.")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    algos = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    scenarios = [Scenario(args.servers, r, a) for r in args.remove for a in args.add]
    try:
        results = simulate(algos, scenarios, weights=args.weights, keys=args.keys, seed=args.seed,
                           options=dict(args.option))
    except ValueError as e:
        print(f"herder balance simulate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_report(results, weights=args.weights, keys=args.keys, seed=args.seed))
    if args.plot:
        try:
            plot(results, args.plot)
        except RuntimeError as e:
            print(f"herder balance simulate: {e}", file=sys.stderr)
            return 1
        print(f"\nplot written to {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0
