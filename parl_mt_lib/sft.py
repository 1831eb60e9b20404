"""SFT warm start on PAG data with TRL's ``SFTTrainer`` (+ PEFT LoRA), driven by one YAML recipe per model x stage.

Rows are TRL prompt/completion pairs (``pag.sft_rows``): TRL then puts the loss on the completion
only — the assistant's summary + plan + call (progress view) or the bare call (plain view) — never on
system, user or tool tokens. Checkpoints are written every ``save_steps``; a rerun with the same
output directory resumes from the last one. The resolved recipe is saved next to the model.

Example:
    >>> r = load_recipe("recipes/toy/sft.yaml", {"max_steps": 2})
    >>> r.model, r.view, r.lora
    ('toy', 'progress', False)
    >>> load_recipe("recipes/toy/sft.yaml", {"bogus": 1})
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: unknown recipe key(s) ['bogus'] in recipes/toy/sft.yaml; known keys: adam_beta2, assistant_only_loss, bf16, data, full_finetune, gradient_accumulation_steps, gradient_checkpointing, learning_rate, logging_steps, lora, lora_alpha, lora_dropout, lora_r, lr_scheduler_type, max_length, max_steps, model, num_train_epochs, per_device_train_batch_size, save_steps, save_total_limit, seed, target_modules, tool_docs, view, warmup_steps, weight_decay
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .runtime import ConfigError, atomic_write_json, load_yaml_recipe, provenance, repo_path

VIEWS = ("progress", "plain")


@dataclass
class SFTRecipe:
    model: str = "toy"                 # toy | model dir | hub id
    data: str = "results/01_pag"       # a PAG directory (notebook 01)
    view: str = "progress"             # progress (PARL-MT warm start) | plain (the paper's SFT baseline)
    tool_docs: str = "full"            # full | names | none: tool docs in the system prompt
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
    seed: int = 0

    def __post_init__(self):
        from .context import TOOL_DOCS

        if self.view not in VIEWS:
            raise ConfigError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.tool_docs not in TOOL_DOCS:
            raise ConfigError(f"tool_docs must be one of {TOOL_DOCS}, got {self.tool_docs!r}")
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


def make_trainer(recipe: SFTRecipe, out_dir, train_dataset=None, eval_dataset=None, callbacks=None):
    """An ``SFTTrainer`` for the recipe (LoRA via ``peft_config`` unless ``full_finetune``)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from .models import resolve_model_path

    path = resolve_model_path(recipe.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if recipe.bf16 else torch.float32)
    cpu = not torch.cuda.is_available()
    if cpu:
        score_labelled_positions_only_on_cpu()
    args = SFTConfig(
        output_dir=str(out_dir), learning_rate=recipe.learning_rate, max_steps=recipe.max_steps,
        num_train_epochs=recipe.num_train_epochs, per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, max_length=recipe.max_length,
        warmup_steps=recipe.warmup_steps, lr_scheduler_type=recipe.lr_scheduler_type,
        weight_decay=recipe.weight_decay, adam_beta2=recipe.adam_beta2, logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit,
        bf16=recipe.bf16 and not cpu, seed=recipe.seed, assistant_only_loss=recipe.assistant_only_loss,
        **({"gradient_checkpointing": True} if recipe.gradient_checkpointing else {}),
        data_seed=recipe.seed, report_to="none", use_cpu=cpu, dataloader_num_workers=0, disable_tqdm=True,
        eval_strategy="no", save_only_model=False, completion_only_loss=True)
    peft = None
    if recipe.lora:
        peft = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                          target_modules=recipe.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset or sft_dataset(recipe),
                      eval_dataset=eval_dataset, processing_class=tok, peft_config=peft, callbacks=callbacks)


def last_checkpoint(out_dir) -> str | None:
    """The newest intact ``checkpoint-N`` (one with trainer_state.json) in ``out_dir``."""
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    ckpts = [c for c in ckpts if (c / "trainer_state.json").exists()]
    return str(ckpts[-1]) if ckpts else None


def train_sft(recipe: SFTRecipe, out_dir, *, resume: bool = True, callbacks=None) -> dict:
    """Train (resuming from the last checkpoint in ``out_dir`` if any); save ``final/`` + resolved recipe.

    Returns ``{"final_dir", "log_history", "train_runtime_s", "global_step"}``.
    """
    check_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.resolved.json", asdict(recipe))
    trainer = make_trainer(recipe, out, callbacks=callbacks)
    t0 = time.time()
    ckpt = last_checkpoint(out) if resume else None
    trainer.train(resume_from_checkpoint=ckpt)
    final = out / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    atomic_write_json(final / "recipe.resolved.json", asdict(recipe))
    hist = trainer.state.log_history
    atomic_write_json(out / "log_history.json", hist)
    atomic_write_json(out / "train_summary.json", {"global_step": trainer.state.global_step,
                                                    "resumed_from": ckpt, "train_runtime_s": round(time.time() - t0, 2),
                                                    "provenance": provenance(seeds=[recipe.seed])})
    return {"final_dir": str(final), "log_history": hist, "train_runtime_s": time.time() - t0,
            "global_step": trainer.state.global_step}


def evaluate_sft_model(path, view: str, recipe: SFTRecipe, eval_limit: int | None = 150,
                       task_limit: int | None = 40) -> dict:
    """Held-out synthetic metrics of one model: teacher-forced steps (format validity, step / call exact match)
    and tasks played end to end under the official checker (task success)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .pag_build import load_pag
    from .sft_eval import step_metrics, task_success

    splits, tasks = load_pag(repo_path(recipe.data))
    val = splits["validation"]
    val_tasks = [tasks[i] for i in sorted({e["task_id"] for e in val})][:task_limit]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    sm = step_metrics(model, tok, val, tasks, view, recipe.tool_docs, limit=eval_limit)
    ts = task_success(model, tok, val_tasks, view, recipe.tool_docs)
    return {"format_validity": sm["format_validity"], "step_exact_match": sm["step_exact_match"],
            "call_exact_match": sm["call_exact_match"], "task_success": ts["task_success"],
            "n_steps": sm["n_steps"], "n_call_steps": sm["n_call_steps"], "n_tasks": ts["n_tasks"],
            "samples": sm["samples"][:3]}


def sft_cell(kind: str, view: str, seed: int | None, recipe_path, overrides: dict | None, out_dir,
             eval_limit: int | None = 150, task_limit: int | None = 40) -> dict:
    """One cell of the SFT grid: the untrained model (``kind="base"``) or one training (``"sft"``, resumed from
    its last checkpoint if killed), evaluated on the held-out synthetic tasks."""
    from .models import resolve_model_path

    if kind == "base":  # greedy decoding: the untrained model's metrics do not depend on the seed
        recipe = load_recipe(recipe_path, {**(overrides or {}), "view": view})
        return {"kind": kind, "view": view, "seed": None,
                **evaluate_sft_model(resolve_model_path(recipe.model), view, recipe, eval_limit, task_limit)}
    recipe = load_recipe(recipe_path, {**(overrides or {}), "view": view, "seed": seed})
    run = train_sft(recipe, Path(out_dir) / view / f"seed{seed}")
    losses = [(h["step"], h["loss"]) for h in run["log_history"] if "loss" in h]
    return {"kind": kind, "view": view, "seed": seed, "global_step": run["global_step"],
            "train_runtime_s": round(run["train_runtime_s"], 1), "loss_curve": losses, "final_dir": run["final_dir"],
            **evaluate_sft_model(run["final_dir"], view, recipe, eval_limit, task_limit)}


def run_sft_grid(recipe_path, variants=("plain", "progress"), seeds=(0, 1, 2), out_dir="results/02_sft",
                 overrides: dict | None = None, eval_limit: int | None = 150, task_limit: int | None = 40,
                 progress: bool = True, workers: int | None = 1, threads: int = 1) -> dict:
    """Train every (variant, seed), evaluate base and trained models on held-out synthetic tasks, write
    ``metrics.json`` (+ CSVs). Finished (variant, seed) cells are skipped on a rerun; a killed one resumes.
    ``workers`` cells run side by side (``None``: one per CPU core, 1 on a GPU), each with ``threads // workers``
    torch threads; with one worker the cells run in this process."""
    from .pag_build import load_pag
    from .runtime import resolve_workers, run_jobs
    from .stats import seed_interval

    t0 = time.time()
    out = repo_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_recipe = load_recipe(recipe_path, overrides)
    check_recipe(base_recipe)
    splits, _ = load_pag(repo_path(base_recipe.data))
    n_val_tasks = len(sorted({e["task_id"] for e in splits["validation"]})[:task_limit])
    cells_path = out / "cells.json"
    cells = json.loads(cells_path.read_text()) if cells_path.exists() else {}

    todo = [("base", v, None) for v in variants] + [("sft", v, s) for v in variants for s in seeds]
    keys = [f"{kind}-{view}" + ("" if seed is None else f"-seed{seed}") for kind, view, seed in todo]
    pending = [(key, {"kind": kind, "view": view, "seed": seed, "recipe_path": str(recipe_path),
                      "overrides": overrides, "out_dir": str(out), "eval_limit": eval_limit, "task_limit": task_limit})
               for key, (kind, view, seed) in zip(keys, todo) if key not in cells]
    n = resolve_workers(workers, len(pending))

    def save(i, cell):
        cells[pending[i][0]] = cell
        atomic_write_json(cells_path, cells)

    run_jobs(sft_cell, [job for _, job in pending], workers=n, threads=max(1, threads // n), on_done=save,
             desc="SFT grid", progress=progress)
    summary = {}
    for view in variants:
        for kind in ("base", "sft"):
            rows = [c for c in cells.values() if c["kind"] == kind and c["view"] == view
                    and (kind == "base" or c["seed"] in seeds)]
            if not rows:
                continue
            summary[f"{kind}-{view}"] = {
                m: {"mean": sum(r[m] for r in rows) / len(rows), "ci95_seeds": seed_interval([r[m] for r in rows]),
                    "per_seed": {str(r["seed"]): r[m] for r in rows}}
                for m in ("format_validity", "step_exact_match", "call_exact_match", "task_success")}
    metrics = {"summary": summary, "cells": cells, "seeds": list(seeds), "variants": list(variants),
               "recipe": asdict(base_recipe), "held_out": {"n_steps": len(splits["validation"]), "n_tasks": n_val_tasks},
               "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                        wall_clock_note="this invocation only (finished cells are reused)",
                                        workers=n, threads_per_worker=max(1, threads // n) if n > 1 else None)}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
