"""``herder check FILE...``: validate configuration without running it (as ``haproxy -c``)."""

from __future__ import annotations

import argparse
import sys

from herder.config import ConfigErrors, load_files

EPILOG = """\
examples:
  herder check herder.toml
  herder check herder.toml extra-pools.toml      several files are merged, as `herder run` does
  herder check -q herder.toml && echo valid      only the exit status

Exit status 0 when every file is valid, 1 otherwise. Every problem is printed, one per
line, as FILE:LINE: KEY: what is wrong and what was expected.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate configuration files and exit 0 or 1",
                       description="Validate configuration files without running anything.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="configuration files (herder TOML, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when the files are valid")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_files(args.files)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        print(f"herder check: {n} error{'s' if n != 1 else ''}; configuration is NOT valid", file=sys.stderr)
        return 1
    if not args.quiet:
        servers = sum(len(p.servers) for p in cfg.pools.values())
        print(f"configuration is valid: {len(cfg.pools)} pool(s), {servers} server(s), "
              f"{len(cfg.services)} service(s), {len(cfg.regions)} region(s)"
              + (f"; sections: {', '.join(sorted(cfg.sections))}" if cfg.sections else ""))
    return 0
