"""The [dns] section: defaults, and errors that name file:line:key."""

from __future__ import annotations

import pytest

from herder.config.errors import ConfigErrors
from herder.config.load import load_strings
from herder.dns.config import DnsSettings, check_references

pytestmark = pytest.mark.unit

BASE = """\
[dns]
listen = "127.0.0.1:5300"
[dns.zones."example.com"]
records = ["www A 192.0.2.1"]
"""


def load(text: str) -> DnsSettings:
    return load_strings([("t.toml", text)]).section("dns")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("t.toml", text)])
    return [str(e) for e in ei.value.errors]


def test_defaults():
    s = load(BASE)
    assert [str(e) for e in s.listen] == ["127.0.0.1:5300"]
    assert (s.udp_payload, s.ecs, s.ttl, s.default_region) == (1232, True, 20, None)
    assert len(s.zones) == 1 and s.names == () and s.maps == ()
    assert load(BASE) == s  # equal when the source is: a reload of an unchanged file changes nothing
    with_map = BASE + '[dns.maps."example.com"]\nmode = "cname"\n[dns.maps."example.com".regions.eu]\n' \
        'name_servers = { "ns1.eu.example.com" = "192.0.2.1" }\n'
    assert load(with_map) == load(with_map)


def test_names_inherit_the_section_ttl():
    s = load('[pools.web]\n' + BASE.replace("[dns.zones", 'ttl = 7\n[dns.names."app.example.com"]\npool = "web"\n[dns.zones'))
    assert s.names[0].ttl == 7 and s.names[0].policy == "simple"


def test_zone_file_relative_to_the_config(tmp_path):
    (tmp_path / "ex.zone").write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\nwww A 192.0.2.7\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dns]\nlisten = "127.0.0.1:5300"\n[dns.zones."example.com"]\nfile = "ex.zone"\n')
    from herder.config.load import load_files

    s = load_files([str(cfg)]).section("dns")
    assert s.zones[0].source == str(tmp_path / "ex.zone")


BAD = [
    ("unknown key", BASE.replace("[dns.zones", "colour = 1\n[dns.zones"), "t.toml:3: dns.colour: unknown key 'colour'"),
    ("unknown zone key", BASE + "color = 1\n", "t.toml:5: dns.zones.\"example.com\".color: unknown key 'color'"),
    ("bad policy", BASE + '[dns.names."a.example.com"]\npool = "p"\npolicy = "wieghted"\n',
     "t.toml:7: dns.names.\"a.example.com\".policy: expected one of 'simple'"),
    ("bad record", BASE.replace('"www A 192.0.2.1"', '"www A 192.0.2.1", "x A nope"'),
     't.toml:4: dns.zones."example.com".records[1]:'),
    ("name outside the zones", BASE + '[dns.names."a.example.org"]\npool = "p"\n',
     "t.toml:5: dns.names.\"a.example.org\": name 'a.example.org' is in none of the zones"),
    ("sorry needed", BASE + '[dns.names."a.example.com"]\npool = "p"\nfallback = "sorry"\n',
     'fallback = "sorry" needs `sorry`'),
    ("secondary without failover", BASE + '[dns.names."a.example.com"]\npool = "p"\nsecondary = "q"\n',
     "`secondary` is only used by policy = \"failover\""),
    ("delegate map needs its zone", BASE + '[dns.maps."m.example.com"]\n',
     "a delegate map's domain must be a zone of its own"),
    ("region role needs a region", BASE + '[dns.maps."example.com"]\nrole = "region"\n',
     'role = "region" needs `region`'),
    ("zone file missing", BASE.replace('records = ["www A 192.0.2.1"]', 'file = "/nonexistent.zone"'),
     "cannot read zone file"),
    ("payload too big", BASE.replace("[dns.zones", "udp_payload = 65000\n[dns.zones"),
     "t.toml:3: dns.udp_payload: expected an integer 512..4096"),
    ("latency prefix", BASE + '[dns.latency]\n"nope" = { eu = 1 }\n', "t.toml:6: dns.latency.nope: expected a client prefix"),
    ("both file and records", BASE.replace("records =", 'file = "x.zone"\nrecords ='), "give either `file` or `records`"),
]


@pytest.mark.parametrize("desc,text,expected", BAD, ids=[b[0] for b in BAD])
def test_errors_name_file_line_and_key(desc, text, expected):
    errs = errors(text)
    assert any(expected in e for e in errs), errs


def test_references_are_checked_once_files_are_merged():
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("t.toml", BASE + '[dns.names."a.example.com"]\npool = "nope"\n'
                       '[dns.maps."example.com"]\nmode = "cname"\nlocal = ["mars"]\n')])
    errs = [str(e) for e in ei.value.errors]
    assert "t.toml:6: dns.names.a.example.com.pool: pool 'nope' is not defined" in errs, errs
    assert any("region 'mars' is not defined" in e for e in errs), errs


def test_check_references_directly():
    from herder.dns.config import DnsSettings

    s = load('[pools.web]\n' + BASE + '[dns.names."a.example.com"]\npool = "web"\n')
    assert isinstance(s, DnsSettings)
    assert check_references(s, {}, {}) == ["t.toml:7: dns.names.a.example.com.pool: pool 'web' is not defined"]
