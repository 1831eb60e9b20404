"""PAG: per-step progress-aware examples, model-aware verification, augmentation, dataset + card.

From each task's gold trajectory we record, for every step, the progress-aware context (what the
policy will see in PAG-RL and evaluation) with the teacher's ``summary + plan + call`` target, and
the plain full-history context with the bare call target (the paper's SFT baseline). System prompts
(tool docs, ~40k characters) are not stored per example: they are rebuilt from the task and the
example's ``tool_names`` when an SFT view is made.

Example:
    >>> from parl_mt_lib.synth import SynthConfig, synthesize
    >>> tasks = synthesize(SynthConfig(n_tasks=2, seed=3))
    >>> ex = step_examples(tasks[0])
    >>> ex[0]["completion_progress"].startswith("<summary>"), ex[0]["gold_call"] == tasks[0].gold[0][0]
    (True, True)
"""
from __future__ import annotations

import copy
import random
import re

from .calls import CallParseError, parse_calls, same_calls
from .context import FullHistoryContext, ProgressContext
from .env import Environment
from .progress import TeacherPolicy, TemplateTeacher
from .progress_format import format_progress, parse_progress
from .rollout import run_episodes
from .runtime import ConfigError


def _without_system(msgs: list[dict]) -> list[dict]:
    return [dict(m) for m in msgs if m["role"] != "system"]


def step_examples(task, teacher=None, style: str = "python") -> list[dict]:
    """One example per gold step (calls and turn-ending steps) of ``task``."""
    teacher = teacher or TemplateTeacher()
    prog_ctx, plain_ctx = ProgressContext(style=style), FullHistoryContext(style=style)
    # play both episodes through the driver, recording the context each step saw
    prog, plain = _Recording(TeacherPolicy(teacher, style)), _Recording(TeacherPolicy(teacher, style, False))
    (ep_p,) = run_episodes(prog, [task], prog_ctx, progress=False)
    (ep_f,) = run_episodes(plain, [task], plain_ctx, progress=False)
    prog_prompts, plain_prompts = prog.prompts, plain.prompts
    assert len(ep_p.steps) == len(ep_f.steps), "progress and plain replays must take the same steps"
    tool_names = [d["name"] for d in task.functions]
    out, calls_before = [], 0
    for i, (sp, sf) in enumerate(zip(ep_p.steps, ep_f.steps)):
        block = parse_progress(sp.output)
        out.append({
            "task_id": task.id, "step": i, "turn": sp.turn, "kind": "call" if sp.calls else "no_call",
            "calls_before": calls_before,
            "progress_messages": _without_system(prog_prompts[i]),
            "plain_messages": _without_system(plain_prompts[i]),
            "completion_progress": sp.output, "completion_plain": sf.output,
            "summary": block.summary if block else "", "plan": block.plan if block else "",
            "gold_call": sp.calls[0] if len(sp.calls) == 1 else ("; ".join(sp.calls) or None),
            "tool_names": tool_names, "augment": "none", "style": style,
        })
        calls_before += len(sp.calls)
    return out


class _Recording:
    """Wraps a policy and keeps the messages of every request it answers (one episode at a time)."""

    def __init__(self, inner):
        self.inner, self.style, self.prompts = inner, inner.style, []

    def generate(self, requests):
        self.prompts += [r.messages for r in requests]
        return self.inner.generate(requests)


# ------------------------------------------------------------------ verification

def _literals(value) -> list[str]:
    if isinstance(value, (list, tuple, set)):
        return [s for v in value for s in _literals(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _literals(v)]
    return [str(value)]


def lexical_verify(example: dict) -> tuple[bool, str]:
    """Model-free check that the gold call is recoverable from the progress context + summary/plan:
    its function name and every argument value appear in the visible text."""
    if example["kind"] == "no_call":
        return True, "no call to recover"
    visible = " ".join(m["content"] for m in example["progress_messages"]) + example["summary"] + example["plan"]
    call = parse_calls(example["gold_call"])[0]
    if call.name not in visible:
        return False, f"function {call.name} not named"
    missing = [v for v in _literals(call.kwargs) if v not in visible and repr(v) not in visible]
    return (not missing), (f"values not visible: {missing[:3]}" if missing else "ok")


def calls_equal(text: str, gold: str | None) -> bool:
    """Whether a generated message's calls equal the gold call(s), in order, compared parsed
    (:func:`~parl_mt_lib.calls.same_calls`: positional arguments named from the docs, keyword order
    ignored, numbers by value, ``True`` never equal to ``1``). Unparseable text equals nothing.

    Example:
        >>> calls_equal("[mv(destination='b', source='a')]", "mv(source='a', destination='b')")
        True
    """
    from .bfcl import param_order

    try:
        got = parse_calls(text)
    except (CallParseError, ValueError):
        return False
    want = [] if gold is None else [c for g in gold.split("; ") for c in parse_calls(g)]
    return same_calls(got, want, param_order())


def policy_verify(examples: list[dict], tasks: dict, generate, k: int = 1, threshold: float = 1.0) -> list[tuple]:
    """Model-aware verification: ``generate(list[(messages, prefix)]) -> list[str]`` continues the
    teacher's ``<summary>…</summary><plan>…</plan>`` prefix from the progress context; an example
    passes if at least ``threshold`` of ``k`` samples reproduce the gold call."""
    batch = []
    for ex in examples:
        msgs = build_messages(ex, tasks[ex["task_id"]], "progress")
        batch += [(msgs, format_progress(ex["summary"], ex["plan"]))] * k
    texts = generate(batch)
    verdicts = []
    for i, ex in enumerate(examples):
        hits = sum(calls_equal(t, ex["gold_call"]) for t in texts[i * k:(i + 1) * k])
        verdicts.append((hits / k >= threshold, f"{hits}/{k} samples reproduce the gold call"))
    return verdicts


def hf_generate_fn(model, tokenizer, max_new_tokens: int = 64):
    """``generate`` for :func:`policy_verify` from a transformers model (greedy; the prefix is forced)."""
    import torch

    from .context import render_prompt
    from .policies import checkpoint_generation_defaults_off

    def generate(batch):
        out = []
        for msgs, prefix in batch:
            ids = tokenizer(render_prompt(tokenizer, msgs) + prefix, add_special_tokens=False,
                            return_tensors="pt").input_ids.to(model.device)
            with torch.no_grad(), checkpoint_generation_defaults_off(model):  # plain greedy, as in evaluation
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, top_k=0,
                                     max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return out

    return generate


# ------------------------------------------------------------------ augmentation

def augment_paraphrase(ex: dict, teacher, seed: int) -> dict:
    """Rewrite the current request (last user message holding it) with the teacher's paraphrase."""
    new = copy.deepcopy(ex)
    for msgs in (new["progress_messages"], new["plain_messages"]):
        users = [m for m in msgs if m["role"] == "user" and not m["content"].lstrip().startswith("[{")]
        if users:
            m = users[-1]
            head, sep, body = m["content"].rpartition("</summary>\n\n")
            m["content"] = head + sep + teacher.paraphrase(body, seed)
    new["augment"] = "paraphrase"
    return new


def augment_schema(ex: dict, task, rng: random.Random, drop: float = 0.5) -> dict:
    """Reorder the tool docs and drop some that no gold call of the task uses (targets stay valid)."""
    new = copy.deepcopy(ex)
    used = {c.name for t in task.gold_calls for c in t}
    names = [n for n in new["tool_names"] if n in used or rng.random() > drop]
    rng.shuffle(names)
    new["tool_names"], new["augment"] = names, "schema"
    return new


def augment_mask(ex: dict, rng: random.Random, rate: float = 0.15, token: str = "[MASK]") -> dict:
    """Mask words of the request and carried summary in the prompt, never a gold argument value or name."""
    new = copy.deepcopy(ex)
    keep = set()
    if ex["gold_call"]:
        for c in (c for g in ex["gold_call"].split("; ") for c in parse_calls(g)):
            keep |= {c.name, *(_literals(c.kwargs))}
    keep_words = {w for k in keep for w in re.findall(r"\S+", str(k))}
    for m in new["progress_messages"]:
        if m["role"] == "user":
            m["content"] = " ".join(w if any(k in w for k in keep_words) or rng.random() > rate else token
                                    for w in m["content"].split(" "))
    new["augment"] = "mask"
    return new


def executes_same(ex: dict, task) -> bool:
    """The example's target, executed after the task's earlier gold calls, reaches the same state as
    the task's own gold calls at that step (augmentations must never change what the target does)."""
    gold = [c for t in task.gold_calls for c in t]
    mine = [c for g in ([ex["gold_call"]] if ex["gold_call"] else []) for c in parse_calls(g)]
    n = ex["calls_before"]
    ref = Environment(task)
    ref.execute_all(gold[:n + len(mine)])
    got = Environment(task)
    got.execute_all(gold[:n] + mine)
    try:
        return got.state() == ref.state()
    except RecursionError:  # a cyclic state cannot be compared: treat as not the same
        return False


# ------------------------------------------------------------------ SFT views

VIEWS = ("progress", "plain")


def build_messages(ex: dict, task, view: str, tool_docs: str = "full") -> list[dict]:
    """The full prompt of an example: the system message the task's own benchmark writes (BFCL's prompt, or
    τ-bench's with its domain policy: :meth:`parl_mt_lib.envs.Benchmark.system_prompt`), with the task's docs in the
    example's ``tool_names`` order (all of them when it names none), then the recorded context.

    >>> from parl_mt_lib.envs.tau2 import load_tasks
    >>> (t,) = load_tasks("retail", "train", limit=1)
    >>> msgs = build_messages({"plain_messages": [{"role": "user", "content": "hi"}]}, t, "plain")
    >>> t.instructions in msgs[0]["content"], msgs[1]
    (True, {'role': 'user', 'content': 'hi'})
    """
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    shown = task
    if ex.get("tool_names") is not None:  # a copy of the task (benchmark, instructions, ...) showing these docs
        docs = {d["name"]: d for d in task.functions}
        shown = copy.copy(task)
        shown.functions = [docs[n] for n in ex["tool_names"] if n in docs]
    ctx = (ProgressContext if view == "progress" else FullHistoryContext)(style=ex.get("style", "python"),
                                                                         tool_docs=tool_docs)
    return [ctx.system_message(shown)] + copy.deepcopy(ex[f"{view}_messages"])


def sft_rows(examples: list[dict], tasks: dict, view: str, tool_docs: str = "full") -> list[dict]:
    """TRL prompt/completion rows (completion-only loss): ``progress`` or ``plain`` view, for any benchmark's PAG
    examples (the system message comes from the task's benchmark: :func:`build_messages`)."""
    key = "completion_progress" if view == "progress" else "completion_plain"
    return [{"prompt": build_messages(ex, tasks[ex["task_id"]], view, tool_docs),
             "completion": [{"role": "assistant", "content": ex[key]}]} for ex in examples]


def conversation_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of a prompt without its system message (the shared tool docs), generation prompt included."""
    from .context import render_prompt

    empty = [{"role": "system", "content": ""}]
    base = len(tokenizer(render_prompt(tokenizer, empty), add_special_tokens=False).input_ids)
    return len(tokenizer(render_prompt(tokenizer, empty + messages), add_special_tokens=False).input_ids) - base


def context_lengths(tasks, tokenizer, teacher=None):
    """Per gold step: conversation tokens under the progress context vs the full history."""
    import pandas as pd

    rows = []
    for task in tasks:
        for ex in step_examples(task, teacher):
            rows.append({"task_id": task.id, "step": ex["step"],
                         "progress": conversation_tokens(tokenizer, ex["progress_messages"]),
                         "full_history": conversation_tokens(tokenizer, ex["plain_messages"])})
    return pd.DataFrame(rows)
