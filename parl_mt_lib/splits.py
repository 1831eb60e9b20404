"""Train/test hygiene: synthetic tasks never overlap BFCL evaluation entries; BFCL hold-out splits.

Overlap is checked three ways: entry ids, normalised user requests, and gold call sequences
(keyword-normalised, whole entry). :func:`assert_disjoint` raises if any is shared.

Example:
    >>> split = holdout_split(n_train=200, seed=0)
    >>> len(split["train_ids"]), len(split["eval_ids"]), bool(set(split["train_ids"]) & set(split["eval_ids"]))
    (200, 600, False)
"""
from __future__ import annotations

import functools
import random
import re

from .bfcl import CATEGORIES, load_entries


class OverlapError(AssertionError):
    """A training task overlaps an evaluation entry."""


def normalise_request(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _sequence(entry) -> tuple:
    return tuple(c.render() for t in entry.gold_calls for c in t)


@functools.lru_cache(maxsize=None)
def _eval_index(ids: tuple | None = None):
    entries = load_entries("all") if ids is None else [e for e in load_entries("all") if e.id in set(ids)]
    return ({e.id for e in entries},
            {normalise_request(m["content"]) for e in entries for t in e.turns for m in t},
            {_sequence(e) for e in entries})


def overlap_report(tasks, eval_ids=None) -> dict:
    """Counts of training tasks sharing an id, a normalised request or a gold sequence with evaluation."""
    ids, requests, seqs = _eval_index(None if eval_ids is None else tuple(sorted(eval_ids)))
    shared_ids = [t.id for t in tasks if t.id in ids]
    shared_req = [t.id for t in tasks if any(normalise_request(m["content"]) in requests
                                             for turn in t.turns for m in turn)]
    shared_seq = [t.id for t in tasks if _sequence(t) in seqs]
    return {"ids": shared_ids, "requests": shared_req, "gold_sequences": shared_seq,
            "n_overlapping": len(set(shared_ids) | set(shared_req) | set(shared_seq))}


def assert_disjoint(tasks, eval_ids=None) -> dict:
    """Raise :class:`OverlapError` if any training task overlaps the evaluation entries; else the report."""
    rep = overlap_report(tasks, eval_ids)
    if rep["n_overlapping"]:
        raise OverlapError(f"{rep['n_overlapping']} training tasks overlap BFCL evaluation entries "
                           f"(ids {rep['ids'][:3]}, requests {rep['requests'][:3]}, sequences {rep['gold_sequences'][:3]})")
    return rep


def holdout_split(n_train: int = 200, seed: int = 0, categories=CATEGORIES) -> dict:
    """BFCL ids for training (stratified over categories, by *task*: an entry and its variants in the
    other categories share a task index, so all variants go to the same side) and the rest for evaluation."""
    n_tasks = 200
    per_task = len(categories)
    rng = random.Random(seed)
    k = -(-n_train // per_task)
    train_idx = sorted(rng.sample(range(n_tasks), k))
    train = [f"{c}_{i}" for i in train_idx for c in categories][:n_train]
    all_ids = [f"{c}_{i}" for c in categories for i in range(n_tasks)]
    held = set(train)
    split = {"train_ids": train, "eval_ids": [i for i in all_ids if i not in held], "seed": seed}
    assert not set(split["train_ids"]) & set(split["eval_ids"])
    return split
