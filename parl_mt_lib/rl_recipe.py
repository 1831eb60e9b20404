"""RL recipes: one YAML per model x method (``recipes/*/pag_rl.yaml``, ``mt_grpo.yaml``), validated before any
model loads, and the training / held-out task split an RL run uses.

Example:
    >>> r = load_rl_recipe("recipes/toy/mt_grpo.yaml", {"seed": 2})
    >>> r.method, context_mode(r), r.init_path()
    ('mt_grpo', 'full_history', 'results/02_sft/plain/seed2/final')
    >>> load_rl_recipe("recipes/toy/mt_grpo.yaml", {"rewards": {"speed": 1}})
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: unknown reward(s) ['speed']; known: ['call', 'efficiency', 'format', 'task', 'turn']
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .recipe_io import load_yaml_recipe
from .runtime import ConfigError, repo_path

METHODS = {"pag_rl": ("progress", "progress"), "mt_grpo": ("full_history", "plain")}  # context, reward view


@dataclass
class RLRecipe:
    method: str = "pag_rl"           # pag_rl (summary + plan replace history) | mt_grpo (full history + turn credit)
    init: str = "results/02_sft/progress/seed{seed}/final"  # starting policy; {seed} is filled in
    data: str = "results/01_pag_toy"  # PAG directory: its train-split tasks are the RL tasks
    tool_docs: str = "minimal"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    learning_rate: float = 1e-4
    iterations: int = 30
    group_size: int = 4               # G episodes per task
    tasks_per_iteration: int = 4
    task_pool: int | None = None      # train on the first N training tasks only (None: all); a small pool lets a
    #                                   short run revisit each task, like epochs over the paper's ~200 tasks
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    max_steps_per_turn: int = 4       # RL episodes stop a turn earlier than BFCL's 20 (cost)
    generation_batch_size: int = 64
    micro_batch_size: int = 16
    updates_per_iteration: int = 1    # > 1: several optimiser steps on one rollout batch (ratio != 1, clipping matters)
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    beta: float = 0.0                 # k3 KL to the reference (adapter-disabled model, or the frozen init)
    max_grad_norm: float = 1.0
    scale_advantages: bool = True
    rewards: dict = field(default_factory=lambda: {"format": 0.25, "call": 0.5, "task": 1.0, "efficiency": 0.1})
    turn_rewards: dict = field(default_factory=lambda: {"format": 0.25, "call": 0.5, "turn": 1.0, "efficiency": 0.1})
    turn_lambda: float = 0.5          # MT-GRPO: A = A_outcome + turn_lambda * A_turn
    save_every: int = 10
    eval_every: int = 0               # held-out success every N iterations; 0: at the start and the end only
    eval_tasks: int = 20
    bf16: bool = False                # GPU: bf16 weights; CPU: fp32 weights, the update under bf16 autocast
    gradient_checkpointing: bool = False
    seed: int = 0
    rollout_backend: str = "hf"       # which generator plays the rollouts (parl_mt_lib.backends): hf | vllm
    # vLLM only: how LoRA weights reach the engine each iteration -- "adapter" (a new LoRA request, no merge) or
    # "merged" (base + adapter delta as full weights into a plain engine; SmolLM2 on 2 cores: rollouts 2.7x faster,
    # LOG 2026-12-04; ignored by hf, which samples from the trainer's model); and the engine's precision (None: the
    # trainer's; "bfloat16" on an fp32 CPU trainer: rollouts ~2x faster again, gap ~0.035 nats logged, IS-corrected)
    lora_sync: str = "adapter"
    engine_dtype: str | None = None
    # off-policy correction (TRL's vllm_importance_sampling_correction): the sampler's log-probs are the behaviour
    # policy; each token's policy term is weighted by exp(trainer_old - sampler), truncated at is_cap
    # (parl_mt_lib.grpo.importance_weights). HF sampling is on-policy (weights ~1); vLLM's kernels differ slightly
    is_mode: str = "token_truncate"   # token_truncate | token_mask | sequence_truncate | sequence_mask | none
    is_cap: float = 3.0               # upper bound of the weight (TRL's vllm_importance_sampling_cap), >= 1

    def __post_init__(self):
        from .context import TOOL_DOCS
        from .rewards import check_weights

        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.tool_docs not in TOOL_DOCS:
            raise ConfigError(f"tool_docs must be one of {TOOL_DOCS}, got {self.tool_docs!r}")
        if self.group_size < 2:
            raise ConfigError(f"group_size must be >= 2 (advantages compare episodes of a task), got {self.group_size}")
        if self.iterations < 1 or self.tasks_per_iteration < 1:
            raise ConfigError("iterations and tasks_per_iteration must be >= 1")
        self.rewards, self.turn_rewards = check_weights(self.rewards), check_weights(self.turn_rewards)
        from .backends import RECIPE_BACKENDS

        if self.rollout_backend not in RECIPE_BACKENDS:
            raise ConfigError(f"rollout_backend must be one of {sorted(RECIPE_BACKENDS)} in a recipe (others: pass a "
                              f"ready backend to train_rl), got {self.rollout_backend!r}")
        from .backends_vllm import check_lora_sync

        check_lora_sync(self.lora_sync)
        if self.engine_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"engine_dtype must be float32, bfloat16, float16 or null, got {self.engine_dtype!r}")
        if self.rollout_backend != "vllm" and self.engine_dtype is not None:  # (lora_sync: HF shares the model)
            raise ConfigError(f"engine_dtype is a vLLM engine setting: set rollout_backend: vllm or remove it "
                              f"(rollout_backend {self.rollout_backend!r} generates with the trainer's model)")
        from .grpo import IS_MODES

        if self.is_mode not in IS_MODES:
            raise ConfigError(f"is_mode must be one of {', '.join(IS_MODES)}, got {self.is_mode!r}")
        if isinstance(self.is_cap, bool) or not isinstance(self.is_cap, (int, float)) or not self.is_cap >= 1:
            raise ConfigError(f"is_cap must be a number >= 1 (an on-policy token's weight is 1), got {self.is_cap!r}")
        # the trainer scores the plain softmax at the sampling temperature: sampling must be exactly that
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 for RL sampling, got {self.temperature}")
        if self.top_p != 1.0:
            raise ConfigError(f"top_p {self.top_p} is not modelled by the trainer's log-probs (plain softmax at the "
                              "temperature): use top_p: 1.0")
        if self.lora and self.lora_dropout:
            raise ConfigError(f"lora_dropout {self.lora_dropout} would make the trainer's log-probs differ from the "
                              "sampler's (dropout is on in training): use lora_dropout: 0.0 for RL")

    def init_path(self) -> str:
        return self.init.format(seed=self.seed)


def context_mode(recipe: RLRecipe) -> str:
    return METHODS[recipe.method][0]


# the recipe fields that decide how an RL checkpoint is played greedily (besides ``method``, which sets the context)
PLAY_FIELDS = ("tool_docs", "max_new_tokens", "rollout_backend", "lora_sync", "generation_batch_size")


def play_kwargs(recipe: RLRecipe) -> dict:
    """:func:`parl_mt_lib.evaluate.evaluate` keywords that play a checkpoint greedily as notebook 06 plays it, with
    this recipe's method context, tool docs, token budget and engine (``engine_dtype`` not passed: evaluate's own);
    the diagnosis probes under benchmarks/ use it."""
    return {"context": context_mode(recipe), "tool_docs": recipe.tool_docs, "max_new_tokens": recipe.max_new_tokens,
            "temperature": 0.0, "lora_sync": recipe.lora_sync, "rollout_backend": recipe.rollout_backend,
            "batch_size": recipe.generation_batch_size}


def load_rl_recipe(path, overrides: dict | None = None) -> RLRecipe:
    """YAML recipe + overrides; unknown keys and bad values stop here with one line."""
    return load_yaml_recipe(path, RLRecipe, overrides, "recipes/*/pag_rl.yaml and mt_grpo.yaml")


def rl_tasks(recipe: RLRecipe) -> tuple[list, list]:
    """(training tasks, held-out tasks) from the PAG directory; training and held-out tasks never share an id.

    Synthetic data: training tasks are asserted disjoint from every BFCL evaluation entry under the overlap
    rule of :mod:`parl_mt_lib.splits` (initial states included). BFCL hold-out data (the directory has a
    ``split.json``): every task must be one of the split's training ids, and training tasks are asserted
    disjoint from the split's evaluation ids only (states not compared: BFCL reuses its configs); evaluation
    must then leave the training ids out (``evaluate(..., exclude_ids=splits.excluded_ids(recipe.data))``).
    """
    from .envs import assert_trainable
    from .pag_build import load_pag
    from .splits import assert_disjoint, load_split

    data = repo_path(recipe.data)
    splits, tasks = load_pag(data)
    train_ids = sorted({e["task_id"] for e in splits["train"]})
    held_ids = sorted({e["task_id"] for e in splits["validation"]})
    if set(train_ids) & set(held_ids):
        raise AssertionError(f"RL training tasks overlap held-out tasks: {sorted(set(train_ids) & set(held_ids))[:5]}")
    train = [tasks[i] for i in train_ids][:recipe.task_pool]
    split = load_split(data)
    if split is None:  # each benchmark's own rule: BFCL's overlap rule (synthetic data), τ-bench's train/test split
        assert_trainable(train)
    else:
        outside = sorted(set(tasks) - set(split["train_ids"]))
        if outside:
            raise AssertionError(f"{recipe.data} holds tasks outside its split's training ids: {outside[:5]}")
        assert_disjoint(train, split["eval_ids"], states=False)
    if recipe.tasks_per_iteration > len(train):
        raise ConfigError(f"tasks_per_iteration {recipe.tasks_per_iteration} > {len(train)} training tasks in {recipe.data}")
    return train, [tasks[i] for i in held_ids][:recipe.eval_tasks]


def check_rl_recipe(recipe: RLRecipe, data: bool = True) -> None:
    """Dataset present (``data``: the tasks come from it) and starting policy resolvable, before any model loads."""
    from .models import resolve_model_path

    if data and not (repo_path(recipe.data) / "card.json").exists():
        raise ConfigError(f"dataset {recipe.data} not found; build it with notebooks/01_pag_synthesis.ipynb first")
    try:
        resolve_model_path(recipe.init_path())
    except ConfigError as err:
        raise ConfigError(f"{err} (the RL starting policy; train it with notebooks/02_sft.ipynb first)") from None
    if recipe.rollout_backend == "vllm":  # before the model loads and the output directory is claimed
        from .backends_vllm import NOT_INSTALLED, lora_slot, vllm_available

        if not vllm_available():
            raise ConfigError(NOT_INSTALLED)
        if recipe.lora:
            lora_slot(recipe.lora_r)
