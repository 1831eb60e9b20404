"""Engine logic without weights: a scripted policy drives the loop through every branch."""
import pytest

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


@pytest.mark.parametrize("mode,style", [("progress", "python"), ("full_history", "python"), ("progress", "json")])
def test_a_copied_signature_placeholder_is_a_failed_step_not_a_crash(mode, style):
    """Defect (make reproduce-small, 03 at lr 1e-3): the policy wrote ``[ls(a=...)]`` (the signatures docs'
    placeholder); the parser took ``...`` as a literal, the step ran ``ls(a=Ellipsis)``, and building the next
    prompt re-parsed that text and raised out of the rollout. Now it is a parse error with its reason, and the
    next turn is played."""
    e = entry_by_id("multi_turn_base_0")

    def script(req):
        ep = req.episode
        if ep.turn == 0:
            return "<summary>nothing yet</summary><plan>list</plan>[ls(a=...)]"
        return "<summary>done</summary><plan>reply</plan>"

    (ep,) = run_episodes(ScriptedPolicy(script), [e], make_context(mode, style=style), progress=False)
    assert ep.turn_end[0] == "parse_error" and "ls(a=...)" in ep.steps[0].error
    assert len(ep.turn_end) > 1  # the episode went on


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


class _Counted(ScriptedPolicy):
    """A scripted policy that records the size of every ``generate`` call."""

    def __init__(self, fn, **kw):
        super().__init__(fn, **kw)
        self.calls = []

    def generate(self, requests):
        self.calls.append(len(requests))
        return super().generate(requests)


def _long_first_turn(req):
    """Entries ..._0 and ..._4 make 12 calls in their first turn; every other step makes none (ends its turn)."""
    ep = req.episode
    long = ep.task.id.endswith(("_0", "_4")) and ep.turn == 0 and len(ep.steps_of(0)) < 12
    return "[ls()]" if long else ""


def test_refill_gives_a_finished_episodes_slot_to_the_next_task():
    """Continuous batching across episodes: with static batches the short episodes waited for the long one of their
    batch (every step a call); refilled, they take its neighbours' freed slots. Same episodes, in task order."""
    tasks = load_entries(["base"], limit=8)
    new, old = _Counted(_long_first_turn), _Counted(_long_first_turn)
    done_new, done_old = [], []
    eps = run_episodes(new, tasks, batch_size=3, progress=False, on_episode=done_new.append)
    ref = run_episodes(old, tasks, batch_size=3, progress=False, refill=False, on_episode=done_old.append)
    assert [e.task.id for e in eps] == [e.task.id for e in ref] == [t.id for t in tasks]
    for a, b in zip(eps, ref):
        assert [(s.turn, s.output, s.calls, s.results) for s in a.steps] == \
            [(s.turn, s.output, s.calls, s.results) for s in b.steps]
        assert a.turn_end == b.turn_end
    assert sorted(e.task.id for e in done_new) == sorted(t.id for t in tasks) and len(done_old) == len(tasks)
    assert max(new.calls) <= 3 and sum(new.calls) == sum(old.calls) == sum(len(e.steps) for e in eps)
    assert len(new.calls) < len(old.calls) - 5, (new.calls, old.calls)
    assert new.calls[:12].count(3) >= 10  # the slots stay full while tasks are pending


def test_refill_counts_episodes_the_user_ends_at_once():
    """An episode whose user says nothing is finished at admission and holds no slot."""
    from parl_mt_lib.rollout import Episode

    class Silent:
        def next(self, ep):
            return None

    class Bench:
        replies = False

        def __init__(self, real):
            self.real = real

        def environment(self, task):
            return self.real.environment(task)

        def user(self, task):
            return Silent() if task.id.endswith("_1") else self.real.user(task)

    tasks = load_entries(["base"], limit=3)
    real = Episode(tasks[0]).benchmark
    pol = _Counted(lambda r: "")
    eps = run_episodes(pol, tasks, batch_size=2, progress=False, benchmark=Bench(real))
    assert eps[1].done and not eps[1].steps and all(e.done for e in eps)
    assert pol.calls[0] == 2  # the silent episode's slot went to the third task


def test_refill_bad_batch_size_is_one_line():
    from parl_mt_lib.runtime import ConfigError

    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        run_episodes(OraclePolicy(), load_entries(["base"], limit=1), batch_size=0, progress=False)


@pytest.mark.model
def test_refill_plays_the_same_greedy_episodes_as_static_batches(toy):
    """HF greedy on the toy: the same steps, prompt / completion token ids and verdicts with refill on as with the
    old static batches, in fewer generate calls."""
    from parl_mt_lib.policies import HFPolicy

    model, tok = toy
    tasks = load_entries(["base"], limit=8)  # 2 to 5 turns
    ctx = make_context("progress", tool_docs="minimal")
    runs = {}
    for refill in (True, False):
        pol = HFPolicy(model, tok, max_new_tokens=6, keep_tokens=True)
        n = []
        orig = pol.generate
        pol.generate = lambda reqs, _o=orig, _n=n: (_n.append(len(reqs)), _o(reqs))[1]
        eps = run_episodes(pol, tasks, ctx, batch_size=3, progress=False, refill=refill)
        runs[refill] = (eps, n)
    (new, n_new), (old, n_old) = runs[True], runs[False]
    assert [e.task.id for e in new] == [t.id for t in tasks]
    for a, b in zip(new, old):
        assert [(s.output, s.prompt_ids, s.completion_ids) for s in a.steps] == \
            [(s.output, s.prompt_ids, s.completion_ids) for s in b.steps]
        assert score_trajectory(a.task.id, a.calls_per_turn()) == score_trajectory(b.task.id, b.calls_per_turn())
    assert sum(n_new) == sum(n_old) and len(n_new) < len(n_old), (n_new, n_old)
