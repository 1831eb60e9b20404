"""The RL policy and its update: load the starting policy (:func:`load_policy_model`, an SFT adapter merged
first, fresh LoRA adapters when the recipe asks), reference log-probs for the KL term (:class:`Reference`),
one iteration's optimiser step(s) on step samples (:func:`update`, loss pieces in :mod:`parl_mt_lib.grpo`),
checkpoints (:func:`save_checkpoint`, :func:`last_rl_checkpoint`) and peak memory. The loop that calls these
lives in :mod:`parl_mt_lib.rl`; step samples come from :mod:`parl_mt_lib.rl_samples`.

Example (one update of the toy on one hand-made sample)::

    >>> import torch
    >>> from parl_mt_lib.models import load_model
    >>> from parl_mt_lib.rl_recipe import load_rl_recipe
    >>> from parl_mt_lib.toy_model import build_toy_model
    >>> model, tok = load_model(str(build_toy_model()))
    >>> sample = {"prompt_ids": tok("hello").input_ids, "completion_ids": tok(" ls()").input_ids,
    ...           "advantage": 1.0}
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> row = update(model, opt, [sample], load_rl_recipe("recipes/toy/pag_rl.yaml"), tok.pad_token_id, None)
    >>> row["skipped"], row["clip_frac"], row["logprob_gap_mean"]  # no sampler log-probs: old = trainer's
    (False, 0.0, None)
"""
from __future__ import annotations

import dataclasses
import resource
import shutil
from pathlib import Path

from .rl_recipe import RLRecipe
from .runtime import atomic_dir, atomic_write_json


def trainable_parameters(model) -> list:
    """The parameters the optimiser updates (all of them, or only the LoRA adapters)."""
    return [p for p in model.parameters() if p.requires_grad]


def load_policy_model(recipe: RLRecipe, checkpoint: str | None = None):
    """The starting policy (an SFT adapter is merged first), with fresh LoRA adapters if ``recipe.lora``;
    from ``checkpoint`` when resuming."""
    import torch

    from .models import load_model

    # bf16 on a GPU: bf16 weights; on the CPU: fp32 weights, the update under bf16 autocast (as SFT: sft.py)
    bf16_weights = recipe.bf16 and torch.cuda.is_available()
    model, tok = load_model(recipe.init_path(), dtype=torch.bfloat16 if bf16_weights else torch.float32)
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

    def logps(self, model, ids, attn, comp, temperature: float = 1.0):
        """Reference log-probs of the completion tokens (0 elsewhere), as :func:`~.grpo.completion_logps`."""
        import torch

        from .grpo import completion_logps

        with torch.no_grad():
            if self.frozen is not None:
                return completion_logps(self.frozen, ids, attn, comp, temperature)
            with model.disable_adapter():
                return completion_logps(model, ids, attn, comp, temperature)


def sampler_logps(samples: list[dict], comp):
    """The samples' sampler log-probs laid out like ``comp`` (the :func:`~.grpo.pad_batch` completion mask) and
    a per-row flag: True where the sample carries them (a backend that cannot report log-probs gives None).

    >>> import torch
    >>> lp, has = sampler_logps([{"completion_ids": [7, 8], "logprobs": [-0.5, -0.25]},
    ...                          {"completion_ids": [9], "logprobs": None}],
    ...                         torch.tensor([[0., 1., 1.], [0., 1., 0.]]))
    >>> lp.tolist(), has.tolist()
    ([[0.0, -0.5, -0.25], [0.0, 0.0, 0.0]], [True, False])
    """
    import torch

    out = torch.zeros(comp.shape, dtype=torch.float32, device=comp.device)
    has = torch.zeros(len(samples), dtype=torch.bool, device=comp.device)
    for i, s in enumerate(samples):
        lp = s.get("logprobs")
        if lp is None:
            continue
        if len(lp) != len(s["completion_ids"]):
            raise ValueError(f"a step sample has {len(lp)} sampler log-probs for {len(s['completion_ids'])} "
                             "completion tokens")
        out[i, comp[i].bool()] = torch.tensor(lp, dtype=torch.float32, device=comp.device)
        has[i] = True
    return out, has


class _Gap:
    """Running |sampler - trainer| log-prob gap over completion tokens of samples that carry sampler log-probs."""

    def __init__(self):
        self.sum, self.n, self.max = 0.0, 0, 0.0

    def add(self, trainer, sampler, has, comp) -> None:
        mask = comp.bool() & has[:, None]
        mask[:, 0] = False  # no prefix, no trainer log-prob
        d = (trainer.detach().float() - sampler).abs()[mask]
        if d.numel():
            self.sum, self.n, self.max = self.sum + float(d.sum()), self.n + d.numel(), max(self.max, float(d.max()))

    def row(self, dist=None) -> dict:
        if dist is not None:  # over every rank's samples
            self.sum, self.n = _reduce(dist, [self.sum, self.n])
            (self.max,) = _reduce(dist, [self.max], "max")
        return {"logprob_gap_mean": self.sum / self.n if self.n else None,
                "logprob_gap_max": self.max if self.n else None}


def distributed():
    """``torch.distributed`` when a process group of more than one rank is up (``accelerate launch`` + an
    ``Accelerator``, or ``torchrun``), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _reduce(dist, values: list, op: str = "sum") -> list:
    import torch

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t.tolist()


def _all_reduce_grads(dist, params: list) -> None:
    """Sum every rank's gradients (one flat buffer). Hand-written rather than DDP: each rank's loss is already
    normalised by the *global* completion-token count, so gradients must add up, where DDP averages; ranks may
    hold different numbers of micro-batches (DDP syncs per backward and would hang); the model stays unwrapped,
    so the same ``update`` runs in one process."""
    import torch

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    k = 0
    for p in params:
        p.grad.copy_(flat[k:k + p.numel()].view_as(p))
        k += p.numel()


def _autocast_cpu_bf16(fn, enabled: bool):
    """``fn`` run under CPU bf16 autocast when ``enabled`` (else ``fn`` itself)."""
    if not enabled:
        return fn

    def run(*args, **kwargs):
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*args, **kwargs)

    return run


def micro_batches(samples: list[dict], size: int) -> list[list[dict]]:
    """The step samples in micro-batches of ``size``, ordered by length (prompt + completion tokens; ties keep their
    order) so each pads to a similar length. The loss is a sum over tokens normalised by the iteration's token count,
    so the order changes nothing but padding: SmolLM2's step samples (prompts of 300-700 tokens by how many classes
    a task has) pad far less (``tests/test_rl.py::test_update_is_independent_of_how_samples_are_grouped``).

    >>> [len(s["prompt_ids"]) for mb in micro_batches([{"prompt_ids": [0] * n, "completion_ids": [1]}
    ...                                               for n in (9, 2, 7, 3)], 2) for s in mb]
    [2, 3, 7, 9]
    """
    ordered = sorted(samples, key=lambda s: len(s["prompt_ids"]) + len(s["completion_ids"]))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def update(model, optimizer, samples: list[dict], recipe: RLRecipe, pad_id: int, ref: Reference | None, *,
           logps_fn=None) -> dict:
    """One iteration's optimiser step(s) on the step samples; returns loss / KL / clipping statistics and the
    sampler-vs-trainer log-prob gap.

    Off-policy correction as TRL's ``vllm_importance_sampling_correction``: the sampler's log-probs
    (``sample["logprobs"]``, recorded while generating: the engine's, the behaviour policy) enter through a
    truncated importance weight ``min(exp(old - sampler), cap)`` per token (:func:`~.grpo.importance_weights`;
    mode and cap from the recipe's ``is_mode`` / ``is_cap``, by default ``token_truncate`` and TRL's 3.0) that
    multiplies the policy term; the clipped ratio's ``old`` are the trainer's own log-probs from the
    first forward pass, before any step. A sample without sampler log-probs (a backend that cannot report
    them) gets weight 1. ``is_weight_mean`` / ``is_weight_min`` / ``is_weight_max``: the weights over those tokens.
    ``logprob_gap_mean`` / ``logprob_gap_max``: |sampler - trainer| log-prob over the completion tokens of the
    samples that carry sampler log-probs, taken on that first forward pass (None when no sample has them);
    a skipped update (every advantage 0, no KL term) still runs a no-grad forward pass to measure it.
    ``logps_fn(model, ids, attn, comp, temperature)`` computes the log-probs (default
    :func:`~.grpo.completion_logps`; ``make bench`` times the old full-logits one through it).

    Data-parallel (a process group is up, :func:`distributed`: ``accelerate launch`` with
    ``recipes/accelerate/*.yaml``): each rank passes its own share of the samples; the loss is normalised by the
    global token count and the gradients are summed across ranks before clipping, so every rank takes the step
    one process would take on all the samples (``tests/test_scaleout.py``); the returned statistics are global.
    """
    import torch

    from .grpo import completion_logps, grpo_loss, importance_weights, pad_batch

    # recipe.bf16 on the CPU: fp32 weights, the update's forward passes (policy and reference) under bf16 autocast
    # (AMX-BF16; SmolLM2 LoRA steps ~1.8x faster in SFT); backward follows the forward's dtypes, the optimiser step
    # is fp32. The logged gap to the sampler then includes bf16 rounding (the IS weight corrects it either way)
    cpu_bf16 = bool(recipe.bf16) and model.device.type == "cpu"
    logps_fn = _autocast_cpu_bf16(logps_fn or completion_logps, cpu_bf16)
    ref_logps = _autocast_cpu_bf16(ref.logps, cpu_bf16) if ref is not None else None
    is_mode, is_cap = recipe.is_mode, float(recipe.is_cap)
    T = recipe.temperature  # log-probs of the distribution the samples were drawn from (top-p aside)
    mbs = micro_batches(samples, recipe.micro_batch_size)
    batches = [pad_batch(mb, pad_id, model.device) for mb in mbs]
    sampled = [sampler_logps(mb, comp) for mb, (_, _, comp) in zip(mbs, batches)]
    gap, dist = _Gap(), distributed()
    zero = all(s["advantage"] == 0 for s in samples)
    if dist is not None:  # skip only when every rank would
        (zero,) = _reduce(dist, [zero], "min")
    if zero and (ref is None or recipe.beta == 0):
        with torch.no_grad():
            for (ids, attn, comp), (lp, has) in zip(batches, sampled):
                if has.any():
                    gap.add(logps_fn(model, ids, attn, comp, T), lp, has, comp)
        return {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0, "skipped": True, **gap.row(dist),
                **_is_row([], dist)}
    n_tokens = sum(len(s["completion_ids"]) for s in samples)
    if dist is not None:
        (n_tokens,) = _reduce(dist, [n_tokens])
    advs = [torch.tensor([s["advantage"] for s in mb], device=model.device) for mb in mbs]
    refs = [ref_logps(model, ids, attn, comp, T) if ref is not None else None for ids, attn, comp in batches]
    olds, isw, is_seen = [None] * len(batches), [None] * len(batches), []
    model.train()
    tot = {"loss": 0.0, "kl_sum": 0.0, "clipped_sum": 0.0, "tokens": 0.0}
    for _ in range(recipe.updates_per_iteration):
        optimizer.zero_grad(set_to_none=True)
        for j, ((ids, attn, comp), a, (lp, has)) in enumerate(zip(batches, advs, sampled)):
            logp = logps_fn(model, ids, attn, comp, T)
            if olds[j] is None:  # the first pass, before any step
                olds[j] = logp.detach()
                gap.add(logp, lp, has, comp)
                scored = comp.clone()
                scored[:, 0] = 0.0  # no prefix, no trainer log-prob (as the gap)
                isw[j] = importance_weights(olds[j], torch.where(has[:, None], lp, olds[j]), scored, is_mode, is_cap)
                is_seen.append(isw[j][(scored.bool() & has[:, None])])
            loss, st = grpo_loss(logp, olds[j], refs[j], a, comp, n_tokens, recipe.clip_eps, recipe.clip_eps_high,
                                 recipe.beta, is_weight=isw[j])
            loss.backward()
            tot["loss"] += float(loss.detach())
            for k in ("kl_sum", "clipped_sum", "tokens"):
                tot[k] += st[k]
        if dist is not None:  # each rank's loss is over the global token count: the gradients add up
            _all_reduce_grads(dist, trainable_parameters(model))
        gn = torch.nn.utils.clip_grad_norm_(trainable_parameters(model), recipe.max_grad_norm)
        optimizer.step()
    model.eval()
    u = recipe.updates_per_iteration
    if dist is not None:
        keys = ("loss", "kl_sum", "clipped_sum", "tokens")
        tot.update(zip(keys, _reduce(dist, [tot[k] for k in keys])))
    return {"loss": tot["loss"] / u, "kl": tot["kl_sum"] / max(tot["tokens"], 1),
            "clip_frac": tot["clipped_sum"] / max(tot["tokens"], 1), "grad_norm": float(gn), "skipped": False,
            **gap.row(dist), **_is_row(is_seen, dist)}


def _is_row(weights: list, dist=None) -> dict:
    """Mean / min / max importance weight over the tokens that carry sampler log-probs (None when none do)."""
    import torch

    w = torch.cat(weights) if weights else torch.zeros(0)
    total, n = float(w.sum()), w.numel()
    lo, hi = (float(w.min()), float(w.max())) if n else (float("inf"), float("-inf"))
    if dist is not None:
        total, n = _reduce(dist, [total, n])
        (lo,), (hi,) = _reduce(dist, [lo], "min"), _reduce(dist, [hi], "max")
    if not n:
        return {"is_weight_mean": None, "is_weight_min": None, "is_weight_max": None}
    return {"is_weight_mean": total / n, "is_weight_min": lo, "is_weight_max": hi}


def last_rl_checkpoint(out_dir) -> Path | None:
    """The newest complete ``checkpoint-<iteration>`` under ``out_dir`` (one with ``state.json``), or None."""
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    ckpts = [c for c in ckpts if (c / "state.json").exists()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(out_dir, iteration: int, model, tok, optimizer, keep: int = 2) -> Path:
    """Weights (or adapter), tokenizer, optimiser state and the iteration, written atomically; keeps the last
    ``keep`` checkpoints."""
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
    """Peak GPU memory allocated since the last reset (GPU), or the process's peak RSS so far (CPU)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak so far
