"""τ-bench user sources: scripted, or tau2's ``UserSimulator`` on an endpoint or a local model."""
from __future__ import annotations

import functools
import os

from .base import UserTurn
from .tau2_tasks import MAX_STEPS, Tau2Task, load_tasks  # noqa: F401  (load_tasks: doctest)

SCRIPTED_NOTE = "scripted user: not comparable to published numbers"
USER_RETRIES = 2  # extra attempts after an empty or malformed simulator reply


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

    @property
    def comparable(self) -> bool:  # as user_provenance says: only the simulator behind an endpoint
        return self.local is None

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


def make_user(task: Tau2Task):
    """The user source named by ``task.user`` (options from ``task.user_options``): see the :mod:`.tau2` doc."""
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
    """``{"user", "comparable", "note"}`` for results: only tau2's LLM user simulator behind an endpoint
    (``openai:<name>``) is comparable in kind to published τ-bench numbers, and then only with the same simulator
    model. The same prompt on a local transformers model (``toy``, ``smollm2``, a path) is labelled not
    comparable: published runs use an API model as the user, and a small local one reveals the task differently.

    >>> user_provenance("scripted")["note"]
    'scripted user: not comparable to published numbers'
    >>> user_provenance("smollm2")["comparable"], user_provenance("openai:gpt-4.1")["comparable"]
    (False, True)
    """
    if user == "scripted":
        return {"user": user, "comparable": False, "note": SCRIPTED_NOTE}
    if user.startswith("openai:"):
        return {"user": user, "comparable": True,
                "note": f"tau2 user simulator prompt on endpoint model {user[7:]}; compare with published numbers "
                        "only for the same simulator model"}
    return {"user": user, "comparable": False,
            "note": f"tau2 user simulator prompt on local model {user}: not comparable to published numbers"}
