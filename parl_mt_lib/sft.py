"""SFT warm start on PAG data with TRL's ``SFTTrainer`` (+ PEFT LoRA), driven by one YAML recipe per model x stage.

Rows are TRL prompt/completion pairs (``pag.sft_rows``): TRL then puts the loss on the completion
only — the assistant's summary + plan + call (progress view) or the bare call (plain view) — never on
system, user or tool tokens. Checkpoints are written every ``save_steps``; a rerun with the same
output directory resumes from the last one (a finished run is returned as it is, not trained again), but only
under the same recipe and inputs: the directory's ``fingerprint.json`` (recipe + fingerprints of the model and the
PAG data, see :mod:`parl_mt_lib.runtime`) must match, else the run stops with one line. The resolved recipe and
the fingerprint are saved next to the model (``final/``), so whatever is evaluated or trained from it later knows
which run it came from.

Example:
    >>> r = load_recipe("recipes/toy/sft.yaml", {"max_steps": 2})
    >>> r.model, r.view, r.lora
    ('toy', 'progress', False)
    >>> load_recipe("recipes/toy/sft.yaml", {"bogus": 1})
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: unknown recipe key(s) ['bogus'] in recipes/toy/sft.yaml; known keys: adam_beta2, assistant_only_loss, bf16, data, full_finetune, gradient_accumulation_steps, gradient_checkpointing, learning_rate, logging_steps, lora, lora_alpha, lora_dropout, lora_r, lr_scheduler_type, max_length, max_steps, model, num_train_epochs, per_device_train_batch_size, save_steps, save_total_limit, seed, target_modules, tool_docs, train_sampling_strategy, view, warmup_steps, weight_decay
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .recipe_io import load_yaml_recipe, precision, precision_card
from .runtime import (ConfigError, artifact_card, atomic_write_json, claim_dir, content_fingerprint, input_fingerprint,
                      provenance, read_fingerprint, repo_path, stamp_checkpoint)

VIEWS = ("progress", "plain")
SAMPLING = ("random", "group_by_length")  # the train samplers a recipe may name (transformers' train_sampling_strategy)
# summarised per grid cell; the first four come from free-running play (comparable across views), tf_* are
# teacher-forced on gold contexts (diagnosis only: the progress view's gold context names the next call)
HEADLINE_METRICS = ("task_success", "format_validity", "step_accuracy", "call_accuracy",
                    "tf_format_validity", "tf_step_exact_match", "tf_call_exact_match")


@dataclass
class SFTRecipe:
    model: str = "toy"                 # toy | model dir | hub id
    data: str = "results/01_pag"       # a PAG directory (notebook 01)
    view: str = "progress"             # progress (PARL-MT warm start) | plain (the paper's SFT baseline)
    tool_docs: str = "full"            # full | names | none | minimal | signatures | described (context.TOOL_DOCS)
    lora: bool = True
    full_finetune: bool = False        # toy switch: train every weight instead of LoRA adapters
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    learning_rate: float = 2e-4
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 16384
    warmup_steps: float = 0.03         # < 1: a fraction of the training steps (transformers 5)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 2
    gradient_checkpointing: bool = False
    bf16: bool = False
    assistant_only_loss: bool = False  # for whole-conversation rows ({"messages"}): loss on every assistant span
    # random | group_by_length: transformers' LengthGroupedSampler batches rows of similar length (shuffled in
    # megabatches of min(50, rows // (4 x batch)) batches): SmolLM2's PAG rows (350-550 tokens, by how many classes
    # a task has) pad to 1.3x their tokens in random batches of 8, to 1.003x grouped (LOG.md 2026-12-04)
    train_sampling_strategy: str = "random"
    seed: int = 0

    def __post_init__(self):
        from .context import TOOL_DOCS

        if self.view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.tool_docs not in TOOL_DOCS:
            raise ConfigError(f"tool_docs must be one of {TOOL_DOCS}, got {self.tool_docs!r}")
        if self.train_sampling_strategy not in SAMPLING:
            raise ConfigError(f"train_sampling_strategy must be one of {SAMPLING}, got {self.train_sampling_strategy!r}")
        if self.full_finetune:
            self.lora = False


def load_recipe(path, overrides: dict | None = None) -> SFTRecipe:
    """Read a YAML recipe (+ overrides); unknown keys, a missing dataset or model path fail here, in one line."""
    return load_yaml_recipe(path, SFTRecipe, overrides, "recipes/*/sft.yaml")


def check_recipe(recipe: SFTRecipe) -> None:
    """Everything that can be checked before training starts (dataset present, model resolvable)."""
    from .models import resolve_model_path

    if not (repo_path(recipe.data) / "card.json").exists():
        raise ConfigError(f"dataset {recipe.data} not found; build it with notebooks/01_pag_synthesis.ipynb first")
    resolve_model_path(recipe.model)


def sft_dataset(recipe: SFTRecipe, split: str = "train"):
    """TRL prompt/completion rows of one split for the recipe's view and tool-docs mode."""
    from datasets import Dataset

    from .pag import sft_rows
    from .pag_build import load_pag

    splits, tasks = load_pag(repo_path(recipe.data))
    rows = sft_rows(splits[split], tasks, recipe.view, tool_docs=recipe.tool_docs)
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])


def score_labelled_positions_only_on_cpu() -> bool:
    """Make TRL's fused LM head score only the positions that carry a label when it runs on the CPU.

    Written by hand because TRL 1.16 has no switch for it: ``trl.trainer.utils.add_fused_lm_head`` projects only
    the labelled positions through the LM head on Triton devices, but *every* position (system prompt, user,
    tool text, padding) elsewhere, so that XLA devices do not recompile for each new shape. Nothing recompiles
    on the CPU, where the toy's 4k-vocabulary head dominates the step: scoring only the completion makes toy SFT
    ~3.5x faster (0.63 -> 0.18 s per step of 16 rows, 2 threads; LOG.md) with the same loss up to float rounding
    (``tests/test_sft.py::test_cpu_compact_fused_head_same_loss_and_grads``). Only that decision is patched, in
    ``trl.trainer.utils``' namespace; the kernels' own Triton check is untouched. Idempotent; returns whether the
    patch is in place (``False`` when a TRL release no longer has the hook: training is then just slower).
    """
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None:
        return False
    if getattr(current, "_parl_mt_cpu_compact", False):
        return True

    def use_compact(device, _orig=current):
        return _orig(device) or device.type == "cpu"

    use_compact._parl_mt_cpu_compact = True
    trl_utils._use_triton = use_compact
    return True


def seeded_length_sampler(lengths: list[int], batch_size: int, seed: int):
    """transformers' ``LengthGroupedSampler`` drawing its order from a generator seeded with ``seed + epoch``.

    Written by hand because ``Trainer`` builds that sampler without a generator (transformers 5.23): it shuffles from
    the global RNG, so a run resumed from a checkpoint would draw another order and skip the wrong rows; accelerate
    seeds only ``RandomSampler`` (its ``SeedableRandomSampler``: ``data_seed + epoch``, the same rule as here).
    ``Trainer`` calls ``set_epoch`` at each epoch.

    >>> s = seeded_length_sampler([5, 1, 9, 3, 7, 2], batch_size=2, seed=0)
    >>> first = list(s); s.set_epoch(0); list(s) == first, sorted(first)
    (True, [0, 1, 2, 3, 4, 5])
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self):
            super().__init__(batch_size, lengths=list(lengths))
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return super().__iter__()

    return SeededLengthGroupedSampler()


def _trainer_class():
    """TRL's ``SFTTrainer`` with :func:`seeded_length_sampler` in place of the unseeded length-grouped one."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, LengthGroupedSampler):
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return seeded_length_sampler(sampler.lengths, sampler.batch_size, seed)
            return sampler

    return Trainer


def make_trainer(recipe: SFTRecipe, out_dir, train_dataset=None, eval_dataset=None, callbacks=None):
    """An ``SFTTrainer`` for the recipe (LoRA via ``peft_config`` unless ``full_finetune``)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from .models import resolve_model_path

    path = resolve_model_path(recipe.model)
    tok = AutoTokenizer.from_pretrained(path)
    cpu = not torch.cuda.is_available()
    # bf16 on a GPU: bf16 weights. On the CPU: fp32 weights under bf16 autocast (Trainer's bf16 + use_cpu), which
    # uses the CPU's AMX-BF16 units: SmolLM2-135M LoRA ~250 -> ~450 tokens/s on 2 cores (../shared/notes/smollm2.md)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if recipe.bf16 and not cpu
                                                 else torch.float32)
    if cpu:
        score_labelled_positions_only_on_cpu()
    args = SFTConfig(
        output_dir=str(out_dir), learning_rate=recipe.learning_rate, max_steps=recipe.max_steps,
        num_train_epochs=recipe.num_train_epochs, per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, max_length=recipe.max_length,
        warmup_steps=recipe.warmup_steps, lr_scheduler_type=recipe.lr_scheduler_type,
        weight_decay=recipe.weight_decay, adam_beta2=recipe.adam_beta2, logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit,
        bf16=recipe.bf16, seed=recipe.seed, assistant_only_loss=recipe.assistant_only_loss,
        train_sampling_strategy=recipe.train_sampling_strategy,
        # passed either way: TRL's SFTConfig defaults it to True, so "false" was ignored (LOG 2026-12-05)
        activation_checkpointing=recipe.gradient_checkpointing,
        data_seed=recipe.seed, report_to="none", use_cpu=cpu, dataloader_num_workers=0, disable_tqdm=True,
        eval_strategy="no", save_only_model=False, completion_only_loss=True)
    peft = None
    if recipe.lora:
        peft = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                          target_modules=recipe.target_modules, task_type="CAUSAL_LM")
    return _trainer_class()(model=model, args=args, train_dataset=train_dataset or sft_dataset(recipe),
                      eval_dataset=eval_dataset, processing_class=tok, peft_config=peft, callbacks=callbacks)


def last_checkpoint(out_dir) -> str | None:
    """The newest intact ``checkpoint-N`` (one with trainer_state.json) in ``out_dir``."""
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    ckpts = [c for c in ckpts if (c / "trainer_state.json").exists()]
    return str(ckpts[-1]) if ckpts else None


def recipe_card(recipe: SFTRecipe) -> dict:
    """The resolved recipe as it keys a run (:func:`sft_fingerprint`) and a grid cell (:func:`sft_cells`): a key
    added later is left out at its default, so the runs and cells made before it existed keep their keys.

    >>> from parl_mt_lib.sft import SFTRecipe, recipe_card
    >>> "train_sampling_strategy" in recipe_card(SFTRecipe(model="toy", data="d"))
    False
    """
    config = asdict(recipe)
    if config["train_sampling_strategy"] == "random":  # the order every run before the key had
        del config["train_sampling_strategy"]
    return config


def sft_fingerprint(recipe: SFTRecipe) -> dict:
    """The run's card: the resolved recipe + fingerprints of its inputs (starting model, PAG data)."""
    return artifact_card({**recipe_card(recipe), "precision": precision(recipe.bf16)},
                         {"model": input_fingerprint(recipe.model), "data": input_fingerprint(repo_path(recipe.data))})


def train_sft(recipe: SFTRecipe, out_dir, *, resume: bool = True, replace: bool = False, callbacks=None) -> dict:
    """Train (resuming from the last checkpoint in ``out_dir`` if any); save ``final/`` + resolved recipe +
    ``fingerprint.json``.

    ``out_dir`` may hold only this run (same fingerprint): another recipe, model or dataset stops with a one-line
    :class:`ConfigError` and nothing is touched, unless ``replace=True`` (a grid re-running its own stale cell),
    which deletes it first. A finished run (its summary and stamped ``final/`` intact) is returned as it is, without
    training or callbacks. ``resume=False`` starts this run over from step 0.
    Returns ``{"final_dir", "log_history", "train_runtime_s", "global_step", "fingerprint"}``.
    """
    check_recipe(recipe)
    out = Path(out_dir)
    card = sft_fingerprint(recipe)
    claim_dir(out, card, replace=replace, what="recipe or inputs",
              hint="pass a new output directory (or replace=True)")
    final, summary = out / "final", out / "train_summary.json"
    done = json.loads(summary.read_text()) if resume and summary.exists() else {}
    stamp = read_fingerprint(final) if done else None
    if (done.get("fingerprint") == card["fingerprint"] and (stamp or {}).get("fingerprint") == card["fingerprint"]
            and stamp.get("output") == content_fingerprint(final)):  # the summary is written after final/ is stamped
        # this run, finished: returned as it is (transformers resumed at max_steps trains one more step at lr 0, and
        # the time of a run that trained nothing is not its training time)
        return {"final_dir": str(final), "log_history": json.loads((out / "log_history.json").read_text()),
                "train_runtime_s": done["train_runtime_s"], "global_step": done["global_step"],
                "fingerprint": card["fingerprint"]}
    summary.unlink(missing_ok=True)  # a run killed from here on is not finished
    atomic_write_json(out / "recipe.resolved.json", asdict(recipe))
    trainer = make_trainer(recipe, out, callbacks=callbacks)
    t0 = time.time()
    ckpt = last_checkpoint(out) if resume else None
    trainer.train(resume_from_checkpoint=ckpt)
    runtime = time.time() - t0
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    atomic_write_json(final / "recipe.resolved.json", asdict(recipe))
    stamp_checkpoint(final, card)  # the checkpoint's identity for whatever starts from it or evaluates it
    hist = trainer.state.log_history
    atomic_write_json(out / "log_history.json", hist)
    atomic_write_json(out / "train_summary.json", {"global_step": trainer.state.global_step,
                                                    "resumed_from": ckpt, "train_runtime_s": round(runtime, 2),
                                                    "fingerprint": card["fingerprint"],
                                                    "provenance": provenance(seeds=[recipe.seed])})
    return {"final_dir": str(final), "log_history": hist, "train_runtime_s": runtime,
            "global_step": trainer.state.global_step, "fingerprint": card["fingerprint"]}


def training_device() -> str:
    """The device :func:`make_trainer` trains on (the first GPU, else the CPU); held-out evaluation runs there too."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_sft_model(path, view: str, recipe: SFTRecipe, eval_limit: int | None = 150,
                       task_limit: int | None = 40) -> dict:
    """Held-out synthetic metrics of one model (:mod:`parl_mt_lib.sft_eval`): the headline ones from free-running
    play of ``task_limit`` tasks (task success, format validity, step / call accuracy along the model's own
    trajectory), and teacher-forced ``tf_*`` diagnosis metrics on ``eval_limit`` gold-context steps (not comparable
    across views: the progress view's gold context names the next call)."""
    from transformers import AutoTokenizer

    from .models import load_model
    from .pag_build import load_pag
    from .sft_eval import play, teacher_forced_metrics, trajectory_metrics

    splits, tasks = load_pag(repo_path(recipe.data))
    val = splits["validation"]
    val_tasks = [tasks[i] for i in sorted({e["task_id"] for e in val})][:task_limit]
    # load_model: an adapter's base is found even when the saved base path is gone (results from another checkout);
    # dtype "auto" as from_pretrained's own default, on the device it was trained on
    model = load_model(str(path), dtype="auto", device=training_device())[0]
    tok = AutoTokenizer.from_pretrained(path)
    m = trajectory_metrics(play(model, tok, val_tasks, view, recipe.tool_docs), view)
    tf = teacher_forced_metrics(model, tok, val, tasks, view, recipe.tool_docs, limit=eval_limit)
    return {**{k: m[k] for k in ("task_success", "format_validity", "step_accuracy", "call_accuracy", "n_steps",
                                 "n_call_steps", "n_tasks", "first_error_causes", "samples")}, **tf}


def sft_cell(kind: str, view: str, seed: int | None, recipe_path, overrides: dict | None, out_dir,
             eval_limit: int | None = 150, task_limit: int | None = 40) -> dict:
    """One cell of the SFT grid: the untrained model (``kind="base"``) or one training (``"sft"``, resumed from
    its last checkpoint if killed; a directory left by another recipe is replaced, it is this cell's own),
    evaluated on the held-out synthetic tasks."""
    from .models import resolve_model_path

    if kind == "base":  # greedy decoding: the untrained model's metrics do not depend on the seed
        recipe = load_recipe(recipe_path, {**(overrides or {}), "view": view})
        return {"kind": kind, "view": view, "seed": None,
                **evaluate_sft_model(resolve_model_path(recipe.model), view, recipe, eval_limit, task_limit)}
    recipe = load_recipe(recipe_path, {**(overrides or {}), "view": view, "seed": seed})
    run = train_sft(recipe, Path(out_dir) / view / f"seed{seed}", replace=True)
    losses = [(h["step"], h["loss"]) for h in run["log_history"] if "loss" in h]
    return {"kind": kind, "view": view, "seed": seed, "global_step": run["global_step"],
            "train_runtime_s": round(run["train_runtime_s"], 1), "loss_curve": losses, "final_dir": run["final_dir"],
            **evaluate_sft_model(run["final_dir"], view, recipe, eval_limit, task_limit)}


def sft_cells(recipe_path, variants, seeds, out_dir, overrides: dict | None = None, eval_limit: int | None = 150,
              task_limit: int | None = 40) -> list:
    """The grid's :class:`~parl_mt_lib.grid.Cell` list: ``base-VIEW`` (keyed by the model, data, tool docs and
    evaluation sizes) and ``sft-VIEW-seedS`` (keyed by the resolved recipe, its inputs and the evaluation sizes)."""
    from .grid import Cell

    cells, inputs = [], {}
    for kind, view, seed in [("base", v, None) for v in variants] + [("sft", v, s) for v in variants for s in seeds]:
        recipe = load_recipe(recipe_path, {**(overrides or {}), "view": view, **({"seed": seed} if seed is not None
                                                                                 else {})})
        if (recipe.model, recipe.data) not in inputs:
            inputs[recipe.model, recipe.data] = sft_fingerprint(recipe)["inputs"]
        evals = {"eval_limit": eval_limit, "task_limit": task_limit}
        if kind == "base":
            config = {"kind": kind, "view": view, "model": recipe.model, "tool_docs": recipe.tool_docs, **evals}
            key = f"base-{view}"
        else:
            # the precision only where it depends on the device (bf16), so the fp32 cells made before keep their keys
            config = {"kind": kind, "recipe": recipe_card(recipe), **evals, **precision_card(recipe.bf16)}
            key = f"sft-{view}-seed{seed}"
        fp = artifact_card(config, inputs[recipe.model, recipe.data])["fingerprint"]
        cells.append(Cell(key, sft_cell, {"kind": kind, "view": view, "seed": seed, "recipe_path": str(recipe_path),
                                          "overrides": overrides, "out_dir": str(out_dir), "eval_limit": eval_limit,
                                          "task_limit": task_limit}, fp))
    return cells


def run_sft_grid(recipe_path, variants=("plain", "progress"), seeds=(0, 1, 2), out_dir="results/02_sft",
                 overrides: dict | None = None, eval_limit: int | None = 150, task_limit: int | None = 40,
                 progress: bool = True, workers: int | None = 1, threads: int = 1) -> dict:
    """Train every (variant, seed), evaluate base and trained models on held-out synthetic tasks, write
    ``metrics.json`` (+ ``cells.json``). Through :func:`parl_mt_lib.grid.run_grid`: a finished cell is reused
    only while its fingerprint (recipe, model, data, evaluation sizes) matches, else it is retrained; a killed
    one resumes. ``workers`` cells run side by side (``None``: one per CPU core, 1 on a GPU), each with
    ``threads // workers`` torch threads; with one worker the cells run in this process."""
    from .stats import seed_interval
    from .grid import run_grid
    from .pag_build import load_pag

    t0 = time.time()
    out = repo_path(out_dir)
    base_recipe = load_recipe(recipe_path, overrides)
    check_recipe(base_recipe)
    splits, _ = load_pag(repo_path(base_recipe.data))
    n_val_tasks = len(sorted({e["task_id"] for e in splits["validation"]})[:task_limit])
    grid = run_grid(sft_cells(recipe_path, variants, seeds, out, overrides, eval_limit, task_limit), out,
                    workers=workers, threads=threads, desc="SFT grid", progress=progress)
    cells = grid["cells"]
    summary = {}
    for view in variants:
        for kind in ("base", "sft"):
            rows = [c for c in cells.values() if c["kind"] == kind and c["view"] == view]
            if not rows:
                continue
            summary[f"{kind}-{view}"] = {
                m: {"mean": sum(r[m] for r in rows) / len(rows), "ci95_seeds": seed_interval([r[m] for r in rows]),
                    "per_seed": {str(r["seed"]): r[m] for r in rows}}
                for m in HEADLINE_METRICS}
    metrics = {"summary": summary, "cells": cells, "seeds": list(seeds), "variants": list(variants),
               "recipe": asdict(base_recipe), "held_out": {"n_steps": len(splits["validation"]), "n_tasks": n_val_tasks},
               "reused_cells": grid["reused"],
               "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                        wall_clock_note="this invocation only (finished cells are reused)",
                                        workers=grid["workers"], threads_per_worker=grid["threads_per_worker"])}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
