"""Ablations (notebook 07): what PAG data, PAG-RL, the progress context, each reward term, verification and
augmentation buy, each row over the training seeds on the same held-out tasks as the six-way comparison.

A row (:class:`Ablation`) is a recipe of at most four stages: a PAG build (only when the row changes how PAG
data is built), an SFT stage (a view of that data), an RL stage (PAG-RL or MT-GRPO, optionally with a reward
term dropped) and an evaluation context. Every stage that trains is a cell of :func:`parl_mt_lib.grid.run_grid`
(finished cells reused only while their fingerprint matches), and every stage is first matched against the runs
notebooks 02-04 already made: a stage whose card (config and input fingerprints, :mod:`parl_mt_lib.runtime`)
equals an existing checkpoint's, up to paths and settings that do not change training (:data:`SFT_SAME` /
:data:`RL_SAME`), reuses that checkpoint instead of training again. So full PARL-MT is notebook 03's runs and
SFT-PAG notebook 02's; a PAG variant whose data come out byte-identical to the reference build (verification that
drops nothing) reuses those too, and says so.

Every row is evaluated through 05/06's ``evaluate`` (:func:`parl_mt_lib.compare.compare_cell`), one run per
training seed and benchmark, and reports task success (mean over seeds, 95% t-interval over seeds; Wilson over
items with one seed), steps per task and prompt / generated tokens per task, and its difference to full PARL-MT as
a *paired* difference over tasks (per-task success averaged over seeds, :func:`parl_mt_lib.stats.paired_bootstrap`).

Budget: :func:`plan` estimates every pending cell from measured costs per cell kind (:data:`DEFAULT_COSTS`, refined
by the ``wall_s`` earlier runs recorded in ``cells.json``) and, when the estimate exceeds the budget, drops whole
rows, lowest priority first (:func:`select_rows`), never seeds; the dropped rows are listed in ``ablations.json``.

Example (the rows and what a budget does to them; no training):
    >>> [r.key for r in ROWS][:4]
    ['parl_mt', 'no_pag_rl', 'context_full_history', 'no_pag_data']
    >>> row_stages(ROWS_BY_KEY["no_call_reward"])
    {'pag': None, 'sft': 'progress', 'rl': 'pag_rl', 'rewards_dropped': 'call', 'context': 'progress'}
    >>> kept, dropped = select_rows({"parl_mt": {"a": 10.0}, "no_pag_rl": {}, "no_call_reward": {"a": 10.0, "b": 50.0}},
    ...                             budget_s=30, workers=1)
    >>> kept, [d["row"] for d in dropped]
    (['parl_mt', 'no_pag_rl'], ['no_call_reward'])
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .runtime import ConfigError, atomic_write_json, provenance, repo_path

REFERENCE = "parl_mt"
N_BOOT = 10_000  # bootstrap resamples for the paired differences (seed 0: deterministic)


@dataclass(frozen=True)
class Ablation:
    """One row: what it changes relative to full PARL-MT (SFT-PAG -> PAG-RL, evaluated in the progress context)."""

    key: str
    label: str
    removes: str                      # what the row takes away (README / table text)
    pag: tuple = ()                   # PAG build overrides ((knob, value), ...); () = the reference PAG data
    sft_view: str = "progress"        # SFT view: progress (PAG data) | plain (full history -> call)
    rl: str | None = "pag_rl"         # pag_rl | mt_grpo | None (no RL stage)
    drop_reward: str | None = None    # a reward term removed from the RL recipe
    context: str | None = None        # evaluation context; None: the one the last stage trained in
    priority: int = 0                 # budget: rows with the highest number are dropped first


ROWS = (
    Ablation("parl_mt", "full PARL-MT", "nothing (reference: SFT-PAG → PAG-RL, progress context)"),
    Ablation("no_pag_rl", "w/o PAG-RL (SFT-PAG)", "the RL stage", rl=None, priority=1),
    Ablation("context_full_history", "PARL-MT, full-history context", "the progress context at inference "
             "(the same PARL-MT checkpoints, played with the full history)", context="full_history", priority=2),
    Ablation("no_pag_data", "w/o PAG data (SFT-plain → PAG-RL)", "summary/plan SFT data (the plain view's "
             "checkpoints start PAG-RL)", sft_view="plain", priority=3),
    Ablation("pag_mt_grpo", "PAG data + MT-GRPO", "PAG-RL (MT-GRPO instead: full history, turn-level credit, "
             "from SFT-PAG)", rl="mt_grpo", priority=4),
    Ablation("no_format_reward", "PAG-RL w/o format reward", "the format reward term", drop_reward="format",
             priority=5),
    Ablation("no_call_reward", "PAG-RL w/o call reward", "the call reward term", drop_reward="call", priority=6),
    Ablation("no_efficiency_reward", "PAG-RL w/o efficiency reward", "the efficiency reward term",
             drop_reward="efficiency", priority=7),
    Ablation("no_verification", "PAG w/o verification", "verification of the PAG steps (verifier: none)",
             pag=(("verifier", "none"),), priority=8),
    Ablation("no_augmentation", "PAG w/o augmentation", "augmentation of the PAG train split (paraphrase, "
             "schema, mask off)", pag=(("paraphrase", False), ("schema", False), ("mask", False)), priority=9),
)
ROWS_BY_KEY = {r.key: r for r in ROWS}

# keys of a training card that do not change the trained weights: paths (their content is in the card's inputs)
# and, for RL, the in-loop held-out evaluation (greedy play before the iteration's seeded rollouts) and checkpoints
SFT_SAME = ("data",)
RL_SAME = ("init", "data", "eval_every", "eval_tasks", "save_every")

# seconds per unit for one of two single-thread workers side by side on the 2-core CPU: measured 2026-11-25 on the
# toy (make reproduce's 02-04 results, every row of 07; a shared machine, so on the slow side). RL and evaluation
# cost differ by row and benchmark (MT-GRPO from SFT-PAG writes summary + plan into a growing history; a policy
# without the call reward writes longer); :func:`measured_costs` replaces them with what a results directory recorded
DEFAULT_COSTS = {"pag_s": 22.0, "sft_s_per_step": 0.2, "sft_overhead_s": 8.0,
                 "rl_s_per_episode": 0.07, "rl_overhead_s": 8.0,
                 "rl_s_per_episode_by_row": {"parl_mt": 0.05, "no_pag_data": 0.037, "pag_mt_grpo": 0.124,
                                             "no_format_reward": 0.041, "no_call_reward": 0.131,
                                             "no_efficiency_reward": 0.072, "no_verification": 0.05,
                                             "no_augmentation": 0.074},
                 "eval_s_per_task": 0.16, "eval_overhead_s": 2.0,
                 "eval_s_per_task_by_benchmark": {"synthetic": 0.17, "bfcl": 0.13}}


def row_stages(row: Ablation) -> dict:
    """What a row runs: PAG overrides (None: reference data), SFT view, RL method, dropped reward, eval context."""
    ctx = row.context or ({"pag_rl": "progress", "mt_grpo": "full_history"}[row.rl] if row.rl else
                          ("progress" if row.sft_view == "progress" else "full_history"))
    return {"pag": dict(row.pag) or None, "sft": row.sft_view, "rl": row.rl, "rewards_dropped": row.drop_reward,
            "context": ctx}


@dataclass
class Settings:
    """Where the reference runs are and how every row is trained and evaluated."""

    seeds: tuple = (0, 1, 2)
    data: str = "results/01_pag_toy"              # the reference PAG build (its validation tasks are the held-out)
    sft_recipe: str = "recipes/toy/sft.yaml"
    pag_rl_recipe: str = "recipes/toy/pag_rl.yaml"
    mt_grpo_recipe: str = "recipes/toy/mt_grpo.yaml"
    sft_dir: str = "results/02_sft"               # existing runs a stage may equal (reused, not retrained)
    pag_rl_dir: str = "results/03_pag_rl"
    mt_grpo_dir: str = "results/04_mt_grpo"
    sft_overrides: dict = field(default_factory=dict)
    rl_overrides: dict = field(default_factory=dict)  # e.g. {"iterations": 12}: every RL row, the reference too
    benchmarks: dict = field(default_factory=lambda: {"synthetic": {"tasks": "results/01_pag_toy", "limit": 40},
                                                      "bfcl": {"bfcl": "all", "limit": 3}})
    tool_docs: str = "minimal"
    max_new_tokens: int = 96
    out_dir: str = "results/07_ablations"

    def __post_init__(self):
        self.seeds = tuple(self.seeds)
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of integers, got {list(self.seeds)!r}")
        for name, b in self.benchmarks.items():
            if not isinstance(b, dict) or not ({"tasks", "bfcl"} & set(b)):
                raise ConfigError(f"benchmark {name!r} needs 'tasks' (a PAG directory) or 'bfcl' (categories)")


def resolve_rows(keys=None) -> list[Ablation]:
    """The rows asked for (``None``: all), reference first; an unknown key stops with the known ones."""
    keys = [r.key for r in ROWS] if keys is None else list(keys)
    unknown = [k for k in keys if k not in ROWS_BY_KEY]
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {unknown}; known: {', '.join(ROWS_BY_KEY)}")
    if REFERENCE not in keys:
        keys = [REFERENCE] + keys  # every delta is taken against it
    return [ROWS_BY_KEY[k] for k in dict.fromkeys(keys)]


def same_training(card: dict | None, other: dict | None, ignore=()) -> bool:
    """Two training cards describe the same training: equal inputs and equal configs outside ``ignore``.

    >>> a = {"config": {"lr": 1, "data": "x"}, "inputs": {"data": "h1"}}
    >>> same_training(a, {"config": {"lr": 1, "data": "y"}, "inputs": {"data": "h1"}}, ignore=("data",))
    True
    >>> same_training(a, {"config": {"lr": 2, "data": "x"}, "inputs": {"data": "h1"}}, ignore=("data",))
    False
    """
    if not isinstance(card, dict) or not isinstance(other, dict):
        return False

    def strip(c):
        return {k: v for k, v in (c.get("config") or {}).items() if k not in ignore}

    return strip(card) == strip(other) and (card.get("inputs") or {}) == (other.get("inputs") or {})


# ------------------------------------------------------------------ cell jobs (module level: spawned workers)


def pag_cell(config: dict, out_dir) -> dict:
    """Build one PAG variant (``build_pag``: the same config's build is returned as it is)."""
    from .pag_build import PAGConfig, build_pag
    from .runtime import read_fingerprint

    t0 = time.time()
    card = build_pag(PAGConfig(**config), repo_path(out_dir), progress=False)
    return {"kind": "pag", "dir": str(out_dir), "output": (read_fingerprint(repo_path(out_dir)) or {}).get("output"),
            "kept": card.get("kept"), "dropped": card.get("dropped"), "n_examples": card.get("n_examples"),
            "augmentation": card.get("augmentation"), "wall_s": round(time.time() - t0, 1)}


def sft_cell(recipe_path, overrides: dict, seed: int, run_dir) -> dict:
    """Train one SFT seed (its own directory: a stale one is replaced); evaluation is the eval stage's job."""
    from .sft import load_recipe, train_sft

    t0 = time.time()
    recipe = load_recipe(recipe_path, {**overrides, "seed": seed})
    run = train_sft(recipe, repo_path(run_dir), replace=True)
    return {"kind": "sft", "seed": seed, "final_dir": run["final_dir"], "global_step": run["global_step"],
            "loss_curve": [(h["step"], h["loss"]) for h in run["log_history"] if "loss" in h],
            "train_runtime_s": round(run["train_runtime_s"], 1), "wall_s": round(time.time() - t0, 1)}


def rl_cell(recipe_path, overrides: dict, seed: int, run_dir) -> dict:
    """Train one RL seed through :func:`parl_mt_lib.rl.rl_seed_cell` (the fingerprint goes into ``final/``)."""
    from .rl import rl_seed_cell

    t0 = time.time()
    m = rl_seed_cell(recipe_path, overrides, seed, repo_path(run_dir), progress=False)
    r = m["recipe"]
    return {"kind": "rl", "seed": seed, "method": m["method"], "final_dir": m["final_dir"],
            "iterations": m["iterations"], "reward_first20": m["reward_first20"], "reward_last20": m["reward_last20"],
            "cost": m["cost"], "episodes": r["iterations"] * r["group_size"] * r["tasks_per_iteration"],
            "wall_s": round(time.time() - t0, 1)}


def eval_cell(policy: str, context: str, seed: int, benchmark: str, bench: dict, exclude_ids: list,
              tool_docs: str, max_new_tokens: int, results_dir) -> dict:
    """One evaluation (:func:`parl_mt_lib.compare.compare_cell`) plus what the table needs per task: the verdict,
    steps, and prompt / generated tokens summed over the episode's steps."""
    from .compare import compare_cell
    from .runtime import read_jsonl

    t0 = time.time()
    r = compare_cell("ablation", seed, benchmark, {"policy": policy, "context": context}, bench, exclude_ids,
                     tool_docs, max_new_tokens, repo_path(results_dir))
    tasks = {}
    for e in read_jsonl(repo_path(results_dir) / "entries.jsonl"):
        if e.get("seed") == 0:
            tasks[e["id"]] = {"valid": bool(e["valid"]), "steps": e.get("n_steps", 0),
                              "prompt_tokens": sum(t or 0 for t in e.get("prompt_tokens") or []),
                              "generated_tokens": sum(t or 0 for t in e.get("completion_tokens") or [])}
    return {"kind": "eval", "seed": seed, "benchmark": benchmark, "context": context, "accuracy": r["accuracy"],
            "correct": r["correct"], "total": r["total"], "tasks": tasks, "wall_s": round(time.time() - t0, 1)}


# ------------------------------------------------------------------ costs and the budget


def measured_costs(out_dir=None, defaults: dict | None = None) -> dict:
    """Seconds per unit of each cell kind: ``defaults`` (:data:`DEFAULT_COSTS`), replaced by the median rate of
    the cells an earlier run recorded in ``out_dir/cells.json`` (their ``wall_s``), where there are any: overall,
    per RL row (``rl/<row>/seedN``) and per benchmark."""
    import copy
    import statistics

    costs = copy.deepcopy(DEFAULT_COSTS if defaults is None else defaults)
    path = repo_path(out_dir) / "cells.json" if out_dir is not None else None
    if path is None or not path.exists():
        return costs
    try:
        cells = {k: c for k, c in json.loads(path.read_text()).items() if isinstance(c, dict) and c.get("wall_s")}
    except json.JSONDecodeError:
        return costs

    def rates(kind, unit, overhead, group=None):
        out: dict = {}
        for k, c in cells.items():
            if c.get("kind") == kind and c.get(unit):
                g = group(k, c) if group else None
                out.setdefault(g, []).append(max((c["wall_s"] - costs[overhead]) / c[unit], 0.0))
        return {g: round(statistics.median(v), 4) for g, v in out.items()}

    pag = [c["wall_s"] for c in cells.values() if c.get("kind") == "pag"]
    if pag:
        costs["pag_s"] = statistics.median(pag)
    for kind, unit, key in (("sft", "global_step", "sft_s_per_step"), ("rl", "episodes", "rl_s_per_episode"),
                            ("eval", "total", "eval_s_per_task")):
        r = rates(kind, unit, key.split("_s_per")[0] + "_overhead_s")
        if None in r:
            costs[key] = r[None]
    costs["rl_s_per_episode_by_row"].update(rates("rl", "episodes", "rl_overhead_s", lambda k, c: k.split("/")[1]))
    costs["eval_s_per_task_by_benchmark"].update(
        rates("eval", "total", "eval_overhead_s", lambda k, c: c.get("benchmark")))
    return costs


def job_cost(job: dict, costs: dict) -> float:
    """Estimated seconds of one pending job (``{"kind", sizes, "row" / "benchmark" for RL / eval}``) under
    ``costs`` (a row's or benchmark's own rate where ``costs`` has one).

    >>> job_cost({"kind": "sft", "steps": 100}, {**DEFAULT_COSTS, "sft_s_per_step": 0.1, "sft_overhead_s": 5})
    15.0
    >>> job_cost({"kind": "eval", "tasks": 10, "benchmark": "bfcl"}, DEFAULT_COSTS)
    3.3
    """
    k = job["kind"]
    if k == "pag":
        return costs["pag_s"]
    if k == "sft":
        return costs["sft_overhead_s"] + costs["sft_s_per_step"] * job["steps"]
    if k == "rl":
        rate = (costs.get("rl_s_per_episode_by_row") or {}).get(job.get("row"), costs["rl_s_per_episode"])
        return costs["rl_overhead_s"] + rate * job["episodes"]
    if k == "eval":
        rate = (costs.get("eval_s_per_task_by_benchmark") or {}).get(job.get("benchmark"), costs["eval_s_per_task"])
        return round(costs["eval_overhead_s"] + rate * job["tasks"], 4)
    raise ConfigError(f"unknown job kind {k!r}")


def estimate_wall(jobs: dict, workers: int) -> float:
    """Wall-clock of running ``jobs`` (``{job_id: seconds}``) stage by stage on ``workers`` side by side: per
    stage (the job id's part before ``|``, else before the first ``/``) the larger of total / workers and the
    longest job."""
    by_stage: dict = {}
    for jid, s in jobs.items():
        by_stage.setdefault(jid.split("|")[0] if "|" in jid else jid.split("/")[0], []).append(s)
    return sum(max(sum(v) / max(workers, 1), max(v)) for v in by_stage.values())


def select_rows(row_jobs: dict, budget_s: float | None, workers: int = 2, priority: dict | None = None):
    """Keep rows while the estimated wall-clock of their pending jobs fits ``budget_s``: drop whole rows (all their
    seeds and benchmarks), highest ``priority`` number first (default: the order of :data:`ROWS`), never the
    reference and never single seeds. ``row_jobs`` maps a row to ``{job_id: seconds}`` (a job shared by rows,
    such as the reference's checkpoints, counts once). Returns ``(kept rows, [{"row", "saved_s", "reason"}])``."""
    prio = priority or {r.key: r.priority for r in ROWS}
    kept = list(row_jobs)

    def total(rows):
        jobs = {}
        for r in rows:
            jobs.update(row_jobs[r])
        return estimate_wall(jobs, workers)

    dropped = []
    if budget_s is None:
        return kept, dropped
    order = sorted((r for r in kept if r != REFERENCE), key=lambda r: -prio.get(r, 99))
    for r in order:
        now = total(kept)
        if now <= budget_s:
            break
        rest = [k for k in kept if k != r]
        saved = now - total(rest)
        if saved <= 0:  # a row that costs nothing here (its cells are reused or shared) stays
            continue
        dropped.append({"row": r, "saved_s": round(saved, 1),
                        "reason": f"estimate {now:.0f} s > budget {budget_s:.0f} s"})
        kept = rest
    return kept, dropped


# ------------------------------------------------------------------ the plan


def _rl_recipe_path(s: Settings, method: str) -> str:
    return s.pag_rl_recipe if method == "pag_rl" else s.mt_grpo_recipe


def _existing(path) -> dict | None:
    """The card of a finished checkpoint directory (``final/`` with its weights and ``fingerprint.json``)."""
    from .runtime import read_fingerprint

    p = repo_path(path)
    return read_fingerprint(p) if (p / "config.json").exists() else None


def _current(path, card: dict) -> bool:
    found = _existing(path)
    return found is not None and found.get("fingerprint") == card.get("fingerprint")


class Plan:
    """Every stage of every row: a reused checkpoint, or a grid cell. A stage's fingerprint needs its inputs' (a
    checkpoint is known by the hash of its weights), so a stage whose input is still to be trained stays
    *unresolved* (``card`` None: pending, fingerprint unknown) until :meth:`resolve` runs again after that stage."""

    def __init__(self, settings: Settings, rows: list[Ablation], pag_dirs: dict):
        self.s, self.rows, self.pag_dirs = settings, rows, pag_dirs
        self.out = Path(settings.out_dir)       # as given (repo-relative by default): what cards and kwargs hold
        self.root = repo_path(settings.out_dir)  # where files are read and written
        self.resolve()

    def resolve(self) -> None:
        from .runtime import input_fingerprint

        self.sft: dict = {}     # (row, seed) -> {"path", "card", "source", "cell": kwargs | None, "steps"}
        self.rl: dict = {}      # (row, seed) -> the same, "episodes" instead of "steps"
        self.policy: dict = {}  # (row, seed) -> {"path", "fp" (None: not trained yet), "source"}
        for row in self.rows:
            for seed in self.s.seeds:
                sft = self.sft[row.key, seed] = self._sft(row, seed)
                last = self.rl[row.key, seed] = self._rl(row, seed, sft) if row.rl else sft
                ready = last["cell"] is None or (last["card"] is not None and _current(last["path"], last["card"]))
                self.policy[row.key, seed] = {"path": last["path"], "source": last["source"],
                                              "fp": input_fingerprint(repo_path(last["path"])) if ready else None}

    def _sft(self, row: Ablation, seed: int) -> dict:
        from .sft import load_recipe, sft_fingerprint

        s = self.s
        data = self.pag_dirs.get(row.key) or s.data
        recipe = load_recipe(s.sft_recipe, {**s.sft_overrides, "data": data, "view": row.sft_view, "seed": seed})
        card = sft_fingerprint(recipe)
        existing = f"{s.sft_dir}/{row.sft_view}/seed{seed}/final"
        if same_training(_existing(existing), card, SFT_SAME):
            return {"path": existing, "card": card, "source": f"reused {s.sft_dir}/{row.sft_view}", "cell": None,
                    "steps": recipe.max_steps}
        # reference data: one directory per view (rows share it); a PAG variant: the row's own
        run_dir = self.out / "sft" / (row.key if row.pag else row.sft_view) / f"seed{seed}"
        return {"path": str(run_dir / "final"), "card": card, "source": f"trained here (sft/{run_dir.parent.name})",
                "cell": {"recipe_path": s.sft_recipe, "overrides": {**s.sft_overrides, "data": data,
                                                                    "view": row.sft_view},
                         "seed": seed, "run_dir": str(run_dir)},
                "steps": recipe.max_steps}

    def _rl(self, row: Ablation, seed: int, sft: dict) -> dict:
        from .rl import load_rl_recipe, rl_fingerprint

        s = self.s
        rp = _rl_recipe_path(s, row.rl)
        base = load_rl_recipe(rp, {**s.rl_overrides, "seed": seed})
        overrides = {**s.rl_overrides, "init": sft["path"], "data": self.pag_dirs.get(row.key) or s.data,
                     "eval_tasks": 0}  # held-out play is the eval stage's job
        if row.drop_reward:
            rewards = {k: v for k, v in base.rewards.items() if k != row.drop_reward}
            if rewards == base.rewards:
                raise ConfigError(f"row {row.key}: the recipe {rp} has no {row.drop_reward!r} reward to drop")
            overrides["rewards"] = rewards
        recipe = load_rl_recipe(rp, {**overrides, "seed": seed})
        # known once the starting checkpoint exists (its card then names its weights)
        init_ready = sft["cell"] is None or _current(sft["path"], sft["card"])
        card = rl_fingerprint(recipe) if init_ready else None
        if card is not None:
            for d in (s.pag_rl_dir, s.mt_grpo_dir):
                existing = f"{d}/seed{seed}/final"
                if same_training(_existing(existing), card, RL_SAME):
                    return {"path": existing, "card": card, "source": f"reused {d}", "cell": None,
                            "iterations": recipe.iterations}
        plain_ref = not row.pag and not row.drop_reward and row.sft_view == "progress" and row.rl == "pag_rl"
        run_dir = self.out / "rl" / (REFERENCE if plain_ref else row.key) / f"seed{seed}"
        return {"path": str(run_dir / "final"), "card": card, "source": f"trained here (rl/{run_dir.parent.name})",
                "cell": {"recipe_path": rp, "overrides": overrides, "seed": seed, "run_dir": str(run_dir)},
                "episodes": recipe.iterations * recipe.group_size * recipe.tasks_per_iteration,
                "iterations": recipe.iterations}

    # eval -----------------------------------------------------------------------------------------
    def _bench_inputs(self) -> tuple[dict, dict]:
        from importlib import metadata

        from .compare import holdout_train_ids
        from .runtime import fingerprint, input_fingerprint

        task_fp, excludes = {}, {}
        b_all = self.s.benchmarks
        holdout = sorted({i for b in b_all.values() if "tasks" in b for i in holdout_train_ids(b["tasks"])})
        for name, b in b_all.items():
            if "tasks" in b:
                task_fp[name], excludes[name] = input_fingerprint(repo_path(b["tasks"])), []
            else:
                task_fp[name] = fingerprint({"bfcl-eval": metadata.version("bfcl-eval")})
                excludes[name] = sorted(set(holdout) | {i for d in b.get("exclude_from", [])
                                                        for i in holdout_train_ids(d)})
        return task_fp, excludes

    def eval_jobs(self) -> dict:
        """``{cell_key: {"kwargs", "fingerprint" (None until the checkpoint exists), "tasks"}}`` of every
        evaluation; rows that play the same checkpoint in the same context share one (keyed by the first row that
        needs it). Also sets ``eval_key[(row, benchmark, seed)]``."""
        from .compare import prompt_fingerprints
        from .runtime import artifact_card, fingerprint

        s = self.s
        task_fp, excludes = self._bench_inputs()
        self._prompt_fp = getattr(self, "_prompt_fp", None) or {}

        def prompt_fp(b):  # eval_cell prompts plain; once per benchmark, when a cell is ready (it loads the tasks)
            if b not in self._prompt_fp:
                self._prompt_fp[b] = prompt_fingerprints({b: s.benchmarks[b]}, excludes, ["plain"],
                                                         s.tool_docs)[b, "plain"]
            return self._prompt_fp[b]
        jobs, by_id = {}, {}
        self.eval_key = {}
        for row in self.rows:
            ctx = row_stages(row)["context"]
            for seed in s.seeds:
                pol = self.policy[row.key, seed]
                for b, bench in s.benchmarks.items():
                    config = {"context": ctx, "benchmark": bench, "tool_docs": s.tool_docs,
                              "max_new_tokens": s.max_new_tokens, "exclude_ids": fingerprint(excludes[b])}
                    fp = None if pol["fp"] is None else artifact_card(
                        {**config, "agent_prompt": prompt_fp(b)}, {"policy": pol["fp"], "tasks": task_fp[b]}
                    )["fingerprint"]
                    ident = fp or (pol["path"], ctx, b, seed)  # not trained yet: known by path and context
                    if ident not in by_id:
                        key = by_id[ident] = f"eval/{row.key}/{b}/seed{seed}"
                        n = bench.get("limit") or (200 if "bfcl" in bench else 50)
                        jobs[key] = {"kwargs": {"policy": pol["path"], "context": ctx, "seed": seed, "benchmark": b,
                                                "bench": bench, "exclude_ids": excludes[b], "tool_docs": s.tool_docs,
                                                "max_new_tokens": s.max_new_tokens,
                                                "results_dir": str(self.out / key)},
                                     "fingerprint": fp, "tasks": n * (4 if "bfcl" in bench else 1)}
                    self.eval_key[row.key, b, seed] = by_id[ident]
        return jobs

    def _stage_jobs(self, stage: str, rows=None) -> list[tuple[str, dict, str | None]]:
        """``[(cell key, kwargs, fingerprint or None)]`` of one stage's cells for ``rows`` (default all)."""
        keep = {r.key for r in self.rows} if rows is None else set(rows)
        if stage == "eval":
            jobs = self.eval_jobs()
            wanted = {k for (r, _, _), k in self.eval_key.items() if r in keep}
            return [(k, j["kwargs"], j["fingerprint"]) for k, j in jobs.items() if k in wanted]
        table = self.sft if stage == "sft" else self.rl
        out, seen = [], set()
        for (row, seed), st in table.items():
            if row in keep and st["cell"] is not None:
                key = f"{stage}/{Path(st['cell']['run_dir']).parent.name}/seed{seed}"
                if key not in seen:
                    seen.add(key)
                    out.append((key, st["cell"], st["card"]["fingerprint"] if st["card"] else None))
        return out

    def cells(self, stage: str, rows=None, ready_only: bool = False) -> list:
        """The :class:`~parl_mt_lib.grid.Cell` list of one stage (sft, rl, eval); a cell whose inputs are not
        trained yet is an error here (run the stages in order, :func:`run`), or left out with ``ready_only``."""
        from .grid import Cell

        fn = {"sft": sft_cell, "rl": rl_cell, "eval": eval_cell}[stage]
        jobs = self._stage_jobs(stage, rows)
        unresolved = [k for k, _, fp in jobs if fp is None]
        if unresolved and not ready_only:
            raise ConfigError(f"ablation cells {unresolved[:3]} wait for an earlier stage; run the stages in order")
        return [Cell(k, fn, kw, fp) for k, kw, fp in jobs if fp is not None]

    def row_jobs(self, costs: dict) -> dict:
        """Per row, ``{job_id: estimated seconds}`` of the cells it needs that have no result recorded under their
        fingerprint (a cell whose inputs are still to be trained is pending by construction)."""
        recorded = {}
        path = self.root / "cells.json"
        if path.exists():
            try:
                recorded = json.loads(path.read_text())
            except json.JSONDecodeError:
                recorded = {}

        def pending(key, fp):
            return fp is None or (recorded.get(key) or {}).get("fingerprint") != fp

        evals = self.eval_jobs()
        out = {}
        for row in self.rows:  # job ids carry the stage run() runs them in: train (SFT + RL that can start), rl, eval
            js = {}
            for key, kw, fp in self._stage_jobs("sft", [row.key]):
                if pending(key, fp):
                    js[f"train|{key}"] = job_cost({"kind": "sft", "steps": self.sft[row.key, kw["seed"]]["steps"]},
                                                  costs)
            for key, kw, fp in self._stage_jobs("rl", [row.key]):
                if pending(key, fp):
                    js[f"{'train' if fp else 'rl'}|{key}"] = job_cost(
                        {"kind": "rl", "episodes": self.rl[row.key, kw["seed"]]["episodes"],
                         "row": key.split("/")[1]}, costs)
            for key, kw, fp in self._stage_jobs("eval", [row.key]):
                if pending(key, fp):
                    js[f"eval|{key}"] = job_cost({"kind": "eval", "tasks": evals[key]["tasks"],
                                                  "benchmark": kw["benchmark"]}, costs)
            out[row.key] = js
        return out

    def sources(self) -> dict:
        """Per row, where its checkpoints come from (reused run or trained here)."""
        out = {}
        for row in self.rows:
            out[row.key] = {"checkpoint": "; ".join(sorted({self.policy[row.key, s]["source"] for s in self.s.seeds})),
                            "sft": "; ".join(sorted({self.sft[row.key, s]["source"] for s in self.s.seeds}))}
        return out


# ------------------------------------------------------------------ stages


def pag_variants(settings: Settings, rows: list[Ablation]) -> dict:
    """``{row: (PAGConfig kwargs, out_dir)}`` for rows that change the PAG build: the reference build's own config
    (its ``card.json``) with the row's overrides."""
    card_path = repo_path(settings.data) / "card.json"
    out = {}
    for row in rows:
        if not row.pag:
            continue
        if not card_path.exists():
            raise ConfigError(f"no PAG build in {settings.data}; run notebooks/01_pag_synthesis.ipynb first")
        config = {**json.loads(card_path.read_text())["config"], **dict(row.pag)}
        out[row.key] = (config, str(Path(settings.out_dir) / "pag" / row.key))
    return out


def build_pag_variants(settings: Settings, rows: list[Ablation], *, workers=None, threads: int = 2,
                       progress: bool = True) -> dict:
    """Stage 1: the PAG variants through the grid. Returns ``{row: {"dir", "output", "same_as_reference", ...}}``."""
    from .grid import Cell, run_grid
    from .pag_build import PAGConfig, pag_fingerprint
    from .runtime import input_fingerprint

    variants = pag_variants(settings, rows)
    cells = [Cell(f"pag/{k}", pag_cell, {"config": cfg, "out_dir": d},
                  pag_fingerprint(PAGConfig(**cfg))["fingerprint"]) for k, (cfg, d) in variants.items()]
    if not cells:
        return {}
    res = run_grid(cells, repo_path(settings.out_dir), workers=workers, threads=threads, progress=progress,
                   desc="PAG variants")
    ref = input_fingerprint(repo_path(settings.data))
    return {k: {**res["cells"][f"pag/{k}"], "same_as_reference": res["cells"][f"pag/{k}"].get("output") == ref}
            for k in variants}


def plan(settings: Settings, rows: list[Ablation], pag: dict, *, budget_s: float | None = 600,
         workers: int | None = None, costs: dict | None = None) -> dict:
    """Resolve every stage, estimate the pending cells and apply the budget (:func:`select_rows`; ``workers``
    as :func:`parl_mt_lib.runtime.resolve_workers`: None = one per CPU core). Returns ``{"plan": Plan, "kept",
    "dropped", "estimate_s", "row_estimate_s", "costs", "budget_s", "workers"}``."""
    from .runtime import resolve_workers

    workers = resolve_workers(workers, 1 << 20)
    costs = costs or measured_costs(settings.out_dir)
    p = Plan(settings, rows, {k: v["dir"] for k, v in pag.items()})
    row_jobs = p.row_jobs(costs)
    kept, dropped = select_rows(row_jobs, budget_s, workers)
    jobs = {}
    for r in kept:
        jobs.update(row_jobs[r])
    return {"plan": p, "kept": kept, "dropped": dropped, "estimate_s": round(estimate_wall(jobs, workers), 1),
            "row_estimate_s": {r: round(estimate_wall(j, workers), 1) for r, j in row_jobs.items()},
            "costs": costs, "budget_s": budget_s, "workers": workers}


def run(planned: dict, pag: dict, *, workers=None, threads: int = 2, progress: bool = True) -> dict:
    """Stages 2-4 for the kept rows (SFT, RL, evaluation grids, in that order), then :func:`summarize`; writes
    ``ablations.json`` and ``ablations.csv`` into the settings' ``out_dir``."""
    from .grid import run_grid

    t0 = time.time()
    p: Plan = planned["plan"]
    kept = planned["kept"]
    ran, reused, walls = [], [], {}
    # train: every SFT cell and the RL cells whose starting checkpoint exists, side by side (longest first);
    # rl: the RL cells that start from this run's SFT; eval: everything evaluated
    for stage in ("train", "rl", "eval"):
        p.resolve()  # the previous stage's checkpoints now exist: their fingerprints are known
        if stage == "train":
            cells = p.cells("sft", kept) + p.cells("rl", kept, ready_only=True)
        else:
            cells = p.cells(stage, kept)
        if not cells:
            continue
        t = time.time()
        g = run_grid(cells, p.root, workers=workers, threads=threads, progress=progress, desc=f"ablations {stage}")
        ran += g["ran"]
        reused += [k for k in g["reused"] if k not in ran]  # not the train stage's RL cells seen again
        walls[stage] = round(time.time() - t, 1)

    recorded = json.loads((p.root / "cells.json").read_text())
    evals = {(r, b, s): recorded[k] for (r, b, s), k in p.eval_key.items() if r in kept}
    result = summarize(evals, kept, list(p.s.benchmarks), list(p.s.seeds))
    rows_info = []
    sources = p.sources()
    for row in p.rows:
        seed0 = p.s.seeds[0]
        info = {"row": row.key, "label": row.label, "removes": row.removes, **row_stages(row),
                "kept": row.key in kept, **sources[row.key], "sft_steps": p.sft[row.key, seed0].get("steps"),
                "rl_iterations": p.rl[row.key, seed0].get("iterations") if row.rl else None}
        if row.key in pag:
            info["pag_build"] = {k: pag[row.key].get(k) for k in ("dir", "kept", "dropped", "n_examples",
                                                                 "augmentation", "same_as_reference")}
        rows_info.append(info)
    s = p.s
    out = {"reference": REFERENCE, "rows": rows_info, **result, "benchmarks": s.benchmarks, "seeds": list(s.seeds),
           "settings": {k: v for k, v in asdict(s).items() if k not in ("benchmarks", "seeds")},
           "budget": {"budget_s": planned["budget_s"], "estimate_s": planned["estimate_s"],
                      "row_estimate_s": planned["row_estimate_s"], "costs": planned["costs"],
                      "workers": planned["workers"], "dropped_rows": planned["dropped"], "stage_wall_s": walls},
           "missing_benchmarks": missing_benchmarks(s.benchmarks), "ran_cells": ran, "reused_cells": reused,
           "provenance": provenance(seeds=list(s.seeds), wall_clock_s=round(time.time() - t0, 1),
                                    wall_clock_note="stages 2-4 of this invocation (finished cells are reused)")}
    atomic_write_json(p.root / "ablations.json", out)
    import pandas as pd

    pd.DataFrame(table_frame(out)).to_csv(p.root / "ablations.csv", index=False)
    return out


# ------------------------------------------------------------------ statistics (intervals: stats.py)


def summarize(evals: dict, rows: list[str], benchmarks: list[str], seeds: list[int], n_boot: int = N_BOOT) -> dict:
    """The ablation table from evaluation cells (``{(row, benchmark, seed): eval_cell result}``): per row and
    benchmark, task success over seeds (mean, 95% t-interval over seeds, Wilson over items with one seed),
    steps and tokens per task (mean over tasks, then seeds) and the paired difference to the reference (per-task
    success averaged over seeds; percentile bootstrap over tasks). Pure: a function of the cell results only.

    >>> cell = lambda v: {"accuracy": sum(v) / 2, "correct": sum(v), "total": 2,
    ...                   "tasks": {f"t{i}": {"valid": x, "steps": 2, "prompt_tokens": 10, "generated_tokens": 4}
    ...                             for i, x in enumerate(v)}}
    >>> ev = {("parl_mt", "syn", 0): cell([1, 0]), ("no_pag_rl", "syn", 0): cell([1, 1])}
    >>> t = summarize(ev, ["parl_mt", "no_pag_rl"], ["syn"], [0], n_boot=200)["table"]
    >>> t[1]["row"], t[1]["mean"], t[1]["delta"]["diff"], t[0]["delta"]
    ('no_pag_rl', 1.0, 0.5, None)
    """
    from .stats import paired_bootstrap, seed_interval, wilson

    table, missing = [], []
    per_task = {}
    for r in rows:
        for b in benchmarks:
            cells = [(s, evals.get((r, b, s))) for s in seeds]
            got = [(s, c) for s, c in cells if c is not None]
            missing += [f"{r}/{b}/seed{s}" for s, c in cells if c is None]
            if not got:
                continue
            scores: dict = {}
            for _, c in got:
                for tid, t in c["tasks"].items():
                    scores.setdefault(tid, []).append(float(t["valid"]))
            per_task[r, b] = {tid: sum(v) / len(v) for tid, v in scores.items()}
            accs = [c["accuracy"] for _, c in got]
            if len(accs) > 1:
                ci, kind = seed_interval(accs), "t over training seeds"
            else:
                ci, kind = wilson(int(got[0][1]["correct"]), int(got[0][1]["total"])), "Wilson over items (one seed)"

            def per(key):
                vals = [sum(t[key] for t in c["tasks"].values()) / max(len(c["tasks"]), 1) for _, c in got]
                return sum(vals) / len(vals)

            table.append({"row": r, "benchmark": b, "n_seeds": len(got), "n_tasks": int(got[0][1]["total"]),
                          "mean": sum(accs) / len(accs), "ci95": ci, "interval": kind,
                          "per_seed": {str(s): c["accuracy"] for s, c in got},
                          "steps_per_task": per("steps"), "prompt_tokens_per_task": per("prompt_tokens"),
                          "generated_tokens_per_task": per("generated_tokens"), "delta": None})
    for t in table:
        ref = per_task.get((REFERENCE, t["benchmark"]))
        if t["row"] != REFERENCE and ref is not None:
            t["delta"] = paired_bootstrap(per_task[t["row"], t["benchmark"]], ref, n_boot=n_boot, seed=0)
    return {"table": table, "missing_cells": missing, "n_boot": n_boot}


def table_frame(result: dict) -> list[dict]:
    """Flat rows (one per row x benchmark) of an ``ablations.json`` for CSV / pandas."""
    labels = {r["row"]: r["label"] for r in result.get("rows", [])}
    out = []
    for t in result.get("table", []):
        d = t.get("delta") or {}
        ci, dci = t.get("ci95") or [None, None], d.get("ci95") or [None, None]
        out.append({"row": t["row"], "label": labels.get(t["row"], t["row"]), "benchmark": t["benchmark"],
                    "n_seeds": t["n_seeds"], "n_tasks": t["n_tasks"], "success": t["mean"], "ci95_low": ci[0],
                    "ci95_high": ci[1], "interval": t["interval"], "steps_per_task": t["steps_per_task"],
                    "prompt_tokens_per_task": t["prompt_tokens_per_task"],
                    "generated_tokens_per_task": t["generated_tokens_per_task"], "delta_vs_parl_mt": d.get("diff"),
                    "delta_ci95_low": dci[0], "delta_ci95_high": dci[1]})
    return out


def missing_benchmarks(benchmarks: dict) -> dict:
    """τ-bench domains not among ``benchmarks``, with why (shown in 07 and in ``ablations.json``)."""
    out = {}
    for name in ("tau2_airline", "tau2_retail"):
        if name in benchmarks:
            continue
        try:
            from .envs import get_benchmark, tau2  # noqa: F401  (importing registers the τ-bench benchmarks)

            get_benchmark(name)
            out[name] = ("registered, but not evaluated: 07's evaluation cells (compare.compare_cell) run PAG tasks "
                         "and BFCL only so far")
        except (ImportError, ConfigError) as err:
            out[name] = f"not available here (τ-bench not installed or not registered: {str(err).splitlines()[0]})"
    return out
