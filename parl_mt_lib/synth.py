"""Synthetic multi-turn training tasks from environment interaction (PAG's first stage).

For each task: pick 1-2 of the 8 BFCL classes, start from one of the ``initial_config`` states BFCL
ships and perturb it, seeded, for every stateful class (:data:`PERTURB`: new user names, ids, balances,
prices and sensor values, records added, file trees renamed and extended), so that no synthetic
initial state equals any BFCL evaluation initial state (MathAPI is stateless: nothing to perturb).
Then sample call chains by rejection: a call is kept only if it executes without error and either
changes the public state or returns a non-empty result (read-only calls are capped). Calls are
grouped into turns; a teacher (``progress.TemplateTeacher`` by default) writes each turn's request.
BFCL-style twists by knob: a missing parameter (the request omits a value, gold turn ``[]``, the
next user turn supplies it) and a function offered only later (gold ``[]``, then a hold-out turn
with the docs). Every task is verified by the official checker on its own gold calls and
deduplicated; a candidate that overlaps a BFCL evaluation entry under ``splits``' rule (shared id,
request, gold sequence, run of ``splits.MIN_RUN`` gold calls, or initial state) is rejected, and
:func:`synthesize` asserts that none is left.

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
import re
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
FIRST_NAMES = ["Nora", "Omar", "Priya", "Liam", "Zoe", "Ivan", "Maya", "Ethan", "Lena", "Hugo", "Aria", "Felix"]
LAST_NAMES = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Castillo", "Novak", "Haddad", "Berg"]


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
    """Starting points per class: the states shipped with BFCL's base entries (deduplicated); every task
    perturbs the one it draws (:data:`PERTURB`), so none is used as it is."""
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


# ---- per-class perturbations of a drawn initial config (in place; JSON-native values; seeded by the task rng).
# Each changes what the class's ``_load_scenario`` reads (see bfcl_eval...func_source_code.*), keeps ids
# consistent with their counters, and leaves the state loadable; tasks are then sampled on the new state.

def _redigit(text: str, rng: random.Random) -> str:
    """The same string with every digit redrawn, so ids keep their shape ('USR005' -> 'USR731')."""
    return re.sub(r"\d", lambda _: str(rng.randint(0, 9)), text)


def _reint(x: int, rng: random.Random) -> int:
    """A random integer with as many digits as ``x``."""
    n = len(str(abs(int(x))))
    return rng.randint(10 ** (n - 1) if n > 1 else 0, 10 ** n - 1)


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {rng.choice(NEW_NAMES)} {rng.randint(1, 99)}"


def _fresh(rng: random.Random, names: list, taken) -> str:
    return rng.choice([n for n in names if n not in taken] or [f"{rng.choice(names)}{rng.randint(10, 99)}"])


def _perturb_files(conf: dict, rng: random.Random) -> None:
    roots = conf.setdefault("root", {"workspace": {"type": "directory", "contents": {}}})
    for root in roots.values():
        _perturb_tree(root, rng)
        contents = root.setdefault("contents", {})
        name = _fresh(rng, [f"{n}_{rng.randint(100, 999)}{rng.choice(EXTS)}" for n in NEW_NAMES], contents)
        contents[name] = {"type": "file", "content": _sentence(rng)}  # always one new file at the top


def _perturb_twitter(conf: dict, rng: random.Random) -> None:
    old = conf.get("username", "john")
    new = f"{rng.choice(WORDS)}_{rng.choice(NEW_NAMES)}{rng.randint(10, 99)}"
    conf["username"] = new
    conf["password"] = _redigit(conf.get("password", "pass"), rng) + f"#{rng.randint(10, 99)}"
    tweets = {str(k): v for k, v in conf.get("tweets", {}).items()}
    for t in tweets.values():
        if t.get("username") == old:
            t["username"] = new
    if isinstance(conf.get("retweets"), dict) and old in conf["retweets"]:
        conf["retweets"][new] = conf["retweets"].pop(old)
    nxt = max([int(k) + 1 for k in tweets] + [int(conf.get("tweet_counter", 0))])
    for _ in range(rng.randint(1, 2)):
        tweets[str(nxt)] = {"id": nxt, "username": new, "content": _sentence(rng),
                            "tags": [f"#{rng.choice(WORDS)}"], "mentions": []}
        nxt += 1
    conf["tweets"], conf["tweet_counter"] = tweets, nxt
    following = list(conf.get("following_list", ["alice", "bob"]))
    conf["following_list"] = following + [f"{rng.choice(FIRST_NAMES).lower()}{rng.randint(1, 99)}"]


def _perturb_messages(conf: dict, rng: random.Random) -> None:
    from bfcl_eval.eval_checker.multi_turn_eval.func_source_code.message_api import DEFAULT_STATE

    users = dict(conf.get("user_map", DEFAULT_STATE["user_map"]))
    old = rng.choice(sorted(users))
    users = {(_fresh(rng, FIRST_NAMES, users) if k == old else k): v for k, v in users.items()}  # rename one
    uid = _fresh(rng, [f"USR{rng.randint(100, 999)}" for _ in range(5)], set(users.values()))
    users[_fresh(rng, FIRST_NAMES, users)] = uid                                                  # add one
    conf["user_map"] = users
    conf["user_count"] = int(conf.get("user_count", DEFAULT_STATE["user_count"])) + 1
    inbox = copy.deepcopy(conf.get("inbox", DEFAULT_STATE["inbox"]))
    as_list = any(isinstance(v, list) for m in inbox for v in m.values())
    text = _sentence(rng)
    inbox.append({rng.choice(sorted(users.values())): [text] if as_list else text})
    conf["inbox"] = inbox


def _perturb_tickets(conf: dict, rng: random.Random) -> None:
    queue = copy.deepcopy(conf.get("ticket_queue", []))
    shift = rng.randint(1, 900)
    for t in queue:
        if isinstance(t.get("id"), int):
            t["id"] += shift
    ids = [t["id"] + 1 for t in queue if isinstance(t.get("id"), int)]
    counter = max(ids + [int(conf.get("ticket_counter", 1)) + shift])
    queue.append({"id": counter, "title": f"{rng.choice(WORDS)} {rng.choice(NEW_NAMES)} issue",
                  "description": _sentence(rng), "status": "Open", "priority": rng.randint(1, 5),
                  "created_by": conf.get("current_user") or rng.choice(FIRST_NAMES)})
    conf["ticket_queue"], conf["ticket_counter"] = queue, counter + 1


def _perturb_trading(conf: dict, rng: random.Random) -> None:
    from bfcl_eval.eval_checker.multi_turn_eval.func_source_code.trading_bot import DEFAULT_STATE

    acct = dict(conf.get("account_info", DEFAULT_STATE["account_info"]))
    acct["account_id"] = _reint(acct.get("account_id", 12345), rng)
    acct["balance"] = round(float(acct.get("balance", 10000.0)) * rng.uniform(0.5, 1.5), 2)
    acct["binding_card"] = _reint(acct.get("binding_card", 1974202140965533), rng)
    conf["account_info"] = acct
    stocks = copy.deepcopy(conf.get("stocks", DEFAULT_STATE["stocks"]))
    for s in stocks.values():
        f = rng.uniform(0.85, 1.15)
        for k in ("price", "MA(5)", "MA(20)"):
            if isinstance(s.get(k), (int, float)):
                s[k] = round(s[k] * f, 2)
        s["percent_change"] = round(rng.uniform(-0.5, 0.5), 2)
    conf["stocks"] = stocks
    watch = list(conf.get("watch_list", DEFAULT_STATE["watch_list"]))
    unwatched = sorted(set(stocks) - set(watch))
    conf["watch_list"] = watch + [rng.choice(unwatched)] if unwatched else watch[1:]
    shift = rng.randint(1, 999)
    orders = {}
    for k, v in copy.deepcopy(conf.get("orders", DEFAULT_STATE["orders"])).items():
        if str(k).isdigit():
            k = str(int(k) + shift)
            if isinstance(v, dict) and isinstance(v.get("id"), int):
                v["id"] = int(k)
        orders[str(k)] = v
    conf["orders"] = orders
    conf["order_counter"] = int(conf.get("order_counter", DEFAULT_STATE["order_counter"])) + shift


def _perturb_travel(conf: dict, rng: random.Random) -> None:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    cards = {}
    for cid, card in copy.deepcopy(conf.get("credit_card_list", {})).items():
        for k in ("card_number", "expiration_date", "expiry_date"):
            if isinstance(card.get(k), str):
                card[k] = _redigit(card[k], rng) if k == "card_number" else f"{rng.randint(1, 12):02d}/20{rng.randint(27, 34)}"
        for k in ("cvv", "card_verification_number"):
            if isinstance(card.get(k), int):
                card[k] = _reint(card[k], rng)
        if isinstance(card.get("balance"), (int, float)):
            card["balance"] = round(float(card["balance"]) * rng.uniform(0.5, 1.5), 2)
        if "cardholder_name" in card:
            card["cardholder_name"] = f"{first} {last}"
        cards[_redigit(cid, rng) if re.search(r"\d", cid) else f"{cid}{rng.randint(10, 99)}"] = card
    if not cards or rng.random() < 0.5:
        cards[str(rng.randint(100000, 999999))] = {
            "card_number": _redigit("4000-0000-0000-0000", rng), "card_type": rng.choice(["Visa", "Mastercard"]),
            "expiration_date": f"{rng.randint(1, 12):02d}/20{rng.randint(27, 34)}", "cardholder_name": f"{first} {last}",
            "card_verification_number": rng.randint(100, 999), "balance": float(rng.randint(500, 20000))}
    conf["credit_card_list"] = cards
    conf["user_first_name"], conf["user_last_name"] = first, last
    conf["budget_limit"] = round(float(conf.get("budget_limit") or 5000.0) * rng.uniform(0.5, 1.5), 2)
    if isinstance(conf.get("access_token"), str):
        conf["access_token"] = _redigit(conf["access_token"], rng) + rng.choice(NEW_NAMES)


def _perturb_vehicle(conf: dict, rng: random.Random) -> None:
    conf.update(fuelLevel=round(rng.uniform(5, 45), 1), batteryVoltage=round(rng.uniform(11.8, 13.4), 1),
                acTemperature=float(rng.randint(16, 28)), fanSpeed=rng.randint(0, 100),
                humidityLevel=round(rng.uniform(30, 70), 1), distanceToNextVehicle=float(rng.randint(10, 150)))
    for tire in ("frontLeftTirePressure", "frontRightTirePressure", "rearLeftTirePressure", "rearRightTirePressure"):
        conf[tire] = round(rng.uniform(28, 36), 1)
    conf["doorStatus"] = {d: rng.choice(["locked", "unlocked"]) for d in ("driver", "passenger", "rear_left", "rear_right")}
    conf.pop("remainingUnlockedDoors", None)  # the loader recomputes it from doorStatus


def _perturb_math(conf: dict, rng: random.Random) -> None:
    conf.clear()  # MathAPI is stateless: BFCL never loads a scenario into it, so carry none of BFCL's


PERTURB = {"GorillaFileSystem": _perturb_files, "TwitterAPI": _perturb_twitter, "MessageAPI": _perturb_messages,
           "TicketAPI": _perturb_tickets, "TradingBot": _perturb_trading, "TravelAPI": _perturb_travel,
           "VehicleControlAPI": _perturb_vehicle, "MathAPI": _perturb_math}
"""Class -> in-place perturbation of a config drawn from :func:`_config_pool` (one for each of ``CLASSES``)."""


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


def synthesize(cfg: SynthConfig = SynthConfig(), teacher=None, progress: bool = False,
               stats: dict | None = None) -> list[Entry]:
    """Build ``cfg.n_tasks`` verified, deduplicated synthetic tasks (``Entry`` objects, category ``synthetic``).

    Candidates that overlap a BFCL evaluation entry (``splits.task_overlap``: id, request, gold sequence,
    a run of ``splits.MIN_RUN`` gold calls, or an initial state) are rejected; the result is asserted
    disjoint (:class:`splits.OverlapError` otherwise). ``stats``, if given, is filled with the candidate
    count and the rejections by reason (``empty``, ``duplicate``, ``overlap:<rule>``, ``checker``).
    """
    from .evaluate import score_entry
    from .progress import TemplateTeacher
    from .splits import assert_disjoint, task_overlap

    teacher = teacher or TemplateTeacher(seed=cfg.seed)
    rng = random.Random(cfg.seed)
    pool = _config_pool()
    tasks, seen = [], set()
    rejected: dict[str, int] = {}
    bar = tqdm(total=cfg.n_tasks, desc="synthesising tasks", disable=not progress)
    attempts = 0
    while len(tasks) < cfg.n_tasks:
        attempts += 1
        if attempts > cfg.n_tasks * 20:
            raise RuntimeError(f"only {len(tasks)} of {cfg.n_tasks} tasks after {attempts} attempts; "
                               "loosen the knobs (fewer calls per turn, more classes)")
        task = _one_task(cfg, rng, pool, teacher, len(tasks))
        why = None
        if task is None:
            why = "empty"
        elif _fingerprint(task.gold_calls) in seen:
            why = "duplicate"
        elif hits := task_overlap(task):
            why = "overlap:" + "+".join(hits)
        elif not score_entry(task, task.gold).valid:  # official checker on its own gold calls
            why = "checker"
        if why:
            rejected[why] = rejected.get(why, 0) + 1
            continue
        seen.add(_fingerprint(task.gold_calls))
        tasks.append(task)
        bar.update(1)
    bar.close()
    if stats is not None:
        stats.update(candidates=attempts, rejected=dict(sorted(rejected.items())))
    assert_disjoint(tasks)  # every rule, initial states included: raises OverlapError
    return tasks


def _one_task(cfg: SynthConfig, rng: random.Random, pool, teacher, index: int) -> Entry | None:
    classes = rng.sample(list(cfg.classes), rng.randint(1, min(cfg.max_classes, len(cfg.classes))))
    configs = {}
    for cls in classes:
        conf = copy.deepcopy(rng.choice(pool[cls]))
        PERTURB[cls](conf, rng)
        configs[cls] = json.loads(json.dumps(conf))  # as tasks.jsonl stores it, so what is checked is what is saved
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
