"""Check tables in herder's TOML: keys, defaults, and errors that name file:line:key."""

from __future__ import annotations

import pytest

from herder.config.load import load_text
from herder.health.timing import CheckTiming
from herder.pool.model import HealthState

pytestmark = pytest.mark.unit

HEAD = """\
[pools.web]
initial_state = "up"

[[pools.web.servers]]
name = "s1"
address = "127.0.0.1:8080"

"""


def load(body: str):
    frag = load_text("t.toml", HEAD + body)
    return frag.pools.get("web"), [str(e) for e in frag.ctx.errors]


def test_http_check_with_every_key():
    pool, errors = load("""\
[[pools.web.checks]]
type = "http"
name = "health"
method = "HEAD"
path = "/index.html"
host = "www.example.test"
version = "HTTP/1.0"
expect_status = ["2xx", 302]
expect_body = "ok"
headers = { X-Check = "herder" }
inter = "500ms"
fastinter = 0.1
downinter = "5s"
timeout = "250ms"
rise = 1
fall = 5
spread_checks = 5
port = 8081
addr = "127.0.0.2"
""")
    assert errors == []
    spec = pool.checks[0]
    assert spec["method"] == "HEAD" and spec["version"] == "1.0" and spec["host"] == "www.example.test"
    assert spec["expect_status"] == ((200, 299), (302, 302))
    assert spec["headers"] == (("X-Check", "herder"),)
    t = CheckTiming.from_spec(spec)
    assert (t.inter, t.fastinter, t.downinter, t.timeout, t.rise, t.fall, t.spread_checks) == (
        0.5, 0.1, 5.0, 0.25, 1, 5, 5)
    assert pool.settings["initial_state"] is HealthState.UP


def test_defaults():
    pool, errors = load('[[pools.web.checks]]\ntype = "http"\n')
    assert errors == []
    spec = pool.checks[0]
    assert (spec["method"], spec["path"], spec["version"], spec["expect_status"]) == ("GET", "/", "1.1", ((200, 399),))
    t = CheckTiming.from_spec(spec)
    assert (t.inter, t.rise, t.fall, t.check_timeout) == (2.0, 2, 3, 2.0)


def test_exec_command_string_or_array():
    pool, errors = load('[[pools.web.checks]]\ntype = "exec"\ncommand = "killall -0 haproxy"\n'
                        '[[pools.web.checks]]\ntype = "exec"\ncommand = ["/bin/true", "-x"]\n')
    assert errors == []
    assert pool.checks[0]["command"] == "killall -0 haproxy"
    assert pool.checks[1]["command"] == ("/bin/true", "-x")


def test_dns_check():
    pool, errors = load('[[pools.web.checks]]\ntype = "dns"\nname = "www.example.test"\nqtype = "aaaa"\n'
                        'expect_answer = "2001:db8::1"\n')
    assert errors == []
    assert pool.checks[0]["qtype"] == "AAAA" and pool.checks[0]["expect_answer"] == ("2001:db8::1",)


@pytest.mark.parametrize("body,expected", [
    ('[[pools.web.checks]]\ntype = "http"\nintre = "1s"\n',
     "t.toml:10: pools.web.checks[0].intre: unknown key 'intre'; did you mean 'inter'?"),
    ('[[pools.web.checks]]\ntype = "http"\nexpect_status = "20x"\n',
     "t.toml:10: pools.web.checks[0].expect_status: expected an HTTP status or range"),
    ('[[pools.web.checks]]\ntype = "htp"\n',
     "t.toml:9: pools.web.checks[0].type: unknown check type string 'htp'"),
    ('[[pools.web.checks]]\ntype = "exec"\n',
     "t.toml:8: pools.web.checks[0]: missing required key 'command'"),
    ('[[pools.web.checks]]\ntype = "tcp"\nrise = 0\n',
     "t.toml:10: pools.web.checks[0].rise: expected an integer 1..1000"),
    ('[[pools.web.checks]]\ntype = "tcp"\ninter = "fast"\n',
     "t.toml:10: pools.web.checks[0].inter: expected a duration"),
    ('[[pools.web.checks]]\ntype = "dns"\nname = "x.test"\nqtype = "BOGUS"\n',
     "t.toml:11: pools.web.checks[0].qtype: unknown record type 'BOGUS'"),
    ('[pools.web.passive]\nerror_limit = 0\n',
     "t.toml:9: pools.web.passive.error_limit: expected an integer 1..100000"),
])
def test_errors_name_file_line_and_key(body, expected):
    _, errors = load(body)
    assert any(e.startswith(expected) for e in errors), errors


def test_passive_table():
    pool, errors = load('[pools.web.passive]\nerror_limit = 5\nobserve = "layer4"\neject_time = "10s"\n')
    assert errors == []
    p = pool.settings["passive"]
    assert (p["error_limit"], p["observe"], p["max_ejected_percent"], p["eject_time"]) == (5, "layer4", 10, 10.0)


def test_port_and_addr_override_the_checked_address():
    from herder.health.base import target_for
    from herder.pool.model import Endpoint

    server = Endpoint("10.0.0.1", 80)
    assert target_for("web", "s1", server, {"port": 8081, "addr": None}).address == Endpoint("10.0.0.1", 8081)
    assert target_for("web", "s1", server, {"addr": "10.0.0.9"}).address == Endpoint("10.0.0.9", 80)
    assert target_for("web", "s1", server, {}).address == server
