"""``herder lab ...``: build network-namespace topologies, use their nodes, remove them.

``exec``, ``shell`` and ``capture`` replace this process with the command (``os.execvp``
on ``ip netns exec NS ...``, the argv :func:`herder.proc.netns_argv` builds) instead of
starting a child: the command must own the terminal (job control, Ctrl-C, its exit
status), which a child in its own session, as :func:`herder.proc.spawn` makes it, cannot.
Its PID is this command's PID, so there is nothing to track.

Also runnable without the rest of herder's CLI as ``python -m herder.lab.cli ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from herder.lab.lab import Lab, LabInfo, down, list_labs
from herder.lab.netns import LabError, netns_name
from herder.lab.topology import SWITCH, TopologyError, resolve_topology, shipped_topologies
from herder.proc import netns_argv

__all__ = ["build_parser", "main", "register"]

log = logging.getLogger(__name__)

_F = argparse.RawDescriptionHelpFormatter

LAB_EPILOG = """\
examples:
  herder lab up flat                      build the flat LAN (client, director, rs1-rs3) as lab "flat"
  herder lab exec client -- curl -s http://198.18.0.11/     -> rs1
  herder lab capture director 'tcp port 80'
  herder lab status
  herder lab down flat

topologies shipped: {shipped}
guide: docs/lab.md
"""


def _shipped() -> str:
    return ", ".join(shipped_topologies())


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``lab`` and its sub-commands to ``herder``'s sub-command tree."""
    p = sub.add_parser(
        "lab", help="network-namespace topologies for demos and tests (root)",
        description="Build client/router/director/real-server topologies as network namespaces on this "
                    "machine (root needed), run commands in their nodes, capture packets, remove them.",
        epilog=LAB_EPILOG.format(shipped=_shipped()), formatter_class=_F)
    _add_commands(p)


def _add_commands(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="log level for lab operations (default: warning)")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])
    lab_sub = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")

    up = lab_sub.add_parser(
        "up", help="build a topology as a lab",
        description="Build TOPOLOGY (a shipped name or a TOML file) as network namespaces named "
                    "hl-<NAME>-<node>, with the bridges in hl-<NAME>-switch, and start its processes. "
                    "The lab stays up until 'herder lab down NAME'.",
        epilog="examples:\n"
               "  herder lab up flat                     lab 'flat' from the shipped topology\n"
               "  herder lab up flat --name b            a second, independent copy named 'b'\n"
               "  herder lab up ./my-topology.toml       your own topology (see docs/lab.md)\n"
               "  herder lab up routed --no-processes    network only, no servers started\n"
               f"\nshipped topologies: {_shipped()}",
        formatter_class=_F)
    up.add_argument("topology", metavar="TOPOLOGY", help="shipped topology name or path to a .toml file")
    up.add_argument("--name", help="lab name: a letter then up to 11 letters/digits (default: the topology's name)")
    up.add_argument("--no-processes", action="store_true", help="do not start the topology's processes")
    up.add_argument("--json", action="store_true", help="print the result as JSON")
    up.set_defaults(func=cmd_up)

    dn = lab_sub.add_parser(
        "down", help="remove a lab completely",
        description="Stop every process of the lab, delete its namespaces (their veths and bridges go "
                    "with them) and its state. Works from the name alone, so it also removes what a "
                    "crashed 'lab up' or test run left behind. Without NAME: the only lab, if exactly "
                    "one exists; with several, name one or give --all.",
        epilog="examples:\n"
               "  herder lab down flat          remove lab 'flat'\n"
               "  herder lab down               remove the only lab\n"
               "  herder lab down --all         remove every lab (all hl-* namespaces)",
        formatter_class=_F)
    dn.add_argument("name", nargs="?", metavar="NAME", help="lab name")
    dn.add_argument("--all", action="store_true", help="remove every lab, including other users' test labs")
    dn.set_defaults(func=cmd_down)

    st = lab_sub.add_parser(
        "status", help="list labs, or show one",
        description="Without NAME: one line per lab (topology, namespaces, processes alive). With NAME: "
                    "its nodes, addresses and processes. Labs found only as leftover namespaces are "
                    "marked 'orphaned'.",
        epilog="examples:\n  herder lab status\n  herder lab status flat\n  herder lab status --json",
        formatter_class=_F)
    st.add_argument("name", nargs="?", metavar="NAME", help="lab name")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)

    ex = lab_sub.add_parser(
        "exec", help="run a command in a node",
        description="Run CMD in NODE's network namespace (ip netns exec), in the foreground; the exit "
                    "status is CMD's. NODE 'switch' is the namespace holding the bridges.",
        epilog="examples:\n"
               "  herder lab exec client -- curl -s http://198.18.0.11/\n"
               "  herder lab exec director -- ip -br addr\n"
               "  herder lab exec --lab b rs1 -- ss -ltn\n"
               "  herder lab exec switch -- bridge fdb show br lan",
        formatter_class=_F)
    _lab_option(ex)
    ex.add_argument("node", metavar="NODE")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments")
    ex.set_defaults(func=cmd_exec)

    sh = lab_sub.add_parser(
        "shell", help="an interactive shell in a node",
        description="Start $SHELL (bash by default) in NODE's network namespace; the prompt names the "
                    "lab and node. Exit the shell to leave.",
        epilog="examples:\n  herder lab shell client\n  herder lab shell --lab b director",
        formatter_class=_F)
    _lab_option(sh)
    sh.add_argument("node", metavar="NODE")
    sh.set_defaults(func=cmd_shell)

    cp = lab_sub.add_parser(
        "capture", help="capture packets in a node (tcpdump)",
        description="Run tcpdump -n -e -U --immediate-mode in NODE until Ctrl-C (or -c COUNT packets). "
                    "The interface defaults to the node's only interface, else 'any'. FILTER is a pcap "
                    "filter expression.",
        epilog="examples:\n"
               "  herder lab capture director 'tcp port 80'\n"
               "  herder lab capture client arp -c 4\n"
               "  herder lab capture switch -i lan 'host 198.18.0.100'\n"
               "  herder lab capture rs1 -w /tmp/rs1.pcap",
        formatter_class=_F)
    _lab_option(cp)
    cp.add_argument("node", metavar="NODE")
    _capture_options(cp)
    cp.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER",
                    help="pcap filter expression (the options may also follow it)")
    cp.set_defaults(func=cmd_capture)

    tp = lab_sub.add_parser(
        "topologies", help="list the shipped topologies",
        description="List the topologies shipped with herder, with their nodes and descriptions.",
        epilog="example:\n  herder lab topologies", formatter_class=_F)
    tp.set_defaults(func=cmd_topologies)


def _capture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--iface", help="interface (default: the node's only one, else any)")
    p.add_argument("-c", "--count", type=int, help="stop after COUNT packets")
    p.add_argument("-w", "--write", metavar="FILE", help="write a pcap file instead of printing")


def _lab_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", default=os.environ.get("HERDER_LAB"),
                   help="lab name (default: $HERDER_LAB, else the only lab that is up)")


def _setup_logging(args: argparse.Namespace) -> None:
    from herder.log import setup

    setup(getattr(args, "log_level", None) or "warning")


def _err(msg: str) -> int:
    print(f"herder lab: {msg}", file=sys.stderr)
    return 1


def _need_root() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or with sudo)"
    return None


def _pick_lab(name: str | None) -> str:
    if name:
        return name
    labs = [i.name for i in list_labs()]
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is up (herder lab up TOPOLOGY)")
    raise LabError(f"several labs are up ({', '.join(labs)}): give --lab NAME")


def _node_netns(lab_name: str | None, node: str) -> tuple[str, str]:
    name = _pick_lab(lab_name)
    if node == SWITCH:
        return name, netns_name(name, SWITCH)
    lab = Lab.attach(name)
    return name, lab.node(node).netns


def _exec(argv: Sequence[str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], list(argv))
    except OSError as e:
        return _err(f"cannot run {argv[0]}: {e.strerror}")
    return 0  # not reached


# --- commands -------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    _setup_logging(args)
    if (why := _need_root()):
        return _err(why)
    try:
        topo = resolve_topology(args.topology)
        lab = Lab.up(topo, name=args.name, start_processes=not args.no_processes)
    except (LabError, TopologyError) as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(_lab_json(lab)))
        return 0
    print(f"lab {lab.name} (topology {topo.name}) up in {lab.up_s:.2f} s: {topo.description}")
    _print_nodes(lab)
    first = next((n for n in topo.nodes if n.role == "client"), topo.nodes[0]).name
    target = next((n for n in topo.nodes if n.processes and n.address), None)
    print("\nnext:")
    if target is not None:
        print(f"  herder lab exec {first} -- curl -s http://{target.address}/")
    print(f"  herder lab shell {first}")
    print(f"  herder lab down {lab.name}")
    return 0


def _print_nodes(lab: Lab) -> None:
    procs: dict[str, list[str]] = {}
    for p in lab.processes():
        procs.setdefault(p["node"], []).append(f"{p['name']} pid {p['pid']}{'' if p['alive'] else ' (dead)'}")
    width = max(len(n.name) for n in lab.nodes)
    nswidth = max(len(n.netns) for n in lab.nodes)
    for node in lab.nodes:
        spec = node.spec
        assert spec is not None
        addrs = "  ".join(f"{i.name} {' '.join(map(str, i.addresses)) or '-'}" for i in spec.interfaces)
        line = f"  {node.name:<{width}}  {node.netns:<{nswidth}}  {addrs}"
        if spec.routes:
            line += "  | " + "; ".join(map(str, spec.routes))
        print(line)
        for p in procs.get(node.name, []):
            print(f"  {'':<{width}}    {p}")


def _lab_json(lab: Lab) -> dict:
    return {
        "name": lab.name, "topology": lab.topology.name, "up_s": lab.up_s, "namespaces": lab.namespaces,
        "nodes": {n.name: {"netns": n.netns, "addresses": [str(a) for a in n.addresses]} for n in lab.nodes},
        "processes": lab.processes(),
    }


def cmd_down(args: argparse.Namespace) -> int:
    _setup_logging(args)
    if (why := _need_root()):
        return _err(why)
    labs = [i.name for i in list_labs()]
    if args.all:
        names = labs
    elif args.name:
        names = [args.name]
    elif len(labs) == 1:
        names = labs
    elif not labs:
        print("no lab is up")
        return 0
    else:
        return _err(f"several labs are up ({', '.join(labs)}): name one, or give --all")
    status = 0
    for name in names:
        try:
            t0 = time.monotonic()
            removed = down(name)
            print(f"lab {name} down: {len(removed)} namespaces removed in {time.monotonic() - t0:.2f} s")
        except LabError as e:
            status = _err(str(e))
    return status


def _info_json(i: LabInfo) -> dict:
    return {"name": i.name, "topology": i.topology, "namespaces": i.namespaces, "processes": i.processes,
            "created": i.created, "orphaned": i.orphaned}


def cmd_status(args: argparse.Namespace) -> int:
    _setup_logging(args)
    infos = list_labs()
    if args.name:
        infos = [i for i in infos if i.name == args.name]
        if not infos:
            return _err(f"no lab {args.name}")
    if args.json:
        print(json.dumps([_info_json(i) for i in infos]))
        return 0
    if not infos:
        print("no lab is up")
        return 0
    if args.name and not infos[0].orphaned:
        lab = Lab.attach(args.name)
        print(f"lab {lab.name} (topology {lab.topology.name}): {lab.topology.description}")
        _print_nodes(lab)
        return 0
    print(f"{'NAME':<12} {'TOPOLOGY':<12} {'NAMESPACES':>10} {'PROCESSES':>10}  STATE")
    for i in infos:
        alive = sum(1 for p in i.processes if p["alive"])
        state = "orphaned (herder lab down " + i.name + ")" if i.orphaned else "up"
        print(f"{i.name:<12} {i.topology or '?':<12} {len(i.namespaces):>10} {f'{alive}/{len(i.processes)}':>10}  {state}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        return _err("give a command after --, e.g. herder lab exec client -- ip -br addr")
    try:
        _, ns = _node_netns(args.lab, args.node)
    except LabError as e:
        return _err(str(e))
    return _exec(netns_argv(ns, cmd))


def cmd_shell(args: argparse.Namespace) -> int:
    try:
        name, ns = _node_netns(args.lab, args.node)
    except LabError as e:
        return _err(str(e))
    shell = os.environ.get("SHELL") or "/bin/bash"
    os.environ["HERDER_LAB"] = name
    os.environ["HERDER_LAB_NODE"] = args.node
    if os.path.basename(shell) == "bash":
        rc = tempfile.NamedTemporaryFile("w", prefix="herder-lab-", suffix=".bashrc", delete=False)
        with rc:
            rc.write('[ -f ~/.bashrc ] && . ~/.bashrc\n'
                     f'PS1="[lab {name}:{args.node}] $PS1"\n'
                     f'rm -f {rc.name}\n')
        return _exec(netns_argv(ns, [shell, "--rcfile", rc.name, "-i"]))
    os.environ["PS1"] = f"[lab {name}:{args.node}] $ "
    return _exec(netns_argv(ns, [shell, "-i"]))


def cmd_capture(args: argparse.Namespace) -> int:
    # options after NODE land in the filter (argparse.REMAINDER): pick them out again
    late = argparse.ArgumentParser(prog="herder lab capture", add_help=False)
    _capture_options(late)
    _lab_option(late)
    opts, rest = late.parse_known_args(args.filter)
    for key in ("iface", "count", "write", "lab"):
        if getattr(opts, key) is not None and getattr(opts, key) != late.get_default(key):
            setattr(args, key, getattr(opts, key))
    args.filter = [a for a in rest if a != "--"]
    try:
        name, ns = _node_netns(args.lab, args.node)
        iface = args.iface
        if iface is None:
            ifs = Lab.attach(name).node(args.node).interfaces if args.node != SWITCH else []
            iface = ifs[0] if len(ifs) == 1 else "any"
    except LabError as e:
        return _err(str(e))
    argv = ["tcpdump", "-n", "-e", "-U", "--immediate-mode", "-Z", "root", "-i", iface]
    if args.count:
        argv += ["-c", str(args.count)]
    if args.write:
        argv += ["-w", args.write]
    argv += args.filter
    return _exec(netns_argv(ns, argv))


def cmd_topologies(args: argparse.Namespace) -> int:
    for name in shipped_topologies():
        try:
            t = resolve_topology(name)
        except TopologyError as e:
            print(f"{name:<12} invalid: {e}")
            continue
        print(f"{name:<12} {t.description}")
        print(f"{'':<12} nodes: {', '.join(t.node_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``herder lab`` parser (for ``python -m herder.lab.cli``)."""
    p = argparse.ArgumentParser(
        prog="herder lab",
        description="Network-namespace topologies for herder's demos and tests (root needed).",
        epilog=LAB_EPILOG.format(shipped=_shipped()), formatter_class=_F)
    _add_commands(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
