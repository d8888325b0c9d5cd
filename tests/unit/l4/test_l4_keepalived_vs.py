"""keepalived.conf virtual_server / real_server blocks as herder L4 services."""

from __future__ import annotations

import pytest

from herder.config.errors import ConfigErrors
from herder.config.load import load_strings, load_text
from herder.l4.config import specs_from_config
from herder.l4.ruleset import Forward, Scheduler
from herder.pool import HealthState

pytestmark = pytest.mark.unit

CONF = """\
virtual_server 198.18.0.100 80 {
    delay_loop 2
    lb_algo wrr
    lb_kind NAT
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    protocol TCP
    virtualhost www.example.test
    sorry_server 198.18.0.13 80

    real_server 198.18.0.11 80 {
        weight 1
        HTTP_GET {
            url {
                path /index.html
                status_code 200
            }
            connect_timeout 3
            retry 3
            delay_before_retry 1
        }
    }
    real_server 198.18.0.12 8000 {
        weight 2
        inhibit_on_failure
        HTTP_GET {
            url {
                path /index.html
                status_code 200
            }
            connect_timeout 3
            retry 3
            delay_before_retry 1
        }
    }
}

virtual_server 198.18.0.100 21 {
    lb_algo mh
    lb_kind DR
    real_server 198.18.0.12 21 {
        TCP_CHECK {
            connect_timeout 1
            connect_port 21
        }
    }
}

virtual_server 198.18.0.100 53 {
    protocol UDP
    lb_algo rr
    real_server 198.18.0.12 53 {
        MISC_CHECK {
            misc_path "/usr/bin/dig @198.18.0.12 example.test"
            misc_timeout 2
        }
    }
}
"""


def test_virtual_servers_become_services_pools_and_checks():
    cfg = load_strings([("keepalived.conf", CONF)])
    www = cfg.services["tcp-198.18.0.100-80"]
    assert www.mode == "tcp" and str(www.listen[0]) == "198.18.0.100:80"
    pool = cfg.pools["tcp-198.18.0.100-80"]
    assert [(s.name, s.address.port, s.weight, s.backup) for s in pool.servers] == [
        ("sorry", 80, 1, True), ("198.18.0.11:80", 80, 1, False), ("198.18.0.12:8000", 8000, 2, False)]
    check = pool.checks[0]
    assert check["type"] == "http" and check["path"] == "/index.html" and check["host"] == "www.example.test"
    assert check["inter"] == 2 and check["timeout"] == 3 and check["fall"] == 3 and check["rise"] == 1
    assert pool.settings["initial_state"] is HealthState.UP  # no alpha
    specs = {s.key: s for s in specs_from_config(cfg)}
    s80 = specs["tcp:198.18.0.100:80"]
    assert s80.persistence_s == 300 and s80.netmask == "255.255.255.0" and s80.on_failure == "quiesce"
    s21 = specs["tcp:198.18.0.100:21"]
    assert s21.forward is Forward.DR and s21.scheduler is Scheduler.MH
    assert cfg.pools["tcp-198.18.0.100-21"].checks[0]["type"] == "tcp"
    assert cfg.pools["tcp-198.18.0.100-21"].checks[0]["port"] == 21
    udp = cfg.pools["udp-198.18.0.100-53"].checks[0]
    assert udp["type"] == "exec" and udp["command"].startswith("/usr/bin/dig")
    assert specs["udp:198.18.0.100:53"].proto == "udp"


@pytest.mark.parametrize("bad, line, message", [
    ("lb_algo wlc", 3, "lb_algo"),
    ("lb_kind TUN", 3, "TUN is not supported"),
    ("frobnicate 1", 3, "unsupported virtual_server keyword"),
])
def test_errors_name_their_line(bad, line, message):
    text = f"virtual_server 198.18.0.100 80 {{\n    delay_loop 2\n    {bad}\n}}\n"
    frag = load_text("keepalived.conf", text)
    assert [(e.line, message in e.message) for e in frag.ctx.errors] == [(line, True)], frag.ctx.errors


def test_real_server_errors():
    text = ("virtual_server 198.18.0.100 80 {\n"
            "    real_server 198.18.0.11 80 {\n"
            "        weight 70000\n"
            "    }\n"
            "    real_server 198.18.0.12 80 {\n"
            "        SSL_GET {\n"
            "        }\n"
            "    }\n"
            "}\n"
            "virtual_server fwmark 1 {\n"
            "}\n")
    frag = load_text("keepalived.conf", text)
    assert [e.line for e in frag.ctx.errors] == [3, 6, 10]
    with pytest.raises(ConfigErrors, match="keepalived.conf:3"):
        load_strings([("keepalived.conf", text)])
