"""Exec check: run a command; exit status 0 means healthy.

keepalived's ``MISC_CHECK`` (``misc_path``, ``misc_timeout``) and ``vrrp_script``
(``script "killall -0 haproxy"``), HAProxy's ``external-check command``. Config::

    [[pools.web.checks]]
    type = "exec"
    command = "killall -0 haproxy"      # a string runs through /bin/sh -c
    # command = ["/usr/local/bin/check", "--quick"]   # an array is executed directly
    timeout = "2s"

The command runs through :func:`herder.proc.run_command`: in its own process group, with
stdin from /dev/null; when it overruns ``timeout`` the *whole group* is killed with
SIGKILL (a shell and everything it started), as keepalived does, and the result is
``timeout after 2.0s: killed``. Exit 0 gives ``exit status 0``; any other status
``exit status N``; death by a signal ``killed by signal N (SIGNAME)``.

The command sees the server in its environment, under herder's names and HAProxy's
external-check names: ``HERDER_POOL``, ``HERDER_SERVER``, ``HERDER_SERVER_ADDR``,
``HERDER_SERVER_PORT``, ``HAPROXY_PROXY_NAME``, ``HAPROXY_SERVER_NAME``,
``HAPROXY_SERVER_ADDR``, ``HAPROXY_SERVER_PORT``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from herder import proc
from herder.config.schema import Field, ListOf, OneOf, Str
from herder.health.base import Layer, ProbeResult, Target, check_table, register_probe
from herder.health.classify import exit_result

__all__ = ["ExecProbe"]

log = logging.getLogger(__name__)


class ExecProbe:
    """Run ``command`` (a shell string or an argv) once per check."""

    kind = "exec"

    def __init__(self, timeout: float, command: str | Sequence[str]) -> None:
        self.timeout = timeout
        self.command: str | tuple[str, ...] = command if isinstance(command, str) else tuple(command)

    def environment(self, target: Target) -> dict[str, str]:
        """The variables that tell the command which server it checks."""
        addr, port = target.address.host, str(target.address.port)
        return {
            "HERDER_POOL": target.pool, "HERDER_SERVER": target.server,
            "HERDER_SERVER_ADDR": addr, "HERDER_SERVER_PORT": port,
            "HAPROXY_PROXY_NAME": target.pool, "HAPROXY_SERVER_NAME": target.server,
            "HAPROXY_SERVER_ADDR": addr, "HAPROXY_SERVER_PORT": port,
        }

    async def check(self, target: Target) -> ProbeResult:
        shell = isinstance(self.command, str)
        try:
            res = await proc.run_command(self.command, timeout=self.timeout, env=self.environment(target),
                                         shell=shell)
        except OSError as e:  # the program does not exist or is not executable
            return ProbeResult(False, Layer.PROCERR, f"cannot run command: {e.strerror or e}", e.errno)
        result = exit_result(res.returncode, res.timed_out, self.timeout).with_duration(res.duration_s)
        if not result.ok and res.output and log.isEnabledFor(logging.DEBUG):
            log.debug("check %s/%s exec output: %s", target.pool, target.server,
                      res.output.decode(errors="replace").strip()[:200])
        return result


TABLE = check_table("exec", {
    "command": Field(OneOf((
        (lambda v: isinstance(v, str), Str(what="a shell command")),
        (lambda v: isinstance(v, list), ListOf(Str(), min_len=1)),
    ), expected="a shell command string or an array of program and arguments"), required=True),
})


def _factory(spec: Mapping[str, object], timeout: float) -> ExecProbe:
    command = spec["command"]
    assert isinstance(command, (str, tuple, list))
    return ExecProbe(timeout, command)


register_probe("exec", TABLE, _factory)
