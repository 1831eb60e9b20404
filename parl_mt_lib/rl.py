"""PAG-RL and MT-GRPO: one small GRPO loop over real multi-turn rollouts; the context builder is the only difference.

Per iteration: sample training tasks (synthetic, never evaluation entries), play ``group_size`` episodes
of each with the current policy through the same rollout driver as evaluation (``progress`` context for
PAG-RL, ``full_history`` for MT-GRPO), score every step with the reward registry, turn rewards into
advantages (:mod:`parl_mt_lib.grpo`), update, log rewards and costs. Checkpoints every ``save_every``
iterations; a rerun with the same output directory resumes from the last one and reaches the same
final step. Own loop, not TRL's ``GRPOTrainer``: see ``../shared/notes/trl.md`` and :mod:`.grpo`.

Example (the toy recipe for 2 iterations; needs notebooks 01 and 02 run first)::

    from parl_mt_lib.rl import load_rl_recipe, train_rl
    m = train_rl(load_rl_recipe("recipes/toy/pag_rl.yaml", {"iterations": 2}), "results/my_rl")
    m["reward_first20"], m["reward_last20"], m["cost"]["prompt_tokens_per_step"]

    >>> first_last([0.1, 0.2, 0.3, 0.4, 0.5])  # what the issue's rise check compares
    (0.1, 0.5)
"""
from __future__ import annotations

import dataclasses
import json
import random
import resource
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from .rl_recipe import METHODS, RLRecipe, check_rl_recipe, context_mode, load_rl_recipe, rl_tasks  # noqa: F401
from .runtime import ConfigError, append_jsonl, atomic_dir, atomic_write_json, provenance, read_jsonl, repo_path

# ------------------------------------------------------------------ rollouts -> step samples

def _turn_success(entry, turns: list[list[str]]) -> list[bool]:
    """Official checker on the episode's turns ``[0..t]`` for every played turn ``t`` (turn-level credit)."""
    from .evaluate import score_entry

    return [score_entry(dataclasses.replace(entry, gold=entry.gold[:t + 1], turns=entry.turns[:t + 1]),
                        turns[:t + 1]).valid for t in range(len(turns))]


def score_episodes(episodes: list, recipe: RLRecipe) -> list[dict]:
    """Per episode: official verdict, per-step reward terms, episode reward and per-turn rewards."""
    from .evaluate import score_entry
    from .rewards import score_steps, step_views, weighted

    view = METHODS[recipe.method][1]
    names = sorted(set(recipe.rewards) | (set(recipe.turn_rewards) if recipe.method == "mt_grpo" else set()))
    out = []
    for ep in episodes:
        turns = ep.calls_per_turn()
        ok = score_entry(ep.entry, turns).valid
        turn_ok = _turn_success(ep.entry, turns) if "turn" in names else [False] * len(turns)
        terms = score_steps(step_views(ep, view, ok, turn_ok), names)
        mean = {n: sum(t[n] for t in terms) / max(len(terms), 1) for n in names}
        per_turn = {}
        for t in sorted({s.turn for s in ep.steps}) if recipe.method == "mt_grpo" else []:
            tt = [x for x, s in zip(terms, ep.steps) if s.turn == t]
            per_turn[t] = weighted({n: sum(x[n] for x in tt) / len(tt) for n in names}, recipe.turn_rewards)
        out.append({"success": ok, "terms": mean, "step_terms": terms,
                    "reward": weighted(mean, recipe.rewards), "turn_rewards": per_turn})
    return out


def step_samples(episodes: list, scored: list[dict], recipe: RLRecipe, group_of) -> list[dict]:
    """Training samples, one per generated step, each with its advantage (see :mod:`parl_mt_lib.grpo`)."""
    from .grpo import episode_advantages, turn_advantages

    groups: dict = {}
    for k, ep in enumerate(episodes):
        groups.setdefault(group_of(ep), []).append(k)
    adv = episode_advantages(groups, {k: s["reward"] for k, s in enumerate(scored)}, recipe.scale_advantages)
    tadv = {}
    if recipe.method == "mt_grpo":
        tr = {(k, t): r for k, s in enumerate(scored) for t, r in s["turn_rewards"].items()}
        tadv = turn_advantages(groups, tr, recipe.scale_advantages)
    samples = []
    for k, ep in enumerate(episodes):
        for step in ep.steps:
            if not step.completion_ids:
                continue  # the policy produced nothing (e.g. context overflow): no tokens to train on
            a = adv[k] + recipe.turn_lambda * tadv.get((k, step.turn), 0.0)
            samples.append({"prompt_ids": step.prompt_ids, "completion_ids": step.completion_ids,
                            "logprobs": step.logprobs, "advantage": a, "episode": k, "turn": step.turn})
    return samples


# ------------------------------------------------------------------ model, update, checkpoints

def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def load_policy_model(recipe: RLRecipe, checkpoint: str | None = None):
    """The starting policy (an SFT adapter is merged first), with fresh LoRA adapters if ``recipe.lora``;
    from ``checkpoint`` when resuming."""
    import torch

    from .models import load_model

    model, tok = load_model(recipe.init_path(), dtype=torch.bfloat16 if recipe.bf16 else torch.float32)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if recipe.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if checkpoint:
            model = PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                                     lora_dropout=recipe.lora_dropout,
                                                     target_modules=recipe.target_modules, task_type="CAUSAL_LM"))
    elif checkpoint:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=model.dtype).to(model.device)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tok


class Reference:
    """Log-probs under the reference policy: the adapter-disabled model (LoRA) or a frozen copy of the init."""

    def __init__(self, model, recipe: RLRecipe):
        self.frozen = None
        if not recipe.lora:
            self.frozen, _ = load_policy_model(dataclasses.replace(recipe, gradient_checkpointing=False))
            self.frozen.requires_grad_(False)

    def logps(self, model, ids, attn, temperature: float = 1.0):
        import torch

        from .grpo import token_logps

        with torch.no_grad():
            if self.frozen is not None:
                return token_logps(self.frozen, ids, attn, temperature)
            with model.disable_adapter():
                return token_logps(model, ids, attn, temperature)


def update(model, optimizer, samples: list[dict], recipe: RLRecipe, pad_id: int, ref: Reference | None) -> dict:
    """One iteration's optimiser step(s) on the step samples; returns loss / KL / clipping statistics."""
    import torch

    from .grpo import grpo_loss, pad_batch, token_logps

    if not samples or (all(s["advantage"] == 0 for s in samples) and (ref is None or recipe.beta == 0)):
        return {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0, "skipped": True}
    n_tokens = sum(len(s["completion_ids"]) for s in samples)
    T = recipe.temperature  # log-probs of the distribution the samples were drawn from (top-p aside)
    mbs = [samples[i:i + recipe.micro_batch_size] for i in range(0, len(samples), recipe.micro_batch_size)]
    batches = [pad_batch(mb, pad_id, model.device) for mb in mbs]
    advs = [torch.tensor([s["advantage"] for s in mb], device=model.device) for mb in mbs]
    with torch.no_grad():
        refs = [ref.logps(model, ids, attn, T) if ref is not None else None for ids, attn, _ in batches]
        olds = [token_logps(model, ids, attn, T) for ids, attn, _ in batches] if recipe.updates_per_iteration > 1 else None
    model.train()
    tot = {"loss": 0.0, "kl_sum": 0.0, "clipped_sum": 0.0, "tokens": 0.0}
    for _ in range(recipe.updates_per_iteration):
        optimizer.zero_grad(set_to_none=True)
        for j, ((ids, attn, comp), a) in enumerate(zip(batches, advs)):
            logp = token_logps(model, ids, attn, T)
            old = olds[j] if olds is not None else logp.detach()
            loss, st = grpo_loss(logp, old, refs[j], a, comp, n_tokens, recipe.clip_eps, recipe.clip_eps_high,
                                 recipe.beta)
            loss.backward()
            tot["loss"] += float(loss.detach())
            for k in ("kl_sum", "clipped_sum", "tokens"):
                tot[k] += st[k]
        gn = torch.nn.utils.clip_grad_norm_(_trainable(model), recipe.max_grad_norm)
        optimizer.step()
    model.eval()
    u = recipe.updates_per_iteration
    return {"loss": tot["loss"] / u, "kl": tot["kl_sum"] / max(tot["tokens"], 1),
            "clip_frac": tot["clipped_sum"] / max(tot["tokens"], 1), "grad_norm": float(gn), "skipped": False}


def last_rl_checkpoint(out_dir) -> Path | None:
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    ckpts = [c for c in ckpts if (c / "state.json").exists()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(out_dir, iteration: int, model, tok, optimizer, keep: int = 2) -> Path:
    import torch

    path = Path(out_dir) / f"checkpoint-{iteration}"
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        atomic_write_json(tmp / "state.json", {"iteration": iteration})
    for old in sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak so far


# ------------------------------------------------------------------ the loop

def heldout_success(model, tok, tasks: list, recipe: RLRecipe) -> float:
    """Greedy play of held-out synthetic tasks in the method's context, official verdicts."""
    from .sft_eval import task_success

    return task_success(model, tok, tasks, METHODS[recipe.method][1], recipe.tool_docs,
                        recipe.max_new_tokens)["task_success"]


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
             stop_after: int | None = None) -> dict:
    """Run (or resume) one RL training; writes ``iterations.jsonl``, checkpoints, ``final/`` and ``metrics.json``.

    ``stop_after`` ends the process-local run after that many iterations (tests simulate a kill with it).
    """
    import torch
    from tqdm.auto import trange

    from .context import make_context
    from .policies import HFPolicy
    from .rollout import run_episodes

    check_rl_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "recipe.resolved.json"
    if saved.exists() and resume and json.loads(saved.read_text()) != json.loads(json.dumps(asdict(recipe))):
        raise ConfigError(f"{out} holds a run with another recipe; pass a new output directory (or resume=False)")
    atomic_write_json(saved, asdict(recipe))
    train, held = rl_tasks(recipe)
    ckpt = last_rl_checkpoint(out) if resume else None
    start = json.loads((ckpt / "state.json").read_text())["iteration"] if ckpt else 0
    model, tok = load_policy_model(recipe, str(ckpt) if ckpt else None)
    optimizer = torch.optim.AdamW(_trainable(model), lr=recipe.learning_rate, weight_decay=0.0)
    if ckpt:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    rows_path = out / "iterations.jsonl"
    kept = [r for r in read_jsonl(rows_path) if r["iteration"] < start] if resume else []
    if rows_path.exists():
        rows_path.unlink()
    for r in kept:
        append_jsonl(rows_path, r)
    ref = Reference(model, recipe) if recipe.beta > 0 else None
    policy = HFPolicy(model, tok, max_new_tokens=recipe.max_new_tokens, temperature=recipe.temperature,
                      top_p=recipe.top_p, micro_batch_size=recipe.generation_batch_size, keep_tokens=True,
                      name=recipe.method)
    ctx = make_context(context_mode(recipe), tool_docs=recipe.tool_docs)
    t_start = time.time()
    end = recipe.iterations if stop_after is None else min(recipe.iterations, start + stop_after)
    for it in trange(start, end, desc=recipe.method, disable=not progress):
        held_s = None
        if it == 0 or (recipe.eval_every and it % recipe.eval_every == 0):
            held_s = heldout_success(model, tok, held, recipe)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()  # GPU peak per iteration (CPU: the process's peak RSS so far)
        torch.manual_seed(recipe.seed * 100_003 + it)  # rollouts depend only on (seed, iteration): resumable
        batch = random.Random(f"{recipe.seed}-{it}").sample(train, recipe.tasks_per_iteration)
        t0 = time.time()
        episodes = run_episodes(policy, [t for t in batch for _ in range(recipe.group_size)], ctx,
                                max_steps=recipe.max_steps_per_turn, batch_size=recipe.generation_batch_size,
                                progress=False)
        scored = score_episodes(episodes, recipe)
        samples = step_samples(episodes, scored, recipe, group_of=lambda ep: ep.entry.id)
        t1 = time.time()
        upd = update(model, optimizer, samples, recipe, tok.pad_token_id, ref)
        row = iteration_row(it, episodes, scored, samples, upd, t1 - t0, time.time() - t1)
        row["heldout_success"] = held_s
        row["samples"] = [e.steps[0].output[:200] for e in episodes[:2] if e.steps]
        append_jsonl(rows_path, row)
        if (it + 1) % recipe.save_every == 0 or it + 1 == recipe.iterations:
            save_checkpoint(out, it + 1, model, tok, optimizer)
    if end < recipe.iterations:
        return {"stopped_at": end}
    return finish_rl(recipe, out, model, tok, held, time.time() - t_start)


def first_last(values: list[float], frac: float = 0.2) -> tuple[float, float]:
    """Means of the first and last ``frac`` of a series (at least one point each)."""
    k = max(1, round(len(values) * frac))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def finish_rl(recipe: RLRecipe, out: Path, model, tok, held: list, wall_s: float) -> dict:
    """Final held-out evaluation, ``final/`` (merged weights, loadable by 05_evaluate) and ``metrics.json``."""
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
        "heldout_final": heldout_success(merged, tok, held, recipe), "n_heldout_tasks": len(held),
        "cost": {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in cost_keys},
        "final_dir": str(final), "recipe": asdict(recipe),
        "provenance": provenance(seeds=[recipe.seed], wall_clock_s=round(wall_s, 1),
                                 wall_clock_note="this invocation only (resumed work excluded)"),
    }
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def run_rl_grid(recipe_path, seeds=(0, 1, 2), out_dir="results/03_pag_rl", overrides: dict | None = None,
                progress: bool = True) -> dict:
    """Train one RL recipe over seeds (finished seeds are reused, a killed one resumes); write the summary
    ``metrics.json`` with per-seed ``reward_first20`` / ``reward_last20`` and ``iterations.csv``."""
    import pandas as pd

    t0 = time.time()
    out = repo_path(out_dir)
    per_seed = {}
    for seed in seeds:
        recipe = load_rl_recipe(recipe_path, {**(overrides or {}), "seed": seed})
        run_dir = out / f"seed{seed}"
        done = run_dir / "metrics.json"
        m = json.loads(done.read_text()) if done.exists() else None
        if m is None or m["recipe"] != json.loads(json.dumps(asdict(recipe))):
            m = train_rl(recipe, run_dir, progress=progress)
        per_seed[str(seed)] = m
    rows = [{**{k: v for k, v in r.items() if k not in ("terms", "samples")},
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
                                                  "heldout_final", "cost", "final_dir")}
                            for s, m in per_seed.items()},
               "recipe": per_seed[str(seeds[0])]["recipe"],
               "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                        wall_clock_note="this invocation only (finished seeds are reused)")}
    atomic_write_json(out / "metrics.json", summary)
    return summary
