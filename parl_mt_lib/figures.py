"""The paper's figures and tables regenerated from ``results/`` alone (notebook 08): no training, no evaluation,
seconds on a CPU.

:func:`make_figures` reads what the notebooks wrote and writes ``results/figures/``:

===========================  ==================================================================================
``main_table``               methods x (held-out synthetic, BFCL categories, BFCL overall, τ-bench domains and
                             pass^k where present): task success, mean over training seeds [95% interval]
``ablation_table``           notebook 07's rows: success, paired difference to full PARL-MT, steps and tokens
                             per task (the PNG is the paired differences with their intervals)
``context_tokens``           context tokens per step vs step: gold trajectories (01) and the trained policies'
                             own rollouts (06), progress context vs full history; RL rollouts per iteration
``learning_curves``          SFT loss, RL reward per term, held-out success over RL iterations
``cost_table``               RL cost per iteration (03, 04) and evaluation cost per task (06)
``per_category``             per-category accuracy with 95% intervals (06; oracle and untrained toy from 05)
===========================  ==================================================================================

Each as PNG (seaborn, one style: :func:`style`) + CSV, tables also LaTeX (``booktabs`` rules, via pandas'
``Styler.to_latex``). An input that is not there is listed in ``missing.txt`` (and returned); what can be drawn
from the rest is drawn, nothing is made up. Intervals are the ones the writers computed with
:mod:`parl_mt_lib.stats`, or computed here with it (t over seeds, Wilson over items).

Example (an empty results directory: nothing to draw, everything listed as missing):
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> m = make_figures(root)
    >>> m["written"], "results/06_compare/comparison.json" in m["missing"]
    ([], True)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .runtime import REPO_ROOT, ConfigError, atomic_write_json, atomic_write_text, provenance, read_jsonl

COLUMN_IN = 3.4   # one column of a two-column paper, inches
PAGE_IN = 7.0     # both columns
DPI = 300
METHOD_ORDER = ["base", "cot", "sft_plain", "sft_pag", "mt_grpo", "parl_mt"]
METHOD_LABELS = {"base": "Base", "cot": "CoT", "sft_plain": "SFT-plain", "sft_pag": "SFT-PAG", "mt_grpo": "MT-GRPO",
                 "parl_mt": "PARL-MT", "oracle": "Oracle (05)", "toy": "Untrained toy (05)"}
BFCL_CATS = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
CONTEXT_LABELS = {"progress": "progress context", "full_history": "full history"}


def style():
    """One look for every figure: seaborn's paper context, white grid, a colour-blind palette, small fonts that
    stay legible at column width."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.9,
                  rc={"axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
                      "legend.fontsize": 6.5, "legend.title_fontsize": 7, "figure.dpi": 100, "savefig.dpi": DPI,
                      "savefig.bbox": "tight", "lines.linewidth": 1.2, "lines.markersize": 3.5,
                      "grid.linewidth": 0.5, "axes.linewidth": 0.6, "pdf.fonttype": 42})


def method_colors() -> dict:
    """A fixed colour per method (the same in every figure)."""
    import seaborn as sns

    pal = sns.color_palette("colorblind", 10)
    index = {"parl_mt": 0, "mt_grpo": 1, "sft_pag": 2, "sft_plain": 3, "oracle": 4, "cot": 5, "toy": 6, "base": 7}
    return {m: pal[i] for m, i in index.items()}


def _label(m: str) -> str:
    return METHOD_LABELS.get(m, m)


def _cat(c: str) -> str:
    return c.replace("multi_turn_", "")


# ------------------------------------------------------------------ reading


class Inputs:
    """Reads files under one results root and remembers the missing ones (in the order asked for)."""

    def __init__(self, root):
        self.root = Path(root)
        self.missing: list[str] = []

    def has(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def json(self, rel: str):
        p = self.root / rel
        if not p.exists():
            return self._miss(rel)
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"results/{rel} is not valid JSON ({err}); rerun the notebook that writes it") from None

    def csv(self, rel: str):
        import pandas as pd

        p = self.root / rel
        if not p.exists():
            return self._miss(rel)
        return pd.read_csv(p)

    def jsonl(self, rel: str):
        p = self.root / rel
        return read_jsonl(p) if p.exists() else self._miss(rel)

    def _miss(self, rel: str):
        if f"results/{rel}" not in self.missing:
            self.missing.append(f"results/{rel}")
        return None


# ------------------------------------------------------------------ writing


def _fmt(x, digits: int = 2) -> str:
    if x is None or x != x:  # None or NaN
        return "—"
    return f"{x:.{digits}f}"


def _ci_text(mean, lo, hi, digits: int = 2) -> str:
    if mean is None or mean != mean:
        return "—"
    return f"{mean:.{digits}f} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if lo is not None and lo == lo else \
        f"{mean:.{digits}f}"


_LATEX_UNICODE = {"τ": r"$\tau$", "−": "-", "→": r"$\rightarrow$", "×": r"$\times$", "≥": r"$\geq$",
                  "—": "--", "Δ": r"$\Delta$", "^k": r"\textasciicircum k"}


def to_latex(df, caption: str, label: str) -> str:
    """A ``booktabs`` table (``\\toprule`` / ``\\midrule`` / ``\\bottomrule``) through pandas' ``Styler.to_latex``;
    cells, header and index are LaTeX-escaped, then the few non-ASCII symbols we print become math.

    >>> import pandas as pd
    >>> tex = to_latex(pd.DataFrame({"a_b": ["50%", "τ-bench"]}), "cap", "tab:x")
    >>> "\\\\toprule" in tex and "a\\\\_b" in tex and "50\\\\%" in tex and "$\\\\tau$-bench" in tex
    True
    """
    sty = df.style.format(escape="latex", na_rep="--").format_index(escape="latex", axis=1)
    sty = sty.hide(axis="index")
    # Styler escapes cells and headers, not the caption: the few characters our captions can hold, by hand
    for k, v in (("\\", "\\textbackslash "), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                 ("^", "\\textasciicircum ")):
        caption = caption.replace(k, v)
    text = sty.to_latex(hrules=True, caption=caption, label=label, position="t", position_float="centering",
                        column_format="l" + "r" * (len(df.columns) - 1))
    for k, v in _LATEX_UNICODE.items():
        text = text.replace(k, v)
    return text


def _fig_legend(fig, ax, ncol: int = 6) -> None:
    """One legend for the whole figure, below the panels (needs ``layout="constrained"``)."""
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    fig.legend(by_label.values(), by_label.keys(), loc="outside lower center", ncol=min(ncol, len(by_label)),
               frameon=False)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------ data: the comparison (06)


def comparison_runs(inp: Inputs) -> tuple[list[dict], dict]:
    """Per (method, benchmark, seed) run of notebook 06: accuracy, per-category accuracy (BFCL) and per-entry rows
    where their files exist. Returns ``(runs, comparison.json)``; ``([], None)`` when 06 did not run."""
    comp = inp.json("06_compare/comparison.json")
    if comp is None:
        return [], None
    runs = []
    for r in comp.get("runs") or []:
        if not isinstance(r, dict):
            continue
        base = f"06_compare/{r['method']}/{r['benchmark']}/seed{r['seed']}"
        m = inp.json(f"{base}/metrics.json") if inp.has(base) else inp._miss(f"{base}/metrics.json")
        entries = inp.jsonl(f"{base}/entries.jsonl") if m is not None else None
        runs.append({**r, "metrics": m, "entries": entries})
    return runs, comp


def _interval(values: list[float], correct: int, total: int) -> tuple[list | None, str]:
    from .stats import seed_interval, wilson

    if len(values) > 1:
        return seed_interval(values), "t over seeds"
    return (wilson(correct, total), "Wilson over items") if total else (None, "")


def main_table(runs: list[dict], comp: dict | None) -> "pd.DataFrame":
    """Long table: one row per (method, column) with mean, 95% interval, seeds and items; columns are the
    held-out synthetic tasks, each BFCL category, BFCL overall, τ-bench domains (and their pass^k)."""
    import pandas as pd

    rows = []
    if comp is None:
        return pd.DataFrame(rows)
    benches = list(dict.fromkeys(r["benchmark"] for r in runs))
    for m in _methods(runs):
        for b in benches:
            rs = [r for r in runs if r["method"] == m and r["benchmark"] == b]
            if not rs:
                continue
            cats = {}
            for r in rs:
                for c, v in ((r.get("metrics") or {}).get("categories") or {}).items():
                    cats.setdefault(c, []).append(v)
            is_bfcl = any(c.startswith("multi_turn_") for c in cats)
            if is_bfcl:
                for c in [c for c in BFCL_CATS if c in cats] + sorted(set(cats) - set(BFCL_CATS)):
                    vs = cats[c]
                    ci, kind = _interval([v["accuracy"] for v in vs], sum(v["correct"] for v in vs),
                                         sum(v["total"] for v in vs))
                    rows.append(_cell(m, f"BFCL {_cat(c)}", [v["accuracy"] for v in vs], ci, kind,
                                      vs[0]["total"]))
            accs = [r["accuracy"] for r in rs]
            ci, kind = _interval(accs, sum(r.get("correct", 0) for r in rs), sum(r.get("total", 0) for r in rs))
            name = "BFCL overall" if is_bfcl else ("held-out synthetic" if b == "synthetic" else _bench_label(b))
            rows.append(_cell(m, name, accs, ci, kind, rs[0].get("total")))
            hats = [_pass_hat(r) for r in rs]  # τ-bench runs: pass^k over the run's trials (evaluate_tau2)
            for k in sorted((hats[0].get("pass^k") or {}), key=int):
                vals = [h["pass^k"][k] for h in hats if (h.get("pass^k") or {}).get(k) is not None]
                ci, kind = (_interval(vals, 0, 0)[0], "t over seeds") if len(vals) > 1 else \
                    ((hats[0].get("ci95") or {}).get(k), "Wilson over tasks")
                rows.append(_cell(m, f"{_bench_label(b)} pass^{k}", vals, ci, kind, hats[0].get("n_tasks")))
    return pd.DataFrame(rows)


def _pass_hat(run: dict) -> dict:
    """``metrics["tau2"]["pass_hat_k"]`` of a τ-bench run (:func:`parl_mt_lib.envs.tau2.pass_hat_k`), or ``{}``."""
    return (((run.get("metrics") or {}).get("tau2") or {}).get("pass_hat_k")) or {}


def _tau_notes(runs) -> list[str]:
    """The distinct notes of τ-bench runs whose user is not comparable to published numbers: the run's own ``note``
    (06's rows carry it: :func:`parl_mt_lib.compare.compare_cell`), else its metrics' ``tau2`` provenance
    (:func:`parl_mt_lib.envs.tau2.evaluate_tau2`)."""
    notes = []
    for r in runs:
        tau = (r.get("metrics") or {}).get("tau2") or {}
        if r.get("note"):
            notes.append(r["note"])
        elif tau.get("comparable") is False:
            notes.append(tau.get("note") or "not comparable to published numbers")
    return list(dict.fromkeys(notes))


def _bench_label(b: str) -> str:
    return {"tau2_airline": "τ-bench airline", "tau2_retail": "τ-bench retail", "bfcl": "BFCL"}.get(b, b)


def _cell(method, column, values, ci, kind, n_items) -> dict:
    mean = sum(values) / len(values) if values else None
    return {"method": method, "label": _label(method), "column": column, "mean": mean,
            "ci95_low": ci[0] if ci else None, "ci95_high": ci[1] if ci else None, "interval": kind,
            "n_seeds": len(values), "n_items": n_items}


def _methods(runs) -> list[str]:
    seen = list(dict.fromkeys(r["method"] for r in runs))
    return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]


def _wide(long, value="text"):
    """methods x columns of a long table, in the long table's order."""
    cols = list(dict.fromkeys(long["column"]))
    rows = list(dict.fromkeys(long["label"]))
    w = long.pivot(index="label", columns="column", values=value).reindex(index=rows, columns=cols)
    return w


def draw_table_heatmap(long, path: Path, title: str, cbar_label: str = "task success"):
    """A table as a figure: mean as colour, ``mean [low, high]`` as text."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = long.copy()
    long["text"] = [f"{_fmt(m)}\n[{_fmt(lo)}, {_fmt(hi)}]" if lo == lo and lo is not None else _fmt(m)
                    for m, lo, hi in zip(long["mean"], long["ci95_low"], long["ci95_high"])]
    vals, text = _wide(long, "mean").astype(float), _wide(long, "text")
    w = min(PAGE_IN, 1.3 + 0.78 * vals.shape[1])
    fig, ax = plt.subplots(figsize=(w, 0.9 + 0.42 * vals.shape[0]))
    sns.heatmap(vals, annot=text.fillna("—").values, fmt="", cmap="Blues", vmin=0, vmax=1, linewidths=0.5,
                cbar_kws={"label": cbar_label, "shrink": 0.8}, annot_kws={"fontsize": 6}, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title, loc="left")
    ax.tick_params(axis="x", rotation=30)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    _save_fig(fig, path)


def build_main_table(inp: Inputs, out: Path, runs, comp) -> list[str]:
    long = main_table(runs, comp)
    if long.empty:
        return []
    long["text"] = [_ci_text(m, lo, hi) for m, lo, hi in zip(long["mean"], long["ci95_low"], long["ci95_high"])]
    long.drop(columns=["text"]).to_csv(out / "main_table.csv", index=False)
    wide = _wide(long).reset_index().rename(columns={"label": "method"})
    seeds = sorted({int(n) for n in long["n_seeds"]})
    tau = [c for c in long["column"].unique() if c.startswith("τ-bench")]
    cap = ("Task success, mean over training seeds [95% interval: t over seeds; Wilson over items for one run]. "
           f"Seeds per method: {', '.join(map(str, seeds))}." + ("" if tau else " τ-bench: not run.")
           + "".join(f" τ-bench: {n}." for n in _tau_notes(runs)))
    atomic_write_text(out / "main_table.tex", to_latex(wide, cap, "tab:main"))
    draw_table_heatmap(long, out / "main_table.png", "Task success by method and benchmark [95% interval]")
    return ["main_table.csv", "main_table.tex", "main_table.png"]


def build_per_category(inp: Inputs, out: Path, runs, comp) -> list[str]:
    """Per-category accuracy with intervals: 06's methods on BFCL (and the synthetic tasks), oracle and untrained
    toy from 05 as references."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    long = main_table(runs, comp)
    long = long[long["column"].str.startswith("BFCL ") & (long["column"] != "BFCL overall")] if not long.empty \
        else long
    extra = []
    for key in ("oracle", "toy"):
        m = inp.json(f"05_evaluate/{key}/metrics.json")
        for c, v in ((m or {}).get("categories") or {}).items():
            ci = v.get("ci95_seeds") or v.get("ci95_wilson")
            extra.append({"method": key, "label": _label(key), "column": f"BFCL {_cat(c)}", "mean": v["accuracy"],
                          "ci95_low": ci[0] if ci else None, "ci95_high": ci[1] if ci else None,
                          "interval": "t over seeds" if v.get("ci95_seeds") else "Wilson over items",
                          "n_seeds": len(v.get("per_seed") or {}),
                          "n_items": (v.get("total") or 0) // max(len(v.get("per_seed") or {}), 1)})  # per run
    df = pd.concat([long, pd.DataFrame(extra)], ignore_index=True) if extra else long
    if df.empty:
        return []
    df.to_csv(out / "per_category.csv", index=False)
    colors = method_colors()
    methods = list(dict.fromkeys(df["method"]))
    cats = list(dict.fromkeys(df["column"]))
    fig, ax = plt.subplots(figsize=(PAGE_IN, 2.6), layout="constrained")
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        d = df[df["method"] == m].set_index("column").reindex(cats)
        x = np.arange(len(cats)) + (i - (len(methods) - 1) / 2) * width
        lo = (d["mean"] - d["ci95_low"]).clip(lower=0).fillna(0)
        hi = (d["ci95_high"] - d["mean"]).clip(lower=0).fillna(0)
        n_items = d["n_items"].dropna()
        ax.bar(x, d["mean"].fillna(0), width, color=colors.get(m), alpha=0.55,
               label=f"{_label(m)} ({int(n_items.iloc[0])}/cat.)" if len(n_items) else _label(m))
        ax.errorbar(x, d["mean"].fillna(0), yerr=[lo, hi], fmt="o", ms=2.5, capsize=1.5, elinewidth=0.7,
                    color=colors.get(m))  # the mean as a dot: a zero is still seen
    ax.set_xticks(np.arange(len(cats)), [c.replace("BFCL ", "") for c in cats])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("BFCL multi-turn accuracy per category [95% interval: t over training seeds, else Wilson over "
                 "entries]", loc="left")
    _fig_legend(fig, ax, ncol=4)
    _save_fig(fig, out / "per_category.png")
    return ["per_category.csv", "per_category.png"]


# ------------------------------------------------------------------ ablations (07)


def ablation_frame(abl: dict) -> "pd.DataFrame":
    """One row per (ablation row, benchmark) of ``07_ablations/ablations.json``."""
    import pandas as pd

    from .ablations import table_frame

    return pd.DataFrame(table_frame(abl))


def plot_ablation(abl: dict, path) -> bool:
    """Paired differences to full PARL-MT with their 95% bootstrap intervals, one panel per benchmark (the figure
    of the ablation table); returns False when there is nothing to draw."""
    import matplotlib.pyplot as plt

    style()
    df = ablation_frame(abl)
    df = df[df["row"] != (abl.get("reference") or "parl_mt")]
    if df.empty:
        return False
    benches = list(dict.fromkeys(df["benchmark"]))
    labels = list(dict.fromkeys(df["label"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(COLUMN_IN * min(len(benches), 2), 1.0 + 0.26 * len(labels)),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, b in zip(axes[0], benches):
        d = df[df["benchmark"] == b].set_index("label").reindex(labels[::-1])
        y = range(len(d))
        lo = (d["delta_vs_parl_mt"] - d["delta_ci95_low"]).fillna(0)
        hi = (d["delta_ci95_high"] - d["delta_vs_parl_mt"]).fillna(0)
        ax.errorbar(d["delta_vs_parl_mt"], list(y), xerr=[lo, hi], fmt="o", color="C0", ecolor="C0", capsize=2,
                    elinewidth=0.8)
        ax.axvline(0, color="0.3", lw=0.7, ls="--")
        ax.set_yticks(list(y), d.index)
        n = d["n_tasks"].dropna()
        ax.set_title(f"{_bench_label(b)} ({int(n.iloc[0]) if len(n) else '?'} tasks)", loc="left")
        ax.set_xlabel("Δ task success vs full PARL-MT")
        lim = max(0.1, float(max(d["delta_ci95_high"].abs().max(), d["delta_ci95_low"].abs().max()) or 0) * 1.1)
        ax.set_xlim(-lim, lim)
    fig.suptitle("Ablations: paired Δ to full PARL-MT over the same tasks [95% bootstrap CI]", fontsize=8.5)
    _save_fig(fig, Path(path))
    return True


def build_ablation(inp: Inputs, out: Path) -> list[str]:
    abl = inp.json("07_ablations/ablations.json")
    if abl is None:
        return []
    df = ablation_frame(abl)
    if df.empty:
        return []
    df.to_csv(out / "ablation_table.csv", index=False)
    tex = df.assign(**{
        "success [95% CI]": [_ci_text(m, lo, hi) for m, lo, hi in zip(df["success"], df["ci95_low"], df["ci95_high"])],
        "Δ vs PARL-MT [95% CI]": [("—" if d != d or d is None else f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                                  for d, lo, hi in zip(df["delta_vs_parl_mt"], df["delta_ci95_low"],
                                                       df["delta_ci95_high"])],
        "steps / task": df["steps_per_task"].map(lambda x: _fmt(x, 1)),
        "tokens / task (prompt, generated)": [f"{_fmt(p, 0)}, {_fmt(g, 0)}" for p, g in
                                              zip(df["prompt_tokens_per_task"], df["generated_tokens_per_task"])],
    })[["label", "benchmark", "n_seeds", "success [95% CI]", "Δ vs PARL-MT [95% CI]", "steps / task",
        "tokens / task (prompt, generated)"]].rename(columns={"label": "ablation", "n_seeds": "seeds"})
    cap = ("Ablations on the toy: task success (mean over training seeds [95% t-interval]), paired difference to "
           "full PARL-MT over the same tasks [95% bootstrap interval], steps and tokens per task.")
    atomic_write_text(out / "ablation_table.tex", to_latex(tex, cap, "tab:ablations"))
    files = ["ablation_table.csv", "ablation_table.tex"]
    if plot_ablation(abl, out / "ablation_table.png"):
        files.append("ablation_table.png")
    return files


# ------------------------------------------------------------------ context tokens per step


def _steps_long(entries: list[dict], min_share: float = 0.5) -> list[dict]:
    """Per step index of a rollout: prompt tokens (mean over episodes that reached it); steps reached by fewer
    than ``min_share`` of the episodes are cut, so late steps do not show only the episodes that survive."""
    by_step: dict = {}
    for e in entries:
        for i, t in enumerate(e.get("prompt_tokens") or []):
            if t is not None:
                by_step.setdefault(i, []).append(t)
    n = len(entries)
    return [{"step": i, "tokens": sum(v) / len(v), "episodes": len(v)}
            for i, v in sorted(by_step.items()) if n and len(v) / n >= min_share]


def build_context(inp: Inputs, out: Path, runs) -> list[str]:
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frames = []
    for d, name in (("01_pag", "synthetic"), ("01_pag_toy", "toy curriculum")):
        df = inp.csv(f"{d}/context_lengths.csv")
        if df is None:
            continue
        df = df.assign(tasks=df["tasks"].replace({"synthetic": name}) if "tasks" in df else name)
        if d == "01_pag_toy":
            df = df[df["tasks"] != "BFCL base"]  # the same BFCL entries as 01_pag's: drawn once
        long = df.melt(id_vars=["task_id", "step", "tasks"], value_vars=["progress", "full_history"],
                       var_name="context", value_name="tokens")
        frames.append(long.assign(source="gold trajectories (01)", episode=long["task_id"]))
    gold = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    roll = []
    for r in runs:
        if r["method"] in ("parl_mt", "mt_grpo") and r.get("entries"):
            for row in _steps_long(r["entries"]):
                roll.append({**row, "method": r["method"], "benchmark": r["benchmark"], "seed": r["seed"],
                             "context": "progress" if r["method"] in ("parl_mt", "sft_pag") else "full_history",
                             "source": "RL policies' rollouts (06)"})
    roll = pd.DataFrame(roll)
    it = []
    for key, d in (("parl_mt", "03_pag_rl"), ("mt_grpo", "04_mt_grpo")):
        df = inp.csv(f"{d}/iterations.csv")
        if df is not None and "prompt_tokens_per_step" in df:
            it.append(df[["iteration", "seed", "prompt_tokens_per_step", "generated_tokens_per_step"]]
                      .assign(method=key, source="RL training rollouts (03, 04)"))
    it = pd.concat(it, ignore_index=True) if it else pd.DataFrame()
    if gold.empty and roll.empty and it.empty:
        return []
    pd.concat([gold.rename(columns={"tokens": "tokens"}), roll,
               it.rename(columns={"prompt_tokens_per_step": "tokens", "iteration": "step"})],
              ignore_index=True).to_csv(out / "context_tokens.csv", index=False)
    from matplotlib.ticker import MaxNLocator

    panels = [p for p, df in (("gold", gold), ("roll", roll), ("it", it)) if not df.empty]
    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_IN if len(panels) > 1 else COLUMN_IN, 2.5),
                             squeeze=False, layout="constrained")
    colors = method_colors()
    ctx_color = {"progress": colors["parl_mt"], "full_history": colors["mt_grpo"]}
    dashes = ["-", "--", ":", "-."]
    for ax, p in zip(axes[0], panels):
        if p == "gold":
            for i, (t, g) in enumerate(gold.groupby("tasks", sort=False)):
                reach = g.groupby("step")["episode"].nunique() / g["episode"].nunique()
                g = g[g["step"].isin(reach[reach >= 0.5].index)]  # steps most episodes reach
                for c, d in g.groupby("context", sort=False):
                    m = d.groupby("step")["tokens"].agg(["mean", "sem"])
                    ax.plot(m.index, m["mean"], ls=dashes[i % 4], marker="o", color=ctx_color.get(c),
                            label=f"{CONTEXT_LABELS.get(c, c)}, {t}")
                    ax.fill_between(m.index, m["mean"] - 1.96 * m["sem"].fillna(0),
                                    m["mean"] + 1.96 * m["sem"].fillna(0), color=ctx_color.get(c), alpha=0.15, lw=0)
            ax.set_title("(a) gold trajectories (01)", loc="left")
            ax.set_ylabel("conversation tokens / step")
        elif p == "roll":
            for (m, b), d in roll.groupby(["method", "benchmark"], sort=False):
                d = d.groupby("step", as_index=False)["tokens"].mean()
                ax.plot(d["step"], d["tokens"], marker="o", color=colors.get(m),
                        ls="-" if b == "synthetic" else "--", label=f"{_label(m)}, {b}")
            ax.set_title("(b) RL policies' own rollouts (06)", loc="left")
            ax.set_ylabel("prompt tokens / step")
        else:
            for m, d in it.groupby("method", sort=False):
                d = d.groupby("iteration", as_index=False)["prompt_tokens_per_step"].mean()
                ax.plot(d["iteration"], d["prompt_tokens_per_step"], color=colors.get(m),
                        label="PAG-RL (progress)" if m == "parl_mt" else "MT-GRPO (full history)")
            ax.set_title("(c) RL training rollouts (03, 04)", loc="left")
            ax.set_ylabel("prompt tokens / step (mean)")
        ax.set_xlabel("RL iteration" if p == "it" else "step in episode (all turns)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=True, loc="upper left", fontsize=5.5)
    _save_fig(fig, out / "context_tokens.png")
    return ["context_tokens.csv", "context_tokens.png"]


# ------------------------------------------------------------------ learning curves


def build_learning_curves(inp: Inputs, out: Path) -> list[str]:
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    parts = []
    sft = inp.json("02_sft/metrics.json")
    for c in ((sft or {}).get("cells") or {}).values():
        if isinstance(c, dict) and c.get("kind") == "sft":
            for step, loss in c.get("loss_curve") or []:
                parts.append({"panel": "sft_loss", "series": f"SFT-{'PAG' if c['view'] == 'progress' else 'plain'}",
                              "seed": c.get("seed"), "x": step, "y": loss})
    for key, d in (("PAG-RL", "03_pag_rl"), ("MT-GRPO", "04_mt_grpo")):
        it = inp.csv(f"{d}/iterations.csv")
        if it is not None:
            terms = [c for c in it.columns if c.startswith("reward_") and c != "reward_std"]
            for c in terms:
                for s, x, y in zip(it["seed"], it["iteration"], it[c]):
                    parts.append({"panel": f"reward {key}", "series": c.replace("reward_", ""), "seed": s, "x": x,
                                  "y": y})
        held = inp.csv(f"{d}/heldout.csv")
        if held is not None:
            for s, x, y in zip(held["seed"], held["iteration"], held["heldout_success"]):
                parts.append({"panel": "heldout", "series": key, "seed": s, "x": x, "y": y})
    df = pd.DataFrame(parts)
    if df.empty:
        return []
    df.to_csv(out / "learning_curves.csv", index=False)
    panels = [p for p in ["sft_loss", "reward PAG-RL", "reward MT-GRPO", "heldout"] if p in set(df["panel"])]
    ncol = min(len(panels), 2)
    nrow = (len(panels) + 1) // 2
    fig, axes = plt.subplots(nrow, ncol, figsize=(PAGE_IN if ncol > 1 else COLUMN_IN, 2.2 * nrow), squeeze=False,
                             layout="constrained")
    titles = {"sft_loss": ("SFT training loss (completion tokens)", "optimizer step", "loss"),
              "reward PAG-RL": ("PAG-RL: training reward per term", "iteration", "episode mean"),
              "reward MT-GRPO": ("MT-GRPO: training reward per term", "iteration", "episode mean"),
              "heldout": ("held-out synthetic task success (greedy)", "iteration", "task success")}
    colors = method_colors()
    series_colors = {"SFT-PAG": colors["sft_pag"], "SFT-plain": colors["sft_plain"], "PAG-RL": colors["parl_mt"],
                     "MT-GRPO": colors["mt_grpo"]}
    terms = sorted({x for x in df.loc[df["panel"].str.startswith("reward"), "series"]} - {"mean"})
    term_pal = dict(zip(["mean"] + terms, sns.color_palette("colorblind", 10)[:len(terms) + 1]))
    for ax, p in zip(axes.flat, panels):
        d = df[df["panel"] == p].replace({"series": {"mean": "total (weighted)"}})
        pal = series_colors if p in ("sft_loss", "heldout") else {("total (weighted)" if k == "mean" else k): v
                                                                   for k, v in term_pal.items()}
        sns.lineplot(d, x="x", y="y", hue="series", errorbar=("ci", 95), ax=ax, palette=pal,
                     marker="o" if p == "heldout" else None)
        t, xl, yl = titles[p]
        letter = "abcd"[panels.index(p)]
        ax.set_title(f"({letter}) {t}", loc="left")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if p == "sft_loss":
            from matplotlib.ticker import LogLocator, ScalarFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(plt.NullFormatter())
        if p == "heldout":
            ax.set_ylim(0, 1)
        if p.startswith("reward"):  # five or six terms: beside the panel, not over the curves
            ax.legend(frameon=False, title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.legend(frameon=True, title=None, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _save_fig(fig, out / "learning_curves.png")
    return ["learning_curves.csv", "learning_curves.png"]


# ------------------------------------------------------------------ cost


COST_COLS = {"prompt_tokens_per_step": "prompt tok/step", "generated_tokens_per_step": "gen. tok/step",
             "steps_per_episode": "steps/episode", "rollout_s": "rollout s/it", "update_s": "update s/it",
             "peak_mem_mb": "peak MB"}


def build_cost(inp: Inputs, out: Path, runs) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    rows = []
    for key, d in (("parl_mt", "03_pag_rl"), ("mt_grpo", "04_mt_grpo")):
        m = inp.json(f"{d}/metrics.json")
        costs = [p.get("cost") or {} for p in ((m or {}).get("per_seed") or {}).values()]
        for c, name in COST_COLS.items():
            vals = [x[c] for x in costs if isinstance(x.get(c), (int, float))]
            if vals:
                rows.append({"method": key, "label": _label(key), "phase": "RL training (per iteration)",
                             "metric": name, "value": sum(vals) / len(vals), "n_seeds": len(vals)})
    for m in _methods(runs):
        for b in dict.fromkeys(r["benchmark"] for r in runs):
            ents = [e for r in runs if r["method"] == m and r["benchmark"] == b for e in (r.get("entries") or [])]
            if not ents:
                continue
            n = len(ents)
            for name, f in (("steps/task", lambda e: e.get("n_steps", 0)),
                            ("prompt tok/task", lambda e: sum(t or 0 for t in e.get("prompt_tokens") or [])),
                            ("gen. tok/task", lambda e: sum(t or 0 for t in e.get("completion_tokens") or []))):
                rows.append({"method": m, "label": _label(m), "phase": f"evaluation, {b} (per task)", "metric": name,
                             "value": sum(f(e) for e in ents) / n, "n_seeds": len({r['seed'] for r in runs
                                                                                 if r['method'] == m})})
    df = pd.DataFrame(rows)
    if df.empty:
        return []
    df.to_csv(out / "cost_table.csv", index=False)
    wide = df.assign(col=df["phase"].str.split(" \\(").str[0] + ": " + df["metric"]) \
        .pivot_table(index="label", columns="col", values="value", sort=False).reset_index()
    order = [_label(m) for m in _methods([{"method": m} for m in df["method"]])]
    wide = wide.set_index("label").reindex([o for o in order if o in set(wide["label"])]).reset_index()
    tex = wide.rename(columns={"label": "method"})
    for c in tex.columns[1:]:
        tex[c] = tex[c].map(lambda x: _fmt(x, 2 if ("s/it" in c or "steps" in c) else 1))
    atomic_write_text(out / "cost_table.tex", to_latex(
        tex, "Cost of progress awareness: RL training per iteration (03, 04; mean over iterations and seeds) and "
        "evaluation per task (06; mean over tasks and seeds).", "tab:cost"))
    colors = method_colors()
    tok = df[df["metric"].isin(["prompt tok/step", "gen. tok/step", "prompt tok/task", "gen. tok/task"])]
    phases = list(dict.fromkeys(tok["phase"]))
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(PAGE_IN if len(phases) > 1 else COLUMN_IN, 2.5),
                             squeeze=False, layout="constrained")
    for ax, ph in zip(axes[0], phases):
        d = tok[tok["phase"] == ph]
        metrics = list(dict.fromkeys(d["metric"]))
        ms = list(dict.fromkeys(d["method"]))
        width = 0.8 / max(len(ms), 1)
        for i, m in enumerate(ms):
            v = d[d["method"] == m].set_index("metric").reindex(metrics)["value"]
            ax.bar(np.arange(len(metrics)) + (i - (len(ms) - 1) / 2) * width, v.fillna(0), width,
                   color=colors.get(m), label=_label(m))
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_title(ph, loc="left")
        ax.set_ylabel("tokens")
    _fig_legend(fig, max(axes[0], key=lambda a: len(a.get_legend_handles_labels()[1])), ncol=6)
    _save_fig(fig, out / "cost_table.png")
    return ["cost_table.csv", "cost_table.tex", "cost_table.png"]


# ------------------------------------------------------------------ all of it


SMOKE_DIRS = ("01_pag", "02_sft", "03_pag_rl", "04_mt_grpo", "06_compare", "07_ablations")


def smoke_view(results_dir, dest) -> Path:
    """A results tree under ``dest`` whose folders link to the smoke runs (``01_pag_smoke`` as ``01_pag``, ...), so
    notebook 08's smoke mode draws every figure from the smoke outputs without touching ``results/``; ``01_pag_toy``
    and ``05_evaluate/{oracle,toy}`` link to ``01_pag_smoke`` / ``05_evaluate/oracle_smoke`` where those exist."""
    root, dest = Path(results_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    links = {d: root / f"{d}_smoke" for d in SMOKE_DIRS}
    links["01_pag_toy"] = root / "01_pag_smoke"
    for name, src in links.items():
        if src.exists() and not (dest / name).exists():
            (dest / name).symlink_to(src.resolve(), target_is_directory=True)
    oracle = root / "05_evaluate" / "oracle_smoke"
    if oracle.exists():
        (dest / "05_evaluate").mkdir(exist_ok=True)
        if not (dest / "05_evaluate" / "oracle").exists():
            (dest / "05_evaluate" / "oracle").symlink_to(oracle.resolve(), target_is_directory=True)
    return dest



def make_figures(results_dir=REPO_ROOT / "results", out_dir=None) -> dict:
    """Every figure and table that the inputs allow; returns ``{"written": [...], "missing": [...], "wall_s"}``
    and writes ``missing.txt`` and ``manifest.json`` next to them."""
    t0 = time.time()
    root = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    style()
    inp = Inputs(root)
    runs, comp = comparison_runs(inp)
    written = []
    for build in (lambda: build_main_table(inp, out, runs, comp), lambda: build_ablation(inp, out),
                  lambda: build_context(inp, out, runs), lambda: build_learning_curves(inp, out),
                  lambda: build_cost(inp, out, runs), lambda: build_per_category(inp, out, runs, comp)):
        written += build()
    if comp is not None and not any(r["benchmark"].startswith("tau2_") for r in runs):
        inp.missing.append("τ-bench rows (benchmarks tau2_airline, tau2_retail) in results/06_compare/comparison.json")
    for stale in [p for p in out.iterdir() if p.is_file() and p.suffix in (".png", ".csv", ".tex")
                  and p.name not in written]:
        stale.unlink()  # a figure whose input is gone is not left behind from an earlier run
    missing_text = "".join(f"{m}\n" for m in inp.missing)
    atomic_write_text(out / "missing.txt", missing_text or "(none)\n")
    manifest = {"written": written, "missing": inp.missing,
                "provenance": provenance(wall_clock_s=round(time.time() - t0, 2))}
    atomic_write_json(out / "manifest.json", manifest)
    return {"written": written, "missing": inp.missing, "wall_s": round(time.time() - t0, 2), "out": str(out)}
