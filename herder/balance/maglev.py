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

Speed. The population is inherently sequential, and a pure Python loop over its ~M ln M
probes takes hundreds of milliseconds. This implementation computes the same table in
numpy, a *window* of consecutive turns at a time (the turns, numbered 0..M-1 in
population order, are known in advance):

1. Every server with turns in the window gets a list of *candidates*: the slots of its
   permutation, from where it stopped, that are empty when the window starts, a few
   more than it has turns. Candidates found but not used stay in a per-server lookahead
   for later windows, so no permutation position is read twice.
2. Within the window each turn takes the first candidate of its server that no earlier
   turn took. Candidate q of server i is examined by i's turn number ``q - b`` of the
   window, ``b`` being the number of i's candidates before q that other servers took
   first; so it is *blocked* exactly when another server's list holds the same slot and
   reaches it at an earlier turn. Only slots in two lists or more can be blocked. This
   is a stable matching with one common ranking (earlier turns first), which is unique:
   it is the sequential result, and it is found by iterating "recompute when each
   candidate is reached, then who reaches each shared slot first" until nothing
   changes (Jacobi iteration, vectorised over the shared candidates, from a guess;
   once few flags change, only the servers concerned are recomputed).
3. When a server's list runs out (all its candidates taken), the window ends just
   before that server's unserved turn: every earlier turn is final, the rest is redone
   in the next window.

Windows cover about a third of the remaining turns. Once few slots are empty (4096 at
M=65537), a window would settle few turns for its cost, so the turns are taken one at a
time in Python, each walking its server's lookahead (a few list reads per turn). The
last turns, when a probe mostly finds a full slot, are computed from the other side: a
slot's position in permutation i is ``(slot - offset_i) * skip_i**-1 mod M``, and each
turn in order takes the empty slot with the smallest position in its server's
permutation. At M=65537 a build takes about 7-10 ms for 3 to 100 servers and 16-18 ms
for 1000 on a 2020s x86 core (``make bench``); the tuning constants below change the
speed, never the table. The unit tests check the result against a direct transcription
of Pseudocode 1, with every path forced.

Retries re-hash the key (``rehash(hash, n)``) and take the n-th distinct server.
"""

from __future__ import annotations

import hashlib
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
from herder.balance.hashing import mix64_array

__all__ = ["DEFAULT_TABLE_SIZE", "MaglevPicker", "maglev_permutations", "maglev_table", "maglev_turns"]

#: The paper's recommended table size (section 5.3): a prime, about 65 x 1000 servers.
DEFAULT_TABLE_SIZE = 65537

# Tuning of the window population (any values give the same table; these are fast).
#: A window takes this share of the remaining turns while more than 1/_LATE of the
#: slots are empty, then _WINDOW_LATE.
_WINDOW, _WINDOW_LATE, _LATE = 0.3, 0.35, 1.5
#: Candidates per server: turns + int(_EXTRA * turns + _EXTRA_SQRT * sqrt(turns) + 1).
_EXTRA, _EXTRA_SQRT = 0.25, 1.0
#: Jacobi rounds before a window is given up and split in two (not seen with these
#: settings; one turn alone has no conflict).
_MAX_ROUNDS = 100
#: Once fewer than 1/_FEW of the shared candidates change in a round, only the servers
#: whose flags changed are recomputed.
_FEW = 16
#: Once at most min(_WALK, M/16) slots are empty, turns are taken one at a time in
#: Python, walking the lookahead, until the tail. Each server's list is filled up front
#: to _WALK_MARGIN x the candidates it is expected to walk, and then by _WALK_MORE x
#: (M / empty slots) permutation positions at a time.
_WALK = 4096
_WALK_MARGIN, _WALK_MORE = 1.3, 4
#: The last turns, at most _TAIL_MAX, with at most _TAIL_CELLS (servers x empty slots),
#: are computed from the inverse permutations.
_TAIL_MAX, _TAIL_CELLS = 1024, 1 << 16
#: Servers with more turns than this in the tail sort their row once.
_TAIL_SORT = 16


def _name_hashes(data: list[bytes], purpose: bytes) -> np.ndarray:
    """``hash_name(name, purpose)`` of every (encoded) name, as uint64: BLAKE2b with an
    8-byte digest, read little-endian (:func:`herder.balance.hashing.hash_name`), each
    from a copy of one keyed state."""
    base = hashlib.blake2b(digest_size=8, person=purpose[:16])
    digests = []
    put = digests.append
    for d in data:
        h = base.copy()
        h.update(d)
        put(h.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8")


def maglev_permutations(names: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and skips of the servers' slot permutations (int64 arrays)."""
    data = [n.encode("utf-8", "surrogateescape") if isinstance(n, str) else n for n in names]
    offset = (_name_hashes(data, b"maglev-offset") % np.uint64(size)).astype(np.int64)
    skip = (_name_hashes(data, b"maglev-skip") % np.uint64(size - 1)).astype(np.int64) + 1
    return offset, skip


def _weighted_turns(w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every server's turns up to the round that completes ``size`` turns: their rounds
    and servers (server-major int64 arrays), and the population order of those turns
    (sort by round, then server)."""
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
    # server-major, so a stable sort by round keeps the servers in order within a round
    order = rnd.astype(np.uint16).argsort(kind="stable") if lo < 1 << 16 else np.lexsort((server, rnd))
    return rnd, server, order


def maglev_turns(weights: Sequence[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``size`` turns (round, server index) in population order.

    Server i's k-th turn (k from 0) falls in round ``max(k + 1, ceil(k * W / w_i))``
    (``W`` the largest weight); within a round, servers go in index order. By round T a
    server has had ``min(T, floor(T * w_i / W) + 1)`` turns.
    """
    with np.errstate(divide="ignore"):  # weight 0: one turn, in round 1
        rnd, server, order = _weighted_turns(np.asarray(weights, dtype=np.int64), size)
    order = order[:size]
    return rnd[order], server[order]


class _Turns:
    """The population order: which server takes turn t (t = 0, 1, ...; one slot each), and
    when server i takes its k-th turn."""

    def __init__(self, weights: Sequence[int], size: int) -> None:
        w = np.asarray(weights, dtype=np.int64)
        self.n = n = w.size
        #: All weights equal: turn t is server t % n's turn number t // n.
        self.equal = bool(w[0] > 0 and (w == w[0]).all())
        if self.equal:
            self.total = size
            return
        with np.errstate(divide="ignore"):
            _, server, order = _weighted_turns(w, size)
        when = np.empty(order.size, dtype=np.int64)
        when[order] = np.arange(order.size, dtype=np.int64)
        keep = when < size
        #: Server of every turn, in order (fewer than ``size`` only if every weight is 0).
        self.turns = server[order[:size]]
        self.total = self.turns.size
        #: Turn numbers of every server's turns, server-major; server i's start at first[i].
        self.times = when[keep]
        counts = np.bincount(server[keep], minlength=n)
        self.first = np.cumsum(counts) - counts
        self.last = np.sort(self.times[(self.first + counts - 1)[counts > 0]])

    def window(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """The servers with turns in ``t0..t1-1`` (ascending) and how many each."""
        if self.equal:
            n = self.n
            s, e = t0 % n, t0 % n + t1 - t0
            if e - s >= n:
                i = np.arange(n, dtype=np.int64)
            elif e <= n:
                i = np.arange(s, e, dtype=np.int64)
            else:
                i = np.concatenate((np.arange(e - n, dtype=np.int64), np.arange(s, n, dtype=np.int64)))
            cnt = (t1 - 1 - i) // n
            cnt -= (t0 - 1 - i) // n
            return i, cnt
        cnt = np.bincount(self.turns[t0:t1], minlength=self.n)
        act = cnt.nonzero()[0]
        return act, cnt[act]

    def time(self, servers: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The turn number of each server's k-th turn (from 0)."""
        if self.equal:
            return servers + k * self.n
        return self.times[self.first[servers] + k]

    def order(self, t0: int) -> np.ndarray:
        """The servers of turns ``t0..total-1``."""
        if self.equal:
            return np.arange(t0, self.total, dtype=np.int64) % self.n
        return self.turns[t0:]

    def servers_in_last(self, count: int) -> int:
        """How many distinct servers take the last ``count`` turns."""
        if self.equal:
            return min(self.n, count)
        return int(self.last.size - np.searchsorted(self.last, self.total - count))


def maglev_table(names: Sequence[str], weights: Sequence[int], size: int = DEFAULT_TABLE_SIZE) -> np.ndarray:
    """Populate a Maglev table: an int32 array of ``size`` target indices.

    ``names`` must be distinct and in the order that defines the indices (herder sorts
    them); ``weights`` must be positive; ``size`` must be a prime. The result is the
    table of the paper's Pseudocode 1 with Envoy's weighted turns (see the module
    docstring); with far more targets than slots, the later ones get none.
    """
    n = len(names)
    if n <= 1:
        return np.full(size, 0 if n else -1, dtype=np.int32)
    offset, skip = maglev_permutations(names, size)
    return _Builder(offset, skip, _Turns(weights, size), size).run()


def _combine(pieces: list[tuple[np.ndarray, np.ndarray]], na: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate runs of (slot, server) candidates, each grouped by server (ascending),
    into one grouped by server; a server's candidates keep the order of the pieces."""
    counts = [np.bincount(srv, minlength=na) for _, srv in pieces]
    at = sum(counts[1:], counts[0].copy())
    total = int(at.sum())
    at = at.cumsum() - at
    slot_out = np.empty(total, dtype=np.int64)
    srv_out = np.empty(total, dtype=np.int64)
    for (slot, srv), c in zip(pieces, counts, strict=True):
        if srv.size:
            where = np.arange(srv.size, dtype=np.int64)
            where += (at - (c.cumsum() - c))[srv]
            slot_out[where] = slot
            srv_out[where] = srv
            at += c
    return slot_out, srv_out


class _Builder:
    """One population (see the module docstring): :meth:`run` returns the table."""

    def __init__(self, offset: np.ndarray, skip: np.ndarray, turns: _Turns, size: int) -> None:
        self.offset, self.skip, self.turns, self.size = offset, skip, turns, size
        n = offset.size
        self.table = np.full(size, -1, dtype=np.int32)
        self.empty = np.ones(size, dtype=np.bool_)
        #: turn numbers and candidate indices fit in int32 unless the table is huge
        self.idt = np.int32 if size < 1 << 30 else np.int64
        self.scratch = np.empty(size, dtype=self.idt)  # slot -> candidate or turn; no invariant
        self.done = np.zeros(n, dtype=np.int64)  # turns taken per server
        self.scanned = np.zeros(n, dtype=np.int64)  # permutation positions read per server
        self.aidx = np.full(n, -1, dtype=np.int64)
        self.mark = np.zeros(size, dtype=np.bool_)
        # lookahead: candidates found but not used yet, grouped by server (ascending)
        self.ahead_slot = self.ahead_srv = np.zeros(0, dtype=np.int64)
        tail = 1
        while tail < _TAIL_MAX and 2 * tail <= turns.total:
            if turns.servers_in_last(2 * tail) * 2 * tail > _TAIL_CELLS:
                break
            tail *= 2
        self.tail = tail
        self.walk = min(_WALK, size // 16)

    def run(self) -> np.ndarray:
        size, total = self.size, self.turns.total
        t0 = 0
        while t0 < total:
            if total - t0 <= self.tail:
                self._tail(t0)
                break
            free = size - t0
            if free <= self.walk:
                t0 = self._walk(t0, total - self.tail)
                continue
            share = _WINDOW if free * _LATE > size else _WINDOW_LATE
            t0 = self._window(t0, min(total - self.tail, t0 + max(1, int(free * share))))
        return self.table

    def _scan(self, servers: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The empty slots among the next ``span`` positions of the servers' permutations
        (which are then read): (slot, index into ``servers``), by server then position."""
        size = self.size
        idx = None
        if not span.all():
            idx = span.nonzero()[0]
            servers, span = servers[idx], span[idx]
        start = self.scanned[servers]
        self.scanned[servers] = start + span
        ends = span.cumsum()
        sk = self.skip[servers]
        first = self.offset[servers] + start * sk
        first -= first // size * size
        # a running sum of the skips, restarted at each server: position j of segment s
        # holds first_s + j * skip_s, then mod size
        x = sk.repeat(span)
        fix = first.copy()
        fix[1:] -= first[:-1] + (span[:-1] - 1) * sk[:-1]
        x[ends - span] = fix
        x.cumsum(out=x)
        x -= x // size * size
        hit = self.empty[x].nonzero()[0]
        if servers.size <= 16 or hit.size * 8 < x.size:  # few segments, or few hits
            which = ends.searchsorted(hit, side="right")
        else:
            which = np.arange(servers.size).repeat(span)[hit]
        if idx is not None:
            which = idx[which]
        return x[hit], which

    def _window(self, t0: int, t1: int) -> int:
        """Turns ``t0..t1-1`` (see the module docstring); returns where the next window
        starts (``t1``, or earlier when a server ran out of candidates)."""
        size, turns = self.size, self.turns
        big = size  # later than any turn
        ratio = size / (size - t0)  # positions read per empty slot found
        act, k = turns.window(t0, t1)
        na = act.size
        # the lookahead's candidates of these servers, if still empty
        rest_slot = rest_srv = None
        if self.ahead_slot.size:
            aidx = self.aidx
            aidx[act] = np.arange(na)
            ca = aidx[self.ahead_srv]
            aidx[act] = -1
            mine = ca >= 0
            sel = mine.nonzero()[0]
            if sel.size < ca.size:
                rest = (~mine).nonzero()[0]
                rest_slot, rest_srv = self.ahead_slot[rest], self.ahead_srv[rest]
            slot = self.ahead_slot[sel]
            keep = self.empty[slot].nonzero()[0]
            slot = slot[keep]
            srv = ca[sel[keep]]
            have = np.bincount(srv, minlength=na)
        else:
            slot = srv = np.zeros(0, dtype=np.int64)
            have = np.zeros(na, dtype=np.int64)
        # read more of the permutations: `want` candidates, at least k
        pieces = [(slot, srv)]
        deficit = k + (_EXTRA * k + _EXTRA_SQRT * np.sqrt(k) + 1).astype(np.int64) - have
        short = k - have
        need = (deficit > 0).nonzero()[0]
        while need.size:
            d = deficit[need]
            span = np.ceil((d + np.sqrt(d)) * ratio).astype(np.int64)
            np.minimum(span, size - self.scanned[act[need]], out=span)
            found_slot, found = self._scan(act[need], span)
            found = need[found]
            pieces.append((found_slot, found))
            got = np.bincount(found, minlength=na)
            deficit -= got
            short -= got
            need = (short > 0).nonzero()[0]
        if len(pieces) > 1:
            slot, srv = _combine(pieces, na) if pieces[0][0].size or len(pieces) > 2 else pieces[1]
        m = slot.size
        count = np.bincount(srv, minlength=na)
        start = count.cumsum()
        start -= count
        # when[start_i + a]: the turn number of server i's a-th turn in the window (big
        # past its last one), so that candidate e, examined by turn e - start_i - b, is
        # reached at when[e - b]
        c = np.minimum(k, count)
        cc = c.cumsum()
        rel = np.arange(int(cc[-1]), dtype=np.int64)
        rel -= (cc - c).repeat(c)
        when = np.full(m, big, dtype=self.idt)
        when[start.repeat(c) + rel] = turns.time(act.repeat(c), self.done[act].repeat(c) + rel)
        # shared slots: those in two lists or more
        scratch = self.scratch
        ids = np.arange(m, dtype=np.int64)
        scratch[slot] = ids
        dup = (scratch[slot] != ids).nonzero()[0]
        if dup.size:
            scratch[slot[dup]] = -1
            shared = (scratch[slot] == -1).nonzero()[0]
            settled = self._settle(shared, srv[shared], slot[shared], when)
            if settled is None:  # give up: redo as two windows (one turn has no conflict)
                self._put_back(slot, act[srv], rest_slot, rest_srv)
                return self._window(t0, t0 + max(1, (t1 - t0) // 2))
            blocked = shared[settled]
            avail = count - np.bincount(srv[blocked], minlength=na)
            ok = np.ones(m, dtype=np.bool_)
            ok[blocked] = False
            rank = ok.cumsum()  # 1 + the turn (in the window) that takes candidate e
            nz = count > 0
            rank -= (rank[start[nz]] - ok[start[nz]]).repeat(count[nz])
            ok &= rank <= k[srv]
        else:
            avail = count
            rank = ids - start[srv] + 1
            ok = rank <= k[srv]
        taken = ok.nonzero()[0]
        end = t1
        out = (avail < k).nonzero()[0]
        if out.size:
            # a server ran out: stop before its first unserved turn
            end = int(turns.time(act[out], self.done[act[out]] + avail[out]).min())
            taken = taken[when[start[srv[taken]] + rank[taken] - 1] < end]
        tslot, tsrv = slot[taken], srv[taken]
        self.table[tslot] = act[tsrv]
        self.empty[tslot] = False
        got = np.bincount(tsrv, minlength=na)
        self.done[act] += got
        # the candidates after each server's last taken one go back to the lookahead
        last = start - 1
        has = got > 0
        last[has] = taken[got.cumsum()[has] - 1]
        left = (ids > last[srv]).nonzero()[0]
        self._put_back(slot[left], act[srv[left]], rest_slot, rest_srv)
        return end

    def _put_back(self, slot: np.ndarray, srv: np.ndarray, rest_slot: np.ndarray | None,
                  rest_srv: np.ndarray | None) -> None:
        """The lookahead becomes ``rest`` (other servers') plus these candidates."""
        if rest_slot is not None:
            at = rest_srv.searchsorted(srv)
            self.ahead_slot = np.insert(rest_slot, at, slot)
            self.ahead_srv = np.insert(rest_srv, at, srv)
        else:
            self.ahead_slot, self.ahead_srv = slot, srv

    def _walk(self, t0: int, t1: int) -> int:
        """Turns ``t0..t1-1``, one at a time, each walking its server's candidates."""
        size, turns = self.size, self.turns
        free = size - t0
        order = turns.order(t0)[: t1 - t0]
        n = self.offset.size
        cnt = np.bincount(order, minlength=n)
        act = cnt.nonzero()[0]
        na = act.size
        # candidates each server will walk through: a candidate is still empty at turn t
        # with odds (size - t) / free
        need = np.bincount(order, weights=free / np.arange(size - t0, size - t1, -1, dtype=np.float64),
                           minlength=n)[act]
        want = (need * _WALK_MARGIN).astype(np.int64) + 2
        aidx = self.aidx
        aidx[act] = np.arange(na)
        slot = srv = np.zeros(0, dtype=np.int64)
        if self.ahead_slot.size:
            ca = aidx[self.ahead_srv]
            sel = (ca >= 0).nonzero()[0]
            slot = self.ahead_slot[sel]
            keep = self.empty[slot].nonzero()[0]
            slot, srv = slot[keep], ca[sel[keep]]
        self.ahead_slot = self.ahead_srv = np.zeros(0, dtype=np.int64)
        deficit = want - np.bincount(srv, minlength=na)
        need = (deficit > 0).nonzero()[0]
        if need.size:
            span = np.minimum(np.ceil(deficit[need] * (size / free)).astype(np.int64),
                              size - self.scanned[act[need]])
            found_slot, found = self._scan(act[need], span)
            slot, srv = _combine([(slot, srv), (found_slot, need[found])], na)
        count = np.bincount(srv, minlength=na)
        bounds = count.cumsum().tolist()
        flat = slot.tolist()
        # each list ends with `size`, which reads as empty: the sign to read further
        lists = [[*flat[a:b], size] for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]
        at = [0] * na
        jorder = aidx[order].tolist()
        aidx[act] = -1
        servers = act.tolist()
        empty = bytearray(self.empty.view(np.uint8))
        empty.append(1)
        empty_np = np.frombuffer(empty, dtype=np.bool_)  # the same memory
        taken: list[int] = []
        put = taken.append
        for j in jorder:
            cand = lists[j]
            p = at[j]
            c = cand[p]
            while not empty[c]:
                p += 1
                c = cand[p]
            while c == size:  # read further along the permutation
                cand.pop()
                cand.extend(self._more(servers[j], free - len(taken), empty_np))
                cand.append(size)
                c = cand[p]
                while not empty[c]:
                    p += 1
                    c = cand[p]
            empty[c] = 0
            put(c)
            at[j] = p + 1
        taken_a = np.array(taken, dtype=np.int64)
        self.table[taken_a] = order
        self.empty[taken_a] = False
        self.done[act] += cnt[act]
        return t1

    def _more(self, server: int, free: int, empty: np.ndarray) -> list[int]:
        """More candidates of one server, ``free`` slots being empty (for :meth:`_walk`)."""
        size = self.size
        span = min(size - int(self.scanned[server]), -(-_WALK_MORE * size // free))
        start = int(self.scanned[server])
        self.scanned[server] = start + span
        pos = np.arange(start, start + span, dtype=np.int64)
        pos *= int(self.skip[server])
        pos += int(self.offset[server])
        pos %= size
        return pos[empty[pos]].tolist()

    def _settle(self, shared: np.ndarray, srv: np.ndarray, slot: np.ndarray,
                when: np.ndarray) -> np.ndarray | None:
        """Which of the shared candidates (entries ``shared``, grouped by server ``srv``; at
        ``slot``) another server reaches first, at the fixed point (None: not found)."""
        big = self.size
        scratch = self.scratch
        count = shared.size
        first = np.empty(count, dtype=np.bool_)
        first[0] = True
        np.not_equal(srv[1:], srv[:-1], out=first[1:])
        starts = first.nonzero()[0]
        glen = np.diff(np.append(starts, count))
        group = starts.repeat(glen)  # each one's server's first one
        ids = np.arange(count, dtype=np.int64)
        # first guess: others take half of the server's earlier shared candidates
        guess = ids - group
        guess >>= 1
        np.subtract(shared, guess, out=guess)
        reach = when[guess]
        blocked = np.zeros(count, dtype=np.bool_)
        rounds = 0
        while True:  # every candidate at once, while many change
            rounds += 1
            scratch[slot] = big
            np.minimum.at(scratch, slot, reach)
            now = reach > scratch[slot]
            now &= reach < big
            changed = (now != blocked).nonzero()[0]
            blocked = now
            if not changed.size:
                return blocked
            # (after the first round, arrivals match the flags of the round before)
            if rounds > 1 and changed.size * _FEW < count or rounds >= _MAX_ROUNDS:
                break
            b = blocked.cumsum()
            b -= blocked
            b -= b[group]
            np.subtract(shared, b, out=b)
            reach = when[b]
        # then only the servers whose flags changed, and the slots whose arrivals changed
        gid = first.cumsum()
        gid -= 1
        dirty = np.zeros(starts.size, dtype=np.bool_)
        mark = self.mark
        while rounds < _MAX_ROUNDS:
            rounds += 1
            dirty[gid[changed]] = True
            dg = dirty.nonzero()[0]
            dirty[dg] = False
            ln = glen[dg]
            lc = ln.cumsum()
            u = np.arange(int(lc[-1]), dtype=np.int64)
            lc -= ln
            u += (starts[dg] - lc).repeat(ln)
            b = blocked[u]
            e = b.cumsum()
            e -= b
            e -= e[lc].repeat(ln)
            np.subtract(shared[u], e, out=e)
            new = when[e]
            diff = (new != reach[u]).nonzero()[0]
            if not diff.size:
                return blocked
            ch = u[diff]
            reach[ch] = new[diff]
            s = slot[ch]
            mark[s] = True
            a = mark[slot].nonzero()[0]
            mark[s] = False
            sa, ra = slot[a], reach[a]
            scratch[sa] = big
            np.minimum.at(scratch, sa, ra)
            now = ra > scratch[sa]
            now &= ra < big
            flip = (now != blocked[a]).nonzero()[0]
            if not flip.size:
                return blocked
            changed = a[flip]
            blocked[changed] = now[flip]
        return None

    def _tail(self, t0: int) -> None:
        """The remaining turns, from the inverse permutations: each turn takes the empty
        slot that comes first in its server's permutation (all of them lie ahead of
        where the server stopped)."""
        size = self.size
        rest = self.turns.order(t0)
        free = self.empty.nonzero()[0]
        servers, row = np.unique(rest, return_inverse=True)
        inv = np.ones_like(servers)  # skip ** (size - 2) = skip ** -1 mod size
        base = self.skip[servers] % size
        e = size - 2
        while e:
            if e & 1:
                inv = inv * base % size
            base = base * base % size
            e >>= 1
        position = np.empty((servers.size, free.size), dtype=np.int64)
        np.subtract(free[None, :], self.offset[servers][:, None], out=position)
        position %= size
        position *= inv[:, None]
        position %= size
        best = position.argmin(axis=1).tolist()
        many = (np.bincount(row) > _TAIL_SORT).tolist()  # servers with many turns walk a sort
        orders: list[list[int] | None] = [None] * servers.size
        at = [0] * servers.size
        used = bytearray(free.size)
        used_np = np.frombuffer(used, dtype=np.bool_)
        out = []
        for r in row.tolist():
            c = best[r]
            if used[c]:
                if many[r]:
                    order = orders[r]
                    if order is None:
                        order = orders[r] = position[r].argsort().tolist()
                    p = at[r]
                    while used[order[p]]:
                        p += 1
                    c = order[p]
                    at[r] = p + 1
                else:
                    c = int(np.where(used_np, size, position[r]).argmin())
            used[c] = 1
            out.append(c)
        taken = free[np.array(out, dtype=np.int64)]
        self.table[taken] = rest
        self.empty[taken] = False


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
