"""``herder`` entry point: builds the sub-command tree from the modules that provide one.

Each module in :data:`COMMAND_MODULES` defines ``register(subparsers)``, which adds its
sub-command(s) with ``set_defaults(func=handler)``; ``handler(args) -> int`` is the exit
status. Adding a layer's commands is one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from herder import __version__

#: Modules that contribute sub-commands, in the order they are listed in ``--help``.
COMMAND_MODULES = [
    "herder.cli.run",
    "herder.cli.check",
    "herder.cli.demo",
    "herder.cli.version",
    "herder.lab.cli",
    "herder.cli.dns",
    "herder.cli.balance",
    "herder.l4.cli",
]

EPILOG = """\
examples:
  herder demo                     three demo servers on loopback and herder in front of them
  herder check herder.toml        validate a configuration, exit 0 or 1 (like haproxy -c)
  herder run herder.toml          run everything the configuration declares
  herder <command> --help         help and examples for one command
"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def add_logging_options(p: argparse.ArgumentParser) -> None:
    """The logging options every long-running command takes."""
    g = p.add_argument_group("logging")
    g.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="log level (default: the config's herder.log_level, else info)")
    g.add_argument("--log-format", default=None, choices=["text", "json"],
                   help="text lines or JSON lines (default: the config's herder.log_format, else text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herder",
        description="Route requests for one service across many servers: DNS, L4, L7, VRRP.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"herder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
