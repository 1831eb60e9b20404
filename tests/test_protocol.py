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


@pytest.mark.model
def test_tiny_benchmark_trains_two_rl_iterations_with_a_scripted_backend(tmp_path, toy_path):
    """The RL loop on a benchmark it has never seen, with a generator that is not a model: the toy is only the
    trainer; a scripted backend (with the toy's tokenizer for token ids) plays the rollouts."""
    import json

    from transformers import AutoTokenizer

    from parl_mt_lib.rl import load_rl_recipe, train_rl

    tok = AutoTokenizer.from_pretrained(toy_path)
    flip = iter(range(10**6))

    def sometimes_wrong(req):  # every other call adds one too many: rewards vary within a group
        text = counter_policy(req)
        return text.replace("add(n=", "add(n=1") if "[add" in text and next(flip) % 2 else text

    backend = ScriptedPolicy(sometimes_wrong, name="counter_script", tokenizer=tok, keep_tokens=True)
    recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {"init": str(toy_path), "iterations": 2,
                                                        "tasks_per_iteration": 2, "group_size": 2, "task_pool": None,
                                                        "save_every": 1, "eval_every": 0})
    tasks = counter_tasks(4)
    m = train_rl(recipe, tmp_path / "rl", tasks=(tasks[:3], tasks[3:]), backend=backend, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "rl" / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and m["iterations"] == 2
    assert m["n_heldout_tasks"] == 1 and m["heldout_final"] in (0.0, 1.0)  # the toy plays it; its scorer decides
    assert all(r["n_samples"] > 0 for r in rows)
    assert 0 < rows[0]["train_task_success"] < 1  # the benchmark's own scorer decided
    assert any(not r["skipped"] for r in rows)


@pytest.mark.model
def test_rl_refuses_a_backend_that_keeps_no_tokens(tmp_path, toy_path):
    from parl_mt_lib.rl import load_rl_recipe, train_rl
    from parl_mt_lib.runtime import ConfigError

    recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {"init": str(toy_path), "iterations": 1,
                                                        "tasks_per_iteration": 1, "group_size": 2, "task_pool": None})
    with pytest.raises(ConfigError, match="returned no token ids"):
        train_rl(recipe, tmp_path / "rl", tasks=(counter_tasks(1), []), progress=False,
                 backend=ScriptedPolicy(counter_policy, name="no_tokens"))


@pytest.mark.parametrize("replies,end,error", [(False, "parse_error", True), (True, "no_call", False)])
def test_prose_is_a_reply_only_where_the_benchmark_has_a_user_who_reads_it(replies, end, error):
    """τ-bench agents answer their user in prose; on BFCL text that is not calls is a failed step with a reason."""
    class Talking(CounterBench):
        name = f"counter_talk_{replies}"

    bench = Talking()
    bench.replies = replies
    task = counter_tasks(1)[0]
    outputs = iter(["[add(n=1)]", "Done: the total is 1.", "[add(n=1)]", "[add(n=1"])
    (ep,) = run_episodes(ScriptedPolicy(lambda r: next(outputs)), [task], progress=False, benchmark=bench)
    assert ep.turn_end[0] == end and (ep.steps[1].error is not None) == error
    assert ep.turn_end[1] == "parse_error" and ep.steps[-1].error  # malformed calls fail on every benchmark
