"""Throughput benchmarks (numbers for README; never timed tests).

* :func:`oracle_throughput`: all 800 entries through our loop (env + parse + context) and scored
  by the official checker; plus the official checker alone on the gold trajectories.
* :func:`rollout_overhead`: the toy model through the driver vs raw ``generate`` of the same
  prompts and the same number of new tokens.

Example:
    >>> r = oracle_throughput(limit=2)
    >>> r["entries"], r["correct"]
    (8, 8)
"""
from __future__ import annotations

import statistics
import time
import uuid

from .bfcl import load_entries
from .evaluate import clear_bfcl_cache, score_trajectory
from .policies import HFPolicy, OraclePolicy
from .rollout import run_episodes


def oracle_throughput(categories="all", limit: int | None = None) -> dict:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    entries = load_entries(categories, limit=limit)
    t0 = time.perf_counter()
    eps = run_episodes(OraclePolicy(), entries, progress=False)
    t1 = time.perf_counter()
    correct = sum(score_trajectory(ep.entry.id, ep.calls_per_turn()).valid for ep in eps)
    t2 = time.perf_counter()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    for e in entries:  # the official checker alone, on the raw gold strings
        multi_turn_checker([[t] if t else [] for t in e.gold], e.gold,
                           {"id": e.id, "initial_config": e.initial_config, "involved_classes": e.involved_classes},
                           e.category, name)
    t3 = time.perf_counter()
    clear_bfcl_cache(name)
    return {"entries": len(entries), "correct": correct, "steps": sum(len(ep.steps) for ep in eps),
            "rollout_s": round(t1 - t0, 3), "scoring_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
            "official_checker_alone_s": round(t3 - t2, 3),
            "entries_per_s": round(len(entries) / (t2 - t0), 1)}


def rollout_overhead(model, tokenizer, entries, max_new_tokens: int = 32) -> dict:
    """Driver wall-clock vs raw ``generate`` of the same prompts/new-token counts (greedy, batch 1)."""
    import torch

    pol = HFPolicy(model, tokenizer, max_new_tokens=max_new_tokens, micro_batch_size=1)
    prompts, gen_time = [], [0.0]
    inner = pol._generate

    def timed(ids, fits, out):
        t = time.perf_counter()
        inner(ids, fits, out)
        gen_time[0] += time.perf_counter() - t
        prompts.extend((ids[i], out[i].completion_tokens) for i in fits)

    pol._generate = timed
    t0 = time.perf_counter()
    eps = run_episodes(pol, entries, batch_size=1, progress=False)
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ids, n in prompts:  # raw generate: same prompt ids, exactly the same number of new tokens
        x = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max(n, 1),
                           min_new_tokens=max(n, 1), do_sample=False, pad_token_id=tokenizer.pad_token_id)
    raw_s = time.perf_counter() - t0
    ptoks = [s.prompt_tokens for ep in eps for s in ep.steps]
    return {"entries": len(entries), "steps": len(ptoks), "loop_s": round(loop_s, 3),
            "generate_inside_loop_s": round(gen_time[0], 3), "raw_generate_s": round(raw_s, 3),
            "overhead_s": round(loop_s - raw_s, 3), "overhead_pct": round(100 * (loop_s - raw_s) / raw_s, 1),
            "prompt_tokens_mean": round(statistics.mean(ptoks), 1), "prompt_tokens_max": max(ptoks)}


def full_logits_token_logps(model, ids, attn, comp=None, temperature: float = 1.0):
    """REFERENCE ONLY: the RL update's log-probs before issue 11 (the LM head over every position of the padded
    prompt + completion batch; position 0 gets 0), kept to time against and to test
    :func:`~parl_mt_lib.grpo.completion_logps` against. ``comp`` is accepted and ignored so both fit
    :func:`~parl_mt_lib.rl_update.update`'s ``logps_fn``."""
    import torch

    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    lp = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], 1)

