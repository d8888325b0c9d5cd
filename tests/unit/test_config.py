"""The native TOML loader: values into the model, and one clear error per problem."""

from __future__ import annotations

import textwrap

import pytest

from herder.config import ConfigErrors, load_files
from herder.config.lines import scan
from herder.config.load import load_strings
from herder.config.schema import parse_duration, parse_endpoint
from herder.pool.model import AdminMode, Endpoint

pytestmark = pytest.mark.unit

GOOD = """\
[herder]
log_level = "debug"
log_format = "json"

[regions.eu]
prefixes = ["198.18.1.0/24", "198.18.2.0/24"]

[pools.web]
balance = "maglev"

[[pools.web.servers]]
name = "a"
address = "198.18.0.11:80"
weight = 2
region = "eu"

[[pools.web.servers]]
name = "b"
address = "198.18.0.12"
port = 8000
admin = "drain"
backup = true

[services.www]
pool = "web"
mode = "http"
listen = ["198.18.0.100:80", "[2001:db8::1]:80"]
"""


def errors_of(tmp_path, text: str, name: str = "h.toml") -> list[str]:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigErrors) as ei:
        load_files([str(p)])
    return [str(e) for e in ei.value.errors]


def test_good_config_loads_into_the_model(tmp_path):
    p = tmp_path / "good.toml"
    p.write_text(GOOD)
    cfg = load_files([str(p)])
    assert cfg.log_level == "debug" and cfg.log_format == "json"
    web = cfg.pools["web"]
    assert web.balance == "maglev"
    a, b = web.servers
    assert a.address == Endpoint("198.18.0.11", 80) and a.weight == 2 and a.region == "eu"
    assert b.address == Endpoint("198.18.0.12", 8000) and b.admin is AdminMode.DRAIN and b.backup
    assert cfg.services["www"].listen == (Endpoint("198.18.0.100", 80), Endpoint("2001:db8::1", 80))
    assert str(cfg.regions["eu"].prefixes[1]) == "198.18.2.0/24"


def test_misspelt_key_names_file_line_key_and_suggests(tmp_path):
    errs = errors_of(tmp_path, """\
        [pools.web]
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:80"
        wieght = 3
        """)
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/h.toml:5: pools.web.servers[0].wieght: unknown key 'wieght'")
    assert "did you mean 'weight'?" in errs[0]


def test_wrong_type_says_what_was_expected(tmp_path):
    errs = errors_of(tmp_path, """\
        [pools.web]
        balance = 3
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:80"
        weight = "heavy"
        """)
    assert errs == [
        f"{tmp_path}/h.toml:2: pools.web.balance: expected a balance algorithm name, got integer 3",
        f"{tmp_path}/h.toml:6: pools.web.servers[0].weight: expected an integer 0..65535, got string 'heavy'",
    ]


def test_server_without_address(tmp_path):
    errs = errors_of(tmp_path, """\
        [pools.web]

        [[pools.web.servers]]
        name = "a"
        """)
    assert errs == [f"{tmp_path}/h.toml:3: pools.web.servers[0]: missing required key 'address' "
                    "(an address \"host:port\" or \"host\")"]


def test_duplicate_server_name_points_at_both(tmp_path):
    errs = errors_of(tmp_path, """\
        [pools.web]
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:80"
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:81"
        """)
    assert errs == [
        f"{tmp_path}/h.toml:6: pools.web.servers[1].name: duplicate name 'a' (first used at {tmp_path}/h.toml:2)"]


def test_duplicate_pool_across_files(tmp_path):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('[pools.web]\nbalance = "rr"\n')
    b.write_text('\n\n[pools.web]\nbalance = "rr"\n')
    with pytest.raises(ConfigErrors) as ei:
        load_files([str(a), str(b)])
    assert [str(e) for e in ei.value.errors] == [
        f"{b}:3: pools.web: duplicate pool 'web' (also defined at {a}:1)"]


def test_unreadable_file_is_an_error_and_other_files_are_still_checked(tmp_path):
    missing = tmp_path / "missing.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools.web]\nbalanse = 1\n")
    with pytest.raises(ConfigErrors) as ei:
        load_files([str(missing), str(bad)])
    errs = [str(e) for e in ei.value.errors]
    assert errs[0] == f"{missing}: cannot read file: No such file or directory"
    assert errs[1].startswith(f"{bad}:2: pools.web.balanse: unknown key")
    assert len(errs) == 2


def test_all_errors_of_a_file_are_reported(tmp_path):
    errs = errors_of(tmp_path, """\
        [herder]
        log_level = "loud"
        [pools.web]
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:99999"
        [[pools.web.servers]]
        name = "b bad"
        address = "127.0.0.1:80"
        [services.www]
        pool = "nowhere"
        mode = "smtp"
        [unknown]
        x = 1
        """)
    lines = [e.split(": ", 1)[0].rsplit(":", 1)[1] for e in errs]
    assert sorted(lines, key=int) == ["2", "6", "8", "12", "13"], errs
    assert any("expected one of 'debug'" in e for e in errs)
    assert any("port 99999 is outside 1..65535" in e for e in errs)
    assert any("unknown top-level table 'unknown'" in e for e in errs)


def test_reference_to_missing_pool_and_region(tmp_path):
    errs = errors_of(tmp_path, """\
        [pools.web]
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:80"
        region = "mars"
        [services.www]
        pool = "webb"
        """)
    assert errs == [
        f"{tmp_path}/h.toml:7: services.www.pool: service 'www' names pool 'webb', which no file defines "
        "(defined pools: web)",
        f"{tmp_path}/h.toml:5: pools.web.servers[0].region: server 'a' names region 'mars', which no file defines",
    ]


def test_toml_syntax_error_has_a_line(tmp_path):
    errs = errors_of(tmp_path, '[pools.web]\nbalance = "rr\n')
    assert len(errs) == 1 and errs[0].startswith(f"{tmp_path}/h.toml:2: TOML syntax error")


def test_unknown_format_is_an_error(tmp_path):
    errs = errors_of(tmp_path, "hello", name="weird.txt")
    assert "cannot tell the format of this file" in errs[0]


def test_inline_arrays_of_tables_get_element_lines():
    cfg_text = 'x = 1\n[pools.web]\nservers = [\n  {name = "a", address = "1.2.3.4:80"},\n  {name = "b", adress = "x"},\n]\n'
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("inline.toml", cfg_text)])
    errs = [str(e) for e in ei.value.errors]
    assert "inline.toml:1: x: unknown top-level table 'x'" in errs[0]
    assert any(e.startswith("inline.toml:5: pools.web.servers[1].adress: unknown key") for e in errs), errs


def test_line_scanner_handles_headers_dotted_and_quoted_keys():
    text = textwrap.dedent('''\
        # comment
        a.b = 1
        "quoted key".c = 'x'
        [t]
        s = """multi
        line"""
        after = 2
        [[arr]]
        k = [1,
             2]
        [[arr]]
        k = 3
        [arr.sub]
        z = 0
        ''')
    lm = scan(text)
    assert lm.line(("a", "b")) == 2
    assert lm.line(("quoted key", "c")) == 3
    assert lm.line(("t", "after")) == 7
    assert lm.line(("arr", 0, "k", 1)) == 10
    assert lm.line(("arr", 1, "k")) == 12
    assert lm.line(("arr", 1, "sub", "z")) == 14
    assert lm.line(("t", "nothing", "deeper")) == 4


@pytest.mark.parametrize(("text", "seconds"), [("2s", 2), ("100ms", 0.1), ("1m30s", 90), ("1.5", 1.5), ("250us", 0.00025)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2x", "s", "1s2", "-1s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "ep"), [
    ("127.0.0.1:80", Endpoint("127.0.0.1", 80)),
    ("[::1]:53", Endpoint("::1", 53)),
    ("backend.local:8080", Endpoint("backend.local", 8080)),
])
def test_endpoints(text, ep):
    assert parse_endpoint(text) == ep


@pytest.mark.parametrize("text", ["127.0.0.1", "1.2.3.4:0", "300.1.2.3:80", "a b:80", "[zz]:80", "h:port"])
def test_bad_endpoints(text):
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_checks_on_the_merged_config_name_the_line_of_the_service():
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("l4.toml", '[pools.p]\n[services.a]\npool = "p"\nmode = "tcp"\nlisten = "vip.example:80"\n'
                                  '[services.b]\npool = "p"\nmode = "tcp"\nlisten = "198.18.0.1:80"\n'
                                  '[services.c]\npool = "p"\nmode = "tcp"\nlisten = "198.18.0.1:80"\n')])
    assert [str(e) for e in ei.value.errors] == [
        "l4.toml:5: services.a.listen: virtual address 'vip.example' is not an IP address",
        "l4.toml:13: services.c.listen: tcp:198.18.0.1:80 is also declared by services.b",
    ]


def test_l4_keys_on_an_http_service_are_an_error():
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("x.toml", '[pools.p]\n[services.a]\npool = "p"\nlisten = "127.0.0.1:80"\nscheduler = "mh"\n')])
    assert [str(e) for e in ei.value.errors] == [
        "x.toml:5: services.a.scheduler: 'scheduler' applies to mode tcp or udp services, not to mode http"]


def test_http_keys_on_a_tcp_service_are_an_error():
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("y.toml", '[pools.p]\n[services.a]\npool = "p"\nmode = "tcp"\nlisten = "127.0.0.1:80"\n'
                                 'forwardfor = true\n')])
    assert [str(e) for e in ei.value.errors] == [
        "y.toml:6: services.a.forwardfor: 'forwardfor' applies to mode http services, not to mode tcp"]
