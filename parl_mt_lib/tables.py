"""README's result tables, generated from ``results/`` alone (no training, no evaluation; runs in well under a second).

``make tables`` (``python -m parl_mt_lib.tables --write``) rewrites the block between ``BEGIN`` and ``END`` in
README.md; ``--check`` exits 1 with one line per difference when the block does not describe ``results/``.
Every table names the files it comes from with the git SHA, machine and date of their ``provenance``; an input
that does not exist is listed as ``not run: results/...`` and nothing is made up for it.

Inputs (relative to the results root), as their writers lay them out:

- ``01_pag/card.json``, ``01_pag_toy/card.json`` (``pag_build.build_pag`` + notebook 01's ``context_ratio_at_step6``)
- ``02_sft/metrics.json`` (``sft.run_sft_grid``: ``summary[kind-view][metric] = {mean, ci95_seeds, per_seed}``,
  ``cells``, ``held_out``, ``seeds``)
- ``03_pag_rl/metrics.json``, ``04_mt_grpo/metrics.json`` (``rl.run_rl_grid``: ``per_seed[s] = {reward_first20,
  reward_last20, heldout_start, heldout_final, cost}``, ``recipe``) and their ``iterations.csv``
  (``train_task_success`` per seed and iteration) and ``seed<s>/metrics.json`` (``n_heldout_tasks``)
- ``05_evaluate/oracle/metrics.json``, ``05_evaluate/toy/metrics.json`` (``evaluate.evaluate``)
- ``06_compare/comparison.json`` (``compare.compare_methods``: ``table``, ``runs``, ``benchmarks``) and each run's
  ``06_compare/<method>/<benchmark>/seed<s>/entries.jsonl`` (per-task verdicts, for paired differences)
- ``05_evaluate/tau2_<domain>_{oracle,toy}/metrics.json`` and 06's τ-bench rows: :mod:`parl_mt_lib.tables_tau2`
- ``small/``: the same 02, 03, 04 and 06 inputs from ``make reproduce-small`` and its ``small/run.json``
  (the target's wall-clock), shown in their own section only where that target ran (:func:`section_small`)
- ``07_ablations/ablations.json`` (``ablations.run``: ``rows``, ``table`` with the paired differences to full
  PARL-MT already computed by :func:`parl_mt_lib.stats.paired_bootstrap`, ``budget``, ``missing_benchmarks``)

Keys are read defensively (other keys may come and go); unknown metrics are shown after the known ones.

Example:
    >>> import tempfile
    >>> text = render_block(tempfile.mkdtemp())          # an empty results/ directory
    >>> text.startswith(BEGIN) and text.rstrip().endswith(END)
    True
    >>> "not run: `results/02_sft/metrics.json`" in text
    True
"""
from __future__ import annotations

import argparse
import csv
import difflib
import json
import sys
from pathlib import Path

from .compare import MIN_PAIRED_TASKS
from .compare import PAIRS as _COMPARE_PAIRS
from .runtime import REPO_ROOT, ConfigError, read_jsonl
from .stats import paired_bootstrap, t_interval

BEGIN = "<!-- BEGIN GENERATED RESULTS -->"
END = "<!-- END GENERATED RESULTS -->"
# make reproduce-small's own block (results/small/): written where that target ran, whatever else did
BEGIN_SMALL = "<!-- BEGIN GENERATED SMALL-MODEL RESULTS -->"
END_SMALL = "<!-- END GENERATED SMALL-MODEL RESULTS -->"
N_BOOT = 10_000  # bootstrap resamples for paired differences (seed 0: the block is deterministic)

# every file a table reads, relative to the results root
INPUTS = {
    "pag": "01_pag/card.json",
    "pag_toy": "01_pag_toy/card.json",
    "sft": "02_sft/metrics.json",
    "pag_rl": "03_pag_rl/metrics.json",
    "mt_grpo": "04_mt_grpo/metrics.json",
    "oracle": "05_evaluate/oracle/metrics.json",
    "toy": "05_evaluate/toy/metrics.json",
    "compare": "06_compare/comparison.json",
    **{f"tau2_{d}_{k}": f"05_evaluate/tau2_{d}_{k}/metrics.json" for d in ("airline", "retail") for k in ("oracle", "toy")},
    "ablations": "07_ablations/ablations.json",
}
# inputs of `make reproduce-small` (results/small/): rows shown where present, never listed as "not run" -- that
# target runs apart from `make reproduce`, and a checkout that ran only one of them still describes what it ran
OPTIONAL_INPUTS = {f"tau2_{d}_smollm2": f"small/05_tau2_{d}_smollm2/metrics.json" for d in ("airline", "retail")}
SFT_ROWS = {"base-progress": "untrained, progress view", "sft-progress": "SFT-PAG (progress view)",
            "base-plain": "untrained, plain view", "sft-plain": "SFT-plain (full history)"}
# headline metrics come from free-running play (sft_eval); tf_* and the older *_exact_match are teacher-forced
SFT_METRICS = {"task_success": "task success", "format_validity": "format validity",
               "step_accuracy": "step accuracy (own trajectory)", "call_accuracy": "call-step accuracy (own trajectory)",
               "tf_format_validity": "format validity", "tf_step_exact_match": "step exact match",
               "tf_call_exact_match": "call-step exact match", "step_exact_match": "step exact match",
               "call_exact_match": "call-step exact match"}
TEACHER_FORCED_LEGACY = ("step_exact_match", "call_exact_match")  # metrics files written before sft_eval's tf_*
RL_METHODS = {"pag_rl": ("PAG-RL", "03_pag_rl"), "mt_grpo": ("MT-GRPO", "04_mt_grpo")}
COST_COLS = {"prompt_tokens_per_step": "prompt tokens / step", "generated_tokens_per_step": "generated tokens / step",
             "generated_tokens_per_episode": "generated tokens / episode", "steps_per_episode": "steps / episode",
             "rollout_s": "rollout s", "update_s": "update s", "peak_mem_mb": "peak memory MB",
             "logprob_gap_mean": "sampler − trainer log-prob gap, mean", "logprob_gap_max": "log-prob gap, max",
             "sync_s": "of which weight sync s"}
METHODS = {"base": "base", "cot": "CoT", "sft_plain": "SFT-plain", "sft_pag": "SFT-PAG", "mt_grpo": "MT-GRPO",
           "parl_mt": "PARL-MT"}
PAIRS = list(_COMPARE_PAIRS)  # the same claims as notebook 06's paired.csv (compare.PAIRS)


# ------------------------------------------------------------------ formatting


def _num(x, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def _num_small(x) -> str:
    """Two decimals, or two significant digits in scientific notation below 0.01 (log-prob gaps)."""
    if isinstance(x, float) and x != 0 and abs(x) < 0.01:
        return f"{x:.1e}"
    return _num(x)


def _ci(ci, digits: int = 2) -> str:
    return f" [{_num(ci[0], digits)}, {_num(ci[1], digits)}]" if ci else ""


def _seed_key(s):
    return (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _machine(device: dict) -> str:
    if not isinstance(device, dict) or not device:
        return "machine not recorded"
    parts = [device.get("cuda") or device.get("platform") or "unknown platform"]
    cpu = device.get("cpu_model") or device.get("processor")  # recorded by newer provenance, if at all
    if cpu:
        parts.append(str(cpu))
    if device.get("cpu_count"):
        parts.append(f"{device['cpu_count']} CPUs")
    return ", ".join(str(p) for p in parts)


def provenance_line(rel: str, data: dict, label: str = "results") -> str:
    """Where one table's numbers come from: file, git SHA (``-dirty``: uncommitted changes), machine, date.

    >>> provenance_line("02_sft/metrics.json", {"provenance": {"git_sha": "a4ba63e0123456789", "time_utc":
    ...     "2026-11-24T10:00:00Z", "device": {"platform": "Linux-x86_64", "cpu_count": 2, "cuda": None}}})
    'from `results/02_sft/metrics.json`: git a4ba63e, Linux-x86_64, 2 CPUs, 2026-11-24'
    """
    prov = data.get("provenance") if isinstance(data, dict) else None
    if not isinstance(prov, dict):
        return f"from `{label}/{rel}`: no provenance recorded"
    sha = str(prov.get("git_sha") or "unknown")
    sha = sha[:7] + ("-dirty" if sha.endswith("-dirty") else "") if sha != "unknown" else sha
    date = str(prov.get("time_utc") or "date not recorded")[:10]
    return f"from `{label}/{rel}`: git {sha}, {_machine(prov.get('device'))}, {date}"


# ------------------------------------------------------------------ inputs


class _Results:
    """Reads inputs under one results root; remembers which were missing (in the order asked for)."""

    def __init__(self, root, label: str = "results"):
        self.root = Path(root)
        self.label = label  # how tables name the root (``results/small`` for make reproduce-small's runs)
        self.missing: list[str] = []
        self.shown: set[str] = set()  # missing inputs already named where their table would be

    def not_run(self, rel: str) -> str:
        self.shown.add(f"{self.label}/{rel}")
        return f"- not run: `{self.label}/{rel}`"

    def json(self, rel: str):
        path = self.root / rel
        if not path.exists():
            self._miss(rel)
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.label}/{rel} is not valid JSON ({err}); rerun the notebook that writes "
                              "it") from None

    def csv(self, rel: str) -> list[dict] | None:
        path = self.root / rel
        if not path.exists():
            self._miss(rel)
            return None
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    def jsonl(self, rel: str) -> list[dict] | None:
        if not (self.root / rel).exists():
            self._miss(rel)
            return None
        return read_jsonl(self.root / rel)

    def _miss(self, rel: str) -> None:
        if f"{self.label}/{rel}" not in self.missing:
            self.missing.append(f"{self.label}/{rel}")

    def source(self, rel: str, data: dict) -> str:
        """:func:`provenance_line` of an input under this root."""
        return provenance_line(rel, data, self.label)


# ------------------------------------------------------------------ sections


def _eval_cell(cat: dict) -> str:
    ci = cat.get("ci95_seeds") or cat.get("ci95_wilson")
    return f"{cat.get('correct', '?')}/{cat.get('total', '?')} = {_num(cat.get('accuracy'))}{_ci(ci)}"


def section_evaluate(res: _Results) -> list[str]:
    out = ["#### BFCL multi-turn: oracle and untrained toy (notebook 05)", ""]
    runs = {}
    for key, label in (("oracle", "oracle"), ("toy", "untrained toy")):
        m = res.json(INPUTS[key])
        if m is None:
            out.append(res.not_run(INPUTS[key]))
        else:
            runs[key] = (label, m)
    if not runs:
        return out + [""]
    if out[-1] != "":
        out.append("")
    cats = []
    for _, m in runs.values():
        cats += [c for c in m.get("categories", {}) if c not in cats]
    rows = []
    for key, (label, m) in runs.items():
        seeds = m.get("seeds") or []
        limit = (m.get("config") or {}).get("limit")
        desc = f"{label} ({'all' if limit is None else limit} per category, {len(seeds)} seed{'s' * (len(seeds) != 1)})"
        c = m.get("categories", {})
        overall = _num(m.get("overall")) + _ci(m.get("overall_ci95_seeds"))
        rows.append([desc] + [_eval_cell(c[k]) if k in c else "—" for k in cats] + [overall])
    out += _table(["policy"] + cats + ["overall (mean of categories)"], rows)
    out += ["", "correct/total = accuracy pooled over seeds [95% interval: t over seeds with ≥ 2 seeds, else Wilson "
            "over entries]."]
    out += [f"- {provenance_line(INPUTS[k], m)}" for k, (_, m) in runs.items()]
    return out + [""]


def section_pag(res: _Results) -> list[str]:
    out = ["#### PAG builds (notebook 01)", ""]
    cards = {}
    for key in ("pag", "pag_toy"):
        card = res.json(INPUTS[key])
        if card is None:
            out.append(res.not_run(INPUTS[key]))
        else:
            cards[INPUTS[key].split("/")[0]] = card
    if not cards:
        return out + [""]
    if out[-1] != "":
        out.append("")

    def tok(card, view):
        return ((card.get("token_stats") or {}).get(f"conversation_tokens_{view}") or {}).get("mean")

    def ratio(card, k):
        return (card.get("context_ratio_at_step6") or {}).get(k)

    def n_ex(card, split):
        return (card.get("n_examples") or {}).get(split)

    fields = [
        ("tasks (validation)", lambda c: f"{_num(c.get('n_tasks'))} ({_num(c.get('n_tasks_validation'))})"),
        ("gold calls pass the official checker", lambda c: _num(c.get("gold_pass_rate"))),
        ("overlap with BFCL evaluation entries", lambda c: _num(c.get("overlap_with_eval"))),
        ("gold steps (call steps)", lambda c: f"{_num(c.get('n_steps'))} ({_num(c.get('n_call_steps'))})"),
        ("kept / dropped by verification", lambda c: f"{_num(c.get('kept'))} / {_num(c.get('dropped'))}"),
        ("examples train / validation (after augmentation)",
         lambda c: f"{_num(n_ex(c, 'train'))} / {_num(n_ex(c, 'validation'))}"),
        ("conversation tokens per step, progress / full history (mean)",
         lambda c: f"{_num(tok(c, 'progress'), 1)} / {_num(tok(c, 'full_history'), 1)}"),
        ("full history ÷ progress tokens at step 6, synthetic / BFCL base",
         lambda c: f"{_num(ratio(c, 'synthetic'))} / {_num(ratio(c, 'BFCL base'))}"),
        ("teacher, seed", lambda c: f"{c.get('teacher', '—')}, {_num((c.get('seeds') or [None])[0])}"),
        ("build wall-clock s", lambda c: _num((c.get("provenance") or {}).get("wall_clock_s"), 1)),
    ]
    out += _table(["results/"] + [f"`{d}`" for d in cards], [[name] + [f(c) for c in cards.values()]
                                                            for name, f in fields])
    out += [""] + [f"- {provenance_line(d + '/card.json', c)}" for d, c in cards.items()]
    return out + [""]


def _sft_table(summary: dict, rows_keys: list, metrics: list, per_seed_col: bool) -> list[str]:
    rows = []
    for r in rows_keys:
        cells = []
        for k in metrics:
            v = summary[r].get(k)
            cells.append(_num(v.get("mean")) + _ci(v.get("ci95_seeds")) if isinstance(v, dict) else "—")
        if per_seed_col:
            ts = (summary[r].get("task_success") or {}).get("per_seed") or {}
            cells.append(" / ".join(_num(ts[s]) for s in sorted(ts, key=_seed_key)) if r.startswith("sft") else "")
        rows.append([SFT_ROWS.get(r, r)] + cells)
    header = ["model"] + [SFT_METRICS.get(k, k) for k in metrics] + (["task success per seed"] if per_seed_col else [])
    return _table(header, rows)


def section_sft(res: _Results) -> list[str]:
    out = ["#### SFT: held-out synthetic tasks (notebook 02)", ""]
    m = res.json(INPUTS["sft"])
    if m is None:
        return out + [res.not_run(INPUTS["sft"]), ""]
    summary = {k: v for k, v in (m.get("summary") or {}).items() if isinstance(v, dict)}
    keys = [k for k in SFT_ROWS if k in summary] + sorted(k for k in summary if k not in SFT_ROWS)
    present = [k for k in SFT_METRICS if any(k in summary[r] for r in keys)]
    present += sorted({k for r in keys for k in summary[r] if k not in SFT_METRICS})
    forced = [k for k in present if k.startswith("tf_") or k in TEACHER_FORCED_LEGACY]
    free = [k for k in present if k not in forced]
    seeds = m.get("seeds") or []
    held = m.get("held_out") or {}
    cells = [c for c in (m.get("cells") or {}).values() if isinstance(c, dict) and c.get("kind") == "sft"
             and c.get("seed") in seeds]
    steps = sorted({c.get("global_step") for c in cells if c.get("global_step") is not None})
    mins = [c["train_runtime_s"] / 60 for c in cells if isinstance(c.get("train_runtime_s"), (int, float))]
    train = (f"; {'/'.join(map(str, steps))} training steps per cell" if steps else "") + \
        (f", {min(mins):.1f}–{max(mins):.1f} min each" if mins else "")
    out += _sft_table(summary, keys, free, per_seed_col=True)
    out += ["", f"Mean over seeds {seeds} [95% t-interval over seeds]; held-out: {_num(held.get('n_tasks'))} tasks "
            f"played end to end{train}. Untrained rows: one greedy run."]
    if forced:
        # the steps the tf_* metrics were computed on (02's eval_limit), not the whole held-out split
        tf_n = sorted({c["tf_n_steps"] for c in cells if isinstance(c.get("tf_n_steps"), int)})
        n = f"{_num(held.get('n_steps'))} held-out steps"
        n = f"{'/'.join(map(str, tf_n))} of the {n}" if tf_n else n
        out += ["", "Teacher-forced diagnosis on held-out gold contexts (not comparable across views: the progress "
                f"view's gold context names the next call; {n}):", ""]
        out += _sft_table(summary, keys, forced, per_seed_col=False)
    out += ["", f"- {res.source(INPUTS['sft'], m)}"]
    return out + [""]


def _first_last(values: list[float], frac: float = 0.2):
    """Means of the first and last ``frac`` of a series: the rule of ``rl.first_last``."""
    k = max(1, round(len(values) * frac))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def _arrow(a, b) -> str:
    return f"{_num(a)} → {_num(b)}"


def _delta(pairs: list) -> str:
    d = [b - a for a, b in pairs if a is not None and b is not None]
    if not d:
        return "—"
    return f"{sum(d) / len(d):+.2f}" + (_ci(t_interval(d)) if len(d) > 1 else "")


def section_rl(res: _Results) -> tuple[list[str], dict]:
    out = ["#### PAG-RL and MT-GRPO training runs (notebooks 03, 04)", ""]
    runs, rows, sources = {}, [], []
    for key, (label, d) in RL_METHODS.items():
        m = res.json(INPUTS[key])
        if m is None:
            out.append(res.not_run(INPUTS[key]))
            continue
        runs[key] = m
        sources.append(f"- {res.source(INPUTS[key], m)}")
        per_seed = m.get("per_seed") or {}
        iters = res.csv(f"{d}/iterations.csv")
        train = {}
        for s in per_seed:
            series = [(int(r["iteration"]), float(r["train_task_success"])) for r in iters or []
                      if r.get("seed") == str(s) and r.get("train_task_success") not in (None, "")]
            train[s] = _first_last([v for _, v in sorted(series)]) if series else (None, None)
        recipe = m.get("recipe") or {}
        for s in sorted(per_seed, key=_seed_key):
            p = per_seed[s]
            rows.append([label, str(s), _num(recipe.get("iterations")),
                         _arrow(p.get("reward_first20"), p.get("reward_last20")), _arrow(*train[s]),
                         _arrow(p.get("heldout_start"), p.get("heldout_final"))])
        if len(per_seed) > 1:
            ps = list(per_seed.values())
            rows.append([label, "mean change [t over seeds]", "",
                         _delta([(p.get("reward_first20"), p.get("reward_last20")) for p in ps]),
                         _delta([train[s] for s in per_seed]),
                         _delta([(p.get("heldout_start"), p.get("heldout_final")) for p in ps])])
    if rows:
        if out[-1] != "":
            out.append("")
        out += _table(["method", "seed", "iterations", "training reward, first 20% → last 20% of iterations",
                       "training-task success, first 20% → last 20%", "held-out success, start → end"], rows)
        desc = []
        for key, m in runs.items():
            r = m.get("recipe") or {}
            seed0 = next(iter(m.get("per_seed") or {}), None)
            n_held = (res.json(f"{RL_METHODS[key][1]}/seed{seed0}/metrics.json") or {}).get("n_heldout_tasks") \
                if seed0 is not None else None
            desc.append(f"{RL_METHODS[key][0]}: {_num(r.get('tasks_per_iteration'))} tasks × G "
                        f"{_num(r.get('group_size'))} per iteration, held-out {_num(n_held)} synthetic validation "
                        "tasks (greedy)")
        out += ["", "; ".join(desc) + ". Training-task success is the official verdict on the iteration's "
                "sampled episodes (`iterations.csv`)."]
    if not runs:
        return out + [""], runs
    return out + [""] + sources + [""], runs


def section_cost(runs: dict, label: str = "results") -> list[str]:
    out = ["#### Cost per RL run (notebooks 03, 04; mean over iterations, then over seeds)", ""]
    if not runs:
        return out + ["- not run: no RL metrics (see above)", ""]
    means = {}
    for key, m in runs.items():
        costs = [p.get("cost") or {} for p in (m.get("per_seed") or {}).values()]
        keys = [k for k in COST_COLS if any(k in c for c in costs)]
        keys += sorted({k for c in costs for k, v in c.items() if k not in COST_COLS and isinstance(v, (int, float))})
        means[key] = {}
        for k in keys:  # *_max: the largest over seeds; everything else: the mean over seeds that recorded it
            vals = [c[k] for c in costs if isinstance(c.get(k), (int, float))]
            means[key][k] = (max(vals) if k.endswith("_max") else sum(vals) / len(vals)) if vals else None
    cols = []
    for mm in means.values():
        cols += [k for k in mm if k not in cols]
    context = {"pag_rl": "progress context", "mt_grpo": "full history"}
    rows = [[f"{RL_METHODS[k][0]} ({context[k]})"] + [_num_small(mm.get(c)) for c in cols] for k, mm in means.items()]
    out += _table(["method"] + [COST_COLS.get(c, c) for c in cols], rows)
    if {"pag_rl", "mt_grpo"} <= set(means):
        ratios = []
        for c in ("prompt_tokens_per_step", "generated_tokens_per_step"):
            a, b = means["pag_rl"].get(c), means["mt_grpo"].get(c)
            if a and b:
                ratios.append(f"{COST_COLS[c]} ×{a / b:.2f}")
        if ratios:
            out += ["", "PAG-RL ÷ MT-GRPO: " + ", ".join(ratios) + "."]
    if "logprob_gap_max" in cols:
        out += ["", "Log-prob gap: |sampler − trainer| log-prob over completion tokens; max = the largest over "
                "iterations and seeds."]
    out += [""] + [f"- {provenance_line(INPUTS[k], m, label)}" for k, m in runs.items()]
    return out + [""]


def section_compare(res: _Results) -> list[str]:
    out = ["#### Six-way comparison: task success (notebook 06)", ""]
    c = res.json(INPUTS["compare"])
    if c is None:
        return out + [res.not_run(INPUTS["compare"]), ""]
    table = [r for r in c.get("table") or [] if isinstance(r, dict)]
    methods = [m for m in METHODS if any(r.get("method") == m for r in table)]
    methods += [m for m in dict.fromkeys(r.get("method") for r in table) if m not in methods]
    benches = list(dict.fromkeys(r.get("benchmark") for r in table))
    by = {(r.get("method"), r.get("benchmark")): r for r in table}
    # a benchmark's caveat (τ-bench: the scripted user), on its six-way row and on its paired rows
    notes = {b: next((by[m, b].get("note") for m in methods if (m, b) in by and by[m, b].get("note")), None)
             for b in benches}
    rows = []
    for b in benches:
        n = next((by[m, b].get("n_items") for m in methods if (m, b) in by), None)
        note = notes[b]
        rows.append([f"{b} ({_num(n)} items{'; ' + note if note else ''})"] + [
            _num(by[m, b].get("mean")) + _ci([by[m, b].get("ci95_low"), by[m, b].get("ci95_high")])
            if (m, b) in by else "—" for m in methods])
    out += _table(["task success"] + [METHODS.get(m, m) for m in methods], rows)
    kinds = []
    for m in methods:  # one entry per kind of interval a method's rows have (τ-bench rows: one run, Wilson)
        got: dict = {}
        for b in benches:
            if (m, b) in by:
                got.setdefault((by[m, b].get("interval", "?"), _num(by[m, b].get("n_seeds"))), []).append(b)
        parts = [f"{i}, {n} run(s)" + (f" ({', '.join(bs)})" if len(got) > 1 else "") for (i, n), bs in got.items()]
        kinds.append(f"{METHODS.get(m, m)}: {'; '.join(parts) or '?'}")
    out += ["", "95% intervals — " + "; ".join(kinds) + "."]
    excluded = {b: n for b, n in (c.get("excluded_bfcl_ids") or {}).items() if n}
    if excluded:
        out += ["", "Excluded from BFCL as hold-out training ids: "
                + ", ".join(f"{n} from {b}" for b, n in sorted(excluded.items())) + "."]
    out += ["", *_paired(res, c, methods, benches, notes)]
    out += [f"- {res.source(INPUTS['compare'], c)}"]
    return out + [""]


def _paired(res: _Results, c: dict, methods: list, benches: list, notes: dict | None = None) -> list[str]:
    """Paired differences on the same tasks: per-task success averaged over training seeds, bootstrap over tasks."""
    runs = [r for r in c.get("runs") or [] if isinstance(r, dict)]
    pairs = [(a, b, why) for a, b, why in PAIRS if a in methods and b in methods]
    if not pairs:
        return []
    rows, missing = [], []
    for b in benches:
        by_task = {}
        for m in {x for p in pairs for x in p[:2]}:
            seeds = sorted({r.get("seed") for r in runs if r.get("method") == m and r.get("benchmark") == b},
                           key=_seed_key)
            scores: dict = {}
            for s in seeds:
                rel = f"06_compare/{m}/{b}/seed{s}/entries.jsonl"
                rows_s = res.jsonl(rel)
                if rows_s is None:
                    missing.append(rel)
                    continue
                for e in rows_s:
                    scores.setdefault(e["id"], []).append(float(bool(e.get("valid"))))
            by_task[m] = {i: sum(v) / len(v) for i, v in scores.items()}
        for a, bb, why in pairs:
            if not by_task.get(a) or not by_task.get(bb):
                continue
            r = paired_bootstrap(by_task[a], by_task[bb], n_boot=N_BOOT, seed=0)
            note = (notes or {}).get(b)
            ci = _ci(r["ci95"]) if r["n"] >= MIN_PAIRED_TASKS else \
                f" (fewer than {MIN_PAIRED_TASKS} tasks: no interval)"
            rows.append([f"{METHODS.get(a, a)} − {METHODS.get(bb, bb)}", why, f"{b} ({note})" if note else b,
                         str(r["n"]), f"{r['diff']:+.2f}{ci}"])
    out = ["Paired differences on the same tasks (per-task success averaged over training seeds; 95% percentile "
           f"bootstrap over tasks, {N_BOOT} resamples, seed 0; seed-to-seed spread is in the t-intervals above):", ""]
    if rows:
        out += _table(["difference", "what it measures", "benchmark", "tasks", "mean difference [95% CI]"], rows)
    if rows and missing:
        out.append("")
    out += [res.not_run(rel) for rel in missing]
    return out + [""]


def section_ablations(res: _Results) -> list[str]:
    """Notebook 07's table: per benchmark, each row's task success, its paired difference to full PARL-MT,
    steps and tokens per task; where each row's checkpoints come from; rows dropped for the budget."""
    out = ["#### Ablations: what each part of PARL-MT buys (notebook 07)", ""]
    a = res.json(INPUTS["ablations"])
    if a is None:
        return out + [res.not_run(INPUTS["ablations"]), ""]
    rows = [r for r in a.get("rows") or [] if isinstance(r, dict)]
    label = {r.get("row"): r.get("label", r.get("row")) for r in rows}
    table = [t for t in a.get("table") or [] if isinstance(t, dict)]
    ref = a.get("reference", "parl_mt")
    for b in dict.fromkeys(t.get("benchmark") for t in table):
        ts = [t for t in table if t.get("benchmark") == b]
        n = next((t.get("n_tasks") for t in ts), None)
        body = []
        for t in ts:
            d = t.get("delta") or {}
            delta = "reference" if t.get("row") == ref else \
                (f"{d['diff']:+.2f}{_ci(d.get('ci95'))}" if isinstance(d.get("diff"), (int, float)) else "—")
            body.append([label.get(t.get("row"), t.get("row")), _num(t.get("mean")) + _ci(t.get("ci95")), delta,
                         _num(t.get("steps_per_task"), 1), _num(t.get("prompt_tokens_per_task"), 0),
                         _num(t.get("generated_tokens_per_task"), 0), _num(t.get("n_seeds"))])
        out += [f"{b} ({_num(n)} tasks):", ""]
        out += _table(["ablation", "task success [95% CI]", "Δ vs full PARL-MT, paired [95% CI]", "steps / task",
                       "prompt tokens / task", "generated tokens / task", "seeds"], body)
        out.append("")
    kinds = sorted({t.get("interval") for t in table if t.get("interval")})
    out += [f"Task success: mean over training seeds [{'; '.join(kinds) or '95% interval'}]. Δ: per-task success "
            f"averaged over seeds, minus full PARL-MT's on the same tasks; 95% percentile bootstrap over tasks "
            f"({_num(a.get('n_boot'))} resamples, seed 0). Tokens per task: summed over the episode's steps.", ""]
    src = []
    for r in rows:
        if not r.get("kept", True):
            continue
        extra = []
        if r.get("rl_iterations") is not None:
            extra.append(f"{r['rl_iterations']} RL iterations")
        pb = r.get("pag_build") or {}
        if pb:
            extra.append(f"PAG build: {_num(pb.get('kept'))} kept / {_num(pb.get('dropped'))} dropped steps, "
                         f"{_num((pb.get('n_examples') or {}).get('train'))} train examples"
                         + ("; byte-identical to the reference data" if pb.get("same_as_reference") else ""))
        src.append(f"- {label.get(r.get('row'), r.get('row'))}: {r.get('checkpoint', '?')}"
                   + (f" ({'; '.join(extra)})" if extra else ""))
    if src:
        out += ["Where each row's checkpoints come from:", "", *src, ""]
    budget = a.get("budget") or {}
    dropped = budget.get("dropped_rows") or []
    if dropped:
        out += ["Dropped for the budget (whole rows, never seeds): "
                + "; ".join(f"{label.get(d.get('row'), d.get('row'))} (~{_num(d.get('saved_s'), 0)} s)"
                            for d in dropped) + ".", ""]
    missing = a.get("missing_benchmarks") or {}
    if missing:
        out += ["Not evaluated: " + "; ".join(f"{k} ({v})" for k, v in sorted(missing.items())) + ".", ""]
    out += [f"- {provenance_line(INPUTS['ablations'], a)}"]
    return out + [""]


# ------------------------------------------------------------------ the block and README


SMALL = "small"  # make reproduce-small's results root, under the main one
SMALL_RUN = "run.json"  # its wall-clock, written at its end (runtime.stamp_run)


def _reused(res: _Results) -> list[str]:
    """The stages of ``make reproduce-small`` whose last invocation reused finished work (their grids' ``reused``)."""
    out = []
    for key, field in (("sft", "reused_cells"), ("pag_rl", "reused_seeds"), ("mt_grpo", "reused_seeds"),
                       ("compare", "reused_cells")):
        path = res.root / INPUTS[key]
        if path.exists() and (res.json(INPUTS[key]) or {}).get(field):
            out.append(INPUTS[key].split("/")[0])
    return out


def section_small(results_dir) -> list[str]:
    """``make reproduce-small``'s tables (SmolLM2-135M-Instruct: SFT, RL runs, cost, six-way comparison with paired
    differences, the untrained model's τ-bench runs) from ``results/small/``, the same sections as the toy's, plus
    the target's wall-clock (``run.json``; flagged when a stage reused finished work, so that the time is not a
    clean run's). Nothing when that target has not run here (:func:`has_small`)."""
    from .tables_tau2 import section_tau2_small

    if not has_small(results_dir):
        return []
    res = _Results(Path(results_dir) / SMALL, label=f"results/{SMALL}")
    rl, runs = section_rl(res)
    parts = [section_sft(res), rl, section_cost(runs, res.label), section_compare(res), section_tau2_small(res)]
    out = [f"### SmolLM2-135M-Instruct (`make reproduce-small`, `results/{SMALL}/`)", ""]
    run = res.json(SMALL_RUN) if (res.root / SMALL_RUN).exists() else None
    if run is None:
        out += [f"- wall-clock not recorded (`results/{SMALL}/{SMALL_RUN}` is written when the whole target "
                "finishes)", ""]
    else:
        wall = (run.get("provenance") or {}).get("wall_clock_s")
        reused = _reused(res)
        if run.get("resumed") or reused:
            what = ("its last invocation, which " + (f"reused finished work in {', '.join(reused)}" if reused else
                                                     "found earlier outputs in `results/small/` to resume from")
                    + ": not the time of a clean run")
        elif run.get("resumed") is False:
            what = "a clean run from an empty `results/small/`, every stage included"
        else:  # run.json written before the target recorded whether it resumed
            what = "every stage included; no stage reports reused work"
        out += [f"`make reproduce-small` took {_num(wall / 60 if isinstance(wall, (int, float)) else None, 1)} min "
                f"of wall-clock ({what}; {res.source(SMALL_RUN, run)}).", ""]
    for part in parts:
        out += [f"#### SmolLM2 · {line[5:]}" if line.startswith("#### ") else line for line in part]
    return out


def generate(results_dir="results") -> tuple[str, list[str]]:
    """The block's body (Markdown, deterministic given the files) and the inputs that were missing."""
    res = _Results(results_dir)
    parts = [section_evaluate(res), section_pag(res), section_sft(res)]
    rl_part, runs = section_rl(res)
    from .tables_tau2 import section_tau2

    parts += [rl_part, section_cost(runs), section_compare(res), section_tau2(res), section_ablations(res)]
    head = ["Generated by `make tables` from `results/` only — do not edit by hand: `python -m parl_mt_lib.tables "
            "--check` and `tests/test_tables.py` fail when this block and `results/` disagree. Each table names "
            "the files, git SHA (`-dirty`: uncommitted changes), machine and date of the run it comes from; "
            "inputs that were not there are listed as not run.", ""]
    lines = head + [line for p in parts for line in p]
    others = [p for p in res.missing if p not in res.shown]
    if others:
        lines += ["#### Other inputs not found (tables above show — where they would be used)", "",
                  *[f"- not run: `{p}`" for p in others], ""]
    body = "\n".join(lines).rstrip() + "\n"
    return body, res.missing


def render_block(results_dir="results") -> str:
    """``BEGIN`` + the generated tables + ``END`` (what README holds between the markers)."""
    return f"{BEGIN}\n{generate(results_dir)[0]}{END}\n"


def has_main(results_dir) -> bool:
    """Whether ``results_dir`` holds any of the main block's inputs (:data:`INPUTS`: ``make reproduce`` ran)."""
    return any((Path(results_dir) / r).exists() for r in INPUTS.values())


def has_small(results_dir) -> bool:
    """Whether ``make reproduce-small`` left any of the small-model block's inputs under ``results_dir``."""
    return any((Path(results_dir) / SMALL / INPUTS[k]).exists() for k in ("sft", "pag_rl", "mt_grpo", "compare"))


def render_small_block(results_dir="results") -> str:
    """``BEGIN_SMALL`` + :func:`section_small`'s tables + ``END_SMALL`` (README's small-model block)."""
    head = ["Generated by `make tables` from `results/small/` only (written by `make reproduce-small`) — do not edit "
            "by hand; the same rules as the main generated block (section \"Results\").", ""]
    body = "\n".join(head + section_small(results_dir)).rstrip() + "\n"
    return f"{BEGIN_SMALL}\n{body}{END_SMALL}\n"


def _split_readme(text: str, where: str, begin: str = BEGIN, end: str = END):
    b, e = text.count(begin), text.count(end)
    if b != 1 or e != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"{where} needs exactly one '{begin}' line followed by one '{end}' line "
                          f"(found {b} and {e}); put them where the generated tables go")
    i, j = text.index(begin), text.index(end) + len(end)
    if text[j:j + 1] == "\n":
        j += 1
    return text[:i], text[i:j], text[j:]


def check_readme(readme=REPO_ROOT / "README.md", results_dir=REPO_ROOT / "results") -> list[str]:
    """One line per difference between README's generated blocks and those ``results_dir`` gives ([] if none): the
    main block (unless only ``make reproduce-small`` ran there) and the small-model block (where it ran)."""
    readme = Path(readme)
    text = readme.read_text()
    small = has_small(results_dir)  # the small-model block is checked where make reproduce-small ran; the main
    blocks = [(BEGIN, END, render_block(results_dir))] if has_main(results_dir) or not small else []  # unless only it
    _split_readme(text, readme.name)
    if small:
        blocks.append((BEGIN_SMALL, END_SMALL, render_small_block(results_dir)))
    diffs = []
    for begin, end, rendered in blocks:
        before, block, _ = _split_readme(text, readme.name, begin, end)
        first = before.count("\n") + 1
        have, want = block.splitlines(), rendered.splitlines()
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=have, b=want, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            diffs += [f"{readme.name}:{first + i}: stale: {have[i]}" for i in range(i1, i2)]
            diffs += [f"{readme.name}:{first + i1}: results/ give: {want[j]}" for j in range(j1, j2)]
    return diffs


class NothingToWrite(ConfigError):
    """``--write`` with none of the main inputs: README is left alone (not an error for ``make reproduce-small``)."""


def write_readme(readme=REPO_ROOT / "README.md", results_dir=REPO_ROOT / "results") -> bool:
    """Rewrite README's blocks from ``results_dir``; everything outside the markers stays byte for byte. True if
    changed. The main block is rewritten only where ``results_dir`` holds some of :data:`INPUTS` (where only
    ``make reproduce-small`` ran, it would turn every table of the committed runs into "not run"); the small-model
    block (``BEGIN_SMALL`` .. ``END_SMALL``) only where :func:`has_small` and README has its markers (with the main
    block to write, a README without them just gets that one; with only the small runs it is a one-line error).
    Neither: refused in one line (:class:`NothingToWrite`), README untouched."""
    readme = Path(readme)
    text = readme.read_text()
    _split_readme(text, readme.name)  # a README without exactly one main block is refused before anything else
    main_ran, small = has_main(results_dir), has_small(results_dir)
    if not main_ran and not small:
        raise NothingToWrite(f"{results_dir} holds the inputs of neither `make reproduce` nor `make reproduce-small`: "
                             "README's generated blocks left as they are; run one of them, then `make tables`")
    if small and not main_ran:  # only the small-model block can be written: its markers must be there
        _split_readme(text, readme.name, BEGIN_SMALL, END_SMALL)
    new_text = text
    if main_ran:
        before, _, after = _split_readme(new_text, readme.name)
        new_text = before + render_block(results_dir) + after
    if small and BEGIN_SMALL in new_text:  # make reproduce-small's block: its own markers, whatever else ran here
        before, _, after = _split_readme(new_text, readme.name, BEGIN_SMALL, END_SMALL)
        new_text = before + render_small_block(results_dir) + after
    if new_text == text:
        return False
    readme.write_text(new_text)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parl_mt_lib.tables", description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite README's generated block")
    mode.add_argument("--check", action="store_true", help="exit 1 (one line per difference) if README is stale")
    ap.add_argument("--results", default=str(REPO_ROOT / "results"))
    ap.add_argument("--readme", default=str(REPO_ROOT / "README.md"))
    args = ap.parse_args(argv)
    try:
        if args.check:
            diffs = check_readme(args.readme, args.results)
            for d in diffs:
                print(d)
            if diffs:
                print(f"{args.readme}: generated block does not describe {args.results}: run `make tables`",
                      file=sys.stderr)
            return 1 if diffs else 0
        if args.write:
            try:
                changed = write_readme(args.readme, args.results)
            except NothingToWrite as err:
                print(err)
                return 0
            main_ran, small = has_main(args.results), has_small(args.results)
            small = small and BEGIN_SMALL in Path(args.readme).read_text()
            missing = generate(args.results)[1] if main_ran else []
            which = " and ".join(n for n, ran in (("main", main_ran), ("small-model", small)) if ran)
            print(f"{args.readme}: generated {which} block(s) {'rewritten' if changed else 'already up to date'}"
                  + (f"; not run: {', '.join(missing)}" if missing else "")
                  + ("" if main_ran else "; the main block left as it is (`make reproduce` has not run here)")
                  + ("" if small or not has_small(args.results) else
                     f"; results/{SMALL}/ not written: README has no '{BEGIN_SMALL}' block"))
            return 0
        sys.stdout.write(render_block(args.results))
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
