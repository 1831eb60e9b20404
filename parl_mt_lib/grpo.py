"""GRPO pieces for multi-turn step samples: advantages (PAG-RL / MT-GRPO), completion log-probs, the clipped loss.

Written by hand because TRL's ``GRPOTrainer`` wants one completion per prompt and advantages grouped by
position; a PARL-MT episode yields a variable number of step samples, each with its own prompt (the
summary replaces the history), so the loss works on step samples that carry their episode's advantage.
The loss follows TRL's (clipped ratio, k3 KL, token-level normalisation over the whole batch).

* PAG-RL: ``A(episode) = (R - mean_group) / std_group`` broadcast to every step of the episode.
* MT-GRPO (Zeng et al., arXiv 2505.11821): ``A = A_outcome(episode) + lam * A_turn(episode, turn)``, the
  turn advantage normalised over the group's episodes that reached that turn.
A group whose rewards do not vary gets advantage 0 (never NaN).

Example:
    >>> group_advantages([1.0, 0.0, 1.0, 0.0])
    [1.0, -1.0, 1.0, -1.0]
    >>> group_advantages([0.5, 0.5])
    [0.0, 0.0]
"""
from __future__ import annotations

import math

import torch

EPS = 1e-6


def group_advantages(rewards: list[float], scale: bool = True) -> list[float]:
    """Group-normalised advantages; zero when the group's rewards do not vary (population std)."""
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    if std < EPS:
        return [0.0] * n
    return [(r - mean) / std if scale else r - mean for r in rewards]


def episode_advantages(groups: dict, episode_reward: dict, scale: bool = True) -> dict:
    """``{episode key: advantage}`` from ``groups = {task id: [episode keys]}`` and per-episode rewards."""
    out = {}
    for keys in groups.values():
        for k, a in zip(keys, group_advantages([episode_reward[k] for k in keys], scale)):
            out[k] = a
    return out


def turn_advantages(groups: dict, turn_reward: dict, scale: bool = True) -> dict:
    """``{(episode key, turn): advantage}`` normalised over the group's episodes that reached that turn."""
    out = {}
    for keys in groups.values():
        turns = sorted({t for k in keys for (kk, t) in turn_reward if kk == k})
        for t in turns:
            present = [k for k in keys if (k, t) in turn_reward]
            for k, a in zip(present, group_advantages([turn_reward[(k, t)] for k in present], scale)):
                out[(k, t)] = a
    return out


def pad_batch(samples: list[dict], pad_id: int, device=None):
    """Right-padded ``input_ids``, ``attention_mask`` and a completion mask (1 on the model's own tokens only)."""
    seqs = [s["prompt_ids"] + s["completion_ids"] for s in samples]
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.float)
    for i, (s, x) in enumerate(zip(samples, seqs)):
        ids[i, :len(x)] = torch.tensor(x)
        attn[i, :len(x)] = 1
        comp[i, len(s["prompt_ids"]):len(x)] = 1.0
    return ids.to(device), attn.to(device), comp.to(device)


def completion_logps(model, ids, attn, comp, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each completion token given its prefix under the sampling temperature (as TRL), 0 at every
    other position; ``ids, attn, comp`` as :func:`pad_batch` returns them.

    The LM head runs only on the positions that predict a completion token: transformers' ``logits_to_keep``
    takes a boolean ``(batch, length)`` mask and projects just those hidden states (rows keep their right
    padding and natural positions, so no position-id bookkeeping). The prompt's logits, most of the old cost
    (vocab x prompt length per sample), are never formed; the loss and gradients are the full-logits ones
    (``tests/test_grpo.py`` compares them with :func:`parl_mt_lib.bench.full_logits_token_logps`).
    """
    target = comp.bool().clone()
    target[:, 0] = False  # a first token has no prefix to be predicted from
    keep = torch.zeros_like(target)
    keep[:, :-1] = target[:, 1:]
    logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep: select the same positions here
        logits = logits[keep]
    logits = logits.float() / temperature
    lp = torch.log_softmax(logits, -1).gather(1, ids[target][:, None]).squeeze(1)
    return torch.zeros(ids.shape, dtype=lp.dtype, device=lp.device).masked_scatter(target, lp)


IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none")


def importance_weights(old_logp, sampler_logp, mask, mode: str = "token_truncate", cap_max: float | None = 3.0,
                       cap_min: float | None = None) -> torch.Tensor:
    """Off-policy correction for a separate sampler (vLLM), as TRL's ``vllm_importance_sampling_correction``:
    ``exp(old - sampler)`` per token (``token_*``) or per sequence (``sequence_*``, log-ratios summed over ``mask``),
    truncated to ``[cap_min, cap_max]`` (``*_truncate``) or zeroed outside it (``*_mask``); ``none``: all 1.
    ``old`` are the trainer's log-probs before the update, ``sampler`` the behaviour policy's (the engine's);
    tokens outside ``mask`` get 1. The policy-gradient term of :func:`grpo_loss` is multiplied by it.

    >>> old = torch.tensor([[0.0, -1.0, -1.0]]); mask = torch.tensor([[0.0, 1.0, 1.0]])
    >>> importance_weights(old, torch.tensor([[0.0, -2.5, -1.0]]), mask).tolist()  # e^1.5 = 4.48 -> cap 3
    [[1.0, 3.0, 1.0]]
    >>> importance_weights(old, torch.tensor([[0.0, -2.5, -1.0]]), mask, "token_mask").tolist()
    [[1.0, 0.0, 1.0]]
    >>> [round(x, 3) for x in importance_weights(old, torch.tensor([[0.0, -1.5, -1.0]]), mask,
    ...                                          "sequence_truncate")[0].tolist()]
    [1.649, 1.649, 1.649]
    """
    if mode not in IS_MODES:
        raise ValueError(f"importance sampling mode must be one of {IS_MODES}, got {mode!r}")
    if mode == "none":
        return torch.ones_like(old_logp)
    diff = ((old_logp - sampler_logp) * mask).nan_to_num(0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True).expand_as(old_logp)
    w = torch.exp(diff)
    if mode.endswith("truncate"):
        w = torch.clamp(w, min=cap_min, max=cap_max)
    else:
        lo, hi = -math.inf if cap_min is None else cap_min, math.inf if cap_max is None else cap_max
        w = w.masked_fill((w < lo) | (w > hi), 0.0)
    return w if mode.startswith("sequence") else torch.where(mask.bool(), w, torch.ones_like(w))


def grpo_loss(logp, old_logp, ref_logp, adv, mask, n_tokens: int, clip_eps: float = 0.2,
              clip_eps_high: float | None = None, beta: float = 0.0,
              is_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Clipped-ratio policy loss + ``beta`` x k3 KL, summed over masked tokens / ``n_tokens`` (the number of
    completion tokens in the whole optimiser batch, so micro-batches add up to the token-level mean).
    ``is_weight`` (:func:`importance_weights`) multiplies the policy term, not the KL (as TRL)."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    hi = clip_eps if clip_eps_high is None else clip_eps_high
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + hi) * a)
    if is_weight is not None:
        per_token = per_token * is_weight
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        per_token = per_token + beta * kl
    loss = (per_token * mask).sum() / max(n_tokens, 1)
    with torch.no_grad():
        clipped = ((ratio < 1 - clip_eps) | (ratio > 1 + hi)).float()
        stats = {"kl_sum": float((kl * mask).sum()), "clipped_sum": float((clipped * mask).sum()),
                 "tokens": float(mask.sum())}
    return loss, stats
