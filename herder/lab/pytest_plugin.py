"""pytest fixtures for tests that need a network: build a lab, use it, remove it.

Enable in a conftest.py with ``pytest_plugins = ["herder.lab.pytest_plugin"]`` (or
``-p herder.lab.pytest_plugin``). A test then reads::

    pytestmark = pytest.mark.netns

    def test_client_reaches_rs1(lab_up):
        lab = lab_up("flat")
        lab.node("rs1").serve_http(8080)
        assert lab.node("client").requests("http://198.18.0.11:8080/", count=3).counts == {"rs1": 3}

Fixtures
--------
``lab_up``
    Scope: function. A factory ``lab_up(topology="flat", *, name=None,
    start_processes=True) -> Lab``: ``topology`` is a shipped name, a path or a
    :class:`~herder.lab.topology.Topology`. Each call builds one lab with a unique name
    (``p<pid><n>``), so parallel runs and several labs per test do not collide. Every
    lab it built is removed after the test, also when the test fails; a failure to
    remove one fails the test.
``lab_up_module``
    Scope: module. The same factory, labs removed after the module's last test (for
    read-only tests sharing one lab).

Skips and checks
----------------
* A test using either fixture must carry the ``netns`` marker; otherwise it fails with
  a message saying so (the marker is what ``-m "not netns"`` deselects on machines
  without root).
* Without root, without ``ip`` or without network-namespace support the test is
  skipped, with the reason printed in the summary (``-ra``), never silently passed.
* At session start, labs left by an earlier run that was killed (their owner process
  is gone) are removed; labs of other live runs are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from herder.lab.lab import Lab, down, stale_labs
from herder.lab.netns import check_lab_name
from herder.lab.topology import Topology
from herder.proc import run_sync

__all__ = ["LabFactory", "lab_up", "lab_up_module", "netns_unavailable"]

log = logging.getLogger(__name__)

#: Tag recorded in the state of labs built by this plugin.
TAG = "pytest"

LabFactory = Callable[..., Lab]

_unavailable: list[str | None] = []
_counter = [0]


def netns_unavailable() -> str | None:
    """Why lab tests cannot run here (no root, no ``ip``, no netns), or None if they can.

    Checked once per process by creating and deleting a probe namespace.
    """
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "herder lab tests need root (network namespaces); run them as root"
    elif shutil.which("ip") is None:
        reason = "herder lab tests need iproute2's `ip` command (apt-get install iproute2)"
    elif not os.path.exists("/proc/self/ns/net"):
        reason = "this kernel has no network namespaces (/proc/self/ns/net missing)"
    else:
        probe = f"hl-probe{os.getpid()}"
        try:
            res = run_sync(["ip", "netns", "add", probe], timeout=10)
            if res.returncode != 0:
                reason = f"cannot create a network namespace: {res.stderr.decode(errors='replace').strip()}"
        finally:
            run_sync(["ip", "netns", "del", probe], timeout=10)
    _unavailable.append(reason)
    return reason


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _unique_name() -> str:
    _counter[0] += 1
    return check_lab_name(f"p{_base36(os.getpid())}{_base36(_counter[0])}")


def _prepare(request: pytest.FixtureRequest) -> None:
    """Fail an unmarked test; skip (with the reason) where labs cannot be built."""
    if request.node.get_closest_marker("netns") is None:
        pytest.fail(f"{request.node.nodeid} uses a lab fixture but is not marked netns: "
                    "add `pytestmark = pytest.mark.netns` to the module", pytrace=False)
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def _factory(labs: list[Lab]) -> LabFactory:
    def lab_up(topology: str | Path | Topology = "flat", *, name: str | None = None,
               start_processes: bool = True) -> Lab:
        lab = Lab.up(topology, name=name or _unique_name(), start_processes=start_processes, tag=TAG)
        labs.append(lab)
        return lab

    return lab_up


def _teardown(labs: list[Lab]) -> None:
    errors = []
    for lab in reversed(labs):
        try:
            lab.down()
        except Exception as e:  # keep removing the others
            errors.append(f"{lab.name}: {e}")
    if errors:
        pytest.fail("lab teardown failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def lab_up(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """Build labs for one test: ``lab = lab_up("flat")``; removed after the test."""
    _prepare(request)
    labs: list[Lab] = []
    try:
        yield _factory(labs)
    finally:
        _teardown(labs)


@pytest.fixture(scope="module")
def lab_up_module(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """Like ``lab_up``, but the labs live until the module's last test has run."""
    _prepare(request)
    labs: list[Lab] = []
    try:
        yield _factory(labs)
    finally:
        _teardown(labs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root; builds network namespaces")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove labs of earlier, killed test runs (never labs of a live run or of users)."""
    if os.geteuid() != 0:
        return
    for name in stale_labs(TAG):
        try:
            down(name)
            log.warning("removed lab %s left by a killed test run", name)
        except Exception as e:  # a leftover must not stop the session
            log.warning("could not remove leftover lab %s: %s", name, e)
