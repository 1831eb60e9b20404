"""RL rollouts -> scored episodes -> step samples: the official verdict and the reward terms of every played
episode (:func:`score_episodes`), then one training sample per generated step carrying its prompt ids,
completion ids, the sampler's log-probs and its episode's (PAG-RL) or episode + turn (MT-GRPO) advantage
(:func:`step_samples`, advantages from :mod:`parl_mt_lib.grpo`). Steps without completion ids (a scripted
or oracle policy, a context overflow) give no sample. Weight-free; the update lives in :mod:`.rl_update`.

Example (two oracle episodes of one BFCL entry: both solve it, so the group's advantage is 0)::

    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> from parl_mt_lib.policies import OraclePolicy
    >>> from parl_mt_lib.rl_recipe import load_rl_recipe
    >>> from parl_mt_lib.rollout import run_episodes
    >>> eps = run_episodes(OraclePolicy(), [entry_by_id("multi_turn_base_0")] * 2, progress=False)
    >>> recipe = load_rl_recipe("recipes/toy/mt_grpo.yaml")
    >>> scored = score_episodes(eps, recipe)
    >>> [s["success"] for s in scored], sorted(scored[0]["turn_rewards"])
    ([True, True], [0, 1, 2, 3])
    >>> for s in eps[0].steps + eps[1].steps:
    ...     s.completion_ids = [1]  # the oracle keeps no tokens; pretend it did
    >>> samples = step_samples(eps, scored, recipe, group_of=lambda ep: ep.entry.id)
    >>> len(samples) == len(eps[0].steps) * 2, {s["advantage"] for s in samples}
    (True, {0.0})
"""
from __future__ import annotations

from .rl_recipe import METHODS, RLRecipe


def score_episodes(episodes: list, recipe: RLRecipe) -> list[dict]:
    """Per episode: the benchmark's official verdict, per-step reward terms, episode reward and per-turn rewards
    (turn verdicts from :meth:`parl_mt_lib.envs.Benchmark.turn_scores`)."""
    from .rewards import score_steps, step_views, weighted

    view = METHODS[recipe.method][1]
    names = sorted(set(recipe.rewards) | (set(recipe.turn_rewards) if recipe.method == "mt_grpo" else set()))
    out = []
    for ep in episodes:
        ok = ep.benchmark.score(ep.task, ep).valid
        turn_ok = ep.benchmark.turn_scores(ep.task, ep) if "turn" in names else [False] * len(ep.turn_end)
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
    """Training samples, one per generated step, each with its advantage (see :mod:`parl_mt_lib.grpo`) and the
    sampler's log-probs of its completion tokens (``None`` when the policy gave none)."""
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
