"""``herder demo``: three backends on loopback, herder's layers in front, until Ctrl-C.

The demo configuration is herder TOML embedded below (``herder demo --print-config`` shows
it), loaded through the same loader as any file. The backends are real child processes
(``herder.demo.backend``); the runtime API gets two demo routes to stop and start them, so
the pool state can be seen reacting through the health checks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from herder import log as hlog
from herder import proc
from herder.api.server import Request, add_route
from herder.config.load import load_strings
from herder.loop import run as run_loop

if TYPE_CHECKING:
    from herder.runtime import Runtime

log = logging.getLogger(__name__)

NAMES = ("web1", "web2", "web3")

TEMPLATE = """\
# herder's built-in demo configuration (herder demo --print-config)
[herder]
log_level = "info"

[api]
listen = "{host}:{api_port}"

[services.www]
pool = "demo"
mode = "http"
listen = "{host}:{proxy_port}"
forwardfor = true

[pools.demo]
balance = "roundrobin"
initial_state = "down"
cookie = {{ name = "SRV", mode = "insert", indirect = true, nocache = true }}
retries = 2
redispatch = true

[[pools.demo.checks]]
type = "http"
path = "/health"
inter = "1s"
rise = 2
fall = 2
timeout = "0.5s"
{servers}
"""

SERVER = """
[[pools.demo.servers]]
name = "{name}"
address = "{host}:{port}"
cookie = "{name}"
"""


def demo_config_text(host: str, base_port: int, api_port: int, proxy_port: int) -> str:
    servers = "".join(SERVER.format(name=n, host=host, port=base_port + i) for i, n in enumerate(NAMES))
    return TEMPLATE.format(host=host, api_port=api_port, proxy_port=proxy_port, servers=servers)


class DemoBackends:
    """The three demo backends as child processes, stoppable through the API."""

    name = "demo backends"

    def __init__(self, host: str, base_port: int) -> None:
        self.host = host
        self.ports = {n: base_port + i for i, n in enumerate(NAMES)}
        self.children: dict[str, proc.Child] = {}

    def start_one(self, name: str) -> proc.Child:
        child = self.children.get(name)
        if child is not None and child.alive():
            return child
        child = proc.spawn([proc.python_executable(), "-m", "herder.demo.backend", "--host", self.host,
                            "--port", str(self.ports[name]), "--name", name], name=f"demo-{name}")
        self.children[name] = child
        _wait_listening(self.host, self.ports[name], child)
        log.info("demo backend %s started on %s:%d (pid %d)", name, self.host, self.ports[name], child.pid)
        return child

    def stop_one(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            child.stop()
            log.info("demo backend %s stopped (pid %d)", name, child.pid)

    async def start(self) -> None:
        for n in NAMES:
            self.start_one(n)

    async def stop(self) -> None:
        for n in list(self.children):
            self.stop_one(n)


def _wait_listening(host: str, port: int, child: proc.Child, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"demo backend on port {port} exited with status {child.returncode} "
                               "(is the port in use? try --base-port)")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"demo backend on port {port} did not start listening within {timeout}s")


_backends: DemoBackends | None = None


def _route(action: str):
    def handler(rt: Runtime, req: Request) -> tuple[int, Any]:
        name = req.params["name"]
        if _backends is None or name not in _backends.ports:
            return 404, {"error": f"no demo backend {name!r}; there are {', '.join(NAMES)}"}
        (_backends.start_one if action == "start" else _backends.stop_one)(name)
        return 200, {"backend": name, "action": action}
    return handler


add_route("POST", "/demo/{name}/stop", _route("stop"))
add_route("POST", "/demo/{name}/start", _route("start"))


async def _script(backends: DemoBackends) -> None:
    await asyncio.sleep(3)
    log.info("demo script: stopping backend web2")
    backends.stop_one("web2")
    await asyncio.sleep(3)
    log.info("demo script: starting backend web2 again")
    backends.start_one("web2")


def run_demo(args: argparse.Namespace) -> int:
    global _backends
    text = demo_config_text(args.host, args.base_port, args.api_port, args.proxy_port)
    if getattr(args, "print_config", False):
        print(text)
        return 0
    cfg = load_strings([("builtin-demo.toml", text)])
    hlog.setup(args.log_level or cfg.log_level, args.log_format or cfg.log_format)
    from herder.runtime import Runtime

    _backends = DemoBackends(args.host, args.base_port)
    rt = Runtime(cfg, extra_components=[_backends])

    def ready(rt: Runtime) -> None:
        api = f"http://{args.host}:{args.api_port}"
        proxy = f"http://{args.host}:{args.proxy_port}/"
        print(
            "\nherder demo is running.\n"
            f"  the service:     curl -s {proxy}     (round robin over web1-web3; -c/-b a cookie jar sticks)\n"
            f"  backends:        {', '.join(f'{n}=http://{args.host}:{p}/' for n, p in _backends.ports.items())}\n"
            f"  pool state:      curl -s {api}/status\n"
            f"  stop a backend:  curl -s -XPOST {api}/demo/web2/stop    (watch it go DOWN in the log)\n"
            f"  start it again:  curl -s -XPOST {api}/demo/web2/start   (and come back UP)\n"
            f"  drain a server:  curl -s -XPOST -d '{{\"mode\":\"drain\"}}' {api}/pools/demo/servers/web1/admin\n"
            "Ctrl-C stops everything.\n",
            file=sys.stderr, flush=True,
        )
        loop = asyncio.get_running_loop()
        if args.script:
            loop.create_task(_script(_backends))
        if args.duration:
            loop.call_later(args.duration, rt.request_stop)

    return run_loop(rt.serve(ready))
