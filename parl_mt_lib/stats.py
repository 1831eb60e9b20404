"""Intervals, done once: t over seeds, Wilson over items, paired bootstrap over tasks.

Every notebook and library result that reports an interval goes through here (``evaluate.summarize``, the SFT
grid, the six-way comparison, ``tables``), so a 95% interval means the same thing everywhere:

- :func:`seed_interval` / :func:`t_interval`: Student-t interval of a mean over independent runs (training or
  sampling seeds); the spread between seeds is the uncertainty.
- :func:`wilson`: Wilson score interval of a rate over items of one run (``correct`` of ``total``).
- :func:`paired_bootstrap`: percentile bootstrap over tasks of the mean *paired* difference between two
  methods scored on the same tasks (ablation deltas, method comparisons): one interval for the difference,
  not two overlapping bars.

scipy is not a dependency of parl-mt (and is not in the pinned environment), so the t quantile is the
textbook table for 1-10 degrees of freedom and the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5)
beyond, which matches the table to 1e-3 from 11 degrees of freedom up (tested); the bootstrap is five lines
of numpy (``scipy.stats.bootstrap`` would be the library choice if scipy were installed).

Example:
    >>> [round(x, 4) for x in seed_interval([0.4, 0.5, 0.6])]   # mean 0.5, sd 0.1, t(0.975, 2) = 4.303
    [0.2516, 0.7484]
    >>> [round(x, 4) for x in wilson(5, 10)]
    [0.2366, 0.7634]
    >>> r = paired_bootstrap({"t1": 1, "t2": 1, "t3": 0}, {"t1": 0, "t2": 1, "t3": 0}, n_boot=2000, seed=0)
    >>> round(r["diff"], 3), r["n"], r["ci95"][0] >= 0.0
    (0.333, 3, True)
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from .runtime import ConfigError

# two-sided 95% Student-t quantiles t(0.975, df), df = 1..10 (standard table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
Z975 = 1.959963984540054


def t_quantile95(df: int) -> float:
    """t(0.975, df): the table for df <= 10, the Cornish-Fisher expansion in 1/df beyond (error < 1e-3).

    >>> t_quantile95(2), round(t_quantile95(30), 3), round(t_quantile95(10**9), 3)
    (4.303, 2.042, 1.96)
    """
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ConfigError(f"degrees of freedom must be a positive integer, got {df!r}")
    if df in T95:
        return T95[df]
    z = Z975  # Abramowitz & Stegun 26.7.5: t = z + g1/df + g2/df^2 + g3/df^3 + g4/df^4
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_interval(values, clip: tuple[float, float] | None = None) -> list[float] | None:
    """95% t-interval of the mean of ``values`` (``None`` with fewer than two); ``clip`` bounds it (rates).

    >>> [round(x, 4) for x in t_interval([1.0, 2.0, 3.0])]     # mean 2, sd 1: 2 +- 4.303 / sqrt(3)
    [-0.4843, 4.4843]
    >>> t_interval([0.5]) is None
    True
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if n < 2:
        return None
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    h = t_quantile95(n - 1) * sd / math.sqrt(n)
    lo, hi = m - h, m + h
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return [lo, hi]


def seed_interval(values) -> list[float] | None:
    """95% t-interval of a mean rate over seeds, clipped to [0, 1] (``None`` with one seed).

    >>> seed_interval([0.25, 0.25, 0.25])       # no spread between seeds: a zero-width interval
    [0.25, 0.25]
    """
    return t_interval(values, clip=(0.0, 1.0))


def wilson(correct: int, total: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of ``correct / total`` (``[0.0, 0.0]`` for no items).

    >>> [round(x, 4) for x in wilson(0, 10)]
    [0.0, 0.2775]
    """
    if total == 0:
        return [0.0, 0.0]
    p = correct / total
    d = 1 + z * z / total
    c = (p + z * z / (2 * total)) / d
    h = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def changed(new_by_task: Mapping, old_by_task: Mapping) -> dict:
    """How many tasks ``new`` solves that ``old`` does not (gained) and the reverse (lost), over ``old``'s tasks.

    >>> changed({"a": 1, "b": 0, "c": 1}, {"a": 0, "b": 1, "c": 1})
    {'gained': 1, 'lost': 1}
    """
    return {"gained": sum(new_by_task[i] > old_by_task[i] for i in old_by_task),
            "lost": sum(new_by_task[i] < old_by_task[i] for i in old_by_task)}


def paired_bootstrap(a_by_task: Mapping, b_by_task: Mapping, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mean paired difference ``a - b`` over tasks with a 95% percentile-bootstrap interval (tasks resampled).

    Both mappings go from a task id to that method's score on the task (a verdict, or a mean over seeds);
    tasks are matched by id and both must hold the same ids. The result depends only on the scores and
    ``seed`` (ids are sorted before resampling). Returns ``{"diff", "ci95", "n"}``.

    >>> paired_bootstrap({"a": 1.0, "b": 0.0}, {"b": 0.0, "a": 1.0})
    {'diff': 0.0, 'ci95': [0.0, 0.0], 'n': 2}
    >>> paired_bootstrap({"a": 1}, {"b": 1})
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: paired_bootstrap: the two methods were scored on different tasks (1 only in a, e.g. 'a'; 1 only in b, e.g. 'b'); evaluate both on the same tasks
    """
    import numpy as np

    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 1:
        raise ConfigError(f"paired_bootstrap: n_boot must be a positive integer, got {n_boot!r}")
    only_a, only_b = sorted(set(a_by_task) - set(b_by_task)), sorted(set(b_by_task) - set(a_by_task))
    if only_a or only_b:
        parts = [f"{len(ids)} only in {side}, e.g. {ids[0]!r}" for side, ids in (("a", only_a), ("b", only_b)) if ids]
        raise ConfigError(f"paired_bootstrap: the two methods were scored on different tasks ({'; '.join(parts)}); "
                          "evaluate both on the same tasks")
    ids = sorted(a_by_task)
    if not ids:
        raise ConfigError("paired_bootstrap: no tasks to compare")
    d = np.array([float(a_by_task[i]) - float(b_by_task[i]) for i in ids])
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "n": len(d)}
