"""The six-way comparison (base, CoT, SFT-plain, SFT-PAG, MT-GRPO, PARL-MT) through 05's ``evaluate``, and the
cost table of the two RL methods.

Each method is a policy spec (``{seed}`` fills in the training seed of a checkpoint) plus the context it was
trained for. Trained methods are evaluated once per training seed (greedy decoding), and their interval is a
t-interval over seeds; base and CoT have no training seed, so they run once and get a Wilson interval over
items. Every run is an ordinary ``evaluate`` results directory (resumable, with its own provenance).

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


def compare_methods(methods: dict, seeds=(0, 1, 2), benchmarks: dict | None = None, out_dir="results/06_compare",
                    *, tool_docs: str = "minimal", max_new_tokens: int = 96, progress: bool = True) -> dict:
    """Evaluate every (method, training seed, benchmark); ``benchmarks`` maps a name to ``{"tasks": PAG dir}``
    (its held-out tasks) or ``{"bfcl": categories, "limit": n}``. Writes ``comparison.json`` / ``.csv``."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .evaluate import evaluate
    from .pag_build import load_pag
    from .stats import seed_interval, wilson

    t0 = time.time()
    benchmarks = benchmarks or {"synthetic": {"tasks": "results/01_pag_toy", "limit": 40},
                                "bfcl": {"bfcl": "all", "limit": 5}}
    out = repo_path(out_dir)
    entries = {}
    for name, b in benchmarks.items():
        if "tasks" in b:
            splits, tasks = load_pag(repo_path(b["tasks"]))
            entries[name] = [tasks[i] for i in sorted({e["task_id"] for e in splits["validation"]})][:b.get("limit")]
        elif "bfcl" not in b:
            raise ConfigError(f"benchmark {name!r} needs 'tasks' (a PAG directory) or 'bfcl' (categories)")
    for m, spec in methods.items():  # every checkpoint must exist before the first evaluation starts
        from .models import resolve_model_path

        for s in (seeds if spec.get("seeded", True) else seeds[:1]):
            if spec["policy"] == "oracle" or spec["policy"].startswith("openai:"):
                continue
            try:
                resolve_model_path(spec["policy"].format(seed=s))
            except ConfigError as err:
                raise ConfigError(f"method {m!r}, seed {s}: {err}") from None
    jobs = [(m, s, b) for m, spec in methods.items() for s in (seeds if spec.get("seeded", True) else seeds[:1])
            for b in benchmarks]
    rows = []
    for m, s, b in tqdm(jobs, desc="comparison", disable=not progress):
        spec, bench = methods[m], benchmarks[b]
        res = evaluate(spec["policy"].format(seed=s), bench.get("bfcl", "all"), limit=bench.get("limit"),
                       seeds=[0], prompting=spec.get("prompting", "plain"), context=spec["context"],
                       tool_docs=tool_docs, max_new_tokens=max_new_tokens, entries=entries.get(b),
                       results_dir=out / m / b / f"seed{s}", progress=False)
        correct = sum(c["correct"] for c in res["categories"].values())
        total = sum(c["total"] for c in res["categories"].values())
        rows.append({"method": m, "benchmark": b, "seed": s, "accuracy": res["overall"], "correct": correct,
                     "total": total})
    df = pd.DataFrame(rows)
    table = []
    for (m, b), g in df.groupby(["method", "benchmark"], sort=False):
        accs = g["accuracy"].tolist()
        ci, kind = (seed_interval(accs), "t over training seeds") if len(accs) > 1 else \
            (wilson(int(g["correct"].sum()), int(g["total"].sum())), "Wilson over items (one run)")
        table.append({"method": m, "benchmark": b, "mean": sum(accs) / len(accs), "ci95_low": ci[0],
                      "ci95_high": ci[1], "interval": kind, "n_seeds": len(accs), "n_items": int(g["total"].iloc[0])})
    result = {"table": table, "runs": rows, "methods": methods, "benchmarks": benchmarks, "seeds": list(seeds),
              "provenance": provenance(seeds=list(seeds), wall_clock_s=round(time.time() - t0, 1),
                                       wall_clock_note="this invocation only (finished runs are reused)")}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", result)
    pd.DataFrame(table).to_csv(out / "comparison.csv", index=False)
    return result


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
