"""The seams: a new benchmark or generator plugs in without touching the driver, the context builders or the RL loop;
and the progress context shows the act, not only the intent."""
from dataclasses import dataclass, field

import pytest

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.context import render_prompt
from parl_mt_lib.policies import ScriptedPolicy
from parl_mt_lib.progress import ProgressContext
from parl_mt_lib.rollout import run_episodes


def test_progress_context_shows_the_call_the_model_made(toy):
    """The plan says mkdir('temp') but the model called mkdir('other'): the next prompt the model reads must show
    the call it made (the tool message's ``name`` is not rendered by chat templates, so it must be in the text)."""
    _, tok = toy
    seen = []

    def fn(req):
        seen.append(req.messages)
        if len(seen) == 1:
            return "<summary>Nothing done yet.</summary><plan>Next: mkdir('temp').</plan>[mkdir(dir_name='other')]"
        return ""

    run_episodes(ScriptedPolicy(fn), [entry_by_id("multi_turn_base_0")], ProgressContext(tool_docs="minimal"),
                 progress=False)
    prompt = render_prompt(tok, seen[1])
    assert "mkdir(dir_name='other')" in prompt
    assert prompt.count("Next: mkdir('temp')") == 1  # the plan is still there, once


# ------------------------------------------------------------------ a tiny in-memory benchmark

from parl_mt_lib.envs import Benchmark, ScriptedUser, Verdict  # noqa: E402


class Counter:
    """Two tools over one integer."""

    def __init__(self):
        self.total = 0

    def add(self, n: int) -> str:
        self.total += int(n)
        return f"total={self.total}"

    def read(self) -> str:
        return str(self.total)


class CounterEnv:
    def __init__(self):
        self.counter = Counter()

    def execute(self, call) -> str:
        if call.name not in ("add", "read"):
            return f"Error: no tool {call.name}"
        try:
            return getattr(self.counter, call.name)(*call.args, **call.kwargs)
        except Exception as err:
            return f"Error: {err}"

    def execute_all(self, calls):
        return [self.execute(c) for c in calls]

    def state(self):
        return {"total": self.counter.total}


class CounterBench(Benchmark):
    name = "counter"

    def environment(self, task):
        return CounterEnv()

    def user(self, task):
        return ScriptedUser(task.turns)

    def score(self, task, episode):
        got = episode.env.state()["total"]
        return Verdict(got == task.target, "" if got == task.target else f"total {got}, want {task.target}")


COUNTER = CounterBench()
DOCS = [{"name": "add", "description": "Add n to the total.",
         "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        {"name": "read", "description": "Read the total.", "parameters": {"type": "dict", "properties": {}}}]


@dataclass
class CounterTask:
    id: str
    target: int
    turns: list = field(default_factory=list)
    gold_calls: list = field(default_factory=list)
    category: str = "counter"
    functions: list = field(default_factory=lambda: DOCS)
    benchmark: object = COUNTER


def counter_tasks(n=3):
    from parl_mt_lib.calls import Call

    return [CounterTask(f"counter_{i}", target=i + 2,
                        turns=[[{"role": "user", "content": f"Add {i + 1}."}], [{"role": "user", "content": "Add 1."}]],
                        gold_calls=[[Call("add", {"n": i + 1})], [Call("add", {"n": 1})]]) for i in range(n)]


def counter_policy(req):
    """Adds what the current user message asks for, once per turn; writes a progress block."""
    ep = req.episode
    if ep.steps_of(ep.turn):
        return "<summary>Added.</summary><plan>Done.</plan>"
    n = int(ep.turns[ep.turn].messages[0]["content"].split()[1].rstrip("."))
    return f"<summary>Asked to add {n}.</summary><plan>Next: add({n}).</plan>[add(n={n})]"


@pytest.mark.parametrize("context", ["full_history", "progress"])
def test_tiny_benchmark_through_the_unchanged_driver_and_evaluate(tmp_path, context):
    from parl_mt_lib.evaluate import evaluate

    tasks = counter_tasks()
    pol = ScriptedPolicy(counter_policy, name="counter_script")
    m = evaluate(entries=tasks, policy_obj=pol, context=context, tool_docs="minimal", results_dir=tmp_path / context,
                 progress=False)
    assert m["categories"]["counter"]["correct"] == 3 and m["overall"] == 1.0
    # a policy that never acts fails with the benchmark's own reason
    m0 = evaluate(entries=tasks, policy_obj=ScriptedPolicy(lambda r: "", name="idle"), context=context,
                  tool_docs="minimal", results_dir=tmp_path / f"{context}_idle", progress=False)
    assert m0["overall"] == 0.0
    import json

    rows = [json.loads(line) for line in (tmp_path / f"{context}_idle" / "entries.jsonl").read_text().splitlines()]
    assert rows[0]["reason"] == "total 0, want 2"
