"""The herder command as users run it: check, run + signals, version, --help."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

from herder.cli.main import build_parser
from herder.testing import descendants, free_port, http_json, pid_alive, session_members, wait_port

pytestmark = pytest.mark.integration


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


BAD_CASES = {
    "misspelt key": ('[pools.web]\n[[pools.web.servers]]\nname = "a"\naddress = "127.0.0.1:80"\nwieght = 2\n',
                     ":5: pools.web.servers[0].wieght: unknown key 'wieght'; did you mean 'weight'?"),
    "wrong type": ('[pools.web]\n[[pools.web.servers]]\nname = "a"\naddress = "127.0.0.1:80"\nbackup = "yes"\n',
                   ":5: pools.web.servers[0].backup: expected true or false, got string 'yes'"),
    "no address": ('[pools.web]\n[[pools.web.servers]]\nname = "a"\n',
                   ":2: pools.web.servers[0]: missing required key 'address'"),
    "duplicate name": ('[pools.web]\n[[pools.web.servers]]\nname = "a"\naddress = "127.0.0.1:80"\n'
                       '[[pools.web.servers]]\nname = "a"\naddress = "127.0.0.1:81"\n',
                       ":6: pools.web.servers[1].name: duplicate name 'a'"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_check_reports_each_problem_with_file_and_line(tmp_path, herder_argv, case):
    text, expected = BAD_CASES[case]
    f = tmp_path / "bad.toml"
    f.write_text(text)
    r = run([*herder_argv, "check", str(f)])
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(str(f))]
    assert len(lines) == 1 and lines[0].startswith(f"{f}{expected}"), r.stderr
    assert "configuration is NOT valid" in r.stderr


def test_check_unreadable_file(tmp_path, herder_argv):
    f = tmp_path / "secret.toml"
    f.write_text("[pools.web]\n")
    f.chmod(0)
    if os.access(f, os.R_OK):  # root reads anything: use a directory instead
        f = tmp_path / "adir.toml"
        f.mkdir()
    r = run([*herder_argv, "check", str(f)])
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith(f"{f}: cannot read file: ")


def test_check_all_problems_of_several_files_at_once(tmp_path, herder_argv):
    files = []
    for name, (text, _) in BAD_CASES.items():
        f = tmp_path / (name.replace(" ", "_") + ".toml")
        f.write_text(text.replace("[pools.web]", f"[pools.{name.replace(' ', '_')}]").replace("pools.web.", f"pools.{name.replace(' ', '_')}."))
        files.append(str(f))
    r = run([*herder_argv, "check", *files])
    assert r.returncode == 1
    assert "herder check: 4 errors" in r.stderr


def test_check_valid_file_exits_0(tmp_path, herder_argv):
    f = tmp_path / "ok.toml"
    f.write_text('[pools.web]\n[[pools.web.servers]]\nname = "a"\naddress = "127.0.0.1:80"\n')
    r = run([*herder_argv, "check", str(f)])
    assert r.returncode == 0, r.stderr
    assert "configuration is valid: 1 pool(s), 1 server(s)" in r.stdout


def test_version(herder_argv):
    r = run([*herder_argv, "version"])
    assert r.returncode == 0 and r.stdout.startswith("herder ")
    assert "L7 hot path compiled" in r.stdout or "L7 hot path plain Python" in r.stdout


def commands(parser=None, prefix=()):
    parser = parser or build_parser()
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from commands(sub, (*prefix, name))


@pytest.mark.parametrize("cmd", list(commands()), ids=" ".join)
def test_every_command_has_help_with_examples(herder_argv, cmd):
    r = run([*herder_argv, *cmd, "--help"])
    assert r.returncode == 0, r.stderr
    assert "example" in r.stdout.lower(), f"`herder {' '.join(cmd)} --help` shows no example"


def start_run(herder_argv, cfg_path, *extra) -> subprocess.Popen:
    return subprocess.Popen([*herder_argv, "run", *extra, str(cfg_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def config_with_api(tmp_path, body: str = "") -> tuple:
    port = free_port()
    f = tmp_path / "run.toml"
    f.write_text(textwrap.dedent(f"""\
        [api]
        listen = "127.0.0.1:{port}"
        [pools.web]
        [[pools.web.servers]]
        name = "a"
        address = "127.0.0.1:9"
        """) + body)
    return f, port


def test_run_then_sigterm_exits_0_quickly_and_leaves_nothing(tmp_path, herder_argv):
    # an exec check that is always running a child (`sleep`) when SIGTERM arrives
    f, port = config_with_api(tmp_path, textwrap.dedent("""\
        [[pools.web.checks]]
        type = "exec"
        command = "sleep 30"
        inter = "0.1s"
        timeout = "60s"
        """))
    p = start_run(herder_argv, f)
    try:
        wait_port("127.0.0.1", port)
        status, snap = http_json(f"http://127.0.0.1:{port}/status")
        assert status == 200 and snap["pools"]["web"]["servers"][0]["name"] == "a"
        deadline = time.monotonic() + 10
        while not descendants(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        children = descendants(p.pid)
        assert children, "the exec check's child should be running"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    out = p.stderr.read()
    assert rc == 0, out
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert session_members(p.pid) == set()
    assert not any(pid_alive(c) for c in children)
    assert "received SIGTERM, stopping" in out and "component api" in out and "herder stopped" in out
    with pytest.raises(OSError):
        wait_port("127.0.0.1", port, timeout=0.2)


def test_run_refuses_a_bad_config_without_starting(tmp_path, herder_argv):
    f = tmp_path / "bad.toml"
    f.write_text("[pools.web]\nbalanse = 'rr'\n")
    r = run([*herder_argv, "run", str(f)])
    assert r.returncode == 1
    assert f"{f}:2: pools.web.balanse: unknown key" in r.stderr


def test_sighup_with_a_broken_file_keeps_the_running_config(tmp_path, herder_argv):
    f, port = config_with_api(tmp_path)
    p = start_run(herder_argv, f)
    try:
        wait_port("127.0.0.1", port)
        # a valid edit: a second server appears
        f.write_text(f.read_text() + '[[pools.web.servers]]\nname = "b"\naddress = "127.0.0.1:10"\n')
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, snap = http_json(f"http://127.0.0.1:{port}/status")
            if len(snap["pools"]["web"]["servers"]) == 2:
                break
            time.sleep(0.05)
        assert [s["name"] for s in snap["pools"]["web"]["servers"]] == ["a", "b"]
        good = f.read_text()
        f.write_text(good + "oops = \n")
        p.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        _, snap2 = http_json(f"http://127.0.0.1:{port}/status")
        assert snap2["pools"] == snap["pools"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err = p.stderr.read()
    assert "reload rejected" in err and "TOML syntax error" in err


def test_api_admin_drain_shows_in_status(tmp_path, herder_argv):
    f, port = config_with_api(tmp_path)
    p = start_run(herder_argv, f, "--log-format", "json")
    try:
        wait_port("127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        assert http_json(f"{base}/pools/web/servers/a/admin", {"mode": "drain"})[0] == 200
        assert http_json(f"{base}/pools/web/servers/a/admin", {"mode": "sleep"})[0] == 400
        assert http_json(f"{base}/pools/web/servers/zz/admin", {"mode": "drain"})[0] == 404
        assert http_json(f"{base}/pools/web/servers/a/weight", {"weight": -1})[0] == 400
        _, snap = http_json(f"{base}/status")
        s = snap["pools"]["web"]["servers"][0]
        assert (s["admin"], s["admin_causes"], s["effective_weight"]) == ("drain", ["api"], 0)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=5)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    import json

    lines = [json.loads(ln) for ln in p.stderr.read().splitlines() if ln.startswith("{")]
    assert any("admin ready -> drain (api)" in ln["msg"] for ln in lines)

