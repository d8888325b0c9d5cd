"""The registry: names, modules and config values are one word; every spelling of
ipvsadm, HAProxy and nginx resolves; options are validated."""

from __future__ import annotations

import importlib

import pytest

from herder.balance import algorithms, aliases, get, resolve

pytestmark = pytest.mark.unit


def test_registry_key_module_and_config_value_are_the_same_word():
    for a in algorithms():
        module = importlib.import_module(f"herder.balance.{a.name.replace('-', '_')}")
        picker_classes = [v for v in vars(module).values() if getattr(v, "algorithm", None) == a.name]
        assert picker_classes, a.name
        assert resolve(a.name).algorithm is a
        assert get(a.name) is a


@pytest.mark.parametrize("spelling,algorithm", [
    # ipvsadm
    ("rr", "roundrobin"), ("wrr", "roundrobin"), ("lc", "lc"), ("wlc", "leastconn"), ("sed", "sed"),
    ("nq", "nq"), ("sh", "hash"), ("dh", "hash"), ("mh", "maglev"), ("lblc", "lblc"), ("lblcr", "lblcr"),
    ("fo", "fo"), ("ovf", "ovf"),
    # HAProxy
    ("roundrobin", "roundrobin"), ("static-rr", "static-rr"), ("leastconn", "leastconn"),
    ("first", "first"), ("source", "hash"), ("uri", "hash"), ("url_param userid", "hash"),
    ("hdr(host)", "hash"), ("random", "random"), ("random(2)", "p2c"), ("cookie(sid)", "hash"),
    # nginx
    ("ip_hash", "hash"), ("hash $remote_addr", "hash"), ("hash $request_uri consistent", "ring"),
    ("least_conn", "leastconn"), ("random two", "p2c"), ("random two least_conn", "p2c"),
    # herder and papers
    ("maglev", "maglev"), ("ring", "ring"), ("ketama", "ring"), ("rendezvous", "rendezvous"),
    ("hrw", "rendezvous"), ("p2c", "p2c"), ("twos", "p2c"), ("peak_ewma", "peak_ewma"),
    ("peak-ewma", "peak_ewma"), ("STATIC_RR", "static-rr"),
])
def test_every_known_spelling_resolves(spelling, algorithm):
    assert resolve(spelling).name == algorithm


@pytest.mark.parametrize("spelling,key", [
    ("source", "source"), ("sh", "source"), ("dh", "destination"), ("ip_hash", "source prefix 24"),
    ("uri whole len 10 depth 2", "uri whole len 10 depth 2"), ("uri path-only", "uri path-only"),
    ("hdr(host) use_domain_only", "hdr(host) use_domain_only"), ("url_param userid", "url_param(userid)"),
    ("hash $http_x_user_id", "hdr(x-user-id)"), ("hash $cookie_sid", "cookie(sid)"),
    ("hash $arg_id", "url_param(id)"), ("maglev", "source"), ("lblc", "destination"), ("roundrobin", "none"),
])
def test_spellings_imply_the_key(spelling, key):
    assert str(resolve(spelling).key) == key


def test_options_override_the_spelling_and_are_converted():
    p = resolve("source", {"hash_type": "consistent", "points": "320", "key": "hdr(x-id)"})
    assert p.name == "ring" and p.options["points"] == 320 and str(p.key) == "hdr(x-id)"
    assert resolve("rr", {"weighted": "yes"}).options["weighted"] is True
    assert resolve("maglev", {"hash-balance-factor": 150}).balance_factor == 150
    assert resolve("roundrobin", {"allbackups": "off"}).allbackups is False


@pytest.mark.parametrize("spec,options,message", [
    ("maglevv", None, "did you mean maglev"),
    ("nonsense", None, "unknown balance algorithm"),
    ("", None, "empty"),
    ("hdr", None, "needs a name"),
    ("url_param", None, "needs a name"),
    ("roundrobin", {"table_size": 3}, "unknown option"),
    ("roundrobin", {"key": "source"}, "unknown option"),
    ("maglev", {"table_size": "big"}, "not a int"),
    ("maglev", {"table_size": 100}, "prime"),
    ("ring", {"points": 0}, "below the minimum"),
    ("rr", {"weighted": "maybe"}, "not a bool"),
    ("maglev", {"hash_type": "consistent"}, None),
    ("roundrobin", {"hash_type": "consistent"}, "does not hash"),
    ("maglev", {"hash_type": "map-based"}, "does not apply"),
    ("hash", {"hash_type": "sdbm"}, "not consistent or map-based"),
    ("uri whole depth", None, "needs a number"),
    ("random(x)", None, "integer"),
    ("leastconn(3)", None, "no argument"),
    ("source oops", None, "unexpected 'oops'"),
    ("hash $upstream_addr", None, "cannot hash the nginx variable"),
    ("maglev", {"key": "body"}, "unknown key"),
])
def test_bad_settings_are_reported(spec, options, message):
    if message is None:
        assert resolve(spec, options).name == "maglev"
        return
    with pytest.raises(ValueError, match=message):
        resolve(spec, options)


def test_every_alias_points_to_an_algorithm():
    names = {a.name for a in algorithms()}
    for alias in aliases():
        assert alias.target in names
        assert alias.origin


def test_policy_describes_itself():
    assert resolve("mh").describe() == "maglev (table_size=65537), key source"
    assert "hash_balance_factor 125" in resolve("ring", {"hash_balance_factor": 125}).describe()
