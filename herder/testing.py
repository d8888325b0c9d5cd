"""Helpers for herder's own tests (and for users testing their set-ups): ports, processes.

Nothing here kills by name: processes are found through their PIDs, parents and sessions.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["descendants", "free_port", "http_get", "http_json", "pid_alive", "session_members", "wait_port"]


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a TCP connect to host:port succeeds; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not listening after {timeout}s") from None
            time.sleep(0.05)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, session id, state) of a process, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[3]), rest[0]


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    parents: dict[int, list[int]] = {}
    for p in _all_pids():
        st = _stat(p)
        if st:
            parents.setdefault(st[0], []).append(p)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    out = set()
    for p in _all_pids():
        st = _stat(p)
        if st and st[1] == sid and st[2] != "Z":
            out.add(p)
    return out


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] != "Z"


def http_get(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET (or a POST when ``data`` is given); HTTP errors included."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str, body: object | None = None, timeout: float = 5.0) -> tuple[int, object]:
    status, raw = http_get(url, None if body is None else json.dumps(body).encode(), timeout)
    return status, json.loads(raw) if raw else None
