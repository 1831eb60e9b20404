"""τ-bench (tau2) on the benchmark protocol: tasks and splits from the package, the environment behind our parser,
user sources (scripted, tau2's simulator on a stub OpenAI server, a local model), scoring by tau2's evaluator with
agreement checks against tau2 run directly, pass^k, the runner, and hostile model text."""
import dataclasses
import json
import math
import signal
import threading
from contextlib import contextmanager
from itertools import combinations

import pytest
from helpers import chat_server

pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic")  # litellm's TypedDicts, at import

from parl_mt_lib.calls import Call, strip_preamble  # noqa: E402
from parl_mt_lib.envs import tau2 as T  # noqa: E402
from parl_mt_lib.policies import ScriptedPolicy  # noqa: E402
from parl_mt_lib.rollout import run_episodes  # noqa: E402
from parl_mt_lib.runtime import ConfigError  # noqa: E402


def direct_success(task, record_json: str) -> bool:
    """tau2's evaluator on the record read back from JSON as tau2's own SimulationRun (no code of ours between)."""
    from tau2.data_model.simulation import SimulationRun
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.metrics.agent_metrics import is_successful

    with T._gc_paused():
        info = evaluate_simulation(SimulationRun.model_validate_json(record_json), T.raw_task(task),
                                   EvaluationType.ALL, False, task.domain)
    return is_successful(info.reward)


# ---------------------------------------------------------------- tasks


def test_tasks_splits_tools_and_gold_come_from_the_package():
    from tau2.registry import registry

    for domain, n_train, n_test in (("airline", 30, 20), ("retail", 74, 40)):
        train, test = T.load_tasks(domain, "train"), T.load_tasks(domain, "test")
        assert (len(train), len(test)) == (n_train, n_test)
        T.assert_disjoint(train, test)
        env = registry.get_env_constructor(domain)()
        t = test[0]
        assert (t.category, t.benchmark, t.split) == (f"tau2_{domain}", f"tau2_{domain}", "test")
        assert t.instructions == env.get_policy()  # the domain policy; the system prompt is the benchmark's
        assert [f["name"] for f in t.functions] == [tool.name for tool in env.get_tools()]
        assert all(set(f) == {"name", "description", "parameters"} and f["parameters"]["type"] == "object"
                   for f in t.functions)
        for task in test:  # the gold calls are tau2's gold actions, in order; one turn per write
            raw = T.raw_task(task).evaluation_criteria.actions or []
            flat = [c for turn in task.gold_calls for c in turn]
            assert [(c.name, c.kwargs) for c in flat] == [(a.name, a.arguments) for a in raw]
            writes = sum(a.name in T._toolkit(domain)["writes"] for a in raw)
            assert len(task.gold_calls) == len(task.user_turns) == len(task.gold_replies) == 1 + writes
        # the split is tau2's own: the first training task is not among the test tasks
        assert {t.tau2_id for t in train}.isdisjoint({t.tau2_id for t in test})
    with pytest.raises(ConfigError, match="overlap"):
        T.assert_disjoint(T.load_tasks("airline", "test", limit=2), T.load_tasks("airline", "test", limit=1))
    for bad in (dict(domain="telecom"), dict(domain="airline", split="dev"), dict(domain="airline", limit=0),
                dict(domain="airline", user=""), dict(domain="airline", user="openai:"),
                dict(domain="airline", user="./no/such/model")):
        with pytest.raises(ConfigError):
            T.load_tasks(**bad)


def test_fresh_environment_is_tau2s_environment():
    from tau2.registry import registry

    for domain in T.DOMAINS:
        assert T.fresh_environment(domain).get_db_hash() == registry.get_env_constructor(domain)().get_db_hash()


# ---------------------------------------------------------------- the oracle, scored by tau2's evaluator


@pytest.fixture(scope="module")
def oracle_runs(tmp_path_factory):
    """The runner on the first 3 test tasks of each domain, 2 trials each (pass^1, pass^2)."""
    out = {}
    for domain in T.DOMAINS:
        d = tmp_path_factory.mktemp(f"oracle_{domain}")
        out[domain] = (T.evaluate_tau2(domain, "oracle", limit=3, trials=2, results_dir=d, progress=False), d)
    return out


def test_oracle_through_the_runner_with_provenance_pass_k_and_records(oracle_runs):
    for domain, (m, d) in oracle_runs.items():
        cat = m["categories"][f"tau2_{domain}"]
        assert (cat["correct"], cat["total"]) == (6, 6), domain
        assert m["user"] == "scripted" and m["comparable"] is False and m["tau2"]["note"] == T.SCRIPTED_NOTE
        assert m["tau2"]["pass_hat_k"]["pass^k"] == {1: 1.0, 2: 1.0} and m["tau2"]["trials"] == 2
        saved = json.loads((d / "metrics.json").read_text())
        assert saved["tau2"]["comparable"] is False and saved["tau2"]["pass_hat_k"]["pass^k"] == {"1": 1.0, "2": 1.0}
        # each verdict equals tau2's evaluator run directly on the same record (read back from JSON)
        assert T.recheck_records(d / "records.jsonl") == {"checked": 6, "agree": 6, "disagreements": []}


def test_recheck_records_counts_a_flipped_verdict(oracle_runs, tmp_path):
    _, d = oracle_runs["retail"]
    rows = [json.loads(line) for line in (d / "records.jsonl").read_text().splitlines()][:2]
    rows[1]["valid"] = False  # a verdict that tau2 does not share must show up
    f = tmp_path / "records.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert T.recheck_records(f) == {"checked": 2, "agree": 1, "disagreements": [rows[1]["id"]]}


@pytest.mark.slow
def test_oracle_scores_1_on_every_test_task_and_tau2_agrees_on_each_record():
    """All 20 airline + 40 retail test tasks: gold actions through our loop score 1.0, and tau2's evaluator run
    directly on each record (read back from JSON) gives the same verdict (~45 s: tau2 builds and hashes two
    databases per verdict)."""
    for domain in T.DOMAINS:
        bench, tasks = T.BENCHMARKS[domain], T.load_tasks(domain, "test")
        for ep in run_episodes(T.Tau2OraclePolicy(), tasks, progress=False):
            v = bench.score(ep.task, ep)
            assert v.valid, (ep.task.id, v)
            assert direct_success(ep.task, bench.record(ep.task, ep).model_dump_json()) is True, ep.task.id


def test_do_nothing_floor_is_what_tau2_gives_an_idle_agent():
    """retail 12's gold write fails in tau2 (so doing nothing passes); airline 6 is a refusal; the others need work."""
    tasks = T.load_tasks("retail", "test", ids=["12", "5"]) + T.load_tasks("airline", "test", ids=["6", "2"])
    eps = run_episodes(ScriptedPolicy(lambda r: ""), tasks, progress=False)
    got = {ep.task.id: T.BENCHMARKS[ep.task.domain].score(ep.task, ep).valid for ep in eps}
    assert got == {t.id: T.do_nothing_passes(t) for t in tasks}
    assert got == {"tau2_retail_12": True, "tau2_retail_5": False, "tau2_airline_6": True, "tau2_airline_2": False}


# ---------------------------------------------------------------- perturbed trajectories: ours vs tau2 directly


def _user_id(task):
    return next(c.kwargs["user_id"] for turn in task.gold_calls for c in turn if "user_id" in c.kwargs)


EXTRA_WRITE = {
    "airline": lambda t: Call("send_certificate", {"user_id": _user_id(t), "amount": 100}),
    "retail": lambda t: Call("modify_user_address", {"user_id": _user_id(t), "address1": "1 Extra St", "address2": "",
                                                     "city": "Austin", "state": "TX", "country": "USA", "zip": "78701"}),
}
READ = {"airline": "get_user_details", "retail": "get_user_details"}


def _last_write(task):
    writes = T._toolkit(task.domain)["writes"]
    return max((t, i) for t, turn in enumerate(task.gold_calls) for i, c in enumerate(turn) if c.name in writes)


def perturb(task, kind):
    """The task's gold (calls, replies) changed one way; ``None`` when the task has nothing to perturb."""
    gold = [list(turn) for turn in task.gold_calls]
    replies = list(task.gold_replies)
    has_write = len(gold) > 1
    try:
        uid = _user_id(task)
    except StopIteration:
        uid = None
    if kind == "drop_write" and has_write:
        t, i = _last_write(task)
        del gold[t][i]
    elif kind == "wrong_argument" and has_write:
        t, i = _last_write(task)
        c = gold[t][i]
        key = next((k for k, v in c.kwargs.items() if isinstance(v, str)), None)
        if key is None:
            return None
        gold[t][i] = Call(c.name, {**c.kwargs, key: c.kwargs[key] + "X"})
    elif kind == "extra_write" and uid:
        gold[-1].append(EXTRA_WRITE[task.domain](task))
    elif kind == "missing_communicate" and task.communicate_info:
        replies[-1] = "All done."
    elif kind == "extra_read" and uid:
        gold[0].append(Call(READ[task.domain], {"user_id": uid}))
    elif kind == "unknown_tool":
        gold[0].append(Call("delete_all_records", {"confirm": True}))
    elif kind == "ten_errors" and has_write:
        gold[0] += [Call("delete_all_records", {"n": k}) for k in range(T.MAX_ERRORS)]
    else:
        return None
    return dataclasses.replace(task, gold_calls=gold, gold_replies=replies)


# expected verdicts, both from our harness and from tau2 run directly
KINDS = {"drop_write": False, "wrong_argument": False, "extra_write": False, "missing_communicate": False,
         "ten_errors": False, "extra_read": True, "unknown_tool": True}
CASES = [("retail", k) for k in KINDS] + [("airline", k) for k in ("drop_write", "wrong_argument", "extra_write")]


@pytest.mark.parametrize("domain,kind", CASES, ids=[f"{d}-{k}" for d, k in CASES])
def test_perturbed_trajectory_same_verdict_as_tau2_directly(domain, kind):
    task = next(p for p in (perturb(t, kind) for t in T.load_tasks(domain, "test")) if p is not None)
    (ep,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
    ours = T.BENCHMARKS[domain].score(task, ep)
    run, info = T.replay_in_tau2(task, *T.oracle_script(task))  # tau2's orchestrator, environment, evaluator
    theirs = T.is_success(info.reward)
    assert ours.valid == theirs == KINDS[kind], (ours, run.termination_reason, info.reward)
    if not ours.valid:
        assert ours.reason and ours.error_type.startswith("tau2:")
    if kind == "ten_errors":
        assert ours.error_type == "tau2:too_many_errors" and run.termination_reason.value == "too_many_errors"
    if kind == "missing_communicate":
        assert ours.error_type == "tau2:communicate"


# ---------------------------------------------------------------- user sources


class StubServer:
    """An OpenAI-compatible /v1/chat/completions on loopback that answers from a list (the last one repeats)."""

    def __init__(self, answers):
        self.answers, self.requests, self.lock = list(answers), [], threading.Lock()

    def _respond(self, payload):
        with self.lock:
            self.requests.append(payload)
            text = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return 200, {"id": "stub", "object": "chat.completion", "created": 0, "model": payload["model"],
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}

    def __enter__(self):
        self._cm = chat_server(self._respond)
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_tau2_user_simulator_on_a_stub_openai_server_runs_an_episode_end_to_end():
    (base,) = T.load_tasks("retail", "test", limit=1)
    answers = ["", "Hi, I want to exchange a desk lamp. I am Mei Kovacs, zip 28236.", "Yes, go ahead.",
               "Thanks, that is all. ###STOP###"]
    with StubServer(answers) as url:
        task = dataclasses.replace(base, user="openai:stub-user", user_options={"base_url": url})
        (ep,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
        v = T.BENCHMARKS["retail"].score(task, ep)
    assert ep.user.end_reason == "user_stop" and ep.user.final_message == answers[-1]
    assert [t.messages[0]["content"] for t in ep.turns] == answers[1:3]  # the empty reply was retried
    assert v.valid  # the oracle's gold actions, whatever the user said
    rec = T.to_simulation(task, ep)
    assert [m.role for m in rec.messages][:2] == ["assistant", "user"] and rec.messages[-1].content == answers[-1]


def test_simulator_requests_carry_tau2s_prompt_and_the_agent_reply():
    (task,) = T.load_tasks("airline", "test", limit=1, user="openai:sim")
    stub = StubServer(["Please cancel my trip.", "###STOP###"])
    with stub as url:
        task = dataclasses.replace(task, user_options={"base_url": url})
        (ep,) = run_episodes(ScriptedPolicy(lambda r: "<summary>s</summary><plan>p</plan>Which reservation?"),
                             [task], progress=False)
    first, second = stub.requests
    assert first["model"] == "sim" and first["messages"][0]["role"] == "system"
    assert "User Simulation Guidelines" in first["messages"][0]["content"]
    assert "Emma Kim" in first["messages"][0]["content"] or task.scenario[:30] in first["messages"][0]["content"]
    assert first["messages"][1] == {"role": "user", "content": "Hi! How can I help you today?"}
    # the agent's reply reaches the simulator without the progress block (flipped to the user role)
    assert second["messages"][-1] == {"role": "user", "content": "Which reservation?"}
    assert ep.user.end_reason == "user_stop"


@pytest.mark.parametrize("answers,why", [([""], "empty simulator reply"), (["   "], "empty simulator reply")])
def test_empty_simulator_replies_end_the_episode_with_a_reason(answers, why):
    (task,) = T.load_tasks("retail", "test", limit=1)
    with StubServer(answers) as url:
        task = dataclasses.replace(task, user="openai:stub", user_options={"base_url": url, "retries": 1})
        (ep,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
    assert ep.done and ep.user.end_reason == "user_error" and why in ep.user.end_detail
    v = T.BENCHMARKS["retail"].score(task, ep)
    assert not v.valid and v.error_type == "tau2:user_error" and "after 2 attempts" in v.reason


def test_unreachable_simulator_endpoint_is_a_reason_not_a_crash():
    (task,) = T.load_tasks("retail", "test", limit=1, user="openai:none",
                           user_options={"base_url": "http://127.0.0.1:9/v1", "retries": 0, "timeout": 2})
    (ep,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
    assert ep.user.end_reason == "user_error" and ep.user.end_detail


def test_local_model_user_toy_smoke():
    (task,) = T.load_tasks("retail", "test", limit=1, user="toy", user_options={"max_new_tokens": 8, "retries": 0})
    (ep,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
    assert ep.done and ep.user.end_reason in ("user_stop", "user_error", "max_steps")
    assert T.BENCHMARKS["retail"].score(task, ep).reason or ep.user.end_reason == "user_stop"


@pytest.mark.parametrize("user, comparable", [("scripted", False), ("toy", False), ("smollm2", False),
                                              ("/models/Qwen2.5-7B-Instruct", False), ("openai:gpt-4.1", True)])
def test_user_provenance_only_an_endpoint_simulator_is_comparable(user, comparable):
    """A local transformers model as the user is not the simulator behind published numbers (review finding)."""
    p = T.user_provenance(user)
    assert p["comparable"] is comparable and p["user"] == user
    assert ("not comparable" in p["note"]) is (not comparable)


# ---------------------------------------------------------------- safety


@contextmanager
def deadline(seconds):
    def boom(*a):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_hostile_model_text_is_a_failed_step_with_a_reason():
    from test_calls import HOSTILE  # the parser's own hostile inputs, on this environment

    (base,) = T.load_tasks("retail", "test", limit=1)
    task = dataclasses.replace(base, user_turns=[f"message {i}" for i in range(len(HOSTILE))])
    (ep,) = run_episodes(ScriptedPolicy(lambda r: HOSTILE[r.episode.turn]), [task], progress=False)
    assert len(ep.steps) == len(HOSTILE) and ep.user.end_reason == "user_stop"
    from parl_mt_lib.rollout import looks_like_calls

    for text, step, end in zip(HOSTILE, ep.steps, ep.turn_end):  # one failed step per turn, with the parser's reason
        if looks_like_calls(text):
            assert step.error and not step.calls and end == "parse_error", text[:60]
        else:  # plain prose ("I cannot do that ...") is the agent's reply to its user on τ-bench, never executed
            assert step.error is None and not step.calls and end == "no_call", text[:60]
    assert ep.turn_end.count("parse_error") >= len(HOSTILE) - 1
    assert ep.env.groups == [] and ep.env._n == 0  # nothing reached tau2's environment
    # the episode is scored (each failed step is what the agent said to the user); nothing was done
    v = T.BENCHMARKS["retail"].score(task, ep)
    assert not v.valid and v.error_type == "tau2:db"


def test_environment_dispatches_only_public_tools_and_refuses_runaway_arguments():
    (task,) = T.load_tasks("retail", "test", limit=1)
    env = T.Tau2Environment(task)
    before = env.state()["db_hash"]
    with deadline(20):
        out = env.execute_all([
            Call("update_db", {"update_data": {}}), Call("get_db_hash"), Call("use_tool", {"tool_name": "x"}),
            Call("calculate", {"expression": "9**9**9**9"}), Call("calculate", {"expression": "1+" * 150 + "1"}),
            Call("get_user_details", {"user_id": {"a", "b"}}), Call("get_user_details", {}, ("a", "b")),
            Call("calculate", {"expression": "(2 + 3) * 4"}), Call("get_user_details", {}, ("mei_kovacs_8020",)),
        ])
    assert all(o.startswith("Error:") for o in out[:7]), out
    assert out[0] == "Error: Tool 'update_db' not found."  # tau2's own answer: not a tool of the toolkit
    assert out[7] == "20.0" and json.loads(out[8])["user_id"] == "mei_kovacs_8020"
    assert env.state()["db_hash"] == before
    # refused calls never reached tau2's environment, so they are not in its record; the others are
    sent = [p for p in env.groups[0] if p is not None]
    assert [tc.name for tc, _ in sent] == ["update_db", "get_db_hash", "use_tool", "calculate", "get_user_details"]


# ---------------------------------------------------------------- pass^k and the progress context


def test_pass_hat_k_matches_its_definition():
    import random

    rng = random.Random(0)
    rows = [{"id": f"t{t}", "seed": s, "valid": rng.random() < p} for t, p in enumerate([0.1, 0.5, 0.9, 1.0, 0.0])
            for s in range(4)]
    r = T.pass_hat_k(rows)
    assert r["trials"] == 4 and r["n_tasks"] == 5
    for k in range(1, 5):  # all k-subsets of a task's trials succeed, averaged over subsets, then over tasks
        want = sum(sum(all(sub) for sub in combinations([x["valid"] for x in rows if x["id"] == t], k))
                   / math.comb(4, k) for t in {x["id"] for x in rows}) / 5
        assert r["pass^k"][k] == pytest.approx(want)
        lo, hi = r["ci95"][k]
        assert lo <= r["pass^k"][k] <= hi
    assert r["pass^k"][1] == r["pass@k"][1] == sum(x["valid"] for x in rows) / 20
    assert all(r["pass^k"][k] >= r["pass^k"][k + 1] for k in range(1, 4))


def test_progress_context_on_tau2_carries_the_latest_user_message(toy):
    from parl_mt_lib.context import render_prompt
    from parl_mt_lib.progress import ProgressContext

    _, tok = toy
    task = next(t for t in T.load_tasks("retail", "test") if len(t.gold_calls) == 2)
    seen = []

    def fn(req):
        seen.append(req.messages)
        ep = req.episode
        text = T.Tau2OraclePolicy().generate([req])[0].text
        return f"<summary>Turn {ep.turn}, step {len(ep.steps_of(ep.turn))}.</summary><plan>Go on.</plan>{text}"

    run_episodes(ScriptedPolicy(fn), [task], ProgressContext(tool_docs="names"), progress=False)
    first_of_turn1 = next(m for m in seen if any(x["content"].endswith(T.CONFIRM) for x in m if x["role"] == "user"))
    prompt = render_prompt(tok, first_of_turn1)
    assert T.CONFIRM in prompt and task.instructions[:200] in prompt
    assert "<summary>Turn 0, step" in prompt  # the previous turn's summary is carried into the request
    assert strip_preamble(seen[0][-1]["content"])[0] == task.user_turns[0]


BFCL_ONLY_CALLS = ("You should only return the function calls", "You SHOULD NOT include any other text",
                   "You are an expert in composing functions")


def test_system_prompt_is_the_benchmarks_own_bfcl_unchanged_tau2_calls_or_a_message(toy):
    """The rendered first prompt: BFCL's keeps its "only function calls" prompt; τ-bench's says call tools or write
    a message to the user (one per step, in the call format), holds the domain policy, never BFCL's sentence."""
    from parl_mt_lib.bfcl import entry_by_id
    from parl_mt_lib.context import MINIMAL_PROMPT, call_format, make_context, render_prompt, system_prompt
    from parl_mt_lib.progress_format import INSTRUCTION

    _, tok = toy

    def first_prompt(task, ctx):
        seen = []
        run_episodes(ScriptedPolicy(lambda r: seen.append(r.messages) or ""), [task], ctx, progress=False)
        return render_prompt(tok, seen[0])

    bfcl = entry_by_id("multi_turn_base_0")
    for docs in ("full", "minimal"):
        p = first_prompt(bfcl, make_context("progress", tool_docs=docs))
        assert system_prompt(bfcl.functions, tool_docs=docs) in p and "message to the user" not in p
    assert INSTRUCTION in first_prompt(bfcl, make_context("progress"))
    assert MINIMAL_PROMPT in first_prompt(bfcl, make_context("full_history", tool_docs="minimal"))
    (task,) = T.load_tasks("retail", "test", limit=1)
    for mode in ("full_history", "progress"):
        for style, docs in (("python", "names"), ("python", "minimal"), ("json", "full")):
            p = first_prompt(task, make_context(mode, style=style, tool_docs=docs))
            assert not any(s in p for s in BFCL_ONLY_CALLS), (mode, style, docs)
            assert T.REPLY_RULE.format(call_format=call_format(style, docs)) in p and task.instructions in p
            assert p.index("<instructions>") < p.index("<policy>") < p.index(task.user_turns[0][:40])
            if mode == "progress":  # the progress instruction names the τ-bench action too
                assert T.progress_instruction(short=docs == "minimal") in p and "or your message to the user" in p
                assert INSTRUCTION not in p


def test_records_of_scored_entries_survive_a_failed_run(tmp_path, monkeypatch):
    """Defect (issue 14 review): records were written only after ``evaluate`` returned, so a run that failed
    midway kept its finished entries (a resumed run skips them) but lost their tau2 records, and the re-check
    then passed on fewer records than entries."""
    import parl_mt_lib.evaluate as E

    def scores_one_then_fails(*a, **kw):
        T.BENCHMARKS["airline"].records.append({"id": "tau2_airline_0", "valid": True, "reward": 1.0,
                                                     "record": {}})
        raise RuntimeError("engine died")

    monkeypatch.setattr(E, "evaluate", scores_one_then_fails)
    with pytest.raises(RuntimeError, match="engine died"):
        T.evaluate_tau2("airline", limit=1, results_dir=tmp_path)
    assert [json.loads(x)["id"] for x in (tmp_path / "records.jsonl").read_text().splitlines()] == ["tau2_airline_0"]


def test_local_model_user_gets_tau2s_prompt_with_roles_flipped_and_its_replies_count():
    """User source (b) without a model: the local generator receives tau2's simulator prompt (system message from
    the task's scenario) with the roles flipped (the agent speaks as ``user``), its text becomes the user turn, and
    an empty reply is retried, then ends the conversation with a reason (issue 14 review: the toy smoke test held
    even with this path broken)."""
    (task,) = T.load_tasks("retail", "test", limit=1)
    seen, replies = [], iter(["I want to exchange a water bottle.", "###STOP###"])

    def local(msgs):
        seen.append(msgs)
        return next(replies)

    u = T.SimulatedUser(task, "local", local=local, retries=0)
    assert u._reply(None, None) == "I want to exchange a water bottle."
    system = seen[0][0]
    assert system["role"] == "system" and str(task.scenario)[:60] in system["content"]
    assert [m["role"] for m in seen[0][1:]] == ["user"]  # tau2's agent greeting, flipped
    assert u._reply(None, "Sure, which order is it?") == "###STOP###"
    assert [m["role"] for m in seen[1][1:]] == ["user", "assistant", "user"]
    assert seen[1][-1]["content"] == "Sure, which order is it?"
    mute = T.SimulatedUser(task, "local", local=lambda msgs: "", retries=1)
    assert mute._reply(None, None) is None and mute.end_reason == "user_error"
    assert mute.end_detail == "empty simulator reply (after 2 attempts)"


def test_step_views_of_a_tau2_episode_judge_an_empty_reply_malformed():
    """Defect (issue 14 review): ``format_reward`` took any call-free step as a well-formed reply, so an empty output
    — which tells a τ-bench user nothing — earned the format reward. ``step_views`` now marks τ-bench steps
    ``replies`` (from the task's benchmark) and the oracle's replies still score 1."""
    from parl_mt_lib.rewards import format_reward, step_views

    (task,) = T.load_tasks("airline", "test", limit=1)
    (gold,) = run_episodes(T.Tau2OraclePolicy(), [task], progress=False)
    (empty,) = run_episodes(ScriptedPolicy(lambda r: ""), [task], progress=False)
    gold_views = step_views(gold, "plain", True, [True] * len(gold.turn_end))
    assert gold_views and all(v.replies for v in gold_views)
    assert all(format_reward(v) == 1.0 for v in gold_views)
    empty_views = step_views(empty, "plain", False, [False] * len(empty.turn_end))
    assert empty_views and all(v.replies and not v.calls for v in empty_views)
    assert all(format_reward(v) == 0.0 for v in empty_views)
