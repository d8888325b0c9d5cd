"""Where each key of a TOML document is: a map from key paths to line numbers.

``tomllib`` gives values but no positions, and a config error must name its line. This
module scans the TOML text once, tracking table headers (``[a.b]``, ``[[a.b]]``), key
assignments (dotted and quoted keys), and the insides of arrays and inline tables, and
records the 1-based line where each path starts. Paths are tuples of str (keys) and int
(array indexes): ``("pools", "web", "servers", 1, "weight")``.

It only needs to be right for documents that ``tomllib`` accepted; on anything odd it
stops recording rather than raising, and :meth:`LineMap.line` falls back to the nearest
recorded ancestor.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LineMap", "scan"]

Path = tuple[str | int, ...]

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class LineMap:
    """Line numbers of the key paths of one document."""

    def __init__(self) -> None:
        self._lines: dict[Path, int] = {}

    def record(self, path: Path, line: int) -> None:
        self._lines.setdefault(path, line)

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line where ``path`` (or its nearest recorded ancestor) starts, or None."""
        p = tuple(path)
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.map = LineMap()
        self.aot: dict[Path, int] = {}

    # -- low-level helpers
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def adv(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i < len(self.s):
                if self.s[self.i] == "\n":
                    self.line += 1
                self.i += 1

    def skip_ws(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.adv()
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                break

    def skip_line(self) -> None:
        while self.i < len(self.s) and self.s[self.i] != "\n":
            self.i += 1

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws(False)
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                start = self.i
                while self.peek() in _BARE and self.peek():
                    self.adv()
                if self.i == start:
                    raise ValueError("bad key")
                parts.append(self.s[start:self.i])
            self.skip_ws(False)
            if self.peek() == ".":
                self.adv()
                continue
            return parts

    def string(self) -> str:
        q = self.peek()
        if self.s.startswith(q * 3, self.i):
            self.adv(3)
            end = self.s.find(q * 3, self.i)
            if end < 0:
                raise ValueError("unterminated")
            # a multi-line string may end with up to two extra quotes
            while self.s.startswith(q, end + 3):
                end += 1
            val = self.s[self.i:end]
            self.adv(end + 3 - self.i)
            return val
        self.adv()
        out = []
        while True:
            c = self.peek()
            if not c or c == "\n":
                raise ValueError("unterminated")
            if q == '"' and c == "\\":
                out.append(self.s[self.i:self.i + 2])
                self.adv(2)
                continue
            self.adv()
            if c == q:
                return "".join(out)
            out.append(c)

    def value(self, path: Path) -> None:
        self.map.record(path, self.line)
        c = self.peek()
        if c == "[":
            self.adv()
            idx = 0
            while True:
                self.skip_ws(True)
                if self.peek() == "]":
                    self.adv()
                    return
                if self.peek() == ",":
                    self.adv()
                    continue
                if not self.peek():
                    raise ValueError("eof in array")
                self.value((*path, idx))
                idx += 1
        elif c == "{":
            self.adv()
            while True:
                self.skip_ws(False)
                if self.peek() == "}":
                    self.adv()
                    return
                if self.peek() == ",":
                    self.adv()
                    continue
                k = self.key()
                self.skip_ws(False)
                if self.peek() != "=":
                    raise ValueError("expected =")
                self.adv()
                self.skip_ws(False)
                self.value((*path, *k))
        elif c in "\"'":
            self.string()
        else:
            while self.peek() and self.peek() not in ",]}\n#":
                self.adv()

    def run(self) -> LineMap:
        current: Path = ()
        while True:
            self.skip_ws(True)
            if self.i >= len(self.s):
                break
            if self.peek() == "[":
                double = self.peek(1) == "["
                self.adv(2 if double else 1)
                parts = self.key()
                self.adv(2 if double else 1)
                base: Path = tuple(self._resolve(parts))
                if double:
                    n = self.aot.get(base, 0)
                    self.aot[base] = n + 1
                    current = (*base, n)
                else:
                    current = base
                self.map.record(current, self.line)
                self.skip_line()
                continue
            k = self.key()
            self.skip_ws(False)
            if self.peek() != "=":
                raise ValueError("expected =")
            self.adv()
            self.skip_ws(False)
            self.value((*current, *k))
            self.skip_ws(False)
            self.skip_line()
        return self.map

    def _resolve(self, parts: list[str]) -> list[str | int]:
        # A header below an array of tables refers to its last element:
        # [[pools.web.servers]] then [pools.web.servers.meta] -> ("pools","web","servers",n,"meta")
        out: list[str | int] = []
        for p in parts:
            out.append(p)
            n = self.aot.get(tuple(out))
            if n is not None and len(out) < len(parts):
                out.append(n - 1)
        return out


def scan(text: str) -> LineMap:
    """Scan a TOML document; never raises (returns what it could record)."""
    sc = _Scanner(text)
    try:
        return sc.run()
    except (ValueError, IndexError):
        return sc.map
