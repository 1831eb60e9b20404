"""τ-bench environment: a fresh tau2 domain environment per episode, calls dispatched to its public tools."""
from __future__ import annotations

import functools
import json
import pickle

from .tau2_tasks import Tau2Task, _gc_paused, _registry, _toolkit, raw_task

CALC_MAX_CHARS = 200


@functools.lru_cache(maxsize=None)
def _pristine_db(domain: str) -> bytes:
    """The domain's database as tau2 loads it, pickled once: a fresh copy per episode without re-parsing JSON."""
    return pickle.dumps(_registry().get_env_constructor(domain)().tools.db)


def fresh_environment(domain: str):
    """A new tau2 environment of ``domain`` on a pristine copy of its database (tau2's own ``get_environment``)."""
    import importlib

    mod = importlib.import_module(f"tau2.domains.{domain}.environment")
    return mod.get_environment(db=pickle.loads(_pristine_db(domain)))


# ---------------------------------------------------------------- environment


class Tau2Environment:
    """A fresh tau2 domain environment; parsed calls go only to the toolkit's public tools (:mod:`.tau2` doc)."""

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
