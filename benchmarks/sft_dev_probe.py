"""Choose an SFT hyperparameter on a dev split, never on evaluation entries: train each variant, play it on dev tasks.

The dev tasks are fresh draws of the PAG build's own task generator, none a training or evaluation task
(:func:`parl_mt_lib.dev_split.dev_tasks`). Each variant is the recipe
with its overrides, trained by :func:`parl_mt_lib.sft.train_sft` (fingerprinted, resumable) and played greedily on
the dev tasks by :func:`parl_mt_lib.evaluate.evaluate` as notebook 06 plays held-out tasks (the view's context, the
recipe's tool docs, vLLM serving the adapter merged); every variant is paired with the first over tasks
(:func:`parl_mt_lib.stats.paired_bootstrap`). Run from the repository root after notebook 01 (e.g. the
``make reproduce-small`` build):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sft_dev_probe.py --pag results/small/01_pag \\
        --recipe recipes/smollm2-135m/sft.yaml --view progress --variant lr1e-3:learning_rate=1e-3 \\
        --variant lr2e-3:learning_rate=2e-3

On 2 cores one SmolLM2 SFT-PAG variant is ~20 min of training and a few minutes of play. Prints one JSON line per
variant and writes ``probe.json`` (dev task ids, per-variant results, provenance) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    from parl_mt_lib.compare import task_verdicts
    from parl_mt_lib.dev_split import dev_tasks, parse_variant, unique_names
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.runtime import atomic_write_json, provenance, repo_path, set_threads
    from parl_mt_lib.sft import load_recipe, train_sft
    from parl_mt_lib.sft_eval import view_context
    from parl_mt_lib.stats import paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pag", default="results/small/01_pag")
    ap.add_argument("--recipe", default="recipes/smollm2-135m/sft.yaml")
    ap.add_argument("--view", default="progress", choices=("progress", "plain"))
    ap.add_argument("--variant", action="append", default=None, help="name:key=value,... (first is the reference)")
    ap.add_argument("--n-dev", type=int, default=40)
    ap.add_argument("--dev-seed", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (2 cores: 2)")
    ap.add_argument("--out", default="results/small/sft_dev_probe")
    a = ap.parse_args(argv)
    t0, out = time.time(), repo_path(a.out) / a.view
    variants = [parse_variant(v) for v in (a.variant or ["recipe:"])]
    unique_names(variants)
    recipes = {name: load_recipe(a.recipe, {**ov, "view": a.view, "data": a.pag}) for name, ov in variants}
    set_threads(a.threads)
    tasks = dev_tasks(a.pag, a.n_dev, a.dev_seed)
    ref, rows, verdicts = variants[0][0], [], {}
    for name, overrides in variants:
        recipe = recipes[name]
        run = train_sft(recipe, out / name / "train")
        d = out / name / "dev"
        res = evaluate(run["final_dir"], entries=tasks, context=view_context(a.view), tool_docs=recipe.tool_docs,
                       max_new_tokens=a.max_new_tokens, temperature=0.0, rollout_backend="vllm", lora_sync="merged",
                       results_dir=d, progress=False, replace=True)
        verdicts[name] = task_verdicts(d)
        losses = [h["loss"] for h in run["log_history"] if "loss" in h]
        row = {"variant": name, "overrides": overrides, "learning_rate": recipe.learning_rate,
               "run_fingerprint": run["fingerprint"], "view": a.view, "n_dev": len(tasks),
               "dev_task_success": res["overall"], "train_runtime_s": round(run["train_runtime_s"], 1),
               "last_losses": losses[-3:],
               "minus_" + ref: paired_bootstrap(verdicts[name], verdicts[ref]) if name != ref else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_json(out / "probe.json", {"rows": rows, "dev_task_ids": [t.id for t in tasks], "pag": a.pag,
                                           "recipe": a.recipe, "dev_seed": a.dev_seed,
                                           "provenance": provenance(wall_clock_s=round(time.time() - t0, 1))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
