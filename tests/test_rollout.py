"""Engine logic without weights: a scripted policy drives the loop through every branch."""
from parl_mt_lib.bfcl import entry_by_id, load_entries
from parl_mt_lib.context import FullHistoryContext, make_context
from parl_mt_lib.evaluate import score_trajectory
from parl_mt_lib.policies import OraclePolicy, ScriptedPolicy
from parl_mt_lib.rollout import MAX_STEPS, Episode, Generation, run_episodes


def test_mock_policy_episode_all_branches():
    """Turn 0: hostile text (parse error ends the turn). Turn 1: unknown call -> error observation, then
    a real call, then no call. Turn 2: natural-language answer. Turn 3: loops past the step limit."""
    e = entry_by_id("multi_turn_base_0")

    def script(req):
        ep = req.episode
        k = len(ep.steps_of(ep.turn))
        if ep.turn == 0:
            return "[__import__('os').system('echo pwned')]"
        if ep.turn == 1:
            return ["[os_system(cmd='ls')]", "[cd(folder='document')]", ""][k]
        if ep.turn == 2:
            return "Sorry, which file?"
        return "[pwd()]"

    (ep,) = run_episodes(ScriptedPolicy(script), [e], progress=False)
    assert ep.turn_end == ["parse_error", "no_call", "parse_error", "max_steps"]
    assert ep.done and ep.force_quit
    assert "plain function names" in ep.steps[0].error
    t1 = ep.steps_of(1)
    assert t1[0].results == ["Error during execution: name 'os_system' is not defined"]
    assert t1[1].results == ['{"current_working_directory": "document"}']
    assert len(ep.steps_of(3)) == MAX_STEPS + 1
    v = score_trajectory(e.id, ep.calls_per_turn())
    assert not v.valid


def test_full_history_context_grows_by_prefix():
    e = entry_by_id("multi_turn_base_0")
    ctx = FullHistoryContext()
    ep = Episode(e)
    seen = []
    for _ in range(6):
        msgs = ctx.messages(ep)
        if seen:
            assert msgs[:len(seen[-1])] == seen[-1]  # history only grows
        seen.append(msgs)
        gen = OraclePolicy().generate([type("R", (), {"episode": ep, "messages": msgs, "tools": None})()])[0]
        ep.record(gen)
    roles = [m["role"] for m in seen[-1]]
    assert roles[:3] == ["system", "user", "assistant"] and "tool" in roles
    assert seen[-1][3]["name"] == "cd(folder='document')"


def test_oracle_episodes_score_valid_and_context_modes():
    entries = load_entries(["miss_func", "miss_param"], limit=3)
    for style in ("python", "json"):
        eps = run_episodes(OraclePolicy(style=style), entries, make_context(style=style), progress=False)
        assert all(score_trajectory(ep.entry.id, ep.calls_per_turn()).valid for ep in eps)
    ctx = make_context(style="json", prompting="cot")
    ep = Episode(entries[0])
    assert ctx.tools(ep) and "<think>" in ctx.messages(ep)[0]["content"]


def test_policy_error_stops_episode():
    ep = Episode(entry_by_id("multi_turn_base_1"))
    ep.record(Generation("", 10, 0, error="context_overflow: 99 > 10"))
    assert ep.done and ep.force_quit and ep.turn_end == ["policy_error"]
    assert not score_trajectory(ep.entry.id, ep.calls_per_turn()).valid
