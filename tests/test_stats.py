"""Intervals (parl_mt_lib.stats): known values, edge cases, determinism, and the old import path."""
import math

import pytest

from parl_mt_lib.runtime import ConfigError
from parl_mt_lib.stats import paired_bootstrap, seed_interval, t_interval, t_quantile95, wilson

# t(0.975, df) from a printed Student-t table (3 decimals)
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 10: 2.228, 11: 2.201, 12: 2.179, 15: 2.131, 20: 2.086,
           25: 2.060, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile95(df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_tends_to_normal_and_decreases():
    qs = [t_quantile95(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(qs, qs[1:]))
    assert t_quantile95(10**6) == pytest.approx(1.959964, abs=1e-5)


@pytest.mark.parametrize("values,expected", [
    # mean 0.5, sd 0.1, n 3: 0.5 +- 4.303 * 0.1 / sqrt(3)
    ([0.4, 0.5, 0.6], [0.5 - 4.303 * 0.1 / math.sqrt(3), 0.5 + 4.303 * 0.1 / math.sqrt(3)]),
    # two seeds: df 1, 12.706 * sd / sqrt(2), clipped to [0, 1]
    ([0.5, 0.6], [max(0.0, 0.55 - 12.706 * math.sqrt(0.005) / math.sqrt(2)),
                  min(1.0, 0.55 + 12.706 * math.sqrt(0.005) / math.sqrt(2))]),
    ([0.0, 0.0, 0.0], [0.0, 0.0]),
    ([1.0, 1.0, 1.0, 1.0], [1.0, 1.0]),
    ([0.55, 0.53, 0.45], [0.3785, 0.6415]),  # hand-computed: mean 0.51, sd 0.052915, t 4.303
])
def test_seed_interval_known_values(values, expected):
    assert seed_interval(values) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("values", [[], [0.3]])
def test_seed_interval_needs_two_seeds(values):
    assert seed_interval(values) is None and t_interval(values) is None


def test_t_interval_unclipped_for_differences():
    lo, hi = t_interval([-0.1, -0.05, 0.2, -0.3])
    assert lo < -0.3 and hi > 0.1  # differences may be negative; no clipping unless asked


def test_many_seeds_use_the_t_quantile_not_the_normal():
    from parl_mt_lib.evaluate import seed_interval  # the path every caller used before stats.py (fails there)

    vals = [0.1 * (i % 5) for i in range(12)]  # df 11: t = 2.201, not 1.96
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    lo, hi = seed_interval(vals)
    assert (hi - lo) / 2 == pytest.approx(2.201 * sd / math.sqrt(len(vals)), abs=1e-3)


@pytest.mark.parametrize("correct,total,expected", [
    (0, 10, [0.0, 0.2775]),
    (5, 10, [0.2366, 0.7634]),
    (10, 10, [0.7225, 1.0]),
    (0, 0, [0.0, 0.0]),
])
def test_wilson_known_values(correct, total, expected):
    assert wilson(correct, total) == pytest.approx(expected, abs=1e-4)


def test_paired_bootstrap_deterministic_and_order_free():
    a = {f"t{i}": float(i % 3 == 0) for i in range(30)}
    b = {f"t{i}": float(i % 5 == 0) for i in range(30)}
    r1 = paired_bootstrap(a, b, n_boot=500, seed=3)
    r2 = paired_bootstrap(dict(reversed(list(a.items()))), b, n_boot=500, seed=3)
    assert r1 == r2
    assert r1["n"] == 30 and r1["diff"] == pytest.approx((10 - 6) / 30)
    assert r1["ci95"][0] <= r1["diff"] <= r1["ci95"][1]
    assert paired_bootstrap(a, b, n_boot=500, seed=4)["ci95"] != r1["ci95"]  # the seed drives the resampling


def test_paired_bootstrap_is_paired():
    # every task: a = b + 0.1 exactly; unpaired, the two spreads would overlap widely; paired, the interval is a point
    b = {f"t{i}": (i % 7) / 10 for i in range(40)}
    a = {k: v + 0.1 for k, v in b.items()}
    r = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert r["diff"] == pytest.approx(0.1) and r["ci95"] == pytest.approx([0.1, 0.1])


def test_paired_bootstrap_interval_width_matches_theory():
    # 200 tasks, differences +-1 at random: bootstrap sd of the mean ~ sd / sqrt(n)
    import random

    rng = random.Random(0)
    d = {f"t{i}": rng.choice([0.0, 1.0]) for i in range(200)}
    zeros = dict.fromkeys(d, 0.0)
    r = paired_bootstrap(d, zeros, n_boot=4000, seed=0)
    p = r["diff"]
    half = (r["ci95"][1] - r["ci95"][0]) / 2
    assert half == pytest.approx(1.96 * math.sqrt(p * (1 - p) / 200), rel=0.1)


@pytest.mark.parametrize("a,b,kw,needle", [
    ({"x": 1}, {"y": 1}, {}, "different tasks"),
    ({}, {}, {}, "no tasks"),
    ({"x": 1}, {"x": 0}, {"n_boot": 0}, "n_boot must be a positive integer"),
])
def test_paired_bootstrap_bad_input(a, b, kw, needle):
    with pytest.raises(ConfigError, match=needle):
        paired_bootstrap(a, b, **kw)


def test_old_import_path_still_works():
    from parl_mt_lib import evaluate, stats

    assert evaluate.seed_interval is stats.seed_interval and evaluate.wilson is stats.wilson
