"""Train/test hygiene: training tasks never overlap BFCL evaluation entries; BFCL hold-out splits.

**The overlap rule** (:func:`task_overlap`, :func:`overlap_report`, :func:`assert_disjoint`). A training
task overlaps the evaluation entries when it shares with any one of them

1. its entry id;
2. a user request, after normalisation (lower case; every run of characters other than a-z, 0-9 becomes
   one space);
3. gold calls: its whole gold sequence, or any contiguous run of ``min_run`` of its gold calls (default
   :data:`MIN_RUN` = 2), occurs contiguously in an evaluation entry's gold sequence. A gold sequence is
   every turn's calls in order (turn boundaries and empty turns dropped). Calls compare by
   :func:`parl_mt_lib.calls.call_key`: keyword order never matters and numbers compare by value
   (``n=10`` is ``n=10.0``). So one shared call (``ls()``) is not an overlap, a shared pair is. Why 2:
   one call says nothing about a task (69 of the 240 default synthetic tasks share some single call
   with a BFCL entry), while two consecutive calls with the same arguments are already part of a BFCL
   solution; the default 240-task build (``PAGConfig()``) rejects no candidate for sharing a pair;
4. with ``states=True`` (the default): an initial state. For each stateful class the task uses, its
   state as loaded (the public attributes BFCL's state checker compares, less the ``long_context``
   flag; numbers by value, dicts and sets unordered) equals that class's loaded state in an evaluation
   entry. MathAPI is stateless (BFCL never loads a scenario into it), so it has no state to compare.
   Tasks taken from BFCL itself (``bfcl_holdout``) share states with other BFCL tasks by construction
   (BFCL reuses its configs); their checks pass ``states=False`` and rely on rules 1-3.

**Hold-out splits** (:func:`holdout_split`) put whole *groups* of BFCL task indices on the training side:
the category variants of a task index (``multi_turn_base_7``, ``multi_turn_miss_func_7``, ...) always
form one group, and task indices that would overlap under rules 2-3 join the same group. So a split of
any size keeps a task's variants together and its two sides are disjoint under the rule above.

Example:
    >>> split = holdout_split(n_train=200, seed=0)
    >>> split["n_train"], len(split["eval_ids"]), bool(set(split["train_ids"]) & set(split["eval_ids"]))
    (200, 600, False)
    >>> split = holdout_split(n_train=10, seed=0)  # rounded up to whole tasks (3 x 4 variants)
    >>> split["n_train_requested"], split["n_train"], split["n_train_tasks"]
    (10, 12, 3)
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path

from .bfcl import CATEGORIES, load_entries
from .calls import call_key
from .runtime import ConfigError

MIN_RUN = 2  # shortest shared run of gold calls that counts as an overlap (rule 3)


class OverlapError(AssertionError):
    """A training task overlaps an evaluation entry."""


def normalise_request(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _sequence(entry) -> tuple:
    """Keyword- and number-normalised gold calls of an entry, all turns in order."""
    return tuple(call_key(c) for turn in entry.gold_calls for c in turn)


def _runs(seq: tuple, k: int) -> set:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"min_run must be an integer >= 1, got {k!r}")
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def _requests(entry) -> set:
    return {normalise_request(m["content"]) for turn in entry.turns for m in turn}


# ------------------------------------------------------------------ initial states (rule 4)

def _canon(obj):
    """A hashable form of a loaded state that is equal whenever BFCL's ``!=`` finds no difference: numbers
    (bools included) by value, dicts and sets unordered, lists ordered, file-system nodes by name and content
    (their ``parent`` links are left out, as ``Directory.__eq__`` does). Hand-written: the file-system nodes
    are BFCL classes that no generic hashing library knows."""
    if isinstance(obj, (bool, int, float)):
        return ("n", float(obj))
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return ("d", tuple(sorted(((_canon(k), _canon(v)) for k, v in obj.items()), key=repr)))
    if isinstance(obj, (list, tuple)):
        return ("l", tuple(_canon(v) for v in obj))
    if isinstance(obj, (set, frozenset)):
        return ("s", tuple(sorted((_canon(v) for v in obj), key=repr)))
    if hasattr(obj, "contents") and hasattr(obj, "name"):  # gorilla_file_system.Directory
        return ("dir", obj.name, _canon(obj.contents))
    if hasattr(obj, "content") and hasattr(obj, "name"):  # gorilla_file_system.File
        return ("file", obj.name, obj.content)
    return (type(obj).__name__, repr(obj))


def state_key(cls: str, config: dict, long_context: bool = False) -> str | None:
    """Digest of the state BFCL loads for ``cls`` from ``config``; ``None`` for a stateless class (MathAPI).

    Example:
        >>> a = state_key("TicketAPI", {"ticket_queue": [{"id": 1, "title": "x"}]})
        >>> a == state_key("TicketAPI", {"ticket_queue": [{"title": "x", "id": 1.0}]}), state_key("MathAPI", {})
        (True, None)
    """
    import copy

    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

    if cls in STATELESS_CLASSES:
        return None
    inst = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)()
    inst._load_scenario(copy.deepcopy(config), long_context=long_context)
    public = {k: v for k, v in vars(inst).items() if not k.startswith("_") and k != "long_context"}
    return hashlib.sha256(repr(_canon(public)).encode()).hexdigest()


def task_states(task) -> dict[str, str]:
    """``{class: state_key}`` for every stateful class a task uses."""
    keys = {c: state_key(c, task.initial_config.get(c, {}), task.long_context) for c in task.involved_classes}
    return {c: k for c, k in keys.items() if k is not None}


# ------------------------------------------------------------------ the evaluation index

def _eval_entries(ids: tuple | None) -> list:
    entries = load_entries("all")
    wanted = None if ids is None else set(ids)
    return entries if wanted is None else [e for e in entries if e.id in wanted]


@functools.lru_cache(maxsize=8)
def _eval_index(ids: tuple | None, min_run: int) -> dict:
    entries = _eval_entries(ids)
    seqs = [_sequence(e) for e in entries]
    return {"ids": {e.id for e in entries}, "requests": set().union(*map(_requests, entries)),
            "sequences": set(seqs), "runs": set().union(*(_runs(s, min_run) for s in seqs))}


@functools.lru_cache(maxsize=8)
def _state_index(ids: tuple | None) -> dict[str, set]:
    out = defaultdict(set)
    for e in _eval_entries(ids):
        for cls, key in task_states(e).items():
            out[cls].add(key)
    return dict(out)


def _key(eval_ids) -> tuple | None:
    return None if eval_ids is None else tuple(sorted(eval_ids))


def task_overlap(task, eval_ids=None, *, min_run: int = MIN_RUN, states: bool = True) -> list[str]:
    """The rules (module docstring) by which ``task`` overlaps the evaluation entries (``eval_ids``; default:
    all four BFCL categories): a sublist of ``["ids", "requests", "gold_sequences", "gold_runs",
    "initial_states"]``, empty when the task is clean."""
    index = _eval_index(_key(eval_ids), min_run)
    seq = _sequence(task)
    hits = []
    if task.id in index["ids"]:
        hits.append("ids")
    if _requests(task) & index["requests"]:
        hits.append("requests")
    if seq in index["sequences"]:
        hits.append("gold_sequences")
    if _runs(seq, min_run) & index["runs"]:
        hits.append("gold_runs")
    if states:
        known = _state_index(_key(eval_ids))
        if any(k in known.get(c, ()) for c, k in task_states(task).items()):
            hits.append("initial_states")
    return hits


def overlap_report(tasks, eval_ids=None, *, min_run: int = MIN_RUN, states: bool = True) -> dict:
    """Per rule, the ids of training tasks that overlap the evaluation entries; ``n_overlapping`` in all."""
    rules = ["ids", "requests", "gold_sequences", "gold_runs"] + (["initial_states"] if states else [])
    rep = {r: [] for r in rules}
    for t in tasks:
        for r in task_overlap(t, eval_ids, min_run=min_run, states=states):
            rep[r].append(t.id)
    rep["n_overlapping"] = len({i for r in rules for i in rep[r]})
    rep["rule"] = {"min_run": min_run, "states": states}
    return rep


def assert_disjoint(tasks, eval_ids=None, *, min_run: int = MIN_RUN, states: bool = True) -> dict:
    """Raise :class:`OverlapError` if any training task overlaps the evaluation entries; else the report."""
    rep = overlap_report(tasks, eval_ids, min_run=min_run, states=states)
    if rep["n_overlapping"]:
        shown = {r: v[:3] for r, v in rep.items() if isinstance(v, list) and v}
        raise OverlapError(f"{rep['n_overlapping']} training tasks overlap BFCL evaluation entries: {shown}")
    return rep


# ------------------------------------------------------------------ BFCL hold-out splits

def _task_index(entry_id: str) -> int:
    return int(entry_id.rsplit("_", 1)[1])


@functools.lru_cache(maxsize=4)
def _task_groups(categories: tuple, min_run: int) -> tuple[tuple[int, ...], ...]:
    """Task indices that must stay on one side: a task's variants, and tasks overlapping by rules 2-3."""
    entries = load_entries(list(categories))
    parent = {i: i for i in sorted({_task_index(e.id) for e in entries})}

    def find(i):  # union-find, hand-written: six lines (networkx is no declared dependency)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    evidence = defaultdict(set)
    for e in entries:
        i, seq = _task_index(e.id), _sequence(e)
        for ev in [("seq", seq)] + [("run", r) for r in _runs(seq, min_run)] + [("req", q) for q in _requests(e)]:
            evidence[ev].add(i)
    for members in evidence.values():
        first, *rest = members
        for j in rest:
            parent[find(j)] = find(first)
    groups = defaultdict(list)
    for i in parent:
        groups[find(i)].append(i)
    return tuple(sorted(tuple(sorted(g)) for g in groups.values()))


def holdout_split(n_train: int = 200, seed: int = 0, categories=CATEGORIES, *, min_run: int = MIN_RUN) -> dict:
    """BFCL ids for training and the rest for evaluation, chosen by whole task groups (module docstring).

    ``n_train`` is rounded up to whole tasks: ``ceil(n_train / len(categories))`` task indices, each with all
    its variants. Groups are drawn in a seeded random order and taken when they fit in what is still
    wanted; only if no exact fit exists is the count exceeded (by whole groups). ``n_train`` in the result
    is the real number of training ids (``n_train_requested`` what was asked). The two sides are asserted
    disjoint under the overlap rule (ids, requests, gold sequences and runs of ``min_run`` calls).
    """
    categories = tuple(dict.fromkeys(categories))
    ids = [e.id for e in load_entries(list(categories))]
    top = (len({_task_index(i) for i in ids}) - 1) * len(categories)  # at least one task left to evaluate
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 < n_train <= top:
        raise ConfigError(f"n_train must be an integer in [1, {top}], got {n_train!r}")
    groups = list(_task_groups(categories, min_run))
    random.Random(seed).shuffle(groups)
    wanted = -(-n_train // len(categories))
    chosen: set[int] = set()
    for g in groups:  # exact fit where possible
        if len(chosen) + len(g) <= wanted:
            chosen.update(g)
    for g in groups:  # else whole groups past the count
        if len(chosen) >= wanted:
            break
        chosen.update(g)
    train = sorted((i for i in ids if _task_index(i) in chosen), key=lambda i: (_task_index(i), i))
    held = set(train)
    evals = [i for i in ids if i not in held]
    if not evals:
        raise ConfigError(f"n_train={n_train} leaves no evaluation entries (task groups are indivisible)")
    train_entries = [e for e in load_entries(list(categories)) if e.id in held]
    assert_disjoint(train_entries, evals, min_run=min_run, states=False)
    from collections import Counter

    classes = {_task_index(e.id): e.involved_classes for e in load_entries(list(categories))}
    tasks_eval = {_task_index(i) for i in evals}
    return {"train_ids": train, "eval_ids": evals, "seed": seed, "n_train_requested": n_train,
            "n_train": len(train), "n_train_tasks": len(chosen), "min_run": min_run,
            # groups are indivisible, and BFCL's own tasks share call runs within a class (the largest groups hold
            # dozens of VehicleControlAPI / TradingBot tasks): the class mix of each side depends on the seed
            "largest_groups": sorted((len(g) for g in groups), reverse=True)[:3],
            "classes": {"train": dict(Counter(c for t in chosen for c in classes[t])),
                        "eval": dict(Counter(c for t in tasks_eval for c in classes[t]))}}


def load_split(pag_dir) -> dict | None:
    """The hold-out split a PAG directory was built from (its ``split.json``, source ``bfcl_holdout``), or
    ``None`` for synthetic data."""
    path = Path(pag_dir) / "split.json"
    if not path.exists():
        return None
    split = json.loads(path.read_text())
    if not {"train_ids", "eval_ids"} <= set(split):
        raise ConfigError(f"{path} is not a hold-out split (needs train_ids and eval_ids)")
    return split


def excluded_ids(pag_dir) -> list[str]:
    """BFCL ids that evaluation must leave out after training on ``pag_dir``: its split's training ids
    (``[]`` for synthetic data). Pass them as ``evaluate(..., exclude_ids=...)``."""
    split = load_split(pag_dir)
    return [] if split is None else list(split["train_ids"])
