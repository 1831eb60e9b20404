"""One runner for every seeds x variants grid: the SFT cells (02), the RL seeds (03, 04), the comparison (06).

A :class:`Cell` is a key, an importable job function, its keyword arguments and the fingerprint of everything
its result depends on (its config and the fingerprints of its inputs, :func:`parl_mt_lib.runtime.artifact_card`).
:func:`run_grid` reuses a finished cell only when the fingerprint recorded with its result matches; every other
cell runs (through :func:`parl_mt_lib.runtime.run_jobs`: ``workers`` side by side in spawned processes, or in
this process), and each result is saved to ``<out>/cells.json`` with its fingerprint as soon as it finishes, so
a kill loses only the unfinished cells. A cell that runs again because its fingerprint changed may replace its
own outputs (its job passes ``replace=True`` to ``train_sft`` / ``evaluate`` / :func:`~.runtime.claim_dir`);
results of cells not in this grid stay in ``cells.json`` untouched.

Example (``dict`` stands in for a job function: it returns its keyword arguments):
    >>> import tempfile
    >>> from parl_mt_lib.runtime import fingerprint
    >>> out = tempfile.mkdtemp()
    >>> cells = [Cell(f"seed{s}", dict, {"seed": s}, fingerprint({"seed": s})) for s in (0, 1)]
    >>> run_grid(cells, out, progress=False)["ran"]
    ['seed0', 'seed1']
    >>> again = run_grid(cells + [Cell("seed2", dict, {"seed": 2}, fingerprint({"seed": 2}))], out, progress=False)
    >>> again["reused"], again["ran"], again["cells"]["seed2"]["seed"]
    (['seed0', 'seed1'], ['seed2'], 2)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .runtime import ConfigError, atomic_write_json, resolve_workers, run_jobs


@dataclass
class Cell:
    key: str                 # unique within the grid, e.g. "sft-progress-seed0"
    fn: Callable             # a module-level function (spawned workers import it); returns a JSON-able dict
    kwargs: dict = field(default_factory=dict)
    fingerprint: str = ""    # of the cell's config + its inputs' fingerprints


def run_grid(cells: list[Cell], out_dir, *, workers: int | None = 1, threads: int = 1, progress: bool = True,
             desc: str = "grid", record: str = "cells.json") -> dict:
    """Run the cells whose recorded result is missing or has another fingerprint; return
    ``{"cells": {key: result (with its "fingerprint")}, "ran": [keys], "reused": [keys], "workers": n,
    "threads_per_worker": t}``, cells in the given order. ``workers=None``: one per CPU core (1 on a GPU);
    each worker gets ``threads // workers`` torch threads."""
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"grid cells need unique keys, got {keys}")
    if any(not c.fingerprint for c in cells):
        raise ConfigError("every grid cell needs a fingerprint (nothing is reused without one)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / record
    try:
        recorded = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        recorded = {}
    reused = [c.key for c in cells
              if isinstance(recorded.get(c.key), dict) and recorded[c.key].get("fingerprint") == c.fingerprint
              and _outputs_present(recorded[c.key])]
    pending = [c for c in cells if c.key not in reused]
    n = resolve_workers(workers, len(pending))
    per_worker = max(1, threads // n)

    def save(i, result):
        cell = pending[i]
        if not isinstance(result, dict):
            raise TypeError(f"grid cell {cell.key}: its job returned {type(result).__name__}, not a dict")
        recorded[cell.key] = {**result, "fingerprint": cell.fingerprint}
        atomic_write_json(path, recorded)

    if pending:
        run_jobs(_call, [{"fn": c.fn, "kwargs": c.kwargs} for c in pending], workers=n, threads=per_worker,
                 on_done=save, desc=desc, progress=progress)
    return {"cells": {k: recorded[k] for k in keys}, "ran": [c.key for c in pending], "reused": reused,
            "workers": n, "threads_per_worker": per_worker if n > 1 else None}


OUTPUT_KEYS = ("final_dir", "results_dir")  # result keys naming a cell's output directory


def _outputs_present(result: dict) -> bool:
    """A recorded cell is reusable only while the directories it names still exist (someone may have deleted
    one to make it run again)."""
    from .runtime import repo_path

    return all(Path(repo_path(result[k])).exists() for k in OUTPUT_KEYS if result.get(k))


def _call(fn, kwargs):
    return fn(**kwargs)
