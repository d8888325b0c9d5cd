"""``herder dns ...``: serve zone files directly (the quick start of herder's DNS)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from herder import log as hlog
from herder.cli.main import add_logging_options
from herder.config.schema import parse_endpoint
from herder.loop import run as run_loop

log = logging.getLogger(__name__)

DESCRIPTION = """\
Serve RFC 1035 zone files as an authoritative name server, over UDP and TCP, with no
other configuration. Answers are precomputed and cached in wire form; names outside the
zones get REFUSED; NXDOMAIN and NODATA carry the zone's SOA.

With --regions, a region map (client prefix -> region) makes the answers geographic:
when a name has A/AAAA records whose addresses fall in different regions of the map,
a client gets the records of its own region (by source address, or by the EDNS Client
Subnet option a resolver sends), falling back to all records; the ECS scope echoed is the
prefix length that decided. Policies bound to pools, health and the two-level hierarchy
need a config file: `herder run` with a [dns] section (docs/dns.md).
"""

EPILOG = """\
examples:
  herder dns serve example.com.zone
  herder dns serve --listen 127.0.0.1:5300 --listen [::1]:5300 zones/*.zone
  herder dns serve example.com=zones/db.example     the origin given explicitly
  herder dns serve --regions regions.map cdn.test.zone
  dig @127.0.0.1 -p 5300 www.example.com +subnet=198.18.1.0/24

ZONEFILE is PATH or ORIGIN=PATH. Without an ORIGIN, the file's $ORIGIN is used, else the
file name (example.com.zone, db.example.com, example.com.db -> example.com.).

A region map file has one "PREFIX REGION" per line and at most one "default REGION":
  198.18.1.0/24   eu
  198.18.2.0/24   us
  default         us
"""

DEFAULT_LISTEN = "127.0.0.1:5300"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dns", help="authoritative DNS tools (serve zone files)",
                       description="herder's authoritative name server, outside a full configuration.",
                       epilog="examples:\n  herder dns serve example.com.zone\n  herder dns serve --help\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="dns_command", metavar="COMMAND")
    s = dsub.add_parser("serve", help="serve zone files over UDP and TCP until SIGINT/SIGTERM",
                        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("zones", nargs="+", metavar="ZONEFILE", help="zone files (PATH or ORIGIN=PATH)")
    s.add_argument("--listen", action="append", metavar="ADDR:PORT",
                   help=f"address to serve on, UDP and TCP; repeatable (default {DEFAULT_LISTEN})")
    s.add_argument("--regions", metavar="MAPFILE", help="region map: client prefix -> region (see below)")
    s.add_argument("--udp-payload", type=int, default=1232, metavar="BYTES",
                   help="EDNS UDP payload size: the largest UDP answer (512..4096, default 1232)")
    s.add_argument("--no-ecs", action="store_true", help="ignore EDNS Client Subnet options")
    s.add_argument("--udp-thread", action="store_true",
                   help="serve UDP from a blocking socket in its own thread (more queries per core)")
    s.add_argument("--no-uvloop", action="store_true", help="use the asyncio event loop even if uvloop is installed")
    add_logging_options(s)
    s.set_defaults(func=cmd_serve)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def cmd_serve(args: argparse.Namespace) -> int:
    from herder.config import Config
    from herder.dns.config import settings_for_zones
    from herder.dns.geo import MapFileError, parse_map_text
    from herder.dns.server import DnsServer
    from herder.dns.wire import name_to_text
    from herder.dns.zone import ZoneError, ZoneSet, load_zone_file
    from herder.runtime import Runtime

    hlog.setup(args.log_level or "info", args.log_format or "text")
    errors: list[str] = []
    listen = []
    for text in args.listen or [DEFAULT_LISTEN]:
        try:
            listen.append(parse_endpoint(text, 53))
        except ValueError as e:
            errors.append(f"--listen {text}: {e}")
    if not 512 <= args.udp_payload <= 4096:
        errors.append(f"--udp-payload {args.udp_payload}: expected 512..4096")
    region_map = None
    geo = args.regions is not None
    if geo:
        try:
            region_map = parse_map_text(Path(args.regions).read_text(encoding="utf-8"), args.regions)
        except OSError as e:
            errors.append(f"{args.regions}: cannot read region map: {e.strerror or e}")
        except MapFileError as e:
            errors.append(str(e))
    zones = []
    for spec in args.zones:
        origin, _, path = spec.rpartition("=") if "=" in spec else (None, "", spec)
        try:
            zones.append(load_zone_file(path, (origin.rstrip(".") + ".") if origin else None, geo=geo))
        except ZoneError as e:
            errors.append(str(e))
    if not errors:
        try:
            ZoneSet(zones)
        except ZoneError as e:
            errors.append(str(e))
    if errors:
        for e in errors:
            log.error("%s", e)
        print(f"herder dns serve: {len(errors)} error(s); not started", file=sys.stderr)
        return 1
    settings = settings_for_zones(zones, tuple(listen), udp_payload=args.udp_payload, ecs=not args.no_ecs,
                                  udp_io="thread" if args.udp_thread else "loop")
    server = DnsServer(settings, None, region_map=region_map, static=True)
    for z in zones:
        log.info("zone %s from %s: %d names", name_to_text(z.origin), z.source, len(z.nodes))
    return run_loop(Runtime(Config(), extra_components=[server]).serve(), use_uvloop=not args.no_uvloop)
