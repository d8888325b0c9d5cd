"""``herder run FILE...``: run every component the configuration declares."""

from __future__ import annotations

import argparse
import logging
import sys

from herder import log as hlog
from herder.cli.main import add_logging_options
from herder.config import ConfigErrors, load_files
from herder.loop import run as run_loop

EPILOG = """\
examples:
  herder run herder.toml
  herder run --log-format json herder.toml pools.toml
  kill -HUP <pid>       reload the files (a config with errors is rejected, nothing changes)
  kill -TERM <pid>      stop: listeners closed, children reaped, exit status 0

Files are merged; names (pools, services, regions) must be unique across them.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run what the configuration declares until SIGINT/SIGTERM",
                       description="Load the configuration and start every component it declares.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="configuration files")
    p.add_argument("--no-uvloop", action="store_true", help="use the asyncio event loop even if uvloop is installed")
    add_logging_options(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_files(args.files)
    except ConfigErrors as e:
        hlog.setup(args.log_level or "info", args.log_format or "text")
        for err in e.errors:
            logging.getLogger("herder.config").error("%s", err)
        print(f"herder run: {len(e.errors)} configuration error(s); not started", file=sys.stderr)
        return 1
    hlog.setup(args.log_level or cfg.log_level, args.log_format or cfg.log_format)
    from herder.runtime import Runtime

    return run_loop(Runtime(cfg).serve(), use_uvloop=not args.no_uvloop)
