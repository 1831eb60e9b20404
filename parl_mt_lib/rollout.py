"""The rollout driver: plays tasks of any benchmark turn by turn and step by step.

The driver sees only the benchmark protocol (:mod:`parl_mt_lib.envs`): the task's benchmark builds its environment
and its user source; the user source gives each user turn (``None``: the conversation is over). Per turn, as BFCL's
prompting loop: ask the policy for a message; parse it (never execute it); no call -> the turn ends (the message is
the agent's reply to the user); unparseable -> the step is recorded with its reason and the turn ends; otherwise
each call is dispatched to the environment and its result becomes a tool message. A turn whose step count exceeds
the limit (BFCL's 20) force-quits the episode. Many episodes advance together so a model backend can batch.

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
                 progress: bool = True, on_episode=None, on_step=None, benchmark=None) -> list[Episode]:
    """Play every task to the end with ``policy``; ``context`` defaults to full history; ``benchmark`` defaults
    to each task's own (:func:`parl_mt_lib.envs.benchmark_of`).

    ``batch_size`` episodes advance together (one ``policy.generate`` call per step across them).
    ``on_episode(ep)`` is called as each episode finishes (used for incremental result writing);
    ``on_step(ep, step)`` after every recorded step (used for replays and cost accounting).
    """
    from .context import FullHistoryContext

    context = context or FullHistoryContext(style=getattr(policy, "style", "python"))
    entries = list(entries)
    finished: list[Episode] = []
    bar = tqdm(total=len(entries), desc=f"episodes ({getattr(policy, 'name', 'policy')})", disable=not progress)
    for start in range(0, len(entries), batch_size):
        chunk = [Episode(e, benchmark) for e in entries[start:start + batch_size]]
        for ep in chunk:
            if ep.done:  # the user had nothing to say
                bar.update(1)
                if on_episode:
                    on_episode(ep)
        active = [ep for ep in chunk if not ep.done]
        while active:
            requests = [StepRequest(context.messages(ep), context.tools(ep), ep) for ep in active]
            for ep, gen in zip(active, policy.generate(requests)):
                step = ep.record(gen, max_steps)
                if on_step:
                    on_step(ep, step)
                if ep.done:
                    bar.update(1)
                    if on_episode:
                        on_episode(ep)
            active = [ep for ep in active if not ep.done]
        finished.extend(chunk)
    bar.close()
    return finished
