"""Choose an RL hyperparameter on a dev split, never on evaluation entries: train each variant, play it on dev tasks.

Each variant is the RL recipe with its overrides, trained by :func:`parl_mt_lib.rl.train_rl` from the recipe's
starting checkpoint (``init``: the SFT checkpoint of the run) on the recipe's training pool, with no held-out play
during training (``eval_tasks`` is 0 here: the run's own held-out tasks are evaluation entries). The starting
checkpoint and every variant's final checkpoint are played greedily on dev tasks -- fresh draws of the PAG build's
generator, none a training or evaluation task (:func:`parl_mt_lib.dev_split.dev_tasks`) -- by
:func:`parl_mt_lib.evaluate.evaluate` in the method's context with the recipe's tool docs and engine, as notebook
06 plays held-out tasks. Every variant is paired with the starting checkpoint over tasks
(:func:`parl_mt_lib.stats.paired_bootstrap`): does RL at this setting beat the SFT model it starts from? The
training log of each variant (reward, zero-variance groups, KL, sampled task success per iteration) is summarised
beside it. Run from the repository root after notebooks 01-02 (e.g. ``make reproduce-small``):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rl_dev_probe.py --recipe recipes/smollm2-135m/pag_rl.yaml \\
        --variant lr1e-3:learning_rate=1e-3 --variant lr3e-4:learning_rate=3e-4

On 2 cores one SmolLM2 variant at the recipe's budget (3 iterations of 4 tasks x 4) is ~8 min of training and a few
minutes of play. Prints one JSON line per checkpoint and writes ``probe.json`` (dev task ids, rows, provenance)
under ``--out``/<method>, with the starting checkpoint's and each run's fingerprint; a rerun resumes a variant whose
recipe and inputs are unchanged and stops with one line at one whose recipe or starting checkpoint changed (pass
another ``--out``).
"""
from __future__ import annotations

import argparse
import json
import time


def training_summary(rows: list[dict]) -> dict:
    """Per-iteration signal of an RL run (``iterations.jsonl`` rows), for the why when RL does not help.

    >>> training_summary([{"reward_mean": 1.0, "reward_std": 0.5, "train_task_success": 0.5, "kl": 0.01,
    ...                    "zero_variance_groups": 0.25}])["zero_variance_groups"]
    [0.25]
    """
    keys = ("reward_mean", "reward_std", "train_task_success", "zero_variance_groups", "kl", "n_samples")
    return {k: [None if r.get(k) is None else round(r[k], 4) for r in rows] for k in keys}


def main(argv=None) -> int:
    from parl_mt_lib.compare import task_verdicts
    from parl_mt_lib.dev_split import dev_tasks, parse_variant, unique_names
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.rl import rl_fingerprint, train_rl
    from parl_mt_lib.rl_recipe import PLAY_FIELDS, load_rl_recipe, play_kwargs
    from parl_mt_lib.runtime import (atomic_write_json, input_fingerprint, provenance, read_jsonl, repo_path,
                                     set_threads)
    from parl_mt_lib.stats import changed, paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/smollm2-135m/pag_rl.yaml")
    ap.add_argument("--variant", action="append", default=None, help="name:key=value,... (default: the recipe)")
    ap.add_argument("--seed", type=int, default=0, help="the RL seed (and the SFT seed its init names)")
    ap.add_argument("--n-dev", type=int, default=40)
    ap.add_argument("--dev-seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the updates (2 cores: 2)")
    ap.add_argument("--out", default="results/small/rl_dev_probe")
    a = ap.parse_args(argv)
    # what every variant shares: its start and data, no held-out play, and how the start and it are played
    variants = [parse_variant(v, reserved=("data", "init", "eval_tasks", "seed", "method", *PLAY_FIELDS))
                for v in (a.variant or ["recipe:"])]
    unique_names(variants, taken=("start",))
    # eval_tasks 0: the run's held-out tasks are evaluation entries, never played while choosing
    recipes = {n: load_rl_recipe(a.recipe, {**ov, "seed": a.seed, "eval_tasks": 0}) for n, ov in variants}
    ref = recipes[variants[0][0]]
    set_threads(a.threads)
    t0, out = time.time(), repo_path(a.out) / ref.method
    tasks = dev_tasks(ref.data, a.n_dev, a.dev_seed)  # every variant shares data and init (reserved keys)
    rows, verdicts = [], {}

    def play(name, policy):  # every variant is played as the start is (its play fields are reserved)
        d = out / name / "dev"
        res = evaluate(policy, entries=tasks, **play_kwargs(ref), results_dir=d, progress=False, replace=True)
        verdicts[name] = task_verdicts(d)
        return res["overall"]

    start = play("start", ref.init_path())
    rows.append({"variant": "start", "checkpoint": ref.init_path(), "n_dev": len(tasks), "dev_task_success": start,
                 "checkpoint_fingerprint": input_fingerprint(ref.init_path())})
    print(json.dumps(rows[-1]), flush=True)
    for name, overrides in variants:
        recipe = recipes[name]
        train = out / name / "train"
        m = train_rl(recipe, train)  # eval_tasks 0: no held-out play
        row = {"variant": name, "overrides": overrides, "learning_rate": recipe.learning_rate,
               "iterations": recipe.iterations, "tasks_per_iteration": recipe.tasks_per_iteration,
               "group_size": recipe.group_size, "n_dev": len(tasks),
               "dev_task_success": play(name, m["final_dir"]),
               "training": training_summary(read_jsonl(train / "iterations.jsonl")),
               "run_fingerprint": rl_fingerprint(recipe)["fingerprint"],
               "train_wall_s": m["provenance"].get("wall_clock_s")}  # this invocation's (a resumed run: less)
        row["minus_start"] = paired_bootstrap(verdicts[name], verdicts["start"])
        row["changed"] = changed(verdicts[name], verdicts["start"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_json(out / "probe.json", {"rows": rows, "dev_task_ids": [t.id for t in tasks], "recipe": a.recipe,
                                           "dev_seed": a.dev_seed, "seed": a.seed,
                                           "provenance": provenance(seeds=[a.seed],
                                                                    wall_clock_s=round(time.time() - t0, 1))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
