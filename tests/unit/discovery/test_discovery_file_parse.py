"""Server files: JSON and TOML, validated by the config's server schema, errors with file:line."""

from __future__ import annotations

import pytest

from herder.discovery.file import detect_format, json_lines, parse_servers
from herder.pool.model import AdminMode, Endpoint

pytestmark = pytest.mark.unit

JSON_OK = """[
  {"name": "web1", "address": "127.0.0.1:8081"},
  {"name": "web2", "address": "127.0.0.1", "port": 8082, "weight": 3, "admin": "drain"}
]
"""

TOML_OK = """\
[[servers]]
name = "web1"
address = "127.0.0.1:8081"

[[servers]]
name = "web2"
address = "[::1]:8082"
backup = true
"""


def test_json_list():
    servers, errors = parse_servers("s.json", JSON_OK)
    assert errors == []
    assert [s.name for s in servers] == ["web1", "web2"]
    assert servers[1].address == Endpoint("127.0.0.1", 8082)
    assert servers[1].weight == 3 and servers[1].admin is AdminMode.DRAIN


def test_json_object_with_servers_key():
    servers, errors = parse_servers("s.json", '{"servers": [{"name": "a", "address": "10.0.0.1:80"}]}')
    assert errors == [] and servers[0].name == "a"


def test_toml():
    servers, errors = parse_servers("s.toml", TOML_OK)
    assert errors == []
    assert servers[1].address == Endpoint("::1", 8082) and servers[1].backup


def test_empty_list_is_a_valid_edit():
    assert parse_servers("s.json", "[]") == ((), [])
    assert parse_servers("s.toml", "servers = []\n") == ((), [])


# (description, file name, text, expected error prefix)
ERRORS = [
    ("bad port names line and key", "s.json",
     '[\n {"name": "a", "address": "127.0.0.1:80"},\n {"name": "b",\n  "address": "127.0.0.1:x"}\n]',
     "s.json:4: [1].address: expected an address"),
    ("unknown key with a hint", "s.json", '[{"name": "a", "address": "127.0.0.1:80", "wieght": 2}]',
     "s.json:1: [0].wieght: unknown key 'wieght'; did you mean 'weight'?"),
    ("duplicate names", "s.json",
     '[{"name": "a", "address": "127.0.0.1:80"},\n {"name": "a", "address": "127.0.0.1:81"}]',
     "s.json:2: [1].name: duplicate name 'a'"),
    ("JSON syntax error with its line", "s.json", '[\n {"name": "a",,}\n]', "s.json:2: JSON syntax error"),
    ("TOML syntax error with its line", "s.toml", "[[servers]]\nname = \n", "s.toml:2: TOML syntax error"),
    ("empty TOML file (a truncated write)", "s.toml", "", "s.toml: no 'servers' key"),
    ("TOML missing address", "s.toml", '[[servers]]\nname = "a"\n',
     "s.toml:1: servers[0]: missing required key 'address'"),
    ("not a list", "s.json", '"web1"', "s.json:1: expected a list of servers"),
    ("extra top-level key", "s.json", '{"servers": [], "x": 1}', "s.json:1: x: unknown key 'x'"),
]


@pytest.mark.parametrize("desc,name,text,expected", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(desc, name, text, expected):
    servers, errors = parse_servers(name, text)
    assert servers is None
    assert any(str(e).startswith(expected) for e in errors), [str(e) for e in errors]


def test_json_lines_maps_paths_to_lines():
    lm = json_lines(JSON_OK)
    assert lm.line((0,)) == 2
    assert lm.line((1, "weight")) == 3
    assert json_lines('{"a": [1,\n 2]}').line(("a", 1)) == 2
    assert json_lines('{"a": "x\\"y",\n"b": 1}').line(("b",)) == 2
    assert json_lines("[1, {").line((1,)) == 1  # never raises on odd input


@pytest.mark.parametrize("name,text,fmt", [("a.json", "", "json"), ("a.toml", "[", "toml"),
                                           ("servers", " [", "json"), ("servers", "[[servers]]", "json"),
                                           ("servers", "servers = []", "toml")])
def test_detect_format(name, text, fmt):
    assert detect_format(name, text) == fmt


def test_toml_without_extension_is_recognised():
    servers, errors = parse_servers("servers", TOML_OK)
    assert errors == [] and len(servers) == 2
