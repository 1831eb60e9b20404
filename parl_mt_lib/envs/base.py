"""The benchmark protocol: what the rollout driver, the context builders and the RL loop may assume of a benchmark.

A benchmark is four small pieces (RAGEN-style seams), bundled by a :class:`Benchmark` object:

* a **task** — any object with ``id``, ``category`` and ``functions`` (the tool docs offered at the start);
  optional ``instructions`` (benchmark text for the system prompt, e.g. a domain policy) and ``gold_calls``
  (reference calls per turn, used by oracles, teachers and the ``call`` reward where a benchmark has them);
* an **environment** (:class:`Environment`) — executes parsed :class:`~parl_mt_lib.calls.Call` objects and returns
  result text, and snapshots its state; it never sees model text;
* a **user source** (:class:`UserSource`) — the next user turn given the episode so far, or ``None`` when the
  conversation is over: scripted from the task for BFCL, an LLM simulator for τ-bench;
* a **scorer** — :meth:`Benchmark.score` gives the benchmark's own official verdict with a reason, and
  :meth:`Benchmark.turn_scores` the verdict of each prefix of turns (MT-GRPO's turn-level credit).

Benchmarks are registered by name; a task names its benchmark with a ``benchmark`` attribute (default ``"bfcl"``).
A new benchmark is one module that calls :func:`register`; the driver, the context builders and the RL loop do not
change (``tests/test_protocol.py`` plugs in a two-tool in-memory benchmark).

Example:
    >>> from parl_mt_lib.envs import get_benchmark
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> bench = get_benchmark("bfcl")
    >>> task = entry_by_id("multi_turn_base_0")
    >>> benchmark_of(task).name, bench.user(task).next(_Stub()).messages[0]["role"]
    ('bfcl', 'user')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..runtime import ConfigError


@dataclass
class Verdict:
    """A benchmark's official verdict on one episode: ``valid`` plus a human-readable reason when not."""

    valid: bool
    reason: str = ""
    error_type: str | None = None


@dataclass
class UserTurn:
    """One user turn: its messages, and tool docs first offered with it (BFCL's miss_func hold-out turns)."""

    messages: list[dict]
    functions: list[dict] = field(default_factory=list)


@runtime_checkable
class Environment(Protocol):
    """Executes parsed calls (never text); results are strings the model reads as tool messages."""

    def execute(self, call) -> str: ...

    def execute_all(self, calls: list) -> list[str]: ...

    def state(self) -> dict: ...


@runtime_checkable
class UserSource(Protocol):
    """``next(episode)`` -> the next :class:`UserTurn`, or ``None``: the conversation is over."""

    def next(self, episode) -> UserTurn | None: ...


class Benchmark:
    """Base class: subclasses set ``name`` and implement :meth:`environment`, :meth:`user` and :meth:`score`.

    ``replies``: whether the agent talks to its user in prose (τ-bench). Then a message with no call syntax ends the
    turn as the agent's reply; otherwise (BFCL) text that does not parse as calls is a failed step with a reason.
    """

    name = "?"
    replies = False

    def environment(self, task) -> Environment:
        raise NotImplementedError

    def user(self, task) -> UserSource:
        raise NotImplementedError

    def score(self, task, episode) -> Verdict:
        raise NotImplementedError

    def system_prompt(self, task, style: str = "python", prompting: str = "plain", tool_docs: str = "full") -> str:
        """The system prompt of the task's episodes (the context builders add theirs after it). Default: BFCL's
        (:func:`parl_mt_lib.context.system_prompt`: "only return the function calls"), then the task's optional
        ``instructions``. A benchmark whose agent also talks to its user says so in its own (τ-bench)."""
        from ..context import system_prompt

        text = system_prompt(task.functions if style == "python" else None, style, prompting, tool_docs)
        extra = getattr(task, "instructions", "")
        return text + ("\n\n" + extra if extra else "")

    def progress_instruction(self, short: bool = False) -> str:
        """What the progress context asks of every step (PARL-MT's summary + plan, then the step's action)."""
        from ..progress_format import INSTRUCTION, INSTRUCTION_SHORT

        return INSTRUCTION_SHORT if short else INSTRUCTION

    def task_from_dict(self, d: dict):
        """A task from the reference a PAG directory's ``tasks.jsonl`` holds for it (benchmarks whose tasks come from
        a package: τ-bench). BFCL and synthetic tasks are stored whole instead (``synth.entry_to_dict``)."""
        raise ConfigError(f"benchmark {self.name!r} has no task references; its tasks are stored whole")

    def assert_trainable(self, tasks: list) -> None:
        """Stop with one line if any of these tasks may not be trained on (it is, or overlaps, one of the benchmark's
        evaluation tasks). The default has no evaluation split to protect; BFCL and τ-bench override it."""

    def turn_scores(self, task, episode) -> list[bool]:
        """Verdict of the episode's turns ``[0..t]`` for every played turn ``t``. The default scores only the
        whole episode (its verdict on the last turn, False before); benchmarks with per-turn gold override it."""
        n = len(episode.turn_end)
        return [False] * (n - 1) + [self.score(task, episode).valid] if n else []


class ScriptedUser:
    """A user that says the task's own turns in order (``turns[i]``: a list of messages; an empty list is a
    hold-out turn that only offers ``new_functions[i]``, with ``holdout_prompt`` as its message).

    >>> u = ScriptedUser([[{"role": "user", "content": "hi"}]])
    >>> u.next(_Stub()).messages, u.next(_Stub(n=1))
    ([{'role': 'user', 'content': 'hi'}], None)
    """

    def __init__(self, turns: list[list[dict]], new_functions: dict[int, list[dict]] | None = None,
                 holdout_prompt: str = ""):
        self.turns, self.new_functions, self.holdout_prompt = turns, new_functions or {}, holdout_prompt

    def next(self, episode) -> UserTurn | None:
        t = len(episode.turns)
        if t >= len(self.turns):
            return None
        docs = self.new_functions.get(t, [])
        msgs = [dict(m) for m in self.turns[t]]
        if not msgs and docs:
            msgs = [{"role": "user", "content": self.holdout_prompt}]
        return UserTurn(msgs, list(docs))


class _Stub:
    """An episode with ``n`` turns so far (doctests)."""

    def __init__(self, n: int = 0):
        self.turns = [None] * n


def param_order(task) -> dict[str, list[str]]:
    """Function name -> parameter names in doc order, from the task's tool docs (those offered later included):
    what names a positional argument when calls are compared (:func:`parl_mt_lib.calls.call_key`)."""
    docs = list(task.functions) + [d for ds in (getattr(task, "missed_functions", None) or {}).values() for d in ds]
    return {d["name"]: list((d.get("parameters") or {}).get("properties", {})) for d in docs}


_REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Make a benchmark available by its ``name`` (tasks name it in their ``benchmark`` attribute)."""
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


# benchmarks in optional modules, imported on first use (their packages are extras)
OPTIONAL = {"tau2_airline": "parl_mt_lib.envs.tau2", "tau2_retail": "parl_mt_lib.envs.tau2",
            "tau2_telecom": "parl_mt_lib.envs.tau2"}


def get_benchmark(name: str) -> Benchmark:
    import importlib

    from . import bfcl  # noqa: F401  (registers bfcl + synthetic)

    if name not in _REGISTRY and name in OPTIONAL:
        importlib.import_module(OPTIONAL[name])  # a missing extra raises its own one-line ConfigError
    if name not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def assert_trainable(tasks: list) -> None:
    """Each task's benchmark checks that its tasks may be trained on (:meth:`Benchmark.assert_trainable`: BFCL's
    overlap rule, τ-bench's train/test split); what the RL and SFT entry points call on their training data."""
    groups: dict[str, tuple[Benchmark, list]] = {}
    for t in tasks:
        b = benchmark_of(t)
        groups.setdefault(b.name, (b, []))[1].append(t)
    for b, ts in groups.values():
        b.assert_trainable(ts)


def tasks_from_refs(refs: list[dict]) -> list:
    """Tasks from ``tasks.jsonl`` references (``{"benchmark": name, ...}``), asserted trainable: a PAG directory holds
    training tasks only, so reading one that names an evaluation task stops with one line."""
    tasks = [get_benchmark(d["benchmark"]).task_from_dict(d) for d in refs]
    assert_trainable(tasks)
    return tasks


def benchmark_of(task) -> Benchmark:
    """The benchmark a task belongs to: its ``benchmark`` attribute (a name or a :class:`Benchmark`), default bfcl."""
    b = getattr(task, "benchmark", "bfcl")
    return b if isinstance(b, Benchmark) else get_benchmark(b)
