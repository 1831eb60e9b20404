"""Environment state: the entry's BFCL class instances and a safe executor for parsed calls.

Unlike BFCL's own executor (which rewrites call strings and ``eval``s them), this one dispatches
a :class:`~parl_mt_lib.calls.Call` by name to a public bound method of the entry's involved
instances and nothing else. Result strings are formatted exactly as BFCL formats them, so the
model sees the same observations as in BFCL's loop.

Example:
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> from parl_mt_lib.calls import parse_calls
    >>> env = Environment(entry_by_id("multi_turn_base_0"))
    >>> env.execute(parse_calls("cd(folder='document')")[0])
    '{"current_working_directory": "document"}'
    >>> env.execute(parse_calls("os_system(cmd='ls')")[0])
    "Error during execution: name 'os_system' is not defined"
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json

from .calls import Call

# BFCL refuses these names before executing (multi_turn_utils.execute_multi_turn_func_call).
BLOCKED = frozenset({"kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run"})


def _class_module(cls: str) -> str:
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    return CLASS_FILE_PATH_MAPPING[cls]


def format_result(value) -> str:
    """BFCL's result formatting: strings as is, dicts as JSON (``str`` if not serialisable), else ``str``."""
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


class Environment:
    """Fresh instances of an entry's involved classes, loaded from its ``initial_config``."""

    def __init__(self, entry):
        from bfcl_eval.constants.executable_backend_config import STATELESS_CLASSES

        self.entry = entry
        self.instances: dict[str, object] = {}
        self.methods: dict[str, object] = {}
        for cls_name in entry.involved_classes:
            cls = getattr(importlib.import_module(_class_module(cls_name)), cls_name)
            inst = cls()
            if cls_name not in STATELESS_CLASSES:
                inst._load_scenario(copy.deepcopy(entry.initial_config.get(cls_name, {})),
                                    long_context=entry.long_context)
            self.instances[cls_name] = inst
            for name, method in inspect.getmembers(inst, predicate=inspect.ismethod):
                if not name.startswith("_"):
                    self.methods[name] = method  # later classes win, as in BFCL's name mapping

    def execute(self, call: Call) -> str:
        """Run one call; never raises: errors come back as BFCL-style ``Error during execution: ...``."""
        if call.name in BLOCKED:
            return f"Error during execution: Function call {call.name} is not allowed."
        method = self.methods.get(call.name)
        if method is None:
            return f"Error during execution: name '{call.name}' is not defined"
        try:
            args, kwargs = copy.deepcopy((call.args, call.kwargs))
            return format_result(method(*args, **kwargs))
        except Exception as err:  # the tool's own error, reported to the model like BFCL does
            return f"Error during execution: {err}"

    def execute_all(self, calls: list[Call]) -> list[str]:
        return [self.execute(c) for c in calls]

    def state(self) -> dict[str, dict]:
        """Deep copy of every instance's public attributes (what BFCL's state checker compares)."""
        return {cls: copy.deepcopy({k: v for k, v in vars(inst).items() if not k.startswith("_")})
                for cls, inst in self.instances.items()}


def state_diff(before: dict, after: dict) -> dict:
    """``{class: {attr: (before, after)}}`` for attributes that changed."""
    diff = {}
    for cls, attrs in after.items():
        changed = {k: (before.get(cls, {}).get(k), v) for k, v in attrs.items() if before.get(cls, {}).get(k) != v}
        if changed:
            diff[cls] = changed
    return diff
