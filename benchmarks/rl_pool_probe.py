"""Does RL improve the tasks it trained on? A diagnosis that never touches evaluation entries.

After ``make reproduce-small`` (or any run of notebooks 02-04), for each RL method this plays its starting
checkpoint (the SFT checkpoint its recipe's ``init`` names) and its final checkpoint greedily on the RL run's own
training pool (``rl_tasks(recipe)[0]``: ``task_pool`` training tasks, none held out), in the method's context,
with :func:`parl_mt_lib.evaluate.evaluate` (official verdicts) in the recipe's engine (``rollout_backend``,
``lora_sync``, ``generation_batch_size``: vLLM, merged, for the SmolLM2 recipes). It first checks that the
starting checkpoint and the PAG data are still the ones the run started from (the run's ``fingerprint.json``):
a later rerun of 01 or 02 would otherwise compare the RL model with an SFT model it never started from. Tasks
are split into those the run drew (the ``task_ids`` its ``iterations.jsonl`` rows record; older runs: recomputed
with :func:`parl_mt_lib.rl.iteration_batch`) and the rest of the pool; the paired difference final - start has
a percentile-bootstrap interval over tasks (:func:`parl_mt_lib.stats.paired_bootstrap`).

If RL does not even move success on the tasks it was updated on, a held-out gain cannot be expected from the
run's budget (LOG.md 2026-12-05 (night)). Run from the repository root of the run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rl_pool_probe.py --small results/small --out results/small/rl_pool_probe

Prints one JSON line per method and subset and writes ``probe.json`` (the checked fingerprints and provenance)
to ``--out``/seed{N}; a rerun reuses an evaluation whose checkpoint and config are unchanged and redoes the others. The pool
is also SFT training data, so start success there sits above held-out success.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RUNS = {"pag_rl": "03_pag_rl", "mt_grpo": "04_mt_grpo"}


def drawn_ids(run: Path, recipe, pool: list) -> set[str]:
    """Ids of the pool tasks the run's iterations trained on: as recorded, else by the rule of ``train_rl``."""
    from parl_mt_lib.rl import iteration_batch
    from parl_mt_lib.runtime import read_jsonl

    rows = read_jsonl(run / "iterations.jsonl")
    if rows and all("task_ids" in r for r in rows):
        return {i for r in rows for i in r["task_ids"]}
    return {t.id for it in range(len(rows) or recipe.iterations) for t in iteration_batch(recipe, pool, it)}


def main(argv=None) -> int:
    from parl_mt_lib.compare import task_verdicts
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.rl import rl_fingerprint
    from parl_mt_lib.rl_recipe import RLRecipe, play_kwargs, rl_tasks
    from parl_mt_lib.runtime import ConfigError, atomic_write_json, provenance, repo_path
    from parl_mt_lib.stats import changed, paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", default="results/small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/small/rl_pool_probe")
    a = ap.parse_args(argv)
    t0, out, rows, checked, runs = time.time(), repo_path(a.out) / f"seed{a.seed}", [], {}, {}
    for method, stage in RUNS.items():  # every run checked before anything is evaluated or written
        run = repo_path(a.small) / stage / f"seed{a.seed}"
        recipe = RLRecipe(**json.loads((run / "recipe.resolved.json").read_text()))
        recorded = json.loads((run / "fingerprint.json").read_text())["fingerprint"]
        if rl_fingerprint(recipe)["fingerprint"] != recorded:
            raise ConfigError(f"{run}: its starting checkpoint {recipe.init_path()} or data {recipe.data} changed "
                              "since the run, or this machine's precision differs (GPU vs CPU: fingerprint "
                              "mismatch); rerun the RL stage first")
        checked[method], runs[method] = recorded, (stage, run, recipe)
    for method, (stage, run, recipe) in runs.items():
        pool, _held = rl_tasks(recipe)
        drawn = drawn_ids(run, recipe, pool)
        verdicts = {}
        final = f"{a.small}/{stage}/seed{a.seed}/final"  # as given (a path is part of an evaluation's fingerprint)
        for which, policy in (("start", recipe.init_path()), ("final", final)):
            d = out / method / which
            evaluate(policy, entries=pool, **play_kwargs(recipe), results_dir=d, progress=False, replace=True)
            verdicts[which] = task_verdicts(d)
        for subset, ids in (("sampled", sorted(drawn)), ("not_sampled", sorted({t.id for t in pool} - drawn)),
                            ("pool", sorted(t.id for t in pool))):
            if not ids:
                continue
            s, f = ({i: verdicts[w][i] for i in ids} for w in ("start", "final"))
            row = {"method": method, "subset": subset, "n": len(ids), "start": sum(s.values()) / len(ids),
                   "final": sum(f.values()) / len(ids), "final_minus_start": paired_bootstrap(f, s),
                   "changed": changed(f, s)}
            rows.append(row)
            print(json.dumps(row))
    prov = provenance(wall_clock_s=round(time.time() - t0, 1))
    atomic_write_json(out / "probe.json", {"rows": rows, "run_fingerprints": checked, "provenance": prov})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
