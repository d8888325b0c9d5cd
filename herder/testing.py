"""Helpers for herder's own tests (and for users testing their set-ups): ports, processes.

Nothing here kills by name: processes are found through their PIDs, parents and sessions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["RecordingBackend", "descendants", "run_herder", "stop_process", "free_port", "http_get", "http_json", "pid_alive", "session_members", "wait_port"]


def run_herder(*files: str, log=None, args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``herder run FILES`` with this interpreter in its own session; stop it with
    :func:`stop_process`. ``log`` is a file object for its stdout and stderr."""
    from herder.proc import python_executable

    out = log if log is not None else subprocess.DEVNULL
    return subprocess.Popen([python_executable(), "-m", "herder", "run", *args, *files], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(p: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM, wait ``timeout`` seconds, then SIGKILL the whole session; the exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    return p.wait()


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


class RecordingBackend(socketserver.ThreadingTCPServer):
    """A scriptable HTTP/1.1 backend in a thread that records every request head it gets.

    Paths: ``/chunked`` (a chunked response), ``/bad`` (an invalid status line), ``/slow``
    (answers after 2.5 s), ``/big`` (4 MiB body), ``/huge`` (64 MiB, streamed), ``/ws``
    (a WebSocket-style upgrade, then an upper-casing echo), ``/setcookie/NAME`` (sets
    ``NAME=xyz``), ``/hold`` (answers after 0.4 s; the
    highest number of requests held at once is ``max_concurrent``), ``/cacheable[?cc=...]``
    (``Cache-Control: max-age=60`` or the given value, ``Vary: Accept-Language``, a body
    that counts the requests received); anything else answers
    ``<name> <method> <path> <body length>``. ``shutdown()`` stops it.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[bytes] = []
        self.connections = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def requests(self) -> list[bytes]:
        with self.lock:
            return list(self.received)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        srv: RecordingBackend = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.connections += 1
        sock = self.request
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            with srv.lock:
                srv.received.append(head)
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            clen = 0
            chunked = False
            for ln in lines[1:]:
                if ln.lower().startswith(b"content-length:"):
                    clen = int(ln.split(b":")[1])
                if ln.lower() == b"transfer-encoding: chunked":
                    chunked = True
            if chunked:  # good enough for tests: bodies without trailers
                while b"0\r\n\r\n" not in buf:
                    buf += sock.recv(65536)
                raw, _, buf = buf.partition(b"0\r\n\r\n")
                body = b""
                while raw:
                    size, _, raw = raw.partition(b"\r\n")
                    n = int(size, 16)
                    body, raw = body + raw[:n], raw[n + 2:]
            else:
                while len(buf) < clen:
                    buf += sock.recv(65536)
                body, buf = buf[:clen], buf[clen:]
            name = srv.name.encode()
            if path == b"/chunked":
                resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Served-By: " + name +
                        b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            elif path == b"/bad":
                resp = b"HTTP/1.1 2000 Nope\r\n\r\n"
            elif path.startswith(b"/hold"):
                with srv.lock:
                    srv.concurrent += 1
                    srv.max_concurrent = max(srv.max_concurrent, srv.concurrent)
                time.sleep(0.4)
                with srv.lock:
                    srv.concurrent -= 1
                out = name + b" " + path + b"\n"
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out)
            elif path.startswith(b"/setcookie/"):
                cname = path.rsplit(b"/", 1)[1]
                out = name + b"\n"
                resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nSet-Cookie: %s=xyz; path=/\r\n"
                        b"X-Served-By: %s\r\n\r\n%s" % (len(out), cname, name, out))
            elif path.startswith(b"/cacheable"):
                cc = path.split(b"cc=", 1)[1].replace(b"%20", b" ") if b"cc=" in path else b"max-age=60"
                out = name + b" " + str(len(srv.received)).encode() + b"\n"
                resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nCache-Control: %s\r\nVary: Accept-Language\r\n"
                        b"X-Served-By: %s\r\n\r\n%s" % (len(out), cc, name, out))
            elif path == b"/slow":
                time.sleep(2.5)
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            elif path == b"/big":
                payload = b"x" * (4 << 20)
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
            elif path == b"/huge":
                # 64 MiB, sent in 1 MiB pieces (the sender blocks when the reader stops)
                size, piece = 64 << 20, b"z" * (1 << 20)
                try:
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    for _ in range(size // len(piece)):
                        sock.sendall(piece)
                except OSError:
                    return
                continue
            elif path == b"/ws" and b"upgrade: websocket" in head.lower():
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                sock.sendall(b"hello from " + name + b"\n")
                while True:  # echo, upper-cased, until the peer closes
                    data = buf or sock.recv(65536)
                    buf = b""
                    if not data:
                        return
                    sock.sendall(data.upper())
            else:
                out = name + b" " + method + b" " + path + b" " + str(len(body)).encode() + b"\n"
                resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Served-By: %s\r\n\r\n" % (len(out), name)
                        + (b"" if method == b"HEAD" else out))
            try:
                sock.sendall(resp)
            except OSError:
                return
            if b"\r\nconnection: close" in head.lower():
                return
