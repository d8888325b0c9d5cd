"""``maglev``: Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
Load Balancer", NSDI 2016, section 3.4), weighted as Envoy does.

Theory of operation
-------------------
The picker is a lookup table of ``M`` slots (``table_size``, a prime; 65537 by default,
the paper's recommendation in section 5.3), each holding a target index. A key goes to
slot ``hash % M``. The table is plain data: :attr:`MaglevPicker.table` is a tuple of
target indices into :attr:`MaglevPicker.targets`, which the L4 director can write into
an nftables map as is, and :meth:`MaglevPicker.changed_slots` gives the slots that
differ from a previous table (Katran's ``RealPos`` delta).

Population (the paper's Pseudocode 1). Every server i has a permutation of the slots,
``perm_i(j) = (offset_i + j * skip_i) mod M``, with ``offset_i = h1(name) mod M`` and
``skip_i = h2(name) mod (M - 1) + 1`` (h1, h2: BLAKE2b with two personalisations). M
prime makes every such sequence visit every slot. Servers then take turns, in index
order (names sorted), each claiming the next slot of its permutation that is still
empty, until the table is full. With equal weights every server gets one slot per round,
so slot counts differ by at most one; a server's removal changes its own slots plus a
few others (the paper's Figure 12: about 1-2% of the table for 1% of N=1000 servers
removed at M=65537).

Weights follow Envoy's ``MaglevTable``: with ``W`` the largest weight, server i takes
its k-th turn in round ``max(k + 1, ceil(k * W / w_i))``, so a server of weight ``W``
takes one turn per round and one of weight ``W / 3`` one every third round. Integer
arithmetic replaces Envoy's doubles; the counts come out proportional to the weights
(within about one slot per server).

Speed. The population is inherently sequential, and a pure Python loop over the ~M ln M
probes takes hundreds of milliseconds. This implementation gives the same table as the
sequential loop, faster: in each round, every participating server's first empty slot
(as of the start of the round) is found at once with numpy; then the conflicts (two
servers wanting the same slot) are settled in index order, in Python, for the few
servers involved: the lower index keeps the slot, the other continues along its
permutation and may in turn displace a higher-index server. Rounds with few
participants (very unequal weights) run the plain sequential loop. The unit tests check
this against a direct transcription of Pseudocode 1.

Retries re-hash the key (``rehash(hash, n)``) and take the n-th distinct server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from herder.balance.base import (
    Algorithm,
    HashPicker,
    Option,
    Picker,
    Target,
    is_prime,
    register,
    register_alias,
)
from herder.balance.hashing import hash_name, mix64_array

__all__ = ["DEFAULT_TABLE_SIZE", "MaglevPicker", "maglev_permutations", "maglev_table", "maglev_turns"]

#: The paper's recommended table size (section 5.3): a prime, about 65 x 1000 servers.
DEFAULT_TABLE_SIZE = 65537

#: Rounds with fewer participants than this run the plain loop.
_VECTOR_FROM = 64
#: The last empty slots (at most this many) are filled by serial dictatorship.
_TAIL = 1024
_NOBODY = np.int32(np.iinfo(np.int32).max)


def maglev_permutations(names: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and skips of the servers' slot permutations (int64 arrays)."""
    offset = np.array([hash_name(n, "maglev-offset") % size for n in names], dtype=np.int64)
    skip = np.array([hash_name(n, "maglev-skip") % (size - 1) + 1 for n in names], dtype=np.int64)
    return offset, skip


def maglev_turns(weights: Sequence[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``size`` turns (round, server index) in population order.

    Server i's k-th turn (k from 0) falls in round ``max(k + 1, ceil(k * W / w_i))``
    (``W`` the largest weight); within a round, servers go in index order. By round T a
    server has had ``min(T, floor(T * w_i / W) + 1)`` turns.
    """
    w = np.asarray(weights, dtype=np.int64)
    wmax = int(w.max())

    def turns_by(t: int) -> int:
        return int(np.minimum(t, (t * w) // wmax + 1).sum())

    lo, hi = 1, size
    while lo < hi:  # smallest round by which there are at least `size` turns
        mid = (lo + hi) // 2
        if turns_by(mid) >= size:
            hi = mid
        else:
            lo = mid + 1
    counts = np.minimum(lo, (lo * w) // wmax + 1)
    server = np.repeat(np.arange(w.size, dtype=np.int64), counts)
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    rnd = np.maximum(k + 1, -((-k * wmax) // w[server]))
    order = np.lexsort((server, rnd))[:size]
    return rnd[order], server[order]


def maglev_table(names: Sequence[str], weights: Sequence[int], size: int = DEFAULT_TABLE_SIZE) -> np.ndarray:
    """Populate a Maglev table: an int32 array of ``size`` target indices.

    ``names`` must be distinct and in the order that defines the indices (herder sorts
    them); ``weights`` must be positive; ``size`` must be a prime. The result is the
    table of the paper's Pseudocode 1 with Envoy's weighted turns (see the module
    docstring); with far more targets than slots, the later ones get none.
    """
    n = len(names)
    table = np.full(size, -1, dtype=np.int32)
    if n == 0:
        return table
    if n == 1:
        table[:] = 0
        return table
    offset, skip = maglev_permutations(names, size)
    rounds, turns = maglev_turns(weights, size)
    filled_buf = bytearray(size)
    filled = np.frombuffer(filled_buf, dtype=np.bool_)
    nxt = np.zeros(n, dtype=np.int64)
    cuts = (np.flatnonzero(np.diff(rounds)) + 1).tolist()
    hold: np.ndarray | None = None
    scalar = _Scalar(offset, skip, filled_buf, size)
    free = size
    for a, b in zip([0, *cuts], [*cuts, size], strict=False):
        part = turns[a:b]
        if free <= _TAIL or 4 * free <= 5 * (b - a):
            _dictate(turns[a:], offset, skip, nxt, filled, table, size)
            break
        if b - a < _VECTOR_FROM:
            scalar.run(part.tolist(), nxt)
        else:
            if hold is None:
                hold = np.full(size, _NOBODY, dtype=np.int32)
            _propose(part, offset, skip, nxt, hold, filled, table, size, free)
        free -= b - a
    scalar.flush(table)
    return table


class _Scalar:
    """Pseudocode 1 itself, one turn at a time (rounds with few participants).

    Works on Python lists and the ``bytearray`` behind ``filled`` (numpy element access
    costs more than the probe itself); table writes are applied in :meth:`flush`.
    """

    def __init__(self, offset: np.ndarray, skip: np.ndarray, filled: bytearray, size: int) -> None:
        self.offset = offset.tolist()
        self.skip = skip.tolist()
        self.filled = filled
        self.size = size
        self.slots: list[int] = []
        self.owners: list[int] = []

    def run(self, part: list[int], nxt: np.ndarray) -> None:
        filled, size, offset, skip = self.filled, self.size, self.offset, self.skip
        put_slot, put_owner = self.slots.append, self.owners.append
        for i in part:
            j = int(nxt[i])
            s = skip[i]
            c = (offset[i] + j * s) % size
            while filled[c]:
                j += 1
                c += s
                if c >= size:
                    c -= size
            filled[c] = 1
            put_slot(c)
            put_owner(i)
            nxt[i] = j + 1

    def flush(self, table: np.ndarray) -> None:
        if self.slots:
            table[np.array(self.slots, dtype=np.int64)] = np.array(self.owners, dtype=np.int32)


def _propose(part: np.ndarray, offset: np.ndarray, skip: np.ndarray, nxt: np.ndarray,
             hold: np.ndarray, filled: np.ndarray, table: np.ndarray, size: int, free: int) -> None:
    """A round with many participants, settled as proposals.

    Every slot prefers the participant that comes first in the round. With one common
    preference the stable matching is unique, and it is the sequential result (each
    participant in turn takes its first empty slot: serial dictatorship). Proposals can
    therefore be made in any order, and all at once: every pending participant proposes
    to the next slot of its permutation that was empty when the round began; each slot
    keeps the earliest of its proposers and its holder; the others, and the holders
    they displaced, propose again further along. Two to five steps settle most rounds.
    ``hold`` (slot -> participant, or _NOBODY) is scratch space, left clean.
    """
    count = len(part)
    off = offset[part]
    sk = skip[part]
    ptr = nxt[part].copy()
    slot = np.empty(count, dtype=np.int64)
    pos = np.empty(count, dtype=np.int64)
    width = int(min(max(4, 3 * size // max(free, 1)), max(4, (1 << 20) // count)))
    steps = np.arange(width, dtype=np.int64)
    pending = np.arange(count)
    while pending.size:
        # The next slot of each pending participant's permutation that was empty at the
        # start of the round, reading a chunk of every permutation at a time.
        cand = np.empty(pending.size, dtype=np.int64)
        cpos = np.empty(pending.size, dtype=np.int64)
        todo = np.arange(pending.size)
        base = ptr[pending]
        while todo.size:
            who = pending[todo]
            js = base[todo, None] + steps[None, :]
            slots = (off[who, None] + js * sk[who, None]) % size
            empty = ~filled[slots]
            hit = empty.any(axis=1)
            rows = np.flatnonzero(hit)
            first = empty[rows].argmax(axis=1)
            cand[todo[rows]] = slots[rows, first]
            cpos[todo[rows]] = js[rows, first]
            base[todo[~hit]] += width
            todo = todo[~hit]
        before = hold[cand]
        np.minimum.at(hold, cand, pending.astype(np.int32))
        after = hold[cand]
        won = after == pending
        slot[pending[won]] = cand[won]
        pos[pending[won]] = cpos[won]
        lost = pending[~won]
        ptr[lost] = cpos[~won] + 1
        displaced = np.unique(before[(before != _NOBODY) & (after != before)]).astype(np.int64)
        ptr[displaced] = pos[displaced] + 1
        pending = np.concatenate((lost, displaced))
    hold[slot] = _NOBODY
    table[slot] = part
    filled[slot] = True
    nxt[part] = pos + 1


def _dictate(turns: np.ndarray, offset: np.ndarray, skip: np.ndarray, nxt: np.ndarray,
             filled: np.ndarray, table: np.ndarray, size: int) -> None:
    """The last turns: as many as there are empty slots, and nearly every probe misses.

    Half of the sequential algorithm's probes happen in the last 1% of the table, and
    proposals would collide at every step, so the tail is computed from the other
    side: a slot's position in permutation i is ``(slot - offset_i) * skip_i**-1 mod
    M``, and every empty slot lies ahead of server i's pointer (everything behind it is
    filled). Each turn, in order, takes the still-empty slot with the smallest position
    in its server's permutation: exactly the sequential choice.
    """
    free_slots = np.flatnonzero(~filled)
    servers, row = np.unique(turns, return_inverse=True)
    inv = np.array([pow(int(x), -1, size) for x in skip[servers].tolist()], dtype=np.int64)
    position = ((free_slots[None, :] - offset[servers][:, None]) % size) * inv[:, None] % size
    best = position.argmin(axis=1).tolist()
    taken = np.zeros(len(free_slots), dtype=bool)
    taken_b = bytearray(len(free_slots))
    chosen = np.empty(len(turns), dtype=np.int64)
    for t, r in enumerate(row.tolist()):
        c = best[r]
        if taken_b[c]:
            c = int(np.where(taken, size, position[r]).argmin())
        taken[c] = True
        taken_b[c] = 1
        chosen[t] = c
    slots = free_slots[chosen]
    table[slots] = turns
    filled[slots] = True
    np.maximum.at(nxt, turns, position[row, chosen] + 1)


def _check_size(value: object) -> str | None:
    if not isinstance(value, int) or not is_prime(value):
        return "the table size must be a prime (65537, 655373, 251 as LVS mh...)"
    return None


class MaglevPicker(HashPicker):
    """A Maglev lookup table; a key goes to ``table[hash % M]``."""

    algorithm = "maglev"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self.size = int(self.options.get("table_size", DEFAULT_TABLE_SIZE))  # type: ignore[call-overload]
        if _check_size(self.size):
            raise ValueError(f"maglev table_size {self.size} is not a prime")
        arr = maglev_table(self.names, self.weights, self.size)
        arr.setflags(write=False)
        #: The table as a read-only numpy array of target indices.
        self.table_array = arr
        #: The table as plain data: slot -> index into :attr:`targets`.
        self.table: tuple[int, ...] = tuple(arr.tolist())

    def _lookup(self, h: int) -> int:
        return self.table[h % self.size]

    def lookup_many(self, keys: np.ndarray) -> np.ndarray:
        return self.table_array[mix64_array(keys) % np.uint64(self.size)].astype(np.int64)

    def ownership(self) -> np.ndarray:
        return np.bincount(self.table_array, minlength=len(self.targets)) / self.size

    def slot_counts(self) -> dict[str, int]:
        """Slots per server name."""
        counts = np.bincount(self.table_array, minlength=len(self.targets))
        return dict(zip(self.names, counts.tolist(), strict=True))

    def changed_slots(self, previous: MaglevPicker | None) -> list[tuple[int, str]]:
        """``(slot, server name)`` for every slot whose server differs from ``previous``'s
        (all slots when there is no comparable previous table)."""
        names = np.array(self.names, dtype=object)
        new = names[self.table_array]
        if previous is None or previous.size != self.size or not len(previous):
            idx = np.arange(self.size)
        else:
            old = np.array(previous.names, dtype=object)[previous.table_array]
            idx = np.flatnonzero(new != old)
        return list(zip(idx.tolist(), new[idx].tolist(), strict=True))


register(Algorithm(
    name="maglev",
    factory=MaglevPicker,
    summary="Maglev lookup table (NSDI'16): slot counts within 1, little disruption, O(1) lookups",
    origin="Google Maglev, Envoy maglev, LVS mh, Katran",
    keyed=True,
    default_key="source",
    options=(Option("table_size", int, DEFAULT_TABLE_SIZE, "table size M, a prime; the paper uses 65537 "
                    "(about 65 slots per server for 1000 servers) and 655373", minimum=3, check=_check_size),),
))
register_alias("mh", "maglev", "ipvsadm", note="LVS's default table is 251 slots; herder's is 65537")
