"""Zones from master files and from config lines, and their errors with line numbers."""

from __future__ import annotations

import pytest

from herder.dns.wire import RType, name_from_text
from herder.dns.zone import (
    ZoneError,
    ZoneSet,
    load_zone_file,
    load_zone_text,
    origin_from_filename,
    zone_from_records,
)

pytestmark = pytest.mark.unit

ZONE = """\
$ORIGIN Example.COM.
$TTL 300
@       IN SOA ns1 hostmaster 2024010101 3600 600 86400 120
@       IN NS  ns1
ns1     IN A   192.0.2.53
www     IN A   192.0.2.80
a.b.c   IN TXT "deep"
*.w     IN A   192.0.2.9
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.99
"""


def key(text: str) -> bytes:
    return name_from_text(text).lower()


def test_master_file_is_loaded_into_lookup_form():
    z = load_zone_text(ZONE, filename="ex.zone")
    assert z.origin == name_from_text("Example.COM")  # spelled as in the file
    assert z.key == key("example.com")
    assert z.rrset(key("www.example.com"), RType.A).rdatas == ((b"\xc0\x00\x02\x50",),)
    assert z.negative_ttl == 120  # min(SOA TTL 300, MINIMUM 120)
    assert key("b.c.example.com") in z.names and key("c.example.com") in z.names  # empty non-terminals
    assert z.cuts == frozenset({key("sub.example.com")})
    assert z.wildcards


def test_origin_from_the_file_name(tmp_path):
    for fname in ("example.org.zone", "db.example.org", "example.org.db", "example.org"):
        assert origin_from_filename(f"/x/{fname}") == "example.org."
    f = tmp_path / "example.org.zone"
    f.write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\nwww A 192.0.2.1\n")
    z = load_zone_file(str(f))
    assert z.key == key("example.org")


@pytest.mark.parametrize("text,line,msg", [
    ("$TTL 60\n@ SOA ns hm 1 2 3 4 5\nwww IN AXX 1.2.3.4\n", 3, "unknown rdatatype"),
    ("$TTL 60\nwww IN A 1.2.3.4\n", None, "no SOA"),
])
def test_errors_name_the_line(text, line, msg):
    with pytest.raises(ZoneError) as ei:
        load_zone_text(text, "example.org.", filename="bad.zone")
    assert ei.value.line == line
    assert msg in str(ei.value)
    assert str(ei.value).startswith("bad.zone:" + (f"{line}:" if line else ""))


def test_unreadable_zone_file(tmp_path):
    with pytest.raises(ZoneError, match="cannot read zone file"):
        load_zone_file(str(tmp_path / "missing.zone"))


def test_records_from_config_get_a_generated_soa():
    z, errors = zone_from_records("example.net", ["www A 192.0.2.1", "@ NS ns1.example.net."], ttl=120)
    assert errors == [] and z is not None
    soa = z.soa
    assert soa.ttl == 120 and z.negative_ttl == 60
    z, errors = zone_from_records("example.net", ["www A 192.0.2.1"], soa="ns1 hm 7 1 1 1 30")
    assert z.negative_ttl == 30


def test_record_errors_point_at_the_record():
    z, errors = zone_from_records("example.net", ["www A 192.0.2.1", "bad A nope", "ok TXT x"])
    assert z is None and errors[0][0] == 1
    z, errors = zone_from_records("example.net", ["www A 192.0.2.1", "bad A 1.2.3", "ok TXT x"])
    assert z is None and errors[0][0] == 1  # dnspython says line 4 here; the record is found anyway
    z, errors = zone_from_records("example.net", ["www CNAME a", "www A 192.0.2.1"])
    assert z is None and errors and "CNAME" in errors[0][1]
    z, errors = zone_from_records("example.net", ["@ SOA a b 1 2 3 4 5"], soa="a b 1 2 3 4 5")
    assert errors and errors[0][0] is None


def test_zone_set_finds_the_most_specific_zone():
    parent = load_zone_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n", "edge.test.")
    child = load_zone_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n", "dscj.edge.test.")
    zs = ZoneSet([parent, child])
    assert zs.find(key("e1.dscj.edge.test")) is child
    assert zs.find(key("x.edge.test")) is parent
    assert zs.find(key("edge.test.org")) is None
    with pytest.raises(ZoneError, match="defined twice"):
        ZoneSet([parent, parent])
