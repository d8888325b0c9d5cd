"""Child processes herder starts, and how they are stopped: the one launcher.

Every process herder starts (demo backends, exec health checks, notify scripts, lab
processes, interop peers in tests) goes through this module so that:

* it runs in its own session and process group (``start_new_session``), so stopping it
  stops everything it forked (shell pipelines, ``killall -0`` wrappers, pyenv shims);
* its PID is the real program's PID: :func:`python_executable` resolves interpreter shims
  (pyenv's ``python3`` shim forks the real interpreter, so ``$!`` would be the shim);
* the :data:`children` registry knows what is still running, so ``herder run`` can reap
  everything on SIGTERM and leave nothing behind.

Processes are never looked up or killed by name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Child",
    "CommandResult",
    "children",
    "kill_group",
    "netns_argv",
    "pid_running",
    "pid_start_time",
    "python_executable",
    "run_command",
    "run_sync",
    "spawn",
    "stop_pid",
]

log = logging.getLogger(__name__)


def python_executable() -> str:
    """The path of the running interpreter (never a shim), for starting helpers.

    ``sys.executable`` is always the interpreter itself, never pyenv's shim (the shim
    execs it). Inside a virtual environment it is the venv's ``bin/python`` symlink and
    must stay one: resolving it would start the base interpreter, which does not see
    the venv's packages. Outside a venv the symlink chain is resolved.
    """
    if sys.prefix != sys.base_prefix:
        return os.path.abspath(sys.executable)
    return os.path.realpath(sys.executable)


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed to run inside network namespace ``netns`` (``ip netns exec``).

    ``ip netns exec`` execs the program (it does not fork), so the PID stays the program's.
    """
    if not netns:
        return list(argv)
    return ["ip", "netns", "exec", netns, *argv]


def kill_group(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False if it is already gone."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pid)
        return False


def pid_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if it is gone.

    Record it with a PID and compare before signalling later (:func:`stop_pid`), so a PID
    reused by an unrelated process is never signalled.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])  # field 22, starttime


def _pid_matches(pid: int, start_time: int | None) -> bool:
    now = pid_start_time(pid)
    if now is None:
        return False
    return start_time is None or now == start_time


def pid_running(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, if given, still has ``start_time``.

    A zombie has exited; it only waits for its parent (or init, for an orphan) to reap it.
    """
    if not _pid_matches(pid, start_time):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def stop_pid(pid: int, *, start_time: int | None = None, timeout: float = 2.0) -> bool:
    """Stop a process this process did not start (or no longer holds a :class:`Child` for).

    For PIDs recorded in a state file by another herder process (``herder lab up``
    starts, ``herder lab down`` stops). If ``start_time`` (from :func:`pid_start_time`)
    is given and no longer matches, the PID was reused and nothing is signalled.
    SIGTERM goes to the process group led by ``pid`` (or to ``pid`` alone if it leads
    none), SIGKILL follows after ``timeout`` seconds. A process that is not our child
    is reaped by its own parent; this waits until it is gone or a zombie.
    Returns True if the process was running and has been stopped.
    """
    if not _pid_matches(pid, start_time):
        return False
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return False

    def signal_it(sig: int) -> None:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def gone() -> bool:
        return not pid_running(pid, start_time)

    signal_it(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not gone():
        if time.monotonic() >= deadline:
            log.warning("pid %d ignored SIGTERM for %.1fs; killing", pid, timeout)
            signal_it(signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while not gone() and time.monotonic() < kill_deadline:
                time.sleep(0.01)
            break
        time.sleep(0.01)
    if group:
        signal_it(signal.SIGKILL)  # whatever the leader left behind in its group
    return True


class Child:
    """A started process (leader of its own process group) that can be stopped for sure."""

    def __init__(self, popen: subprocess.Popen, name: str) -> None:
        self.popen = popen
        self.name = name

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 2.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the whole group with ``sig``; SIGKILL it after ``timeout`` seconds.

        Returns the exit status. Always reaps the leader and removes the child from
        :data:`children`.
        """
        try:
            if self.popen.poll() is None:
                kill_group(self.pid, sig)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored signal %d for %.1fs; killing", self.name, self.pid, sig, timeout)
                    kill_group(self.pid, signal.SIGKILL)
                    self.popen.wait(5)
            # the leader is gone; make sure nothing of its group lingers
            kill_group(self.pid, signal.SIGKILL)
            return self.popen.returncode
        finally:
            children.discard(self)

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} rc={self.popen.poll()}>"


class _Registry:
    """Every :class:`Child` that is still running, for a final sweep at shutdown."""

    def __init__(self) -> None:
        self._children: dict[int, Child] = {}

    def add(self, child: Child) -> None:
        self._children[child.pid] = child

    def discard(self, child: Child) -> None:
        self._children.pop(child.pid, None)

    def __iter__(self):
        return iter(list(self._children.values()))

    def __len__(self) -> int:
        return len(self._children)

    def stop_all(self, timeout: float = 2.0) -> None:
        """Stop every registered child: SIGTERM to all groups at once, then SIGKILL."""
        live = list(self._children.values())
        for c in live:
            if c.alive():
                kill_group(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in live:
            remaining = max(0.0, deadline - time.monotonic())
            c.stop(timeout=remaining)


children = _Registry()


def spawn(
    argv: Sequence[str],
    *,
    name: str | None = None,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    stdin=subprocess.DEVNULL,
) -> Child:
    """Start ``argv`` (optionally inside ``netns``) in a new process group and register it.

    ``env`` is added to the current environment. The returned :class:`Child` must be
    stopped by the caller; whatever is left is stopped by ``children.stop_all()``.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    popen = subprocess.Popen(
        netns_argv(netns, argv),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    child = Child(popen, name or os.path.basename(argv[0]))
    children.add(child)
    log.debug("started %s pid %d: %s", child.name, child.pid, " ".join(argv))
    return child


def run_sync(
    argv: Sequence[str],
    *,
    timeout: float,
    netns: str | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a short command to completion (optionally inside ``netns``), blocking.

    The command runs in its own process group; stdout and stderr are captured apart.
    On timeout the whole group is killed and reaped, then
    :class:`subprocess.TimeoutExpired` is raised. A non-zero exit status is returned,
    not raised: the caller decides.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    full_argv = netns_argv(netns, argv)
    popen = subprocess.Popen(
        full_argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    try:
        out, err = popen.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(popen.pid, signal.SIGKILL)
        out, err = popen.communicate()
        raise subprocess.TimeoutExpired(full_argv, timeout, out, err) from None
    except BaseException:
        kill_group(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    return subprocess.CompletedProcess(full_argv, popen.returncode, out, err)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command run by :func:`run_command` ended."""

    #: Exit status; negative for a signal (as subprocess reports it); None on timeout.
    returncode: int | None
    output: bytes
    timed_out: bool
    duration_s: float


async def run_command(
    argv: Sequence[str] | str,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    shell: bool = False,
    max_output: int = 4096,
) -> CommandResult:
    """Run a short command (a check or notify script) without blocking the event loop.

    On timeout the command's whole process group is killed (SIGKILL) and reaped, as
    keepalived does for a script that overruns. ``shell=True`` runs ``argv`` (a string)
    through ``/bin/sh -c``. Output (stdout and stderr together) is kept up to
    ``max_output`` bytes.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    if shell:
        assert isinstance(argv, str)
        proc = await asyncio.create_subprocess_shell(
            argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=full_env, start_new_session=True,
        )
    else:
        assert not isinstance(argv, str)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=full_env, start_new_session=True,
        )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        return CommandResult(proc.returncode, out[:max_output], False, time.monotonic() - start)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            log.error("command pid %d did not die after SIGKILL", proc.pid)
        return CommandResult(None, b"", True, time.monotonic() - start)
    except asyncio.CancelledError:
        kill_group(proc.pid, signal.SIGKILL)
        raise
