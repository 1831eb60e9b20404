"""PAG-RL and MT-GRPO: the RL loop (one small GRPO loop over real multi-turn rollouts; the context builder is
the only difference between the methods). Per iteration :func:`train_rl` samples training tasks (synthetic,
never evaluation entries), plays ``group_size`` episodes of each with the current policy through the same
rollout driver as evaluation (``progress`` context for PAG-RL, ``full_history`` for MT-GRPO), turns them into
scored step samples (:mod:`.rl_samples`), updates the policy (:mod:`.rl_update`, loss pieces in :mod:`.grpo`)
and logs rewards, costs and the sampler-vs-trainer log-prob gap (:func:`iteration_row`); checkpoints every
``save_every`` iterations, and a rerun with the same output directory resumes from the last one and reaches
the same final step; :func:`finish_rl` writes ``final/`` and ``metrics.json``; :func:`run_rl_grid` runs seeds.
Own loop, not TRL's ``GRPOTrainer``: see ``../shared/notes/trl.md`` and :mod:`.grpo`.

Example (the toy recipe for 2 iterations; needs notebooks 01 and 02 run first)::

    from parl_mt_lib.rl import load_rl_recipe, train_rl
    m = train_rl(load_rl_recipe("recipes/toy/pag_rl.yaml", {"iterations": 2}), "results/my_rl")
    m["reward_first20"], m["reward_last20"], m["cost"]["prompt_tokens_per_step"]

    >>> first_last([0.1, 0.2, 0.3, 0.4, 0.5])  # what the issue's rise check compares
    (0.1, 0.5)
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from .rl_recipe import METHODS, RLRecipe, check_rl_recipe, context_mode, load_rl_recipe, rl_tasks  # noqa: F401
from .rl_samples import score_episodes, step_samples  # noqa: F401  (re-exported: one import for the RL API)
from .rl_update import (Reference, last_rl_checkpoint, load_policy_model, peak_memory_mb,  # noqa: F401
                        save_checkpoint, trainable_parameters, update)
from .runtime import ConfigError, append_jsonl, atomic_dir, atomic_write_json, provenance, read_jsonl, repo_path

# ------------------------------------------------------------------ the loop

def heldout_success(model, tok, tasks: list, recipe: RLRecipe, policy=None) -> float:
    """Greedy play of held-out synthetic tasks in the method's context, official verdicts.

    With a recipe backend other than ``hf`` and its ``policy`` given (the run's engine, holding the current
    weights), the tasks are played through that engine in greedy mode, ``generation_batch_size`` in flight -- the
    same engine the rollouts use, not HF ``generate`` (which made the held-out evaluation of a SmolLM2 RL run
    take longer than its iterations: LOG 2026-11-25). ``hf`` keeps its own batched HF play."""
    from .backends import greedy
    from .sft_eval import task_success

    view = METHODS[recipe.method][1]
    if policy is not None and recipe.rollout_backend != "hf":
        with greedy(policy) as g:
            return task_success(model, tok, tasks, view, recipe.tool_docs, recipe.max_new_tokens, policy=g,
                                batch_size=recipe.generation_batch_size)["task_success"]
    return task_success(model, tok, tasks, view, recipe.tool_docs, recipe.max_new_tokens)["task_success"]


def iteration_batch(recipe: RLRecipe, pool: list, it: int) -> list:
    """The tasks iteration ``it`` rolls out: a sample of ``tasks_per_iteration`` from the pool, fixed by
    (seed, iteration) so that a resumed run draws what the killed one would have.

    >>> from types import SimpleNamespace as NS
    >>> r, pool = NS(seed=0, tasks_per_iteration=2), list("abcdef")
    >>> iteration_batch(r, pool, 1) == iteration_batch(r, pool, 1) != iteration_batch(r, pool, 2)
    True
    """
    return random.Random(f"{recipe.seed}-{it}").sample(pool, recipe.tasks_per_iteration)


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None


def iteration_row(it: int, episodes, scored, samples, upd: dict, rollout_s: float, update_s: float) -> dict:
    """Rewards per term and the cost of one iteration (tokens per step / episode, wall-clock, memory)."""
    from .grpo import group_advantages

    steps = [s for ep in episodes for s in ep.steps]
    n_ep = max(len(episodes), 1)
    names = list(scored[0]["terms"]) if scored else []
    rewards = [s["reward"] for s in scored]
    groups: dict = {}
    for ep, s in zip(episodes, scored):
        groups.setdefault(ep.entry.id, []).append(s["reward"])
    zero = sum(not any(group_advantages(g)) for g in groups.values())
    gen = [s.completion_tokens or 0 for s in steps]
    return {"iteration": it, "reward_mean": sum(rewards) / n_ep,
            "reward_std": (sum((r - sum(rewards) / n_ep) ** 2 for r in rewards) / n_ep) ** 0.5,
            "terms": {n: sum(s["terms"][n] for s in scored) / n_ep for n in names},
            "train_task_success": sum(s["success"] for s in scored) / n_ep,
            "zero_variance_groups": zero / max(len(groups), 1),
            "n_episodes": len(episodes), "n_steps": len(steps), "n_samples": len(samples),
            "steps_per_episode": len(steps) / n_ep,
            "prompt_tokens_per_step": sum(s.prompt_tokens or 0 for s in steps) / max(len(steps), 1),
            "generated_tokens_per_step": sum(gen) / max(len(steps), 1),
            "generated_tokens_per_episode": sum(gen) / n_ep,
            "rollout_s": round(rollout_s, 3), "update_s": round(update_s, 3), "peak_mem_mb": round(peak_memory_mb(), 1),
            **{k: v for k, v in upd.items()}}


def train_rl(recipe: RLRecipe, out_dir, *, resume: bool = True, progress: bool = True,
             stop_after: int | None = None, tasks: tuple[list, list] | None = None, backend=None) -> dict:
    """Run (or resume) one RL training; writes ``iterations.jsonl``, checkpoints, ``final/`` and ``metrics.json``.

    ``stop_after`` ends the process-local run after that many iterations (tests simulate a kill with it).
    ``tasks=(train, held_out)`` trains on these tasks (any benchmark on the protocol, :mod:`parl_mt_lib.envs`)
    instead of the recipe's PAG directory; ``backend`` replaces the rollout backend the recipe names
    (``rollout_backend``; :mod:`parl_mt_lib.backends`) with a ready one. Neither changes the loop.
    """
    import torch
    from tqdm.auto import trange

    from .backends import make_rollout_backend
    from .context import make_context
    from .rollout import run_episodes

    check_rl_recipe(recipe, data=tasks is None)
    out = Path(out_dir)
    from .runtime import claim_dir  # only this run (same recipe, init checkpoint, data) resumes in ``out``

    claim_dir(out, rl_fingerprint(recipe, tasks), what="recipe or inputs", hint="pass a new output directory")
    atomic_write_json(out / "recipe.resolved.json", asdict(recipe))
    train, held = rl_tasks(recipe) if tasks is None else (list(tasks[0]), list(tasks[1]))
    ckpt = last_rl_checkpoint(out) if resume else None
    start = json.loads((ckpt / "state.json").read_text())["iteration"] if ckpt else 0
    model, tok = load_policy_model(recipe, str(ckpt) if ckpt else None)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=recipe.learning_rate, weight_decay=0.0)
    if ckpt:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    rows_path = out / "iterations.jsonl"
    kept = [r for r in read_jsonl(rows_path) if r["iteration"] < start] if resume else []
    if rows_path.exists():
        rows_path.unlink()
    for r in kept:
        append_jsonl(rows_path, r)
    ref = Reference(model, recipe) if recipe.beta > 0 else None
    # the rollout backend, built here only: it returns prompt / completion ids and, if it can, sampler log-probs
    policy = backend or make_rollout_backend(
        recipe.rollout_backend, model=model, tokenizer=tok, max_new_tokens=recipe.max_new_tokens,
        temperature=recipe.temperature, top_p=recipe.top_p, micro_batch_size=recipe.generation_batch_size,
        keep_tokens=True, name=recipe.method,
        **({"lora_sync": recipe.lora_sync, "dtype": recipe.engine_dtype} if recipe.rollout_backend == "vllm" else {}))
    ctx = make_context(context_mode(recipe), tool_docs=recipe.tool_docs)
    t_start = time.time()
    end = recipe.iterations if stop_after is None else min(recipe.iterations, start + stop_after)
    try:
        for it in trange(start, end, desc=recipe.method, disable=not progress):
            held_s = None
            if held and (it == 0 or (recipe.eval_every and it % recipe.eval_every == 0)):
                held_s = heldout_success(model, tok, held, recipe, policy)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()  # GPU peak per iteration (CPU: the process's peak RSS so far)
            torch.manual_seed(recipe.seed * 100_003 + it)  # rollouts depend on (seed, iteration) and the recipe's
            policy.reseed(recipe.seed * 100_003 + it)      # batch schedule: resumable (a backend's own sampler too)
            batch = iteration_batch(recipe, train, it)
            t0 = time.time()
            episodes = run_episodes(policy, [t for t in batch for _ in range(recipe.group_size)], ctx,
                                    max_steps=recipe.max_steps_per_turn, batch_size=recipe.generation_batch_size,
                                    progress=False)
            scored = score_episodes(episodes, recipe)
            samples = step_samples(episodes, scored, recipe, group_of=lambda ep: ep.entry.id)
            if not samples and any(ep.steps for ep in episodes):
                raise ConfigError(f"rollout backend {getattr(policy, 'name', '?')!r} returned no token ids, so RL "
                                  "has nothing to train on; use a backend that keeps tokens (rollout_backend: hf)")
            t1 = time.time()
            upd = update(model, optimizer, samples, recipe, tok.pad_token_id, ref)
            t2 = time.time()
            policy.load_weights(model=model)  # the hook a separate engine (vLLM) syncs through; HF shares the model
            row = iteration_row(it, episodes, scored, samples, upd, t1 - t0, time.time() - t1)
            row["sync_s"] = round(time.time() - t2, 3)  # the part of update_s that moved weights to the engine
            row["heldout_success"] = held_s
            row["samples"] = [e.steps[0].output[:200] for e in episodes[:2] if e.steps]
            row["task_ids"] = [t.id for t in batch]  # what this iteration trained on (diagnostics read it back)
            append_jsonl(rows_path, row)
            if (it + 1) % recipe.save_every == 0 or it + 1 == recipe.iterations:
                save_checkpoint(out, it + 1, model, tok, optimizer)
        # the final held-out play through the run's own engine, while it is open (it holds the final weights)
        final_held = (heldout_success(model, tok, held, recipe, policy)  # (hf: finish_rl plays the merged model)
                      if held and end == recipe.iterations and recipe.rollout_backend != "hf" else None)
    finally:  # an engine built here (vLLM: a server process) ends here, before the merge and held-out eval
        if backend is None and hasattr(policy, "close"):
            policy.close()
    if end < recipe.iterations:
        return {"stopped_at": end}
    return finish_rl(recipe, out, model, tok, held, time.time() - t_start, heldout_final=final_held)


def first_last(values: list[float], frac: float = 0.2) -> tuple[float, float]:
    """Means of the first and last ``frac`` of a series (at least one point each)."""
    k = max(1, round(len(values) * frac))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def logprob_gap_summary(rows: list[dict]) -> dict:
    """Sampler-vs-trainer log-prob gap over a run: the mean of the iterations' means and the largest maximum
    (iterations without sampler log-probs left out; None when none has them).

    >>> logprob_gap_summary([{"logprob_gap_mean": 1e-6, "logprob_gap_max": 1e-5},
    ...                      {"logprob_gap_mean": 3e-6, "logprob_gap_max": 4e-5}, {"logprob_gap_mean": None}])
    {'logprob_gap_mean': 2e-06, 'logprob_gap_max': 4e-05}
    """
    got = [r for r in rows if r.get("logprob_gap_mean") is not None]
    return {"logprob_gap_mean": sum(r["logprob_gap_mean"] for r in got) / len(got) if got else None,
            "logprob_gap_max": max(r["logprob_gap_max"] for r in got) if got else None}


def finish_rl(recipe: RLRecipe, out: Path, model, tok, held: list, wall_s: float,
              heldout_final: float | None = None) -> dict:
    """Final held-out evaluation (``heldout_final`` when the caller already played it through its engine),
    ``final/`` (merged weights, loadable by 05_evaluate) and ``metrics.json``."""
    rows = sorted(read_jsonl(out / "iterations.jsonl"), key=lambda r: r["iteration"])
    final = out / "final"
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    with atomic_dir(final) as tmp:
        merged.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        atomic_write_json(tmp / "recipe.resolved.json", asdict(recipe))
    first, last = first_last([r["reward_mean"] for r in rows])
    cost_keys = ("prompt_tokens_per_step", "generated_tokens_per_step", "generated_tokens_per_episode",
                 "steps_per_episode", "rollout_s", "update_s", "peak_mem_mb")
    metrics = {
        "method": recipe.method, "seed": recipe.seed, "iterations": len(rows),
        "reward_first20": first, "reward_last20": last,
        "heldout_start": rows[0].get("heldout_success") if rows else None,
        "heldout_final": (heldout_final if heldout_final is not None
                          else heldout_success(merged, tok, held, recipe) if held else None),
        "n_heldout_tasks": len(held), "heldout_engine": recipe.rollout_backend,
        "cost": {**{k: sum(r[k] for r in rows) / max(len(rows), 1) for k in cost_keys},
                 # of update_s: the weight sync to the engine (vLLM: adapter or merged copy); older rows have none
                 "sync_s": _mean([r["sync_s"] for r in rows if "sync_s" in r]),
                 **logprob_gap_summary(rows)},
        "final_dir": str(final), "recipe": asdict(recipe),
        "provenance": provenance(seeds=[recipe.seed], wall_clock_s=round(wall_s, 1),
                                 wall_clock_note="this invocation only (resumed work excluded)"),
    }
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def rl_fingerprint(recipe: RLRecipe, tasks: tuple[list, list] | None = None) -> dict:
    """The run's card (:mod:`parl_mt_lib.runtime`): the resolved recipe + fingerprints of the starting checkpoint
    and the PAG data (or of the given ``(train, held_out)`` tasks). ``train_rl`` resumes only a directory holding
    the same one."""
    from .recipe_io import precision_card
    from .runtime import artifact_card, fingerprint, input_fingerprint

    data = (fingerprint([list(part) for part in tasks]) if tasks is not None
            else input_fingerprint(repo_path(recipe.data)))
    # how bf16 is applied changes the weights (bf16 on a GPU, fp32 under autocast on the CPU); fp32 cards stand as made
    return artifact_card({**asdict(recipe), **precision_card(recipe.bf16)},
                         {"init": input_fingerprint(recipe.init_path()), "data": data})


def rl_seed_cell(recipe_path, overrides: dict | None, seed: int, run_dir, progress: bool = True) -> dict:
    """One cell of the RL grid: train (or resume) one seed; a directory left by another recipe or inputs is
    replaced (it is this cell's own). The run's fingerprint goes into ``final/``, the checkpoint's identity."""
    from .runtime import claim_dir, stamp_checkpoint

    recipe = load_rl_recipe(recipe_path, {**(overrides or {}), "seed": seed})
    check_rl_recipe(recipe)
    card = rl_fingerprint(recipe)
    claim_dir(run_dir, card, replace=True)
    m = train_rl(recipe, run_dir, progress=progress)
    stamp_checkpoint(m["final_dir"], card)
    return m


def run_rl_grid(recipe_path, seeds=(0, 1, 2), out_dir="results/03_pag_rl", overrides: dict | None = None,
                progress: bool = True, workers: int | None = 1, threads: int = 1) -> dict:
    """Train one RL recipe over seeds through :func:`parl_mt_lib.grid.run_grid` (a finished seed is reused only
    while its fingerprint -- recipe, starting checkpoint, data -- matches, else retrained; a killed one
    resumes); write the summary ``metrics.json`` with per-seed ``reward_first20`` / ``reward_last20``,
    ``iterations.csv`` and ``heldout.csv``. ``workers`` seeds run side by side (default 1: in this process)."""
    import pandas as pd

    from .grid import Cell, run_grid

    t0 = time.time()
    out = repo_path(out_dir)
    cells = []
    for seed in seeds:
        recipe = load_rl_recipe(recipe_path, {**(overrides or {}), "seed": seed})
        check_rl_recipe(recipe)
        cells.append(Cell(f"seed{seed}", rl_seed_cell, {"recipe_path": str(recipe_path), "overrides": overrides,
                                                        "seed": seed, "run_dir": str(out / f"seed{seed}"),
                                                        "progress": progress},
                          rl_fingerprint(recipe)["fingerprint"]))
    grid = run_grid(cells, out, workers=workers, threads=threads, desc="RL seeds", progress=False)
    per_seed = {str(s): grid["cells"][f"seed{s}"] for s in seeds}
    rows = [{**{k: v for k, v in r.items() if k not in ("terms", "samples", "task_ids")},
             **{f"reward_{k}": v for k, v in r["terms"].items()}, "seed": s}
            for s in per_seed for r in read_jsonl(out / f"seed{s}" / "iterations.jsonl")]
    pd.DataFrame(rows).to_csv(out / "iterations.csv", index=False)
    held = [{"seed": int(r["seed"]), "iteration": r["iteration"], "heldout_success": r["heldout_success"]}
            for r in rows if r.get("heldout_success") is not None]
    held += [{"seed": int(s), "iteration": m["iterations"], "heldout_success": m["heldout_final"]}
             for s, m in per_seed.items()]
    pd.DataFrame(held).to_csv(out / "heldout.csv", index=False)
    summary = {"method": next(iter(per_seed.values()))["method"], "seeds": list(seeds),
               "per_seed": {s: {k: m[k] for k in ("reward_first20", "reward_last20", "heldout_start",
                                                  "heldout_final", "cost", "final_dir", "fingerprint")}
                            for s, m in per_seed.items()},
               "recipe": per_seed[str(seeds[0])]["recipe"], "reused_seeds": grid["reused"],
               "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                        wall_clock_note="this invocation only (finished seeds are reused)",
                                        workers=grid["workers"], threads_per_worker=grid["threads_per_worker"])}
    atomic_write_json(out / "metrics.json", summary)
    return summary
