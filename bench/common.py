"""Shared pieces of the benchmarks: result rows, ratio tables, CPU pinning, process reaping."""

from __future__ import annotations

import os
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


def pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` to one CPU when the machine has it (no-op on a 1-CPU machine)."""
    if os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(pid, {cpu})
