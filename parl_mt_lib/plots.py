"""Figures from run outputs (seaborn/matplotlib). Each function saves a PNG and returns the figure.

Example:
    >>> import pandas as pd, tempfile, os
    >>> df = pd.DataFrame({"entry": ["a", "a", "b", "b"], "step": [0, 1, 0, 1], "prompt_tokens": [10, 20, 11, 25],
    ...                    "conversation_tokens": [1, 11, 2, 16], "context": ["full_history"] * 4})
    >>> _ = plot_prompt_growth(df, os.path.join(tempfile.mkdtemp(), "g.png"))
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402


def _save(fig, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_prompt_growth(df, path, min_share: float = 0.5):
    """Two panels over the steps of an episode (mean and 95% band over entries):
    conversation tokens (prompt minus the shared system prompt with the tool docs) and cumulative
    prompt tokens read so far. Steps reached by fewer than ``min_share`` of the entries are cut,
    so the curve is not an artefact of which entries survive to late steps."""
    df = df.copy()
    hue = "context" if "context" in df else None
    keys = ["entry"] + ([hue] if hue else [])
    if "entry" in df:
        df["cumulative_prompt_tokens"] = df.groupby(keys)["prompt_tokens"].cumsum()
        reach = df.groupby("step")["entry"].nunique() / df["entry"].nunique()
        df = df[df["step"].isin(reach[reach >= min_share].index)]
    else:
        df["cumulative_prompt_tokens"] = df["prompt_tokens"].cumsum()
    panels = [("conversation_tokens", "conversation tokens / step"),
              ("cumulative_prompt_tokens", "prompt tokens read, cumulative")]
    panels = [p for p in panels if p[0] in df]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (col, label) in zip(axes[0], panels):
        sns.lineplot(df, x="step", y=col, hue=hue, errorbar=("ci", 95), ax=ax, marker="o")
        ax.set_xlabel("step in episode (all turns)")
        ax.set_ylabel(label)
    fig.suptitle(f"Context per step, oracle trajectories (steps reached by >= {min_share:.0%} of entries)")
    _save(fig, path)
    return fig


def plot_accuracy(metrics: dict, path, title: str = "BFCL multi-turn accuracy"):
    """Per-category accuracy with 95% intervals (across seeds when >1, else Wilson over entries)."""
    cats = metrics["categories"]
    names = [c.replace("multi_turn_", "") for c in cats]
    acc = [v["accuracy"] for v in cats.values()]
    lo_hi = [v["ci95_seeds"] or v["ci95_wilson"] for v in cats.values()]
    err = [[a - lh[0] for a, lh in zip(acc, lo_hi)], [lh[1] - a for a, lh in zip(acc, lo_hi)]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, acc, yerr=err, capsize=4, color=sns.color_palette()[0])
    ax.axhline(metrics["overall"], ls="--", c="gray", label=f"overall {metrics['overall']:.3f}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)
    return fig


def plot_context_comparison(df, path):
    """Conversation tokens per step, progress context vs full history, one panel per task set."""
    g = sns.relplot(df, x="step", y="conversation_tokens", hue="context", col="tasks", kind="line",
                    errorbar=("ci", 95), marker="o", height=3.6, aspect=1.2, facet_kws={"sharey": False})
    g.set_axis_labels("step in episode (all turns)", "conversation tokens / step")
    g.figure.suptitle("Context per step on gold trajectories (system prompt with tool docs excluded)", y=1.03)
    _save(g.figure, path)
    return g.figure


def plot_loss_curves(df, path):
    """Training loss per step, one line per variant (band over seeds)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if len(df):
        sns.lineplot(df, x="step", y="loss", hue="variant", errorbar=("ci", 95), ax=ax)
    ax.set_yscale("log")
    ax.set_title("SFT training loss (completion tokens only)")
    _save(fig, path)
    return fig


def plot_sft_comparison(summary: dict, path):
    """Held-out metrics per model (untrained vs SFT, per view), mean over seeds with 95% intervals; free-running
    metrics only (teacher-forced ``tf_*`` ones are not comparable across views: :mod:`parl_mt_lib.sft_eval`)."""
    rows = []
    for model, ms in summary.items():
        for metric, v in ms.items():
            if metric.startswith("tf_"):
                continue
            lo_hi = v["ci95_seeds"] or [v["mean"], v["mean"]]
            rows.append({"model": model, "metric": metric, "mean": v["mean"], "lo": lo_hi[0], "hi": lo_hi[1]})
    import pandas as pd

    df = pd.DataFrame(rows)
    metrics = list(dict.fromkeys(df["metric"]))
    models = list(dict.fromkeys(df["model"]))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        d = df[df["model"] == m].set_index("metric").reindex(metrics)
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, d["mean"], width, label=m, yerr=[d["mean"] - d["lo"], d["hi"] - d["mean"]], capsize=3)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Held-out synthetic tasks (free-running play)")
    _save(fig, path)
    return fig


def plot_rl_curves(df, path, title: str = "RL", heldout=None):
    """Panels over iterations (mean and band over seeds): episode reward and its terms, tokens per step
    (prompt and generated), rollout vs update seconds, and held-out task success where it was measured."""
    import pandas as pd

    terms = [c for c in df.columns if c.startswith("reward_") and c not in ("reward_std",)]
    long = df.melt(id_vars=["iteration", "seed"], value_vars=terms, var_name="term", value_name="value")
    fig, axes = plt.subplots(1, 4 if heldout is not None else 3, figsize=(20 if heldout is not None else 15, 4))
    sns.lineplot(long, x="iteration", y="value", hue="term", ax=axes[0])
    axes[0].set_title(f"{title}: training reward (episode mean) and terms")
    tok = df.melt(id_vars=["iteration", "seed"], value_vars=["prompt_tokens_per_step", "generated_tokens_per_step"],
                  var_name="tokens", value_name="per step")
    sns.lineplot(tok, x="iteration", y="per step", hue="tokens", ax=axes[1])
    axes[1].set_title("tokens per step")
    sec = df.melt(id_vars=["iteration", "seed"], value_vars=["rollout_s", "update_s"], var_name="phase",
                  value_name="seconds")
    sns.lineplot(pd.DataFrame(sec), x="iteration", y="seconds", hue="phase", ax=axes[2])
    axes[2].set_title("wall-clock per iteration")
    if heldout is not None:
        sns.lineplot(heldout, x="iteration", y="heldout_success", marker="o", ax=axes[3])
        axes[3].set_ylim(0, 1)
        axes[3].set_title("held-out synthetic task success (greedy)")
    _save(fig, path)
    return fig


def plot_method_comparison(table, path):
    """Bars with 95% intervals: one group per benchmark, one bar per method."""
    import numpy as np

    benches = list(dict.fromkeys(table["benchmark"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 4), squeeze=False)
    for ax, b in zip(axes[0], benches):
        t = table[table["benchmark"] == b].set_index("method").reindex(methods)
        x = np.arange(len(methods))
        err = np.vstack([t["mean"] - t["ci95_low"], t["ci95_high"] - t["mean"]]).clip(min=0)
        ax.bar(x, t["mean"], yerr=err, capsize=3, color=sns.color_palette("deep", len(methods)))
        ax.set_xticks(x, methods, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(f"{b}: task success (95% interval)")
    _save(fig, path)
    return fig
