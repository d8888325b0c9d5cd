"""Applying rendered rulesets to the kernel: one nftables transaction per update.

Theory of operation
-------------------
An :class:`NftBackend` runs a batch of nft commands as *one* transaction (``nft -f``
semantics: the kernel applies all of it or none of it) and lists objects as JSON. Three
backends:

* :class:`LibNft` -- libnftables (``libnftables.so.1``, Debian ``libnftables1``) through
  ctypes, in process: no process start per update (a single-element change takes well
  under a millisecond). Optionally bound to a named network namespace: its netlink
  socket is opened by a dedicated thread that entered the namespace first.
* :class:`NftCli` -- the ``nft`` program (``nft -f -``), optionally inside a namespace
  (``ip netns exec``), through :mod:`herder.proc`.
* :class:`RecordingBackend` -- records every transaction and can be told to fail: the
  whole control plane runs in tests without root (Katran's ``testing`` switch).

:class:`Applier` keeps the model it last applied, diffs the next one against it
(:func:`herder.l4.render_nft.diff`) and runs the difference. The first apply replaces
herder's tables (cleaning up after an earlier run). A failed transaction changes
nothing in the kernel; the applier keeps the previous model as the truth, logs, and
raises :class:`ApplyError`; the next apply diffs against the previous model again.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from herder import proc
from herder.l4.render_nft import NftModel, diff, render, table_names
from herder.l4.ruleset import Ruleset

__all__ = [
    "ApplyError",
    "ApplyResult",
    "Applier",
    "LibNft",
    "NftBackend",
    "NftCli",
    "NftError",
    "RecordingBackend",
    "default_backend",
]

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_NFT_CTX_OUTPUT_JSON = 1 << 4


class NftError(RuntimeError):
    """nftables refused a transaction (nothing of it was applied) or could not be run."""


class ApplyError(RuntimeError):
    """An update failed; the previous ruleset is still in place."""


class NftBackend(Protocol):
    """Runs one transaction; lists objects as JSON."""

    name: str

    def run(self, text: str) -> None:
        """Apply ``text`` (nft commands, one per line) as one transaction. NftError."""
        ...

    def list_json(self, what: str) -> dict[str, Any]:
        """``nft -j list <what>`` as parsed JSON. NftError (also when it does not exist)."""
        ...

    def close(self) -> None: ...


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class LibNft:
    """libnftables through ctypes; one context, used by one thread at a time.

    Args:
        netns: a named network namespace (``ip netns`` name) to act in, or None for the
            namespace this process is in.

    Raises:
        NftError: libnftables cannot be loaded or the namespace entered.
    """

    name = "libnftables"

    def __init__(self, netns: str | None = None) -> None:
        try:
            self._lib = ctypes.CDLL("libnftables.so.1")
        except OSError as e:
            raise NftError(f"cannot load libnftables.so.1 (apt-get install libnftables1): {e}") from None
        lib = self._lib
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for f in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, f).argtypes = [ctypes.c_void_p]
            getattr(lib, f).restype = ctypes.c_int
        for f in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, f).argtypes = [ctypes.c_void_p]
            getattr(lib, f).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self.netns = netns
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if netns:
            path = os.path.join(NETNS_DIR, netns)
            if not os.path.exists(path):
                raise NftError(f"no network namespace {netns!r}")
            # The netlink socket binds to the namespace of the thread that opens it; this
            # thread enters the namespace once and does every call.
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"nft-{netns}", initializer=_setns,
                                            initargs=(path,))
        self._ctx = self._call(self._new_ctx)

    def _new_ctx(self) -> int:
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        return ctx

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is not None:
            return self._pool.submit(fn, *args).result()
        with self._lock:
            return fn(*args)

    def _cmd(self, text: str, as_json: bool) -> str:
        lib, ctx = self._lib, self._ctx
        flags = lib.nft_ctx_output_get_flags(ctx)
        lib.nft_ctx_output_set_flags(ctx, (flags | _NFT_CTX_OUTPUT_JSON) if as_json else
                                     (flags & ~_NFT_CTX_OUTPUT_JSON))
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(err.strip() or f"nft failed (rc {rc})")
        return out

    def run(self, text: str) -> None:
        self._call(self._cmd, text, False)

    def list_json(self, what: str) -> dict[str, Any]:
        out = self._call(self._cmd, f"list {what}", True)
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._call(self._lib.nft_ctx_free, self._ctx)
            self._ctx = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class NftCli:
    """The ``nft`` program (``nft -f -``), optionally in a named network namespace."""

    name = "nft"

    def __init__(self, netns: str | None = None, timeout: float = 60.0) -> None:
        if shutil.which("nft") is None:
            raise NftError("the nft program is not installed (apt-get install nftables)")
        self.netns = netns
        self.timeout = timeout

    def _nft(self, argv: list[str], text: str | None = None) -> str:
        res = proc.run_sync(["nft", *argv], netns=self.netns, timeout=self.timeout,
                            input=text.encode() if text is not None else None)
        if res.returncode != 0:
            raise NftError(res.stderr.decode(errors="replace").strip() or f"nft exited {res.returncode}")
        return res.stdout.decode(errors="replace")

    def run(self, text: str) -> None:
        self._nft(["-f", "-"], text)

    def list_json(self, what: str) -> dict[str, Any]:
        out = self._nft(["-j", "list", *what.split()])
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        pass


class RecordingBackend:
    """Records transactions instead of applying them (tests, ``backend = "recording"``).

    ``fail_next`` makes the next :meth:`run` raise NftError with that message (and
    record nothing), as a refused transaction would.
    """

    name = "recording"

    def __init__(self) -> None:
        self.transactions: list[str] = []
        self.fail_next: str | None = None

    def run(self, text: str) -> None:
        if self.fail_next is not None:
            msg, self.fail_next = self.fail_next, None
            raise NftError(msg)
        self.transactions.append(text)

    def list_json(self, what: str) -> dict[str, Any]:
        return {"nftables": []}

    def close(self) -> None:
        pass

    @property
    def last(self) -> list[str]:
        """The commands of the last transaction."""
        return self.transactions[-1].splitlines() if self.transactions else []


def default_backend(netns: str | None = None) -> NftBackend:
    """libnftables if it loads, else the nft program. NftError if neither is there."""
    try:
        return LibNft(netns)
    except NftError as e:
        log.debug("libnftables unavailable (%s); using the nft program", e)
        return NftCli(netns)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one apply did: how many commands, how long the transaction took."""

    commands: int
    duration_s: float
    full: bool

    @property
    def changed(self) -> bool:
        return self.commands > 0


class Applier:
    """Diffs each new ruleset against the last applied one and applies the difference.

    Not thread-safe: one caller at a time (the director serialises its updates).
    """

    def __init__(self, backend: NftBackend, table: str = "herder") -> None:
        self.backend = backend
        self.table = table
        self.model: NftModel | None = None
        self.ruleset: Ruleset | None = None
        self.failures = 0
        self.last_error: str | None = None

    def apply(self, ruleset: Ruleset) -> ApplyResult:
        """Make the kernel hold ``ruleset``, in one transaction.

        Raises:
            ApplyError: the ruleset cannot be rendered, or nftables refused the
                transaction; the previous ruleset stays in place (and remains the base
                of the next diff).
        """
        try:
            new = render(ruleset)
            cmds = diff(self.model, new, owned=table_names(self.table))
        except ValueError as e:
            self._failed(str(e))
            raise ApplyError(str(e)) from None
        full = self.model is None
        if not cmds:
            self.ruleset = ruleset
            return ApplyResult(0, 0.0, full)
        t0 = time.perf_counter()
        try:
            self.backend.run("\n".join(cmds) + "\n")
        except NftError as e:
            self._failed(str(e))
            raise ApplyError(f"nftables refused the update ({len(cmds)} commands); the previous ruleset "
                             f"stays in place: {e}") from None
        dt = time.perf_counter() - t0
        self.model, self.ruleset = new, ruleset
        self.last_error = None
        return ApplyResult(len(cmds), dt, full)

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.error("L4 update failed, previous ruleset kept: %s", message)

    def remove(self) -> None:
        """Delete herder's tables (those it knows it created, or both names if unsure)."""
        specs = list(self.model.tables) if self.model is not None else list(table_names(self.table))
        cmds = []
        for spec in specs:
            cmds += [f"add table {spec}", f"delete table {spec}"]
        self.backend.run("\n".join(cmds) + "\n")
        self.model = None
        self.ruleset = None
