"""Fixed hashes: pinned values, the numpy path equals the scalar one, and picks do not
depend on PYTHONHASHSEED (Python's salted hash() is never used)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.balance.hashing import M64, hash_bytes, hash_name, ketama_points, mix64, mix64_array, rehash

pytestmark = pytest.mark.unit


def test_pinned_values():
    # Changing any of these moves keys between servers on upgrade: do it on purpose only.
    assert mix64(0) == 0xE220A8397B1DCDAF  # splitmix64's first output for seed 0
    assert mix64(1) == 0x910A2DEC89025CC1
    assert hash_bytes(b"") == int.from_bytes(bytes.fromhex("e4a6a0577479b2b4"), "little")
    assert hash_name("web-1", "maglev-offset") != hash_name("web-1", "maglev-skip")
    # md5("a-0") = a165efd196e17ba195ad4dc50028b39a: its first four bytes, little-endian
    assert ketama_points("a", 1)[0] == 0xd1ef65a1
    assert mix64(-1) == mix64(M64)


@settings(max_examples=50)
@given(st.lists(st.integers(0, M64), min_size=1, max_size=20))
def test_vector_mix_equals_scalar_mix(values):
    assert mix64_array(np.array(values, dtype=np.uint64)).tolist() == [mix64(v) for v in values]
    assert all(0 <= rehash(v, 3) <= M64 for v in values)


SCRIPT = """
import json
from herder.balance import resolve
from herder.balance.keys import source_key, uri_key
servers = [("web-%d" % i, 1 + i % 3) for i in range(12)]
out = {}
for name in ("hash", "ring", "rendezvous", "maglev", "random", "p2c"):
    p = resolve(name, {"table_size": 251} if name == "maglev" else {}).build(servers)
    out[name] = [p.pick(k).name for k in (source_key("192.0.2.%d" % i) for i in range(40))]
out["uri"] = uri_key("/a/b?c")
print(json.dumps(out))
"""


def test_picks_are_the_same_in_every_process():
    runs = []
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(res.stdout))
    assert runs[0] == runs[1]
