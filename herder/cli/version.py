"""``herder version``."""

from __future__ import annotations

import argparse
import platform

from herder import __version__
from herder.loop import loop_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print herder's version and runtime",
                       description="Print herder's version, the Python version, the event loop in use and whether\n"
                                   "the L7 proxy's hot path is the compiled extension or plain Python.",
                       epilog="example:\n  herder version", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    from herder.l7 import proxy

    l7 = "compiled" if proxy.COMPILED else "plain Python"
    print(f"herder {__version__} (python {platform.python_version()}, loop {loop_name()}, L7 hot path {l7})")
    return 0
