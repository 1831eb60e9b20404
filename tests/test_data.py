"""Data tier: the pinned BFCL multi-turn data loads, every gold call parses and executes through our executor."""
import pytest

from parl_mt_lib.bfcl import BFCL_VERSION, CATEGORIES, entry_by_id, load_entries, resolve_categories
from parl_mt_lib.calls import parse_calls
from parl_mt_lib.env import Environment
from parl_mt_lib.runtime import ConfigError

pytestmark = pytest.mark.data


def test_pinned_version():
    from importlib.metadata import version

    assert version("bfcl-eval") == BFCL_VERSION


def test_categories_and_counts():
    entries = load_entries("all")
    assert len(entries) == 800
    for cat in CATEGORIES:
        assert sum(e.category == cat for e in entries) == 200
    assert resolve_categories("base,miss_func") == ["multi_turn_base", "multi_turn_miss_func"]
    with pytest.raises(ConfigError, match="unknown category 'bogus'.*choose from"):
        resolve_categories(["bogus"])


def test_every_gold_call_parses_and_executes():
    n_calls = n_positional = 0
    for e in load_entries("all"):
        env = Environment(e)
        assert len(e.gold) == len(e.gold_calls)
        for raw_turn, turn in zip(e.gold, e.gold_calls):
            for raw, call in zip(raw_turn, turn):
                n_calls += 1
                n_positional += bool(parse_calls(raw)[0].args)
                assert not call.args, f"{e.id}: {raw} not normalised to keywords"
                result = env.execute(call)
                assert not result.startswith("Error during execution"), (e.id, raw, result)
    assert n_calls == 4701 and n_positional > 100


def test_miss_func_and_known_anomaly():
    e = entry_by_id("multi_turn_miss_func_0")
    (turn, docs), = e.missed_functions.items()
    assert e.turns[turn] == [] and [d["name"] for d in docs] == ["sort"]
    assert "sort" not in {f["name"] for f in e.functions_at(turn - 1)}
    assert "sort" in {f["name"] for f in e.functions_at(turn)}
    msg = e.turn_messages(turn)[0]["content"]
    assert msg.endswith("I have updated some more functions you can choose from. What about now?")
    base154 = entry_by_id("multi_turn_base_154")
    assert (len(base154.turns), len(base154.gold)) == (5, 6)  # documented data bug of this pin
