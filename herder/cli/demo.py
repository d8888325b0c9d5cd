"""``herder demo``: see herder.demo."""

from __future__ import annotations

import argparse

from herder.cli.main import add_logging_options

EPILOG = """\
examples:
  herder demo                          the service on 127.0.0.1:8080, backends on :18081-18083, API on :8404
  herder demo --base-port 28081        other ports
  herder demo --duration 20            stop by itself after 20 s (for scripts and CI)

While it runs, in another terminal:
  curl -s 127.0.0.1:8080/                                        the service: web1, web2, web3 in turn
  curl -s 127.0.0.1:8404/status                                  the pool state
  curl -s -XPOST 127.0.0.1:8404/demo/web2/stop                   stop one backend: it goes DOWN
  curl -s -XPOST 127.0.0.1:8404/demo/web2/start                  start it again: it comes back UP
  curl -s -XPOST -d '{"mode":"drain"}' 127.0.0.1:8404/pools/demo/servers/web1/admin
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run herder on its built-in demo configuration",
                       description="Start three small HTTP servers on loopback and every herder layer "
                                   "that exists in front of them; runs until Ctrl-C.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="loopback address to use (default 127.0.0.1)")
    p.add_argument("--base-port", type=int, default=18081, help="first backend port (default 18081)")
    p.add_argument("--api-port", type=int, default=8404, help="runtime API port (default 8404)")
    p.add_argument("--proxy-port", type=int, default=8080, help="port of the demo's HTTP service (default 8080)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--script", action="store_true",
                   help="stop backend web2 after 3 s and start it again 3 s later (shows the pool state reacting)")
    p.add_argument("--print-config", action="store_true", help="print the demo configuration and exit")
    add_logging_options(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from herder.demo.run import run_demo

    return run_demo(args)
