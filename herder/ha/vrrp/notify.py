"""Notify scripts: run on every state transition, one at a time, in the order they happened.

keepalived's semantics (keepalived.conf(5)): for a transition to MASTER, BACKUP or FAULT,
or a stop, the instance's (or sync group's) ``notify_master`` / ``notify_backup`` /
``notify_fault`` / ``notify_stop`` runs first, then the generic ``notify`` with four more
arguments: ``INSTANCE``|``GROUP``, the name, the new state (``MASTER``, ``BACKUP``,
``FAULT``, ``STOP``) and the priority.

All scripts of all instances go through one queue worked by one task, so they run in the
order the transitions happened and never overlap (a notify_backup never races the
notify_master that follows it). Each runs through :func:`herder.proc.run_command` (a
string runs through ``/bin/sh -c``; its whole process group is killed after
``notify_timeout``); its environment also carries ``HERDER_VRRP_TYPE``,
``HERDER_VRRP_NAME``, ``HERDER_VRRP_STATE``, ``HERDER_VRRP_PRIORITY`` and
``HERDER_VRRP_CAUSE``. A failing script is logged with its exit status and output; it
changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from dataclasses import dataclass

from herder import proc
from herder.ha.vrrp.machine import State

__all__ = ["Notifier", "NotifyScripts", "state_word"]

log = logging.getLogger(__name__)

#: Bound on queued notifications; beyond it the oldest are dropped with a warning.
MAX_QUEUED = 1000


def state_word(state: State) -> str:
    """The word keepalived passes for a transition to ``state`` (INITIALIZE means a stop)."""
    return "STOP" if state is State.INITIALIZE else state.value


@dataclass(frozen=True, slots=True)
class NotifyScripts:
    """The notify commands of one instance or sync group."""

    master: str | None = None
    backup: str | None = None
    fault: str | None = None
    stop: str | None = None
    notify: str | None = None

    def for_state(self, state: State) -> list[str]:
        word = state_word(state)
        specific = {"MASTER": self.master, "BACKUP": self.backup, "FAULT": self.fault, "STOP": self.stop}[word]
        return [specific] if specific else []


@dataclass(frozen=True, slots=True)
class _Job:
    kind: str  # INSTANCE or GROUP
    name: str
    state: State
    priority: int
    cause: str
    commands: tuple[str, ...]


class Notifier:
    """The one queue of notify scripts; see the module docstring."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work(), name="vrrp notify")

    def transition(self, kind: str, name: str, state: State, priority: int, cause: str,
                   scripts: NotifyScripts) -> None:
        """Queue the scripts for one transition (nothing if none is configured)."""
        commands = scripts.for_state(state)
        if scripts.notify:
            commands.append(" ".join([scripts.notify, kind, shlex.quote(name), state_word(state), str(priority)]))
        if not commands:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            log.warning("notify queue full: dropping %d queued notification(s)", self._queue.qsize())
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
        self._queue.put_nowait(_Job(kind, name, state, priority, cause, tuple(commands)))

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued script has run; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                for cmd in job.commands:
                    await self._run(job, cmd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notify for %s %s failed", job.kind.lower(), job.name)
            finally:
                self._queue.task_done()

    async def _run(self, job: _Job, cmd: str) -> None:
        env = {"HERDER_VRRP_TYPE": job.kind, "HERDER_VRRP_NAME": job.name, "HERDER_VRRP_STATE": state_word(job.state),
               "HERDER_VRRP_PRIORITY": str(job.priority), "HERDER_VRRP_CAUSE": job.cause}
        self.runs += 1
        try:
            res = await proc.run_command(cmd, timeout=self.timeout_s, env=env, shell=True)
        except OSError as e:
            self.failures += 1
            log.warning("(%s) notify %r: cannot run: %s", job.name, cmd, e.strerror or e)
            return
        if res.timed_out:
            self.failures += 1
            log.warning("(%s) notify %r timed out after %.1fs and was killed", job.name, cmd, self.timeout_s)
        elif res.returncode != 0:
            self.failures += 1
            log.warning("(%s) notify %r exited %s: %s", job.name, cmd, res.returncode,
                        res.output.decode(errors="replace").strip()[:200])
        else:
            log.info("(%s) notify %r done in %.3fs", job.name, cmd, res.duration_s)
