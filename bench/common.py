"""Shared pieces of the benchmarks: result rows, ratio tables, CPU pinning, process reaping."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass


@dataclass
class Row:
    """One measured case: herder's figure and its anchor's, in the same unit.

    ``higher_is_better`` says how to read the ratio (req/s: yes; latency, build time: no).
    ``ratio`` is always herder / anchor.
    """

    case: str
    unit: str
    herder: float
    anchor: float | None
    anchor_name: str
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.anchor in (None, 0):
            return None
        return self.herder / self.anchor

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def format_table(rows: list[Row]) -> str:
    head = ("case", "unit", "herder", "anchor", "vs", "ratio", "note")
    body = []
    for r in rows:
        ratio = r.ratio
        rs = "-" if ratio is None else f"{ratio:.2f}x" + ("" if r.higher_is_better else " (lower=better)")
        body.append((r.case, r.unit, _fmt(r.herder), _fmt(r.anchor), r.anchor_name, rs, r.note))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["   " + "  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True))]
    lines += ["   " + "  ".join(str(x).ljust(w) for x, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def require_free_ports(*ports: int, host: str = "127.0.0.1") -> None:
    """Raise unless every TCP port is free: a benchmark must not measure a process that
    someone else left listening on its port (it would report that process's numbers)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    if busy:
        raise RuntimeError(f"port(s) {', '.join(map(str, busy))} on {host} already in use: stop what listens there")


def pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` to one CPU when the machine has it (no-op on a 1-CPU machine)."""
    if os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return 0.0
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx workers under their master, say)."""
    from herder.testing import descendants

    return sorted(c for c in descendants(pid) if _ppid(c) == pid)


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return -1
    return int(st[st.rindex(")") + 2:].split()[1])
