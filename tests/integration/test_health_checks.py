"""Health checks against real servers on 127.0.0.1: each failure gets its own reason.

Every test runs the real health component on a real pool state, with backends started
by the test (asyncio servers on port 0, a listener whose backlog is full, a server that
accepts and never answers, shell commands, a small DNS server). Assertions are on the
transitions and reasons the pool state received; time bounds are generous upper bounds
only, because this machine is shared.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from herder.config.load import load_text
from herder.health.engine import HealthChecker
from herder.pool.state import HealthChanged, PoolState

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


class Backend:
    """An HTTP/1.x server on 127.0.0.1 whose answer the test changes with ``mode``:
    ``ok`` (200 "alive"), ``500``, ``body`` (200 "dead"), ``silent`` (never answers),
    ``alternate`` (200, 500, 200, ...), or a callable ``n -> (status, body)``."""

    def __init__(self) -> None:
        self.mode: str | Callable[[int], tuple[int, bytes]] = "ok"
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> Backend:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            n = self.requests
            self.requests += 1
            mode = self.mode
            if mode == "silent":
                await asyncio.sleep(3600)
            if callable(mode):
                status, body = mode(n)
            elif mode == "alternate":
                status, body = (200, b"alive") if n % 2 == 0 else (500, b"oops")
            else:
                status, body = {"ok": (200, b"alive"), "500": (500, b"oops"), "body": (200, b"dead")}[mode]
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket that never accepts, with its accept queue already full, so that
    the kernel drops further SYNs: a connect to it times out (on loopback)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(lst.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(lst.getsockname())
        connected = True
    except (TimeoutError, OSError):
        connected = False
    finally:
        probe.close()
    if connected:
        lst.close()
        for c in fillers:
            c.close()
        pytest.skip("this kernel completed a connect to a listener with a full backlog")
    return lst, fillers


class Checked:
    """A pool state loaded from TOML, a health checker on it, and every transition seen."""

    def __init__(self, toml: str) -> None:
        frag = load_text("test.toml", toml)
        assert frag.ctx.errors == [], [str(e) for e in frag.ctx.errors]
        self.state = PoolState()
        self.state.load(frag.pools.values())
        self.checker = HealthChecker(self.state)
        self.events: list[tuple[float, HealthChanged, int]] = []
        self.state.subscribe(self._on)

    def _on(self, snap) -> None:
        now = asyncio.get_event_loop().time()
        for c in snap.changes:
            if isinstance(c, HealthChanged) and c.old.state != c.new.state:
                sc = self.checker.server_checks(c.pool, c.server)
                count = sc.runs[0].count if sc is not None else -1
                self.events.append((now, c, count))

    def health(self, server: str, pool: str = "web"):
        return self.state.snapshot.pool(pool).server(server).health

    def count(self, server: str, pool: str = "web") -> int:
        return self.checker.server_checks(pool, server).runs[0].count

    def transitions(self, server: str) -> list[tuple[str, str]]:
        return [(c.new.state.value, c.new.reason) for _, c, _ in self.events if c.server == server]

    async def until(self, pred: Callable[[], bool], timeout: float = 8.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            if loop.time() > deadline:
                raise AssertionError(f"not within {timeout}s; transitions: "
                                     f"{[(c.server, c.new.state.value, c.new.reason) for _, c, _ in self.events]}")
            await asyncio.sleep(0.01)

    async def wait_state(self, server: str, state: str, pool: str = "web", timeout: float = 8.0) -> None:
        await self.until(lambda: self.health(server, pool).state.value == state, timeout)


def pool_toml(servers: dict[str, str], check: str, initial: str = "down", pool: str = "web") -> str:
    out = f'[pools.{pool}]\ninitial_state = "{initial}"\n'
    for name, addr in servers.items():
        out += f'[[pools.{pool}.servers]]\nname = "{name}"\naddress = "{addr}"\n'
    return out + f"[[pools.{pool}.checks]]\n{check}\n"


# --------------------------------------------------------------------------- timing and hysteresis


def test_down_after_fall_checks_and_up_after_rise_checks():
    """A server that stops answering is DOWN after `fall` failed checks (within about
    fall x inter plus one interval), and UP again after `rise` passing checks."""
    inter, rise, fall = 0.1, 2, 3

    async def main():
        be = await Backend().start()
        t = Checked(pool_toml({"s1": f"127.0.0.1:{be.port}"},
                              f'type = "http"\ninter = {inter}\nrise = {rise}\nfall = {fall}\ntimeout = 1'))
        await t.checker.start()
        await t.wait_state("s1", "up")
        port = be.port
        c0, t0 = t.count("s1"), asyncio.get_running_loop().time()
        await be.stop()  # connections are refused from now on
        await t.wait_state("s1", "down")
        when, change, count = t.events[-1]
        assert change.new.reason == "L4 connection refused"
        assert count - c0 in (fall, fall + 1)  # +1: a check already in flight when the server stopped
        assert when - t0 < fall * inter + inter + 3.0  # generous: a shared, noisy machine
        await be.start(port)
        c1 = t.count("s1")
        await t.wait_state("s1", "up")
        _, change, count = t.events[-1]
        assert change.new.reason == "L7 status 200"
        assert count - c1 in (rise, rise + 1)
        await t.checker.stop()
        await be.stop()
        return t.transitions("s1")

    assert asyncio.run(main()) == [("up", "L7 status 200"), ("down", "L4 connection refused"),
                                   ("up", "L7 status 200")]


def test_flapping_server_does_not_flap_faster_than_hysteresis():
    """Alternating good/bad answers never change a settled server's state with rise and
    fall >= 2; a bad-bad-good pattern never brings down a server with fall 3."""

    async def main():
        alt = await Backend().start()
        two_bad = await Backend().start()
        toml = (pool_toml({"s1": f"127.0.0.1:{alt.port}"},
                          'type = "http"\ninter = 0.03\nrise = 2\nfall = 2', pool="alt")
                + pool_toml({"s2": f"127.0.0.1:{two_bad.port}"},
                            'type = "http"\ninter = 0.03\nrise = 2\nfall = 3', pool="twobad"))
        t = Checked(toml)
        await t.checker.start()
        await t.wait_state("s1", "up", pool="alt")
        await t.wait_state("s2", "up", pool="twobad")
        settled = len(t.events)
        base1, base2 = alt.requests, two_bad.requests
        alt.mode = lambda n: (200, b"alive") if (n - base1) % 2 else (500, b"oops")
        two_bad.mode = lambda n: (200, b"alive") if (n - base2) % 3 == 2 else (500, b"oops")
        c1, c2 = t.count("s1", "alt"), t.count("s2", "twobad")
        await t.until(lambda: t.count("s1", "alt") >= c1 + 30 and t.count("s2", "twobad") >= c2 + 30, timeout=20)
        await t.checker.stop()
        await alt.stop()
        await two_bad.stop()
        return t.events[settled:], t.health("s1", "alt"), t.health("s2", "twobad")

    flaps, h1, h2 = asyncio.run(main())
    assert flaps == []
    assert h1.serving and h2.serving


# --------------------------------------------------------------------------- one reason per failure


async def _down_reason(toml: str, server: str = "s1", timeout: float = 8.0) -> str:
    t = Checked(toml)
    await t.checker.start()
    try:
        await t.wait_state(server, "down", timeout=timeout)
        # the first transition (from the initial UP) carries the reason
        return t.transitions(server)[0][1]
    finally:
        await t.checker.stop()


def test_http_500_is_l7_status_500():
    async def main():
        be = await Backend().start()
        be.mode = "500"
        try:
            return await _down_reason(pool_toml({"s1": f"127.0.0.1:{be.port}"}, 'type = "http"\ninter = 0.05',
                                                initial="up"))
        finally:
            await be.stop()

    assert asyncio.run(main()) == "L7 status 500"


def test_body_mismatch_has_its_own_reason():
    async def main():
        be = await Backend().start()
        be.mode = "body"
        try:
            return await _down_reason(pool_toml({"s1": f"127.0.0.1:{be.port}"},
                                                'type = "http"\ninter = 0.05\nexpect_body = "alive"', initial="up"))
        finally:
            await be.stop()

    assert asyncio.run(main()) == "L7 body mismatch"


def test_connect_timeout_is_l4_timeout():
    lst, fillers = full_backlog_listener()
    port = lst.getsockname()[1]
    try:
        for kind in ("tcp", "http"):
            reason = asyncio.run(_down_reason(pool_toml(
                {"s1": f"127.0.0.1:{port}"}, f'type = "{kind}"\ninter = 0.05\ntimeout = 0.2\nfall = 1',
                initial="up")))
            assert reason == "L4 timeout", kind
    finally:
        for s in (lst, *fillers):
            s.close()


def test_read_timeout_is_l7_timeout():
    async def main():
        be = await Backend().start()
        be.mode = "silent"
        try:
            return await _down_reason(pool_toml({"s1": f"127.0.0.1:{be.port}"},
                                                'type = "http"\ninter = 0.05\ntimeout = 0.2\nfall = 1', initial="up"))
        finally:
            await be.stop()

    assert asyncio.run(main()) == "L7 timeout"


def test_refused_is_l4_connection_refused():
    toml = pool_toml({"s1": f"127.0.0.1:{free_port()}"}, 'type = "tcp"\ninter = 0.05\nfall = 1', initial="up")
    assert asyncio.run(_down_reason(toml)) == "L4 connection refused"


def test_tcp_check_passes_on_a_listener():
    async def main():
        be = await Backend().start()
        t = Checked(pool_toml({"s1": f"127.0.0.1:{be.port}"}, 'type = "tcp"\ninter = 0.05'))
        await t.checker.start()
        await t.wait_state("s1", "up")
        await t.checker.stop()
        await be.stop()
        return t.transitions("s1")

    assert asyncio.run(main()) == [("up", "L4 check passed")]


# --------------------------------------------------------------------------- exec


def test_exec_exit_status_decides():
    async def main():
        t = Checked(pool_toml({"bad": "127.0.0.1:1", "good": "127.0.0.1:2"},
                              'type = "exec"\ninter = 0.05\nfall = 1\nrise = 1\n'
                              'command = "test \\"$HERDER_SERVER\\" = good || exit 1"', initial="up"))
        await t.checker.start()
        await t.wait_state("bad", "down")
        await asyncio.sleep(0.3)
        good = t.health("good")
        await t.checker.stop()
        return t.transitions("bad"), good

    transitions, good = asyncio.run(main())
    assert transitions == [("down", "exit status 1")]
    assert good.serving


def test_exec_array_command_runs_without_a_shell():
    async def main():
        t = Checked(pool_toml({"s1": "127.0.0.1:1"}, 'type = "exec"\ninter = 0.05\ncommand = ["/bin/true"]'))
        await t.checker.start()
        await t.wait_state("s1", "up")
        await t.checker.stop()
        return t.transitions("s1")

    assert asyncio.run(main()) == [("up", "exit status 0")]


def _group_alive(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is ``pgid``."""
    alive = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            data = (d / "stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            alive.append(int(d.name))
    return alive


def test_hanging_exec_is_killed_at_its_timeout_with_its_process_group(tmp_path):
    pidfile = tmp_path / "pid"

    async def main():
        t = Checked(pool_toml({"s1": "127.0.0.1:1"},
                              f'type = "exec"\ninter = 5\ntimeout = 0.3\nfall = 1\n'
                              f'command = "echo $$ > {pidfile}; sleep 30 & sleep 30"', initial="up"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await t.checker.start()
        await t.wait_state("s1", "down")
        elapsed = loop.time() - t0
        await t.checker.stop()
        return t.transitions("s1"), elapsed

    transitions, elapsed = asyncio.run(main())
    assert transitions == [("down", "timeout after 0.3s: killed")]
    assert elapsed < 5.0
    pgid = int(pidfile.read_text())
    for _ in range(200):
        if not _group_alive(pgid):
            break
        time.sleep(0.01)
    assert _group_alive(pgid) == [], "the script's process group survived its timeout"


# --------------------------------------------------------------------------- DNS


class TinyDns(asyncio.DatagramProtocol):
    """Answers A queries from ``records`` (name -> addresses); NXDOMAIN for other names."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text()
        if name in self.records:
            r.answer.append(dns.rrset.from_text(name, 5, "IN", "A", *self.records[name]))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)


def test_dns_check_rcode_and_answer():
    async def main():
        loop = asyncio.get_running_loop()
        records = {"www.example.test.": ["192.0.2.1"]}
        transport, _ = await loop.create_datagram_endpoint(lambda: TinyDns(records), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        t = Checked(pool_toml({"ns1": f"127.0.0.1:{port}"},
                              'type = "dns"\nname = "www.example.test"\nexpect_answer = "192.0.2.1"\n'
                              'inter = 0.05\nrise = 1\nfall = 1\ntimeout = 0.5'))
        await t.checker.start()
        await t.wait_state("ns1", "up")
        records["www.example.test."] = ["192.0.2.99"]
        await t.wait_state("ns1", "down")
        records["www.example.test."] = ["192.0.2.1"]
        await t.wait_state("ns1", "up")
        del records["www.example.test."]
        await t.wait_state("ns1", "down")
        await t.checker.stop()
        transport.close()
        return t.transitions("ns1")

    assert asyncio.run(main()) == [("up", "L7 rcode NOERROR"), ("down", "L7 answer mismatch"),
                                   ("up", "L7 rcode NOERROR"), ("down", "L7 rcode NXDOMAIN")]


def test_dns_check_without_a_server_times_out():
    async def main():
        # a UDP socket that receives and never answers
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        try:
            return await _down_reason(pool_toml({"ns1": f"127.0.0.1:{sock.getsockname()[1]}"},
                                                'type = "dns"\nname = "x.test"\ninter = 0.05\ntimeout = 0.2\n'
                                                'fall = 1', initial="up"), server="ns1")
        finally:
            sock.close()

    assert asyncio.run(main()) == "L7 timeout"


def test_environment_is_not_leaked_into_the_test():
    # run_command copies os.environ; the check's variables must not end up in ours
    assert "HERDER_SERVER" not in os.environ
