"""The simulator and `herder balance list|simulate` (through argparse, no subprocess)."""

from __future__ import annotations

import argparse
import json

import pytest

from herder.balance.simulate import Scenario, format_report, perfect_max_mean, simulate
from herder.cli import balance as cli

pytestmark = pytest.mark.unit


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="herder")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_simulation_reproduces_the_expected_ordering():
    res = simulate(["maglev", "ring", "rendezvous", "hash"], [Scenario(200, 2)], keys=20_000)
    by = {r.algorithm: r for r in res}
    assert by["ring"].shuffled == 0 and by["rendezvous"].shuffled == 0
    assert 0 < by["maglev"].shuffled < 0.03
    assert by["hash"].shuffled > 0.5
    assert by["maglev"].max_mean_before < 1.02 < by["ring"].max_mean_before
    assert by["maglev"].exact and not by["rendezvous"].exact
    assert all(r.minimum == pytest.approx(0.01) for r in res)


def test_added_servers_take_their_share_and_nothing_else_for_consistent_hashing():
    res = simulate(["rendezvous", "ketama"], [Scenario(50, 0, 1)], keys=20_000, weights=(1, 3))
    for r in res:
        assert r.shuffled == 0
        assert r.moved == pytest.approx(r.minimum, abs=0.02)


def test_report_explains_itself():
    res = simulate(["maglev", "rendezvous"], [Scenario(100, 1), Scenario(100, 5)], keys=5000)
    text = format_report(res, weights=(1,), keys=5000, seed=1)
    for needle in ("how to read this", "minimum", "shuffled", "perfect balancer", "verdicts", "-5"):
        assert needle in text
    assert perfect_max_mean(100, (1,), 5000) > 1.0


@pytest.mark.parametrize("algos,options,message", [
    (["roundrobin"], {}, "does not map keys"),
    (["maglev"], {"points": 3}, "no algorithm here takes option points"),
    (["nope"], {}, "unknown balance algorithm"),
    (["ring"], {"hash_balance_factor": 120}, "no algorithm here takes"),
])
def test_bad_simulations_are_refused(algos, options, message):
    with pytest.raises(ValueError, match=message):
        simulate(algos, [Scenario(10, 1)], keys=100, options=options)
    with pytest.raises(ValueError, match="leaves none"):
        simulate(["ring"], [Scenario(3, 3)], keys=100)


def test_cli_list(capsys):
    code, out, _ = run_cli(["balance", "list"], capsys)
    assert code == 0
    for word in ("maglev", "static-rr", "lblcr", "aliases", "ip_hash", "mh", "table_size"):
        assert word in out
    code, out, _ = run_cli(["balance", "list", "--json"], capsys)
    data = json.loads(out)
    assert {a["name"] for a in data["algorithms"]} >= {"maglev", "ring", "rendezvous"}


def test_cli_simulate_text_json_and_plot(capsys, tmp_path):
    argv = ["balance", "simulate", "--servers", "60", "--remove", "1,3", "--keys", "3000",
            "--algorithms", "maglev,ring", "-o", "table_size=4099"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "verdicts" in out and "maglev (table_size=4099)" in out
    code, out, _ = run_cli([*argv, "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 4
    pytest.importorskip("matplotlib")
    png = tmp_path / "fig.png"
    code, out, _ = run_cli([*argv, "--plot", str(png)], capsys)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_simulate_errors_exit_2(capsys):
    code, _, err = run_cli(["balance", "simulate", "--algorithms", "leastconn", "--servers", "5"], capsys)
    assert code == 2 and "does not map keys" in err
    with pytest.raises(SystemExit):
        run_cli(["balance", "simulate", "--remove", "x"], capsys)


def test_cli_parsers_have_descriptions_and_examples():
    parser = argparse.ArgumentParser(prog="herder")
    sub = parser.add_subparsers()
    cli.register(sub)
    top = sub.choices["balance"]
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for p in (top, *subs.choices.values()):
        assert p.description and p.epilog and "examples:" in p.epilog
