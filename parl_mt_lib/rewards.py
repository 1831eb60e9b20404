"""Reward registry (open-r1 style): small pure functions of one step, chosen by name + weight in a recipe.

Every function takes a :class:`StepView` — what one policy step did, with the gold calls of its turn
and the episode's official verdicts — and returns a float. The paper names the terms (format, call
correctness, task success, efficiency) but gives no weights; ours live in the recipes
(``recipes/*/pag_rl.yaml``) and are documented there.

* ``format``      1 if the output is well formed: ``<summary>…</summary><plan>…</plan>`` then a parseable call
                  list or nothing (progress view); a parseable call list or nothing (plain view); on τ-bench
                  the message to the user in place of the calls (a step the driver took as the reply).
* ``call``        per call, 1 if it equals a gold call of the turn not yet made and executed without error;
                  0.25 + 0.5 x (share of that gold call's arguments matched) if the function is right but
                  the call is not exact; 0 else. A step without calls scores 1 if every gold call of the turn
                  was already made, else 0 (stopping early earns nothing: without the function credit a
                  policy that cannot yet get arguments right learns to stop — LOG.md, 2026-11-24 RL).
                  Calls compare parsed, never as strings (:func:`~parl_mt_lib.calls.same_call`: keyword
                  order ignored, numbers by value as BFCL's checker does, ``True`` never equal to ``1``);
                  single arguments likewise (:func:`~parl_mt_lib.calls.value_key`).
* ``task``        1 if the official checker accepts the whole episode (same value on every step).
* ``turn``        1 if the official checker accepts the episode's turns up to this step's turn (turn-level).
* ``efficiency``  -1 if the step lies beyond the turn's gold step count or repeats (same rule as ``call``) a
                  call made earlier in the turn, else 0.

Example:
    >>> s = StepView("<summary>s</summary><plan>p</plan>[ls(a=1)]", "progress", calls=("ls(a=1)",),
    ...              results=("ok",), turn_gold=("ls(a=1)",))
    >>> {n: REWARDS[n](s) for n in ("format", "call", "efficiency")}
    {'format': 1.0, 'call': 1.0, 'efficiency': 0.0}
    >>> weighted({"format": 1.0, "call": 1.0, "efficiency": 0.0}, {"format": 0.5, "call": 1.0})
    1.5
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .calls import CallParseError, call_key, parse_calls, value_key
from .progress_format import progress_ok
from .runtime import ConfigError


def format_ok(text: str, view: str) -> bool:
    """Well-formed step output for the view (see module doc)."""
    if view == "progress" and not progress_ok(text):
        return False
    try:
        parse_calls(text)
    except (CallParseError, ValueError):
        return False
    return True


def is_error(result: str) -> bool:
    """A tool result that reports failure (our executor's message or a BFCL ``{"error": ...}`` dict)."""
    if result.startswith("Error during execution"):
        return True
    try:
        value = json.loads(result)
    except (ValueError, TypeError):
        return False
    return isinstance(value, dict) and "error" in value


@dataclass(frozen=True)
class StepView:
    """One step as the reward functions see it; call strings are canonical (keyword arguments, positional
    ones named from the docs by :func:`step_views`) and compare by :func:`~parl_mt_lib.calls.call_key`."""

    completion: str
    view: str = "progress"
    calls: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    error: str | None = None            # parse failure reason (or policy error)
    turn_gold: tuple[str, ...] = ()     # gold calls of this step's turn
    calls_before: tuple[str, ...] = ()  # calls made earlier in the same turn
    step_in_turn: int = 0
    task_success: bool = False
    turn_success: bool = False
    replies: bool = False               # the benchmark takes a call-free step as the turn's message to the user


def _parsed(text: str):
    try:
        (call,) = parse_calls(text)
        return call
    except (CallParseError, ValueError):
        return None


def _key(text: str):
    """:func:`~parl_mt_lib.calls.call_key` of a call string; for text that is not one call, a fresh object
    (equal to nothing, so an unparseable call never matches, never counts as made or repeated)."""
    try:
        return call_key(text)
    except (CallParseError, ValueError):
        return object()


def _remaining(gold, made) -> list[str]:
    """Gold calls not yet made: multiset difference by call key (each made call removes one equal gold call)."""
    left = [(_key(g), g) for g in gold]
    for key in map(_key, made):
        i = next((i for i, (k, _) in enumerate(left) if k == key), None)
        if i is not None:
            del left[i]
    return [g for _, g in left]


def _call_score(call_text: str, result: str, remaining: list[str]) -> float:
    key = _key(call_text)
    if any(_key(g) == key for g in remaining):
        return 0.0 if is_error(result) else 1.0
    got = _parsed(call_text)
    best = 0.0
    for gold in remaining:
        want = _parsed(gold)
        if got is None or want is None or want.name != got.name:
            continue
        shared = sum(k in got.kwargs and value_key(got.kwargs[k]) == value_key(v) for k, v in want.kwargs.items())
        best = max(best, 0.25 + 0.5 * shared / max(len(want.kwargs), 1))
    return best


def format_reward(s: StepView) -> float:
    """:func:`format_ok`; on a benchmark with replies (τ-bench) a step without calls is the turn's message to the
    user, well formed only as :func:`~parl_mt_lib.sft_eval.reply_ok` says — non-empty prose without call syntax,
    the view's block first (an empty output "ends the turn" on BFCL but tells a τ-bench user nothing)."""
    from .sft_eval import reply_ok

    if s.error is not None:
        return 0.0
    if s.replies and not s.calls:
        return float(reply_ok(s.completion, s.view))
    return float(format_ok(s.completion, s.view))


def call_reward(s: StepView) -> float:
    if s.error is not None:
        return 0.0
    remaining = _remaining(s.turn_gold, s.calls_before)
    if not s.calls:
        return float(not remaining)
    scores = []
    for call, result in zip(s.calls, s.results):
        scores.append(_call_score(call, result, remaining))
        remaining = _remaining(remaining, [call])
    return sum(scores) / len(scores)


def task_reward(s: StepView) -> float:
    return float(s.task_success)


def turn_reward(s: StepView) -> float:
    return float(s.turn_success)


def efficiency_reward(s: StepView) -> float:
    gold_steps = len(s.turn_gold) + 1  # one call per step, then the turn-ending step
    made = {_key(c) for c in s.calls_before}
    repeated = any(_key(c) in made for c in s.calls)
    return -1.0 if s.step_in_turn >= gold_steps or repeated else 0.0


REWARDS = {"format": format_reward, "call": call_reward, "task": task_reward, "turn": turn_reward,
           "efficiency": efficiency_reward}


def check_weights(weights: dict) -> dict[str, float]:
    """Validate ``{name: weight}`` against the registry; a bad name stops with the known ones."""
    if not isinstance(weights, dict) or not weights:
        raise ConfigError(f"reward weights must be a non-empty mapping name -> weight, got {weights!r}")
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ConfigError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    return {k: float(v) for k, v in weights.items()}


def weighted(terms: dict[str, float], weights: dict[str, float]) -> float:
    """Sum of ``weight x term`` over the weighted names."""
    return sum(w * terms[n] for n, w in weights.items())


def score_steps(views: list[StepView], names) -> list[dict[str, float]]:
    """Every named term for every step."""
    return [{n: REWARDS[n](v) for n in names} for v in views]


def _canonical(text: str, order: dict) -> str:
    """Keyword form of a call (positional arguments named from the docs); as written if that fails."""
    p = _parsed(text)
    try:
        return p.with_keywords(order.get(p.name, [])).render() if p else text
    except (CallParseError, ValueError):
        return text


def step_views(episode, view: str, task_success: bool, turn_success: list[bool]) -> list[StepView]:
    """The :class:`StepView` of every step of a played episode (gold calls from its task, where it has them;
    positional arguments named from the task's tool docs)."""
    from .envs import benchmark_of, param_order

    order = param_order(episode.task)
    replies = bool(getattr(getattr(episode, "benchmark", None) or benchmark_of(episode.task), "replies", False))
    gold = [[c.with_keywords(order.get(c.name, [])).render() for c in turn]
            for turn in getattr(episode.task, "gold_calls", None) or []]
    out, made, last_turn, k = [], [], -1, 0
    for step in episode.steps:
        if step.turn != last_turn:
            made, last_turn, k = [], step.turn, 0
        calls = [_canonical(c, order) for c in step.calls]
        out.append(StepView(step.output, view, tuple(calls), tuple(step.results), step.error,
                            tuple(gold[step.turn]) if step.turn < len(gold) else (), tuple(made), k,
                            task_success, bool(turn_success[step.turn]) if step.turn < len(turn_success) else False,
                            replies))
        made += calls
        k += 1
    return out
