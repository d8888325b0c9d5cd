"""``herder version``."""

from __future__ import annotations

import argparse
import platform

from herder import __version__
from herder.loop import loop_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print herder's version and runtime",
                       description="Print herder's version, the Python version and the event loop in use.",
                       epilog="example:\n  herder version", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"herder {__version__} (python {platform.python_version()}, loop {loop_name()})")
    return 0
