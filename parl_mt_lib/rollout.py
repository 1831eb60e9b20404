"""The rollout driver: plays tasks of any benchmark turn by turn and step by step.

The driver sees only the benchmark protocol (:mod:`parl_mt_lib.envs`): the task's benchmark builds its environment
and its user source; the user source gives each user turn (``None``: the conversation is over). Per turn, as BFCL's
prompting loop: ask the policy for a message; parse it (never execute it); no call -> the turn ends (the message is
the agent's reply to the user); unparseable -> the step is recorded with its reason and the turn ends; otherwise
each call is dispatched to the environment and its result becomes a tool message. A turn whose step count exceeds
the limit (BFCL's 20) force-quits the episode. Many episodes advance together so a model backend can batch, and a finished episode's
slot goes to the next pending task at once (continuous batching across episodes: :func:`run_episodes`).

Example:
    >>> from parl_mt_lib.bfcl import load_entries
    >>> from parl_mt_lib.policies import OraclePolicy
    >>> eps = run_episodes(OraclePolicy(), load_entries(["base"], limit=2), progress=False)
    >>> [len(e.calls_per_turn()) for e in eps], eps[0].calls_per_turn()[0][0]
    ([4, 4], "cd(folder='document')")
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

import re

from .calls import CallParseError, parse_calls, strip_preamble
from .envs.base import UserTurn, benchmark_of

MAX_STEPS = 20  # bfcl_eval.constants.default_prompts.MAXIMUM_STEP_LIMIT
_CALL_SYNTAX = re.compile(r"^\s*(\[|```)|[A-Za-z_][A-Za-z0-9_]*\(|<tool_call>")


def looks_like_calls(text: str) -> bool:
    """Whether text that failed to parse was meant as calls — it opens a list or a fence, holds ``name(`` anywhere
    (hostile code does: ``os.system('x')``) or a ``<tool_call>`` — rather than prose; after any progress preamble.

    >>> looks_like_calls("[ls(a=1"), looks_like_calls("Your booking (2 bags) is confirmed."), looks_like_calls(
    ...     "import os; os.system('x')")
    (True, False, True)
    """
    body, _ = strip_preamble(text)
    return bool(_CALL_SYNTAX.search(body))


@dataclass
class Step:
    turn: int
    output: str
    calls: list[str] = field(default_factory=list)   # canonical call strings, parsed from output
    results: list[str] = field(default_factory=list)
    error: str | None = None                          # parse failure reason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # RL only (a policy with keep_tokens): the exact token ids the model saw and sampled, and the
    # log-probabilities of the sampled tokens under the sampling distribution
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None


@dataclass
class StepRequest:
    """What a policy gets for one step: the context messages (and tools) plus the episode, for oracles."""

    messages: list[dict]
    tools: list[dict] | None
    episode: "Episode"


@dataclass
class Generation:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None  # the policy could not answer (e.g. context_overflow): the episode stops
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None


@dataclass
class Episode:
    """A task being played: its benchmark, environment and user, the user turns so far, every step, and why
    each turn ended. ``Episode.start`` builds it from the task's benchmark (or the one given)."""

    task: object
    benchmark: object = None
    env: object = None
    user: object = None
    turns: list[UserTurn] = field(default_factory=list)  # user turns received so far
    turn: int = 0
    steps: list[Step] = field(default_factory=list)
    turn_end: list[str] = field(default_factory=list)  # per finished turn: no_call | parse_error | max_steps | policy_error
    done: bool = False
    force_quit: bool = False

    def __post_init__(self):
        self.benchmark = self.benchmark or benchmark_of(self.task)
        if self.env is None:
            self.env = self.benchmark.environment(self.task)
        if self.user is None:
            self.user = self.benchmark.user(self.task)
        if not self.turns and not self.done:
            first = self.user.next(self)
            if first is None:
                self.done = True
            else:
                self.turns.append(first)

    @property
    def entry(self):
        """The task (the name predates the benchmark protocol; BFCL calls tasks entries)."""
        return self.task

    def functions(self) -> list[dict]:
        """Tool docs offered so far: the task's, plus those a user turn added (BFCL miss_func)."""
        return list(self.task.functions) + [d for t in self.turns for d in t.functions]

    def steps_of(self, turn: int) -> list[Step]:
        return [s for s in self.steps if s.turn == turn]

    def calls_per_turn(self) -> list[list[str]]:
        """Per played turn, the calls made (the input of :func:`parl_mt_lib.evaluate.score_trajectory`)."""
        return [[c for s in self.steps_of(t) for c in s.calls] for t in range(len(self.turn_end))]

    def end_turn(self, reason: str) -> None:
        """Close the current turn; then the user source says the next turn or ends the conversation."""
        self.turn_end.append(reason)
        if reason == "max_steps":
            self.force_quit = True
        nxt = None if self.force_quit else self.user.next(self)
        if nxt is None:
            self.done = True
            return
        self.turns.append(nxt)
        self.turn += 1

    def record(self, gen: Generation, max_steps: int = MAX_STEPS) -> Step:
        """Parse one generation, execute its calls and advance the turn state."""
        step = Step(self.turn, gen.text, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    prompt_ids=gen.prompt_ids, completion_ids=gen.completion_ids, logprobs=gen.logprobs)
        self.steps.append(step)
        if gen.error:
            step.error = gen.error
            self.force_quit = True
            self.end_turn("policy_error")
            return step
        try:
            calls = parse_calls(gen.text)
        except CallParseError as err:
            if getattr(self.benchmark, "replies", False) and not looks_like_calls(gen.text):
                self.end_turn("no_call")  # prose to the user (τ-bench): the turn's reply, not a failed step
                return step
            step.error = err.reason
            self.end_turn("parse_error")
            return step
        if not calls:
            self.end_turn("no_call")
            return step
        step.calls = [c.render() for c in calls]
        step.results = self.env.execute_all(calls)
        if len(self.steps_of(self.turn)) > max_steps:
            self.end_turn("max_steps")
        return step


def run_episodes(policy, entries, context=None, *, max_steps: int = MAX_STEPS, batch_size: int = 8,
                 progress: bool = True, on_episode=None, on_step=None, benchmark=None,
                 refill: bool = True) -> list[Episode]:
    """Play every task to the end with ``policy``; ``context`` defaults to full history; ``benchmark`` defaults
    to each task's own (:func:`parl_mt_lib.envs.benchmark_of`). Returns the episodes in the order of ``entries``.

    Up to ``batch_size`` episodes advance together (one ``policy.generate`` call per step across them).
    ``refill`` (default): continuous batching across episodes -- when an episode finishes, the next pending task
    takes its slot at the next step, so no episode waits for a slot a finished one holds (with episodes of very
    different lengths this takes far fewer ``generate`` calls; a vLLM engine keeps its batch full).
    ``refill=False``: the old static batches (the next ``batch_size`` tasks start only when the whole batch has
    finished). Which tasks share a call differs, nothing else: at greedy decoding both give the same episodes.
    ``on_episode(ep)`` is called as each episode finishes (used for incremental result writing);
    ``on_step(ep, step)`` after every recorded step (used for replays and cost accounting).

    >>> from parl_mt_lib.bfcl import load_entries
    >>> from parl_mt_lib.policies import ScriptedPolicy
    >>> class Counted(ScriptedPolicy):  # counts generate calls
    ...     calls = 0
    ...     def generate(self, requests):
    ...         self.calls += 1
    ...         return super().generate(requests)
    >>> def script(req):  # entry 0 makes six calls in its first turn; every other step makes none
    ...     ep = req.episode
    ...     return "[ls()]" if ep.task.id.endswith("_0") and ep.turn == 0 and len(ep.steps_of(0)) < 6 else ""
    >>> tasks, new, old = load_entries(["base"], limit=5), Counted(script), Counted(script)
    >>> eps = run_episodes(new, tasks, batch_size=2, progress=False)
    >>> _ = run_episodes(old, tasks, batch_size=2, progress=False, refill=False)
    >>> [e.task.id for e in eps] == [t.id for t in tasks], new.calls, old.calls
    (True, 13, 18)
    """
    from .context import FullHistoryContext

    if not isinstance(batch_size, int) or batch_size < 1:
        from .runtime import ConfigError

        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    context = context or FullHistoryContext(style=getattr(policy, "style", "python"))
    entries = list(entries)
    episodes: list[Episode | None] = [None] * len(entries)
    pending = iter(range(len(entries)))  # the next task to start: deterministic, in the order given
    bar = tqdm(total=len(entries), desc=f"episodes ({getattr(policy, 'name', 'policy')})", disable=not progress)

    def finished(ep):
        bar.update(1)
        if on_episode:
            on_episode(ep)

    def admit(active: list) -> None:
        """Start pending tasks while a slot is free (static batches: a whole batch's worth of tasks, once the
        last batch is over, as before)."""
        started = 0
        while (len(active) if refill else started) < batch_size:
            i = next(pending, None)
            if i is None:
                return
            ep = episodes[i] = Episode(entries[i], benchmark)
            started += 1
            if ep.done:  # the user had nothing to say
                finished(ep)
            else:
                active.append(ep)

    active: list[Episode] = []
    while True:
        if refill or not active:
            admit(active)
        if not active:
            break
        requests = [StepRequest(context.messages(ep), context.tools(ep), ep) for ep in active]
        for ep, gen in zip(active, policy.generate(requests)):
            step = ep.record(gen, max_steps)
            if on_step:
                on_step(ep, step)
            if ep.done:
                finished(ep)
        active = [ep for ep in active if not ep.done]
    bar.close()
    return episodes
