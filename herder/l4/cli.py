"""``herder ipvsadm ...`` and ``herder realserver setup|teardown`` (the L4 commands)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

IPVSADM_EPILOG = """\
examples (the lecture's three lines, addresses changed):
  herder ipvsadm -A -t 198.18.0.100:80 -s rr
  herder ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.11:80 -m
  herder ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.12:80 -m
  herder ipvsadm -L -n
  herder ipvsadm -S -n > rules; herder ipvsadm -C; herder ipvsadm -R < rules

Runs in the current network namespace (use `ip netns exec NS herder ipvsadm ...` or
`herder lab exec director -- herder ipvsadm ...`). Needs root for anything but parsing.
"""

REALSERVER_EPILOG = """\
examples:
  herder realserver setup --vip 198.18.0.100      VIP on lo as /32, arp_ignore=1, arp_announce=2
  herder realserver teardown --vip 198.18.0.100   undo (restores the previous ARP settings)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ipvsadm", help="the ipvsadm command language, programmed into nftables",
                       description="Run an ipvsadm command against herder's nftables L4 director.",
                       epilog=IPVSADM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       add_help=False, prefix_chars="+")
    p.add_argument("args", nargs=argparse.REMAINDER, help="ipvsadm arguments")
    p.set_defaults(func=cmd_ipvsadm)
    r = sub.add_parser("realserver", help="prepare a real server for direct server return",
                       description="Put the VIP on a non-ARPing loopback alias (and undo it).",
                       epilog=REALSERVER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("action", choices=("setup", "teardown"))
    r.add_argument("--vip", action="append", required=True, metavar="VIP", help="the VIP (repeat for several)")
    r.set_defaults(func=cmd_realserver)


def cmd_ipvsadm(args: argparse.Namespace) -> int:
    from herder.l4.ipvsadm import main

    return main(args.args)


def cmd_realserver(args: argparse.Namespace) -> int:
    from herder.l4 import realserver

    try:
        if args.action == "setup":
            changes = realserver.setup(args.vip)
        else:
            changes = realserver.teardown(args.vip)
    except (ValueError, OSError) as e:
        print(f"herder realserver: {e}", file=sys.stderr)
        return 1
    if not changes:
        print(f"herder realserver {args.action}: nothing to change")
    for c in changes:
        print(f"herder realserver {args.action}: {c}")
    return 0
