"""Synthetic multi-turn training tasks from environment interaction (PAG's first stage).

For each task: pick 1-2 of the 8 BFCL classes, take an initial state from the package's configs
(the ``initial_config`` states BFCL ships) and perturb it (file trees get renamed/extra files), then
sample call chains by rejection: a call is kept only if it executes without error and either
changes the public state or returns a non-empty result (read-only calls are capped). Calls are
grouped into turns; a teacher (``progress.TemplateTeacher`` by default) writes each turn's request.
BFCL-style twists by knob: a missing parameter (the request omits a value, gold turn ``[]``, the
next user turn supplies it) and a function offered only later (gold ``[]``, then a hold-out turn
with the docs). Every task is verified by the official checker on its own gold calls and
deduplicated; overlap with BFCL evaluation entries is asserted to be zero (``splits``).

Example:
    >>> tasks = synthesize(SynthConfig(n_tasks=3, seed=1))
    >>> len(tasks), tasks[0].id.startswith("synth_1_")
    (3, True)
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import random
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from .bfcl import CLASSES, Entry, class_docs, load_entries
from .calls import Call
from .env import format_result
from .runtime import ConfigError

NEW_NAMES = ["notes", "draft", "summary", "data", "plan", "budget", "log", "ideas", "backup", "archive2",
             "photos", "results", "todo", "review", "invoice", "memo", "letter", "chart"]
EXTS = [".txt", ".pdf", ".csv", ".md"]
WORDS = ["alpha", "quarterly", "project", "team", "final", "weekly", "client", "market", "update", "travel"]


@dataclass(frozen=True)
class SynthConfig:
    """Difficulty knobs of the synthetic curriculum (all recorded in the dataset card)."""

    n_tasks: int = 240
    classes: tuple = CLASSES            # environment classes to draw from
    max_classes: int = 2                # classes per task: 1..max_classes
    turns: tuple = (1, 3)               # user turns per task (before twists), inclusive range
    calls_per_turn: tuple = (1, 3)      # gold calls per turn, inclusive range
    read_only_share: float = 0.34       # cap on calls that change no state
    distractor_classes: int = 0         # extra classes whose docs are offered but never needed
    p_miss_param: float = 0.1           # twist: a required value missing, asked for in the next turn
    p_miss_func: float = 0.1            # twist: a function offered only in a later hold-out turn
    seed: int = 0
    attempts_per_call: int = 40

    def __post_init__(self):
        bad = [c for c in self.classes if c not in CLASSES]
        if bad:
            raise ConfigError(f"unknown classes {bad}; choose from {', '.join(CLASSES)}")
        if self.n_tasks < 1 or self.turns[0] < 1 or self.calls_per_turn[0] < 1:
            raise ConfigError("n_tasks, turns and calls_per_turn must be >= 1")


def _docs_with_hint(cls: str) -> list[dict]:
    """Docs as BFCL's loader presents them (with its Python-syntax hint), so prompts match evaluation."""
    from bfcl_eval.utils import _func_doc_language_specific_pre_processing

    return _func_doc_language_specific_pre_processing(copy.deepcopy(list(class_docs(cls))), "multi_turn_base")


def _config_pool() -> dict[str, list[dict]]:
    """Initial states per class, as shipped in the package (deduplicated)."""
    pool: dict[str, dict[str, dict]] = {c: {} for c in CLASSES}
    for e in load_entries("base"):
        for cls, cfg in e.initial_config.items():
            if cls in pool:
                pool[cls][json.dumps(cfg, sort_keys=True)] = cfg
    return {c: list(v.values()) or [{}] for c, v in pool.items()}


def _perturb_tree(node: dict, rng: random.Random) -> None:
    """Rename some files and add new ones in a GorillaFileSystem scenario tree (in place)."""
    contents = node.get("contents", {})
    for name in list(contents):
        child = contents[name]
        if child.get("type") == "file" and rng.random() < 0.3:
            new = f"{rng.choice(NEW_NAMES)}_{rng.randint(1, 99)}{rng.choice(EXTS)}"
            contents[new] = contents.pop(name)
        elif child.get("type") == "directory":
            _perturb_tree(child, rng)
    if rng.random() < 0.5:
        name = f"{rng.choice(NEW_NAMES)}{rng.choice(EXTS)}"
        contents.setdefault(name, {"type": "file", "content": f"{rng.choice(WORDS)} {rng.choice(WORDS)} "
                                                               f"{rng.randint(1, 9999)}"})


def _instance(cls: str, config: dict):
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

    inst = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)()
    if cls not in STATELESS_CLASSES:
        inst._load_scenario(copy.deepcopy(config), long_context=False)
    return inst


def _public(inst) -> dict:
    return {k: v for k, v in vars(inst).items() if not k.startswith("_")}


def _values(obj, key=None, out=None):
    """(key, leaf) pairs of a nested state, for argument pools."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str):
                out.append((key, k))
            _values(v, k if isinstance(k, str) else key, out)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _values(v, key, out)
    elif isinstance(obj, (str, int, float)) and not isinstance(obj, bool):
        out.append((key, obj))
    elif hasattr(obj, "contents") and hasattr(obj, "name"):  # GorillaFileSystem Directory
        _values(getattr(obj, "contents"), key, out)
    return out


class _Sampler:
    """Rejection-samples calls that execute cleanly on a copy of the current instance."""

    def __init__(self, cls: str, inst, rng: random.Random, attempts: int):
        self.cls, self.inst, self.rng, self.attempts = cls, inst, rng, attempts
        self.docs = [d for d in class_docs(cls) if all(p.get("type") != "dict" for p in
                                                      d["parameters"].get("properties", {}).values())]

    def _pool(self):
        state = vars(self.inst)
        if self.cls == "GorillaFileSystem":
            cur = state["_current_dir"]
            pairs = [(None, n) for n in cur.contents] + ([(None, "..")] if cur.parent else [])
        else:
            pairs = _values(_public(self.inst))
        return pairs

    def _value(self, name: str, spec: dict, pairs):
        rng, t = self.rng, spec.get("type")
        if "enum" in spec:
            return rng.choice(spec["enum"])
        keyed = [v for k, v in pairs if k == name]
        if keyed and rng.random() < 0.7:
            v = rng.choice(keyed)
            if (t == "string" and isinstance(v, str)) or (t in ("integer", "float") and isinstance(v, (int, float))):
                return float(v) if t == "float" else v
        strings = [v for _, v in pairs if isinstance(v, str) and 0 < len(v) <= 40]
        nums = [v for _, v in pairs if isinstance(v, (int, float))]
        if t == "string":
            if strings and rng.random() < 0.75:
                return rng.choice(strings)
            return rng.choice(NEW_NAMES) + (rng.choice(EXTS) if rng.random() < 0.5 else "")
        if t == "integer":
            return int(rng.choice([v for v in nums if float(v).is_integer()] or [0]) if nums and rng.random() < 0.5
                       else rng.choice([1, 2, 3, 5, 10, 20]))
        if t == "float":
            return float(rng.choice(nums)) if nums and rng.random() < 0.5 else rng.choice([1.5, 2.0, 10.0, 50.0, 100.0])
        if t == "boolean":
            return rng.random() < 0.5
        if t in ("array", "tuple"):
            item = spec.get("items", {}).get("type", "string")
            n = rng.randint(1, 3)
            if item in ("integer", "float", "number"):
                return [rng.choice([1, 2, 3, 4.5, 10, 7]) for _ in range(n)]
            return [self._value(name, {"type": "string"}, pairs) for _ in range(n)]
        return None

    def sample(self, allow_read_only: bool):
        pairs = self._pool()
        for _ in range(self.attempts):
            doc = self.rng.choice(self.docs)
            props = doc["parameters"].get("properties", {})
            required = doc["parameters"].get("required", [])
            kwargs = {}
            for p, spec in props.items():
                if p in required or self.rng.random() < 0.25:
                    v = self._value(p, spec, pairs)
                    if v is None:
                        break
                    kwargs[p] = v
            else:
                cand = copy.deepcopy(self.inst)
                before = copy.deepcopy(_public(cand))
                try:
                    res = getattr(cand, doc["name"])(**copy.deepcopy(kwargs))
                except Exception:
                    continue
                try:
                    text = format_result(res)
                    if _is_error(res, text):
                        continue
                    changed = _public(cand) != before
                    after = _public(cand)
                    if after != copy.deepcopy(after):  # also raises on cyclic states
                        continue
                except RecursionError:  # e.g. a directory moved into itself: not a task worth keeping
                    continue
                if not changed and (not allow_read_only or text in ("", "None", "[]", "{}")):
                    continue
                self.inst = cand
                return Call(doc["name"], kwargs), text, changed
        return None


def _is_error(res, text: str) -> bool:
    if isinstance(res, dict) and ("error" in res or res.get("status") in (False, "failed")):
        return True
    return text.lower().startswith(("error", "no such", "invalid", "failed", "cannot"))


def _fingerprint(turn_calls: list[list[Call]]) -> str:
    return hashlib.sha256(json.dumps([[c.render() for c in t] for t in turn_calls]).encode()).hexdigest()[:16]


def synthesize(cfg: SynthConfig = SynthConfig(), teacher=None, progress: bool = False) -> list[Entry]:
    """Build ``cfg.n_tasks`` verified, deduplicated synthetic tasks (``Entry`` objects, category ``synthetic``)."""
    from .evaluate import score_entry
    from .progress import TemplateTeacher
    from .splits import assert_disjoint

    teacher = teacher or TemplateTeacher(seed=cfg.seed)
    rng = random.Random(cfg.seed)
    pool = _config_pool()
    tasks, seen = [], set()
    bar = tqdm(total=cfg.n_tasks, desc="synthesising tasks", disable=not progress)
    attempts = 0
    while len(tasks) < cfg.n_tasks:
        attempts += 1
        if attempts > cfg.n_tasks * 20:
            raise RuntimeError(f"only {len(tasks)} of {cfg.n_tasks} tasks after {attempts} attempts; "
                               "loosen the knobs (fewer calls per turn, more classes)")
        task = _one_task(cfg, rng, pool, teacher, len(tasks))
        if task is None:
            continue
        fp = _fingerprint(task.gold_calls)
        if fp in seen:
            continue
        if not score_entry(task, task.gold).valid:  # official checker on its own gold calls
            continue
        seen.add(fp)
        tasks.append(task)
        bar.update(1)
    bar.close()
    assert_disjoint(tasks)
    return tasks


def _one_task(cfg: SynthConfig, rng: random.Random, pool, teacher, index: int) -> Entry | None:
    classes = rng.sample(list(cfg.classes), rng.randint(1, min(cfg.max_classes, len(cfg.classes))))
    configs = {}
    for cls in classes:
        conf = copy.deepcopy(rng.choice(pool[cls]))
        if cls == "GorillaFileSystem":
            for root in conf.get("root", {}).values():
                _perturb_tree(root, rng)
        configs[cls] = conf
    samplers = {c: _Sampler(c, _instance(c, configs[c]), rng, cfg.attempts_per_call) for c in classes}
    turn_calls, turn_results = [], []
    n_read = n_total = 0
    for _ in range(rng.randint(*cfg.turns)):
        calls, results = [], []
        for _ in range(rng.randint(*cfg.calls_per_turn)):
            allow_ro = (n_read + 1) / (n_total + 1) <= cfg.read_only_share
            got = samplers[rng.choice(classes)].sample(allow_ro)
            if got is None:
                continue
            call, text, changed = got
            calls.append(call)
            results.append(text)
            n_total += 1
            n_read += not changed
        if calls:
            turn_calls.append(calls)
            turn_results.append(results)
    if not turn_calls or n_read == n_total:
        return None
    requests = [teacher.request(calls) for calls in turn_calls]
    functions = [d for c in classes for d in _docs_with_hint(c)]
    extra = [c for c in CLASSES if c not in classes]
    for c in rng.sample(extra, min(cfg.distractor_classes, len(extra))):
        functions += _docs_with_hint(c)
    turns = [[{"role": "user", "content": r}] for r in requests]
    gold_calls = [list(t) for t in turn_calls]
    missed: dict[int, list[dict]] = {}
    twist = rng.random()
    if twist < cfg.p_miss_param:
        t = rng.randrange(len(turns))
        call = next((c for c in gold_calls[t] if c.kwargs), None)
        if call is None:
            return None
        param, value = rng.choice(list(call.kwargs.items()))
        turns[t] = [{"role": "user", "content": teacher.request(gold_calls[t], hide=(call.name, param))}]
        turns.insert(t + 1, [{"role": "user", "content": teacher.clarify(param, value)}])
        gold_calls.insert(t, [])
    elif twist < cfg.p_miss_param + cfg.p_miss_func:
        t = rng.randrange(len(turns))
        name = gold_calls[t][-1].name
        docs = [d for d in functions if d["name"] == name]
        functions = [d for d in functions if d["name"] != name]
        turns.insert(t + 1, [])
        gold_calls.insert(t, [])
        missed = {t + 1: docs}
    sid = f"synth_{cfg.seed}_{index:05d}"
    return Entry(id=sid, category="synthetic", turns=turns, initial_config=configs, involved_classes=classes,
                 functions=functions, missed_functions=missed,
                 gold=[[c.render() for c in t] for t in gold_calls], gold_calls=gold_calls)


def entry_to_dict(e: Entry) -> dict:
    d = asdict(e)
    d["gold_calls"] = [[{"name": c.name, "kwargs": c.kwargs} for c in t] for t in e.gold_calls]
    d["missed_functions"] = {str(k): v for k, v in e.missed_functions.items()}
    return d


def entry_from_dict(d: dict) -> Entry:
    d = dict(d)
    d["gold_calls"] = [[Call(c["name"], c["kwargs"]) for c in t] for t in d["gold_calls"]]
    d["missed_functions"] = {int(k): v for k, v in (d.get("missed_functions") or {}).items()}
    return Entry(**d)
