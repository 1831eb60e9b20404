"""Held-out metrics for SFT'd policies: step-level format validity and exact call match, and task success.

* ``format_validity`` — progress view: a well-formed ``<summary>…</summary><plan>…</plan>`` followed by a
  parseable call list (or nothing); plain view: a parseable call list (or nothing).
* ``step_exact_match`` — teacher-forced on the gold context of each held-out step: the generated calls
  equal the gold call(s) after keyword normalisation (a turn-ending step must produce no call).
* ``task_success`` — the policy plays each held-out task end to end in the matching context; the
  official checker scores it.

Example:
    >>> format_ok("<summary>s</summary><plan>p</plan>[ls()]", "progress"), format_ok("[ls(", "plain")
    (True, False)
"""
from __future__ import annotations

import torch

from .context import render_prompt
from .pag import build_messages, calls_equal
from .rewards import format_ok  # one definition of well-formed output, shared with the RL format reward


@torch.no_grad()
def greedy(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations; prompts of equal length batch together (no padding on CPU)."""
    out = [""] * len(prompts)
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    by_len: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        by_len.setdefault(len(x), []).append(i)
    groups = [g[k:k + batch_size] for g in by_len.values() for k in range(0, len(g), batch_size)]
    for g in groups:
        x = torch.tensor([ids[i] for i in g], device=model.device)
        gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for i, row in zip(g, gen[:, x.shape[1]:]):
            row = row.tolist()
            if tok.eos_token_id in row:
                row = row[:row.index(tok.eos_token_id)]
            out[i] = tok.decode(row, skip_special_tokens=False).replace(tok.pad_token or "\0", "")
    return out


def step_metrics(model, tok, examples: list[dict], tasks: dict, view: str, tool_docs: str = "none",
                 max_new_tokens: int = 96, limit: int | None = None) -> dict:
    """Teacher-forced held-out step metrics (see module doc)."""
    exs = [e for e in examples if e.get("augment", "none") == "none"][:limit]
    prompts = [render_prompt(tok, build_messages(e, tasks[e["task_id"]], view, tool_docs)) for e in exs]
    texts = greedy(model, tok, prompts, max_new_tokens)
    fmt = [format_ok(t, view) for t in texts]
    exact = [calls_equal(t, e["gold_call"]) if ok else False for t, e, ok in zip(texts, exs, fmt)]
    calls = [x for x, e in zip(exact, exs) if e["kind"] == "call"]
    return {"n_steps": len(exs), "format_validity": sum(fmt) / max(len(exs), 1),
            "step_exact_match": sum(exact) / max(len(exs), 1),
            # the same, on steps that need a call only (turn-ending steps are easier: no call to get right)
            "call_exact_match": sum(calls) / max(len(calls), 1), "n_call_steps": len(calls),
            "samples": [{"gold": e["gold_call"], "output": t} for e, t in zip(exs[:5], texts[:5])]}


def task_success(model, tok, tasks: list, view: str, tool_docs: str = "none", max_new_tokens: int = 96) -> dict:
    """Play held-out tasks end to end (progress or full-history context) and score them officially."""
    from .context import make_context
    from .evaluate import score_entry
    from .policies import HFPolicy
    from .rollout import run_episodes

    ctx = make_context("progress" if view == "progress" else "full_history", tool_docs=tool_docs)
    pol = HFPolicy(model, tok, max_new_tokens=max_new_tokens, micro_batch_size=1)
    eps = run_episodes(pol, tasks, ctx, batch_size=8, progress=False)
    ok = [score_entry(ep.entry, ep.calls_per_turn()).valid for ep in eps]
    return {"n_tasks": len(tasks), "task_success": sum(ok) / max(len(tasks), 1)}
