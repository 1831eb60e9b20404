"""Held-out metrics for SFT'd (and RL'd) policies.

**Headline metrics come from free-running play** (the policy plays each held-out task end to end in its own
context; every prompt holds only the task, the tool results and the policy's *own* earlier outputs), so the two SFT
views are compared on equal terms:

* ``task_success`` — the benchmark's official verdict on the episode;
* ``format_validity`` — share of the policy's own steps that are well formed for its view (progress view:
  ``<summary>…</summary><plan>…</plan>`` then a parseable call list or nothing; plain view: a parseable call list
  or nothing — :func:`parl_mt_lib.rewards.format_ok`);
* ``step_accuracy`` — share of the policy's own steps that take the right next action *along its own trajectory*:
  the step's calls equal the next gold call(s) of the turn not yet made by an earlier right step (keyword order
  free, numbers by value: :func:`parl_mt_lib.calls.same_calls`), and a step without calls is right only when
  nothing remains;
* ``call_accuracy`` — the same, on steps where a gold call remained.

**Teacher-forced metrics** (``tf_*``) are kept for diagnosis only and are NOT comparable across views: each held-out
step's prompt is the gold context, and for the progress view that includes the teacher's previous summary/plan,
which names the next gold call by function and first value ("Next: mkdir('temp'), then mv."). The plain view's gold
context has no such hint.

Example:
    >>> format_ok("<summary>s</summary><plan>p</plan>[ls()]", "progress"), format_ok("[ls(", "plain")
    (True, False)
"""
from __future__ import annotations

from collections import Counter

import torch

from .calls import call_key, same_calls
from .context import render_prompt
from .pag import build_messages, calls_equal
from .rewards import format_ok  # one definition of well-formed output, shared with the RL format reward


# padded prompt tokens per ``generate`` call on CPU: batching pays off only for short prompts there. Measured
# (toy SFT checkpoint, 2 cores, 1 thread, greedy, batch 8 vs 1, same outputs): ~120-token prompts 0.6-0.9 s vs
# 1.7-2.0 s for 16 tasks; ~830 tokens 0.56 s either way; ~7.9k tokens 9.6 s vs 4.8 s (SDPA's masked path)
CPU_BATCH_TOKENS = 4096


def view_context(view: str) -> str:
    """The context an SFT view's model plays in: the progress view in the progress context, the plain view in BFCL's
    full history (as 06 plays SFT-PAG and SFT-plain).

    >>> view_context("progress"), view_context("plain")
    ('progress', 'full_history')
    """
    return "progress" if view == "progress" else "full_history"


def play(model, tok, tasks: list, view: str, tool_docs: str = "none", max_new_tokens: int = 96,
         batch_size: int = 16, policy=None) -> list:
    """Greedy free-running episodes of ``tasks`` in the view's context (``progress`` or full history), through
    the rollout driver: ``batch_size`` episodes in flight (a finished one's slot refilled), their steps batched
    into one ``generate`` call (on CPU up to :data:`CPU_BATCH_TOKENS` padded prompt tokens per call; on GPU up to
    the policy's own cap). ``policy``: a ready rollout backend to play with instead of HF ``generate`` on
    ``model`` (the RL's vLLM engine, already holding ``model``'s weights; the caller makes it greedy)."""
    from .context import make_context
    from .policies import HFPolicy
    from .rollout import run_episodes

    ctx = make_context(view_context(view), tool_docs=tool_docs)
    if policy is not None:
        return run_episodes(policy, tasks, ctx, batch_size=batch_size, progress=False)
    if getattr(tok, "padding_side", "left") != "left":  # batched generation needs left padding (a copy: the
        import copy                                      # caller's tokenizer keeps its own side)

        tok = copy.copy(tok)
        tok.padding_side = "left"
    cpu = model.device.type == "cpu"
    pol = HFPolicy(model, tok, max_new_tokens=max_new_tokens, micro_batch_size=batch_size,
                   **({"max_batch_tokens": CPU_BATCH_TOKENS} if cpu else {}))
    return run_episodes(pol, tasks, ctx, batch_size=batch_size, progress=False)


def step_verdicts(episode) -> list[bool | None]:
    """Per step of a played episode: did it take the right next action along its own trajectory (see module doc)?
    ``None`` where the task has no gold calls for that turn (nothing to compare with)."""
    return [ok for _, ok, _ in _judged_steps(episode)]


# why a wrong step was wrong (first_error): the policy ...
ERROR_CAUSES = ("parse_error",     # wrote something that does not parse as calls (or any step error: overflow)
                "stopped_early",   # made no call while gold calls of the turn remained
                "extra_call",      # called although nothing remained, or every remaining function and more
                "wrong_function",  # called another function than the next gold one(s)
                "wrong_order",     # called the next gold functions, in another order
                "arguments")       # called the right function(s) with other arguments


def first_error(episode) -> dict | None:
    """The first wrong step of a played episode and why (:data:`ERROR_CAUSES`), or ``None`` if no step was wrong:
    the diagnosis behind a low task success (which part of the request -> call map a model has not learnt).

    >>> from types import SimpleNamespace as NS
    >>> task = NS(id="t", gold_calls=[["touch(file_name='a')", "ls()"]], functions=[])
    >>> ep = NS(task=task, steps=[NS(turn=0, calls=["mkdir(dir_name='a')"], error=None, output="")])
    >>> first_error(ep)["cause"]
    'wrong_function'
    >>> ep.steps[0].calls = ["touch(file_name='a')", "ls()", "rm(file_name='a')"]
    >>> first_error(ep)["cause"]
    'extra_call'
    """
    for i, (step, ok, remaining) in enumerate(_judged_steps(episode)):
        if ok is not False:
            continue
        if step.error is not None:
            cause = "parse_error"
        elif not step.calls:
            cause = "stopped_early"
        else:
            got = [call_key(c)[0] for c in step.calls]
            want = [call_key(c)[0] for c in remaining[:len(step.calls)]]
            if len(got) > len(want):  # more calls than remained: extra, unless a remaining function was missed
                cause = "extra_call" if not Counter(want) - Counter(got) else "wrong_function"
            elif Counter(got) != Counter(want):
                cause = "wrong_function"
            elif got != want:
                cause = "wrong_order"
            else:
                cause = "arguments"
        return {"task": episode.task.id, "step": i, "turn": step.turn, "cause": cause, "calls": list(step.calls),
                "expected": [c if isinstance(c, str) else c.render() for c in remaining[:max(len(step.calls), 1)]]}
    return None


def error_causes(episodes: list) -> dict:
    """How many episodes' first wrong step had each cause (:func:`first_error`; ``none``: no wrong step)."""
    counts = Counter((first_error(ep) or {"cause": "none"})["cause"] for ep in episodes)
    return {c: counts.get(c, 0) for c in ERROR_CAUSES + ("none",)}


def _judged_steps(episode):
    """``(step, verdict, remaining gold calls of its turn before it)`` per step (:func:`step_verdicts`)."""
    from .envs import param_order

    gold = getattr(episode.task, "gold_calls", None) or []
    order = param_order(episode.task)  # a positional argument is named from the task's docs before comparing
    made, last = [], None
    for step in episode.steps:
        if step.turn != last:
            made, last = [], step.turn
        if step.turn >= len(gold):
            yield step, None, []
            continue
        left = Counter(call_key(c, order) for c in made)
        remaining = []
        for c in gold[step.turn]:
            k = call_key(c, order)
            if left[k]:
                left[k] -= 1
            else:
                remaining.append(c)
        if step.error is not None:
            ok = False
        elif not step.calls:
            ok = not remaining
        else:
            ok = same_calls(step.calls, remaining[:len(step.calls)], order)
        yield step, ok, remaining
        if ok:  # only a right action moves the policy along the gold turn
            made += step.calls


def trajectory_metrics(episodes: list, view: str) -> dict:
    """Headline metrics of played episodes (module doc); a pure function of the episode records."""
    steps = [(s, v) for ep in episodes for s, v in zip(ep.steps, step_verdicts(ep))]
    judged = [(s, v) for s, v in steps if v is not None]
    call_steps = []
    for ep in episodes:  # steps where a gold call remained: the right action was a call
        gold = getattr(ep.task, "gold_calls", None) or []
        for s, v in zip(ep.steps, step_verdicts(ep)):
            if v is not None and (s.calls or not v) and s.turn < len(gold) and gold[s.turn]:
                call_steps.append(v)
    ok = [ep.benchmark.score(ep.task, ep).valid for ep in episodes]
    n = max(len(steps), 1)
    return {"n_tasks": len(episodes), "task_success": sum(ok) / max(len(episodes), 1), "n_steps": len(steps),
            "format_validity": sum(s.error is None and format_ok(s.output, view) for s, _ in steps) / n,
            "step_accuracy": sum(v for _, v in judged) / max(len(judged), 1),
            "call_accuracy": sum(call_steps) / max(len(call_steps), 1), "n_call_steps": len(call_steps),
            "first_error_causes": error_causes(episodes),
            "samples": [{"task": ep.task.id, "output": s.output} for ep in episodes[:3] for s in ep.steps[:1]]}


def step_metrics(model, tok, examples: list[dict], tasks: dict, view: str, tool_docs: str = "none",
                 max_new_tokens: int = 96, limit: int | None = None) -> dict:
    """Free-running held-out metrics over the tasks these examples come from (first ``limit`` tasks)."""
    ids = list(dict.fromkeys(e["task_id"] for e in examples))[:limit]
    return trajectory_metrics(play(model, tok, [tasks[i] for i in ids], view, tool_docs, max_new_tokens), view)


def task_success(model, tok, tasks: list, view: str, tool_docs: str = "none", max_new_tokens: int = 96,
                 policy=None, batch_size: int = 16) -> dict:
    """Play held-out tasks end to end (progress or full-history context) and score them officially
    (``policy``: see :func:`play`)."""
    m = trajectory_metrics(play(model, tok, tasks, view, tool_docs, max_new_tokens, batch_size, policy), view)
    return {"n_tasks": m["n_tasks"], "task_success": m["task_success"]}


@torch.no_grad()
def greedy(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations; prompts of equal length batch together (no padding on CPU)."""
    out = [""] * len(prompts)
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    by_len: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        by_len.setdefault(len(x), []).append(i)
    groups = [g[k:k + batch_size] for g in by_len.values() for k in range(0, len(g), batch_size)]
    from .policies import checkpoint_generation_defaults_off

    for g in groups:
        x = torch.tensor([ids[i] for i in g], device=model.device)
        with checkpoint_generation_defaults_off(model):  # plain greedy, as in free-running play
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                 do_sample=False, top_k=0, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        for i, row in zip(g, gen[:, x.shape[1]:]):
            row = row.tolist()
            if tok.eos_token_id in row:
                row = row[:row.index(tok.eos_token_id)]
            out[i] = tok.decode(row, skip_special_tokens=False).replace(tok.pad_token or "\0", "")
    return out


def reply_ok(text: str, view: str) -> bool:
    """A τ-bench reply step's output: a non-empty message to the user without call syntax (after the view's progress
    block). Its words cannot be matched exactly, so for a reply step this is also its ``tf_step_exact_match``; an
    empty output — which equals "no calls" — is not a reply.

    >>> reply_ok("Your booking is confirmed.", "plain"), reply_ok("  ", "plain"), reply_ok("[cancel(id=1)]", "plain")
    (True, False, False)
    """
    from .calls import strip_preamble
    from .progress_format import progress_ok
    from .rollout import looks_like_calls

    body, _ = strip_preamble(text)
    return bool(body) and not looks_like_calls(body) and (view != "progress" or progress_ok(text))


def teacher_forced_metrics(model, tok, examples: list[dict], tasks: dict, view: str, tool_docs: str = "none",
                           max_new_tokens: int = 96, limit: int | None = None) -> dict:
    """``tf_*`` diagnosis metrics on the GOLD context of each held-out step (not comparable across views: the
    progress view's gold context holds the teacher's previous plan, which names the next call; module doc)."""
    exs = [e for e in examples if e.get("augment", "none") == "none"][:limit]
    prompts = [render_prompt(tok, build_messages(e, tasks[e["task_id"]], view, tool_docs)) for e in exs]
    texts = greedy(model, tok, prompts, max_new_tokens)
    fmt = [reply_ok(t, view) if e["kind"] == "reply" else format_ok(t, view) for t, e in zip(texts, exs)]
    exact = [ok if e["kind"] == "reply" else (calls_equal(t, e["gold_call"]) if ok else False)
             for t, e, ok in zip(texts, exs, fmt)]
    calls = [x for x, e in zip(exact, exs) if e["kind"] == "call"]
    return {"tf_n_steps": len(exs), "tf_format_validity": sum(fmt) / max(len(exs), 1),
            "tf_step_exact_match": sum(exact) / max(len(exs), 1),
            "tf_call_exact_match": sum(calls) / max(len(calls), 1), "tf_n_call_steps": len(calls)}
