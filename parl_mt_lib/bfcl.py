"""BFCL multi-turn data from the pinned ``bfcl-eval`` package (no copy of the data lives in this repo).

Example:
    >>> from parl_mt_lib.bfcl import load_entries
    >>> e = load_entries(["base"], limit=1)[0]
    >>> e.id, len(e.turns), e.gold_calls[0][0].render()
    ('multi_turn_base_0', 4, "cd(folder='document')")
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field

from .calls import Call, parse_gold
from .runtime import ConfigError, cache_dir

os.environ.setdefault("BFCL_PROJECT_ROOT", str(cache_dir() / "bfcl"))  # keep BFCL's scratch dirs out of site-packages

CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
BFCL_VERSION = "2025.9.18"
HOLDOUT_PROMPT = "I have updated some more functions you can choose from. What about now?"


@dataclass
class Entry:
    """One BFCL multi-turn entry, normalised.

    ``turns[i]`` is the list of user messages of turn ``i`` (empty for a miss_func hold-out turn;
    :meth:`turn_messages` fills in BFCL's hold-out prompt). ``gold[i]`` is BFCL's call strings,
    ``gold_calls[i]`` the same calls parsed with positional arguments mapped to keywords.
    """

    id: str
    category: str
    turns: list[list[dict]]
    initial_config: dict
    involved_classes: list[str]
    functions: list[dict]
    missed_functions: dict[int, list[dict]] = field(default_factory=dict)
    gold: list[list[str]] = field(default_factory=list)
    gold_calls: list[list[Call]] = field(default_factory=list)

    @property
    def long_context(self) -> bool:
        return "long_context" in self.category

    @property
    def benchmark(self) -> str:
        """The registered benchmark that plays and scores this task (:mod:`parl_mt_lib.envs`)."""
        return "synthetic" if self.category == "synthetic" else "bfcl"

    instructions = ""  # no benchmark text beyond BFCL's own system prompt

    def turn_messages(self, turn: int, style: str = "python") -> list[dict]:
        """User messages of a turn as BFCL's prompting loop sends them (hold-out docs included)."""
        if turn in self.missed_functions:
            docs = self.missed_functions[turn]
            content = HOLDOUT_PROMPT if style == "json" else f"{docs}\n{HOLDOUT_PROMPT}"
            return [{"role": "user", "content": content}]
        return [dict(m) for m in self.turns[turn]]

    def functions_at(self, turn: int) -> list[dict]:
        """Tool docs visible at a turn (miss_func docs appear from their turn on)."""
        extra = [d for t, docs in sorted(self.missed_functions.items()) if t <= turn for d in docs]
        return self.functions + extra


def resolve_categories(categories) -> list[str]:
    """Accept ``"all"``, short names (``base``) or full names; raise :class:`ConfigError` otherwise."""
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    if not categories:
        raise ConfigError(f"no category given; choose from {', '.join(CATEGORIES)} or 'all'")
    out = []
    for cat in categories:
        if cat == "all":
            out.extend(CATEGORIES)
            continue
        full = cat if cat.startswith("multi_turn_") else f"multi_turn_{cat}"
        if full not in CATEGORIES:
            raise ConfigError(f"unknown category {cat!r}; choose from {', '.join(CATEGORIES)} "
                              f"(or short names base, miss_func, miss_param, long_context, or 'all')")
        out.append(full)
    return list(dict.fromkeys(out))


CLASSES = ("GorillaFileSystem", "MathAPI", "MessageAPI", "TwitterAPI", "TicketAPI", "TradingBot", "TravelAPI",
           "VehicleControlAPI")


@functools.lru_cache(maxsize=None)
def class_docs(cls: str) -> tuple[dict, ...]:
    """The function docs of one multi-turn class, as BFCL ships them (raw, without language hints)."""
    from bfcl_eval.constants.eval_config import MULTI_TURN_FUNC_DOC_PATH
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    if cls not in CLASSES:
        raise ConfigError(f"unknown environment class {cls!r}; choose from {', '.join(CLASSES)}")
    text = (MULTI_TURN_FUNC_DOC_PATH / MULTI_TURN_FUNC_DOC_FILE_MAPPING[cls]).read_text()
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


@functools.lru_cache(maxsize=None)
def param_order() -> dict[str, list[str]]:
    """Function name -> parameter names in doc order, over all 8 multi-turn classes."""
    return {d["name"]: list(d["parameters"].get("properties", {})) for cls in CLASSES for d in class_docs(cls)}


@functools.lru_cache(maxsize=None)
def _load_category(category: str) -> tuple[Entry, ...]:
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    raw = load_dataset_entry(category)
    gold = {g["id"]: g["ground_truth"] for g in load_ground_truth_entry(category)}
    order = param_order()
    entries = []
    for r in raw:
        g = gold[r["id"]]
        entries.append(Entry(
            id=r["id"], category=category, turns=r["question"], initial_config=r["initial_config"],
            involved_classes=list(r["involved_classes"]), functions=r["function"],
            missed_functions={int(k): v for k, v in r.get("missed_function", {}).items()},
            gold=g, gold_calls=[[parse_gold(c, order) for c in turn] for turn in g]))
    return tuple(entries)


def load_entries(categories="all", limit: int | None = None, ids=None) -> list[Entry]:
    """Load entries of the given categories (``limit`` per category, in file order).

    ``ids`` restricts to those entry ids (unknown ids raise :class:`ConfigError`).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    out = []
    wanted = None if ids is None else set(ids)
    for cat in resolve_categories(categories):
        entries = list(_load_category(cat))
        if wanted is not None:
            entries = [e for e in entries if e.id in wanted]
        out.extend(entries[:limit])
    if wanted is not None:
        missing = wanted - {e.id for e in out}
        if missing:
            raise ConfigError(f"unknown entry ids {sorted(missing)[:5]}; ids look like multi_turn_base_0")
    return out


@functools.lru_cache(maxsize=None)
def entry_by_id(entry_id: str) -> Entry:
    cat = entry_id.rsplit("_", 1)[0]
    resolve_categories([cat])
    for e in _load_category(cat):
        if e.id == entry_id:
            return e
    raise ConfigError(f"unknown entry id {entry_id!r}")
