"""The keepalived.conf importer: an operator's keepalived VRRP configuration, run by herder.

Blocks read: ``global_defs``, ``vrrp_script``, ``vrrp_instance`` and ``vrrp_sync_group``.
Each is turned into the raw tables of herder's native ``[vrrp]`` section (the key names
are the same words) and parsed by the *same* schema (:mod:`herder.ha.vrrp.settings`),
with a line map pointing every key at its keepalived.conf line. So a keepalived.conf and a
herder.toml are held to one set of rules, and every error names ``file:line``.

Every keyword is supported, accepted with no effect (:data:`NO_EFFECT`: e-mail alerts,
process priorities and the like, which are not herder's business), or an error naming
its line -- never silently ignored. ``virtual_server`` and ``virtual_server_group``
belong to the L4 director: a layer that reads them registers a handler with
:func:`register_block_handler`; until one does, they are "not supported yet" errors.
docs/vrrp.md has the full compatibility table.

Syntax (keepalived's): one statement per line, ``{ ... }`` blocks (also on one line:
``virtual_ipaddress { 192.168.1.1 }``), ``#`` and ``!`` comments, double-quoted strings.
``include``, ``@conditional`` lines and ``$VARIABLES`` are not supported (errors).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from herder.config.errors import ConfigError
from herder.config.lines import LineMap
from herder.config.load import Importer, register_importer
from herder.config.model import Fragment
from herder.config.schema import INVALID, Ctx
from herder.ha.vrrp.settings import VRRP_SECTION

__all__ = ["Stmt", "load_keepalived_conf", "parse_blocks", "register_block_handler", "tokenize_line"]

log = logging.getLogger(__name__)

#: Top-level keywords that identify a keepalived.conf by syntax.
TOP_LEVEL = {
    "global_defs", "vrrp_script", "vrrp_instance", "vrrp_sync_group", "virtual_server", "virtual_server_group",
    "static_ipaddress", "static_routes", "static_rules", "vrrp_track_process", "vrrp_track_file", "track_file",
    "garp_group", "linkbeat_interfaces", "bfd_instance", "net_namespace", "include", "local_address_group",
}

#: Keywords accepted with no effect, per block: alerting, process tuning, and defaults
#: herder already has.
NO_EFFECT = {
    "global_defs": {"notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout",
                    "smtp_helo_name", "smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker",
                    "enable_script_security", "max_auto_priority", "vrrp_no_swap", "checker_no_swap",
                    "vrrp_priority", "checker_priority", "vrrp_rlimit_rttime", "checker_rlimit_rttime",
                    "vrrp_skip_check_adv_addr", "lvs_id", "dynamic_interfaces", "vrrp_check_unicast_src"},
    "vrrp_instance": {"smtp_alert", "debug", "preempt", "accept", "dont_track_primary", "skip_check_adv_addr",
                      "check_unicast_src", "kernel_rx_buf_size", "notify_priority_changes"},
    "vrrp_sync_group": {"smtp_alert", "global_tracking", "notify_priority_changes"},
}

#: global_defs keyword -> [vrrp] key.
GLOBAL_KEYS = {
    "vrrp_version": ("version", int),
    "router_id": ("router_id", str),
    "vrrp_garp_master_delay": ("garp_master_delay", float),
    "vrrp_garp_master_repeat": ("garp_master_repeat", int),
    "vrrp_garp_master_refresh": ("garp_master_refresh", float),
    "vrrp_garp_master_refresh_repeat": ("garp_master_refresh_repeat", int),
    "vrrp_garp_lower_prio_delay": ("garp_lower_prio_delay", float),
    "vrrp_garp_lower_prio_repeat": ("garp_lower_prio_repeat", int),
    "vrrp_garp_interval": ("garp_interval", float),
    "vrrp_gna_interval": ("gna_interval", float),
}

#: Instance-level defaults that global_defs may set (applied to instances that do not).
GLOBAL_INSTANCE_BOOLS = {"vrrp_lower_prio_no_advert": "lower_prio_no_advert",
                         "vrrp_higher_prio_send_advert": "higher_prio_send_advert"}

#: vrrp_instance keywords with one value -> (native key, converter).
INSTANCE_SCALARS: dict[str, tuple[str, Callable[[str], object]]] = {
    "state": ("state", str.upper),
    "interface": ("interface", str),
    "virtual_router_id": ("virtual_router_id", int),
    "priority": ("priority", int),
    "advert_int": ("advert_int", float),
    "version": ("version", int),
    "preempt_delay": ("preempt_delay", float),
    "unicast_src_ip": ("unicast_src_ip", str),
    "mcast_src_ip": ("unicast_src_ip", str),
    "garp_master_delay": ("garp_master_delay", float),
    "garp_master_repeat": ("garp_master_repeat", int),
    "garp_master_refresh": ("garp_master_refresh", float),
    "garp_master_refresh_repeat": ("garp_master_refresh_repeat", int),
    "garp_lower_prio_delay": ("garp_lower_prio_delay", float),
    "garp_lower_prio_repeat": ("garp_lower_prio_repeat", int),
}

NOTIFY_KEYS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")

SCRIPT_SCALARS: dict[str, tuple[str, Callable[[str], object]]] = {
    "script": ("script", str),
    "interval": ("interval", float),
    "timeout": ("timeout", float),
    "rise": ("rise", int),
    "fall": ("fall", int),
}

_BOOL_WORDS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}

#: Handlers for blocks owned by other layers: keyword -> handler(stmt, loader).
_block_handlers: dict[str, Callable[[Stmt, _Loader], None]] = {}


def register_block_handler(keyword: str, handler: Callable[[Stmt, _Loader], None]) -> None:
    """Let another layer read a top-level block (``virtual_server`` for the L4 director).

    ``handler(stmt, loader)`` adds what it reads to ``loader.frag`` and reports errors
    with ``loader.err(line, keyword, message)``.
    """
    _block_handlers[keyword] = handler


# --------------------------------------------------------------------------- syntax


@dataclass
class Stmt:
    """One statement: its words, its line, and its ``{ ... }`` block if it has one."""

    words: list[str]
    line: int
    block: list[Stmt] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def args(self) -> list[str]:
        return self.words[1:]


def tokenize_line(line: str) -> list[str]:
    """Words of one keepalived.conf line: whitespace-separated, ``"quoted strings"``,
    ``#``/``!`` comments, and ``{``/``}`` as words of their own."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise ValueError("unterminated quoted string")
            cur.append(line[i + 1:end])
            in_word = True
            i = end + 1
            continue
        if c in "#!" and not in_word:
            break
        if c.isspace() or c in "{}":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
            if c in "{}":
                words.append(c)
        else:
            cur.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(cur))
    return words


def parse_blocks(text: str, errors: list[tuple[int, str, str]]) -> list[Stmt]:
    """The statement tree of a keepalived.conf; syntax errors go to ``errors`` as
    ``(line, keyword, message)``."""
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], Stmt | None]] = [(root, None)]
    for lineno, raw in enumerate(text.splitlines(), 1):
        try:
            words = tokenize_line(raw)
        except ValueError as e:
            errors.append((lineno, "", str(e)))
            continue
        cur: list[str] = []

        def flush(block: list[Stmt] | None = None, *, _line: int = lineno) -> Stmt | None:
            nonlocal cur
            if not cur and block is None:
                return None
            st = Stmt(cur, _line, block)
            stack[-1][0].append(st)
            cur = []
            return st

        for w in words:
            if w == "{":
                if not cur:
                    # keepalived allows the brace on the next line: attach to the last statement
                    siblings = stack[-1][0]
                    if siblings and siblings[-1].block is None:
                        st = siblings[-1]
                        st.block = []
                        stack.append((st.block, st))
                        continue
                    errors.append((lineno, "{", "a block with no keyword before it"))
                st = flush([])
                assert st is not None and st.block is not None
                stack.append((st.block, st))
            elif w == "}":
                flush()
                if len(stack) == 1:
                    errors.append((lineno, "}", "closing brace without an opening one"))
                else:
                    stack.pop()
            else:
                cur.append(w)
        flush()
    for _, st in stack[1:]:
        assert st is not None
        errors.append((st.line, st.keyword, "block is not closed (missing '}')"))
    return root


# --------------------------------------------------------------------------- loading


@dataclass
class _Loader:
    path: str
    text: str
    ctx: Ctx
    frag: Fragment = field(init=False)
    lines: LineMap = field(default_factory=LineMap)
    raw: dict = field(default_factory=dict)
    instance_defaults: dict[str, object] = field(default_factory=dict)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frag = Fragment(ctx=self.ctx, format="keepalived")

    def err(self, line: int | None, keyword: str, message: str) -> None:
        self.ctx.errors.append(ConfigError(self.path, line, keyword, message))

    def rec(self, path: tuple, line: int) -> None:
        self.lines.record(("vrrp", *path), line)

    # ------------------------------------------------------------------ top level

    def run(self) -> Fragment:
        syntax: list[tuple[int, str, str]] = []
        tree = parse_blocks(self.text, syntax)
        for line, kw, msg in syntax:
            self.err(line, kw, msg)
        for st in tree:
            kw = st.keyword
            if kw.startswith("@") or kw.startswith("$"):
                self.err(st.line, kw, "conditional (@) and variable ($) lines are not supported")
            elif kw == "global_defs":
                self.global_defs(st)
            elif kw == "vrrp_script":
                self.named(st, "scripts", self.script)
            elif kw == "vrrp_instance":
                self.named(st, "instances", self.instance)
            elif kw == "vrrp_sync_group":
                self.named(st, "sync_groups", self.sync_group)
            elif kw in _block_handlers:
                _block_handlers[kw](st, self)
            elif kw in ("virtual_server", "virtual_server_group"):
                self.err(st.line, kw, f"{kw} blocks (IPVS virtual servers) are not supported yet: herder's L4 "
                                      "director does not read them from keepalived.conf; declare the service "
                                      "in herder's TOML")
            else:
                self.err(st.line, kw, "unsupported keepalived keyword"
                         + ("" if kw in TOP_LEVEL else " (expected global_defs, vrrp_script, vrrp_instance or "
                            "vrrp_sync_group)"))
        self.build()
        return self.frag

    def named(self, st: Stmt, table: str, fn: Callable[[str, Stmt], dict | None]) -> None:
        kw = st.keyword
        if len(st.args) != 1:
            self.err(st.line, kw, f"{kw} needs exactly one name")
            return
        if st.block is None:
            self.err(st.line, kw, f"{kw} {st.args[0]} needs a {{ ... }} block")
            return
        name = st.args[0]
        first = self.seen.get((table, name))
        if first is not None:
            self.err(st.line, kw, f"duplicate {kw} {name} (first at line {first})")
            return
        self.seen[(table, name)] = st.line
        self.rec((table, name), st.line)
        body = fn(name, st)
        if body is not None:
            self.raw.setdefault(table, {})[name] = body

    def global_defs(self, st: Stmt) -> None:
        for s in st.block or []:
            kw = s.keyword
            if kw in NO_EFFECT["global_defs"]:
                continue
            if kw == "vrrp_min_garp":
                if self.flag(s):
                    self.raw.update(garp_master_repeat=1, garp_master_delay=0.0)
                    self.rec(("garp_master_repeat",), s.line)
                continue
            if kw in GLOBAL_INSTANCE_BOOLS:
                self.instance_defaults[GLOBAL_INSTANCE_BOOLS[kw]] = (self.flag(s), s.line)
                continue
            if kw in GLOBAL_KEYS:
                key, conv = GLOBAL_KEYS[kw]
                value = self.one(s, conv)
                if value is not None:
                    self.raw[key] = value
                    self.rec((key,), s.line)
                continue
            self.err(s.line, kw, "unsupported global_defs keyword")

    # ------------------------------------------------------------------ blocks

    def script(self, name: str, st: Stmt) -> dict | None:
        out: dict[str, object] = {}
        for s in st.block or []:
            kw = s.keyword
            path = ("scripts", name)
            if kw in SCRIPT_SCALARS:
                key, conv = SCRIPT_SCALARS[kw]
                if kw == "script":
                    # keepalived: the script is the rest of the line (one quoted string, or words)
                    value: object = " ".join(s.args) if s.args else None
                    if value is None:
                        self.err(s.line, kw, "script needs a command")
                else:
                    value = self.one(s, conv)
                if value is not None:
                    out[key] = value
                    self.rec((*path, key), s.line)
            elif kw == "weight":
                w = self.weight(s, s.args)
                if w is not None:
                    out["weight"], out["reverse"] = w
                    self.rec((*path, "weight"), s.line)
            elif kw == "init_fail":
                out["init_fail"] = True
            elif kw == "user":
                self.err(s.line, kw, "running scripts as another user is not supported (herder runs them as "
                                     "itself)")
            else:
                self.err(s.line, kw, "unsupported vrrp_script keyword")
        if "script" not in out:
            self.err(st.line, "vrrp_script", f"vrrp_script {name} has no `script`")
            return None
        return out

    def instance(self, name: str, st: Stmt) -> dict | None:
        out: dict[str, object] = {}
        path = ("instances", name)
        for s in st.block or []:
            kw = s.keyword
            if kw in NO_EFFECT["vrrp_instance"]:
                continue
            if kw in INSTANCE_SCALARS:
                key, conv = INSTANCE_SCALARS[kw]
                value = self.one(s, conv)
                if value is not None:
                    out[key] = value
                    self.rec((*path, key), s.line)
            elif kw in NOTIFY_KEYS:
                self.notify(s, out, path)
            elif kw == "nopreempt":
                out["nopreempt"] = True
                self.rec((*path, "nopreempt"), s.line)
            elif kw in ("lower_prio_no_advert", "higher_prio_send_advert", "vmac_xmit_base"):
                out[kw] = self.flag(s)
                self.rec((*path, kw), s.line)
            elif kw == "use_vmac":
                if len(s.args) > 1:
                    self.err(s.line, kw, "use_vmac with a MAC address is not supported (the VMAC is "
                                         "00:00:5e:00:01:<VRID>)")
                    continue
                out["use_vmac"] = s.args[0] if s.args else True
                self.rec((*path, "use_vmac"), s.line)
            elif kw in ("virtual_ipaddress", "unicast_peer"):
                items = self.list_block(s)
                if items is None:
                    continue
                key = kw
                values: list[object] = []
                for i, it in enumerate(items):
                    if kw == "unicast_peer" and len(it.words) > 1:
                        self.err(it.line, kw, f"unicast_peer options are not supported: {' '.join(it.args)}")
                    values.append(" ".join(it.words) if kw == "virtual_ipaddress" else it.words[0])
                    self.rec((*path, key, i), it.line)
                out[key] = values
                self.rec((*path, key), s.line)
            elif kw in ("track_script", "track_interface"):
                items = self.list_block(s)
                if items is None:
                    continue
                refs: list[object] = []
                for i, it in enumerate(items):
                    ref: dict[str, object] = {"name": it.words[0]}
                    if len(it.words) > 1:
                        w = self.weight(it, it.words[1:], leading="weight")
                        if w is None:
                            continue
                        if w[0] is not None:
                            ref["weight"] = w[0]
                        ref["reverse"] = w[1]
                    refs.append(ref if len(ref) > 1 else it.words[0])
                    self.rec((*path, kw, i), it.line)
                    self.rec((*path, kw, i, "weight"), it.line)
                out[kw] = refs
                self.rec((*path, kw), s.line)
            elif kw == "authentication":
                self.err(s.line, kw, "VRRP authentication is not supported (RFC 3768 removed it; keepalived "
                                     "calls it non-compliant)")
            elif kw == "virtual_ipaddress_excluded":
                self.err(s.line, kw, "virtual_ipaddress_excluded is not supported yet")
            else:
                self.err(s.line, kw, "unsupported vrrp_instance keyword")
        for key, (value, line) in self.instance_defaults.items():
            if key not in out:
                out[key] = value
                self.rec((*path, key), line)
        if "virtual_ipaddress" not in out:
            self.rec((*path,), st.line)
        return out

    def sync_group(self, name: str, st: Stmt) -> dict | None:
        out: dict[str, object] = {}
        path = ("sync_groups", name)
        for s in st.block or []:
            kw = s.keyword
            if kw in NO_EFFECT["vrrp_sync_group"]:
                continue
            if kw == "group":
                items = self.list_block(s)
                if items is None:
                    continue
                out["group"] = [it.words[0] for it in items]
                for i, it in enumerate(items):
                    self.rec((*path, "group", i), it.line)
                self.rec((*path, "group"), s.line)
            elif kw in NOTIFY_KEYS:
                self.notify(s, out, path)
            elif kw in ("track_script", "track_interface", "track_file", "track_process", "track_bfd"):
                self.err(s.line, kw, f"{kw} on a sync group is not supported yet: track on its instances")
            else:
                self.err(s.line, kw, "unsupported vrrp_sync_group keyword")
        return out

    # ------------------------------------------------------------------ helpers

    def one(self, s: Stmt, conv: Callable[[str], object]) -> object | None:
        if len(s.args) != 1:
            self.err(s.line, s.keyword, f"{s.keyword} takes one value, got {len(s.args)}")
            return None
        try:
            return conv(s.args[0])
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(conv, "a value")  # type: ignore[call-overload]
            self.err(s.line, s.keyword, f"expected {kind}, got {s.args[0]!r}")
            return None

    def flag(self, s: Stmt) -> bool:
        if not s.args:
            return True
        v = _BOOL_WORDS.get(s.args[0].lower())
        if v is None or len(s.args) > 1:
            self.err(s.line, s.keyword, f"expected nothing or one of {', '.join(_BOOL_WORDS)}, got "
                                        f"{' '.join(s.args)!r}")
            return False
        return v

    def weight(self, s: Stmt, words: list[str], leading: str | None = None) -> tuple[int | None, bool] | None:
        """``[weight] N [reverse|noreverse|no_reverse]`` -> (weight, reverse)."""
        ws = list(words)
        if leading is not None:
            if not ws or ws[0] != leading:
                self.err(s.line, s.keyword, f"expected `weight N [reverse]` after the name, got {' '.join(ws)!r}")
                return None
            ws = ws[1:]
        try:
            w = int(ws[0])
        except (IndexError, ValueError):
            self.err(s.line, s.keyword, f"expected an integer weight, got {' '.join(ws)!r}")
            return None
        rest = ws[1:]
        reverse = False
        if rest and rest[0] == "reverse":
            reverse = True
            rest = rest[1:]
        elif rest and rest[0] in ("noreverse", "no_reverse"):
            rest = rest[1:]
        if rest:
            self.err(s.line, s.keyword, f"unexpected words after the weight: {' '.join(rest)}")
            return None
        return w, reverse

    def notify(self, s: Stmt, out: dict, path: tuple) -> None:
        if not s.args:
            self.err(s.line, s.keyword, f"{s.keyword} needs a command")
            return
        if len(s.args) > 1:
            self.err(s.line, s.keyword, "running notify scripts as another user is not supported; quote the "
                                        "command if it has arguments")
            return
        out[s.keyword] = s.args[0]
        self.rec((*path, s.keyword), s.line)

    def list_block(self, s: Stmt) -> list[Stmt] | None:
        if s.block is None:
            self.err(s.line, s.keyword, f"{s.keyword} needs a {{ ... }} block")
            return None
        if s.args:
            self.err(s.line, s.keyword, f"unexpected words before the block: {' '.join(s.args)}")
        return [it for it in s.block if it.words]

    # ------------------------------------------------------------------ result

    def build(self) -> None:
        if not any(k in self.raw for k in ("instances", "scripts", "sync_groups")) and not self.raw:
            return
        self.lines.record(("vrrp",), 1)
        self.ctx.lines = self.lines
        before = len(self.ctx.errors)
        value = VRRP_SECTION.parse(self.raw, ("vrrp",), self.ctx)
        # The schema names native keys; say which keepalived block they are in.
        for i in range(before, len(self.ctx.errors)):
            e = self.ctx.errors[i]
            self.ctx.errors[i] = ConfigError(e.file, e.line, _keepalived_key(e.key), e.message)
        if value is not INVALID:
            self.frag.sections["vrrp"] = value
            self.frag.where[("section", "vrrp")] = (self.ctx, ("vrrp",))


def _keepalived_key(key: str) -> str:
    """``vrrp.instances.VI_1.priority`` -> ``vrrp_instance VI_1: priority``."""
    parts = key.split(".")
    kinds = {"instances": "vrrp_instance", "scripts": "vrrp_script", "sync_groups": "vrrp_sync_group"}
    if len(parts) >= 3 and parts[0] == "vrrp" and parts[1] in kinds:
        rest = ".".join(parts[3:])
        return f"{kinds[parts[1]]} {parts[2]}" + (f": {rest}" if rest else "")
    if len(parts) >= 2 and parts[0] == "vrrp":
        return "global_defs: " + ".".join(parts[1:])
    return key


def _detect(path: str, text: str) -> bool:
    base = os.path.basename(path)
    if base == "keepalived.conf" or base.endswith((".keepalived.conf", "-keepalived.conf", ".keepalived")):
        return True
    for raw in text.splitlines():
        try:
            words = tokenize_line(raw)
        except ValueError:
            return False
        if words:
            return words[0] in TOP_LEVEL
    return False


def load_keepalived_conf(path: str, text: str, ctx: Ctx) -> Fragment:
    """Load a keepalived.conf; every error goes to ``ctx`` with its line."""
    return _Loader(path, text, ctx).run()


register_importer(Importer("keepalived", _detect, load_keepalived_conf,
                           "keepalived.conf (a file named keepalived.conf, or starting with global_defs, "
                           "vrrp_script, vrrp_instance, vrrp_sync_group...)"))
