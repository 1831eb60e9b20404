"""Reward registry: every term on hand-written completions (open-r1 style tables)."""
import pytest

from parl_mt_lib.rewards import REWARDS, StepView, check_weights, format_ok, is_error, weighted
from parl_mt_lib.runtime import ConfigError

P = "<summary>done: nothing</summary><plan>next: ls</plan>"
GOLD = ("cd(folder='docs')", "mv(source='a.txt', destination='b.txt')")
MV_REORDERED = "mv(destination='b.txt', source='a.txt')"
TAIL = ("tail(file_name='a.txt', lines=10)",)

# (name, StepView kwargs, expected)
CASES = [
    ("format", dict(completion=P + "[ls(a=True)]"), 1.0),
    ("format", dict(completion=P), 1.0),                                   # turn-ending step: no call
    ("format", dict(completion="[ls(a=True)]"), 0.0),                      # progress view needs summary + plan
    ("format", dict(completion="<plan>x</plan><summary>y</summary>[ls()]"), 0.0),  # wrong order
    ("format", dict(completion=P + "[ls(a=True"), 0.0),                    # unparseable call
    ("format", dict(completion=P + "[__import__('os')]"), 0.0),            # hostile text: not a literal call
    ("format", dict(completion="[ls(a=True)]", view="plain"), 1.0),
    ("format", dict(completion="", view="plain"), 1.0),
    ("format", dict(completion=P + "[ls()]", error="policy_error"), 0.0),
    # τ-bench (replies=True): a step without calls is the turn's message to the user, so it must be one
    ("format", dict(completion="", view="plain", replies=True), 0.0),     # empty: no message (review finding)
    ("format", dict(completion="   ", view="plain", replies=True), 0.0),
    ("format", dict(completion=P, replies=True), 0.0),                    # a block and nothing for the user
    ("format", dict(completion="Your booking is confirmed.", view="plain", replies=True), 1.0),
    ("format", dict(completion=P + "Your booking is confirmed.", replies=True), 1.0),
    ("format", dict(completion="Your booking is confirmed.", replies=True), 0.0),   # progress view: block first
    ("format", dict(completion="[ls(a=True)]", view="plain", calls=("ls(a=True)",), replies=True), 1.0),
    ("call", dict(completion="", calls=("cd(folder='docs')",), results=("None",), turn_gold=GOLD), 1.0),
    ("call", dict(completion="", calls=("cd(folder='docs')",), results=("Error during execution: no such dir",),
                  turn_gold=GOLD), 0.0),                                  # right call, failed execution
    ("call", dict(completion="", calls=("mv(source='a.txt', destination='c.txt')",), results=("None",),
                  turn_gold=GOLD), 0.5),                                  # right function, 1 of 2 arguments
    ("call", dict(completion="", calls=("mv(source='x', destination='y')",), results=("None",), turn_gold=GOLD),
     0.25),                                                               # right function, no argument right
    ("call", dict(completion="", calls=("rm(file_name='a.txt')",), results=("None",), turn_gold=GOLD), 0.0),
    ("call", dict(completion="", calls=("cd(folder='docs')",), results=("None",), turn_gold=GOLD,
                  calls_before=("cd(folder='docs')",)), 0.0),              # gold call already made
    ("call", dict(completion="", turn_gold=GOLD, calls_before=GOLD), 1.0),  # stops when the turn is done
    ("call", dict(completion="", turn_gold=GOLD, calls_before=GOLD[:1]), 0.0),  # stops too early
    ("call", dict(completion="", calls=GOLD, results=("None", "None"), turn_gold=GOLD), 1.0),
    ("call", dict(completion="x", error="unparseable", turn_gold=GOLD), 0.0),
    ("task", dict(completion="", task_success=True), 1.0),
    ("task", dict(completion="", task_success=False), 0.0),
    ("turn", dict(completion="", turn_success=True), 1.0),
    ("efficiency", dict(completion="", calls=("cd(folder='docs')",), turn_gold=GOLD, step_in_turn=0), 0.0),
    ("efficiency", dict(completion="", turn_gold=GOLD, step_in_turn=2), 0.0),   # the turn-ending step
    ("efficiency", dict(completion="", calls=("ls()",), turn_gold=GOLD, step_in_turn=3), -1.0),  # beyond gold
    ("efficiency", dict(completion="", calls=("cd(folder='docs')",), turn_gold=GOLD, step_in_turn=1,
                        calls_before=("cd(folder='docs')",)), -1.0),     # repeated call
    # issue 11: calls compare parsed (keyword order never matters, numbers by value, bool is not a number)
    ("call", dict(completion="", calls=(MV_REORDERED,), results=("None",), turn_gold=GOLD), 1.0),  # was 0.75
    ("call", dict(completion="", calls=("tail(file_name='a.txt', lines=10.0)",), results=("None",),
                  turn_gold=TAIL), 1.0),                                  # was 0.75
    ("call", dict(completion="", calls=("tail(file_name='b.txt', lines=10.0)",), results=("None",),
                  turn_gold=TAIL), 0.5),                                  # 1 of 2 arguments: 10.0 is 10
    ("call", dict(completion="", calls=("ls(a=1)",), results=("None",), turn_gold=("ls(a=True)",)), 0.25),  # was 0.75
    ("call", dict(completion="", calls=(GOLD[1],), results=("None",), turn_gold=GOLD,
                  calls_before=(MV_REORDERED,)), 0.0),                     # gold call already made: was 1.0
    ("call", dict(completion="", turn_gold=GOLD, calls_before=(MV_REORDERED, GOLD[0])), 1.0),  # turn done: was 0.0
    ("call", dict(completion="", calls=(MV_REORDERED, GOLD[1]), results=("None", "None"), turn_gold=GOLD),
     0.5),                                                                # one gold mv, made twice: was 0.875
    ("call", dict(completion="", calls=("mv(",), results=("None",), turn_gold=("mv(",)), 0.0),  # text equals nothing
    ("efficiency", dict(completion="", calls=(MV_REORDERED,), turn_gold=GOLD, step_in_turn=1,
                        calls_before=(GOLD[1],)), -1.0),                  # reordered repeat: was 0.0
    ("efficiency", dict(completion="", calls=("tail(file_name='a.txt', lines=10)",), turn_gold=TAIL * 3,
                        step_in_turn=1, calls_before=("tail(file_name='a.txt', lines=10.0)",)), -1.0),  # was 0.0
    ("efficiency", dict(completion="", calls=("ls(a=1)",), turn_gold=GOLD, step_in_turn=1,
                        calls_before=("ls(a=True)",)), 0.0),              # not a repeat: 1 is not True
]


@pytest.mark.parametrize("name,kw,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_reward_table(name, kw, expected):
    assert REWARDS[name](StepView(**kw)) == pytest.approx(expected)


def test_rewards_are_pure_and_bounded():
    for name, kw, _ in CASES:
        v = StepView(**kw)
        assert REWARDS[name](v) == REWARDS[name](v)
        assert -1.0 <= REWARDS[name](v) <= 1.0


def test_is_error_and_format_helpers():
    assert is_error("Error during execution: x") and is_error('{"error": "no such file"}')
    assert not is_error('{"result": "ok"}') and not is_error("None")
    assert format_ok(P + "[ls()]", "progress") and not format_ok("[ls(", "plain")


def test_weights_validated_and_weighted_sum():
    assert weighted({"format": 1.0, "task": 0.0, "call": 0.5}, {"format": 0.25, "call": 0.5}) == 0.5
    with pytest.raises(ConfigError, match="unknown reward"):
        check_weights({"formatt": 1.0})
    with pytest.raises(ConfigError, match="non-empty"):
        check_weights({})


def test_step_views_from_a_played_episode():
    """Gold calls of the turn, calls made before, the verdicts: from the oracle's real episode."""
    from parl_mt_lib.bfcl import entry_by_id
    from parl_mt_lib.policies import OraclePolicy
    from parl_mt_lib.rewards import score_steps, step_views
    from parl_mt_lib.rollout import run_episodes

    (ep,) = run_episodes(OraclePolicy(), [entry_by_id("multi_turn_base_0")], progress=False)
    views = step_views(ep, "plain", True, [True] * len(ep.turn_end))
    terms = score_steps(views, ["format", "call", "efficiency", "task"])
    assert all(t == {"format": 1.0, "call": 1.0, "efficiency": 0.0, "task": 1.0} for t in terms)
    assert views[1].calls_before == views[0].calls and views[1].step_in_turn == 1


def test_call_reward_on_rewritten_gold_calls_of_real_tasks():
    """Property over BFCL's own gold: every gold call with its keywords shuffled and its numbers retyped
    (int <-> integral float, bools kept) still earns the full ``call`` reward and counts as a repeat."""
    import random

    from parl_mt_lib.bfcl import load_entries
    from parl_mt_lib.calls import Call

    rnd = random.Random(11)
    gold = [c for e in load_entries("multi_turn_base", limit=40) for t in e.gold_calls for c in t]
    rewritten = 0
    for call in gold:
        items = [(k, float(v) if type(v) is int else int(v) if type(v) is float and v.is_integer() else v)
                 for k, v in call.kwargs.items()]
        rnd.shuffle(items)
        variant = Call(call.name, dict(items)).render()
        rewritten += variant != call.render()
        view = StepView("", calls=(variant,), results=("None",), turn_gold=(call.render(),))
        assert REWARDS["call"](view) == 1.0, (variant, call.render())
        repeat = StepView("", calls=(variant,), turn_gold=(call.render(),) * 3, step_in_turn=1,
                          calls_before=(call.render(),))
        assert REWARDS["efficiency"](repeat) == -1.0
    assert rewritten > 20  # the loop exercised real reorderings / retypings, not only one-argument calls
