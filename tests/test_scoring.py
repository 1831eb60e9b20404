"""Data tier: our verdicts equal the official checker's on gold and perturbed trajectories."""
import copy
import pytest

from parl_mt_lib.bfcl import CATEGORIES, entry_by_id, load_entries
from parl_mt_lib.calls import parse_calls
from parl_mt_lib.evaluate import official_verdict as official
from parl_mt_lib.evaluate import score_trajectory

pytestmark = pytest.mark.data


def _wrong_argument(turns):
    turns = copy.deepcopy(turns)
    for t in turns:
        for i, raw in enumerate(t):
            call = parse_calls(raw)[0]
            for k, v in call.kwargs.items():
                if isinstance(v, str):
                    call.kwargs[k] = v + "_x"
                    t[i] = call.render()
                    return turns
    return None


def _dropped(turns):
    turns = copy.deepcopy(turns)
    for t in turns:
        if t:
            t.pop()
            return turns


def _extra(turns):
    turns = copy.deepcopy(turns)
    for t in turns:
        if t:
            t.append(t[0])
            return turns


def _swapped(turns):
    return [turns[1], turns[0]] + turns[2:] if len(turns) > 1 else None


PERTURB = {"gold": lambda t: t, "dropped": _dropped, "wrong_argument": _wrong_argument, "extra": _extra,
           "swapped": _swapped, "one_turn_short": lambda t: t[:-1]}


def _check(entries):
    seen = {k: [0, 0] for k in PERTURB}  # [n, n_valid]
    for e in entries:
        for kind, fn in PERTURB.items():
            turns = fn(e.gold)
            if turns is None:
                continue
            ours = score_trajectory(e.id, turns)
            assert ours.valid == official(e.id, turns), (e.id, kind, ours)
            seen[kind][0] += 1
            seen[kind][1] += ours.valid
    return seen


def test_verdicts_match_official_sample():
    entries = [e for cat in CATEGORIES for e in load_entries([cat], limit=12)]
    seen = _check(entries)
    assert seen["gold"][1] == seen["gold"][0] == 48
    assert seen["dropped"][1] < seen["dropped"][0] and seen["wrong_argument"][1] < seen["wrong_argument"][0]
    assert seen["one_turn_short"][1] == 0


@pytest.mark.slow
def test_verdicts_match_official_all():
    _check(load_entries("all"))


def test_failure_reasons():
    e = entry_by_id("multi_turn_base_0")
    assert score_trajectory(e.id, e.gold).valid
    v = score_trajectory(e.id, e.gold[:-1])
    assert v.error_type == "multi_turn:force_terminated" and "3 model turns vs 4" in v.reason
    v = score_trajectory(e.id, [["cd(folder='nowhere')"]] + e.gold[1:])
    assert not v.valid and v.error_type


def test_hostile_strings_never_reach_eval(tmp_path):
    e = entry_by_id("multi_turn_base_0")
    target = tmp_path / "pwned"
    hostile = [f"open(file={str(target)!r}, mode='w')", f"__import__('os').system('touch {target}')",
               "exec(source='1')", "print(x=1)"]
    v = score_trajectory(e.id, [hostile + e.gold[0]] + e.gold[1:])
    assert not target.exists()
    assert v.valid  # dropped hostile calls change nothing; the gold calls still pass
