"""Parse model text into function calls without ever executing it.

Two surface formats are accepted:

* BFCL's prompting format, a Python-looking list: ``[cd(folder='doc'), ls(a=True)]``
  (the brackets may be omitted, and a fenced code block is unwrapped, as BFCL does);
* Qwen/Hermes JSON tool calls: ``<tool_call>{"name": "cd", "arguments": {"folder": "doc"}}</tool_call>``.

Reasoning / progress blocks (``<think>``, ``<summary>``, ``<plan>``) before the calls are
stripped. Python text is parsed with :mod:`ast` and every argument goes through
:func:`ast.literal_eval`; anything that is not ``name(literal, key=literal, ...)`` is
rejected with a :class:`CallParseError` carrying a human-readable reason.

Example:
    >>> from parl_mt_lib.calls import parse_calls
    >>> [c.render() for c in parse_calls("[cd(folder='doc'), mean(numbers=[1, 2])]")]
    ["cd(folder='doc')", 'mean(numbers=[1, 2])']
    >>> parse_calls("<tool_call>{\\"name\\": \\"ls\\", \\"arguments\\": {}}</tool_call>")[0].name
    'ls'
    >>> parse_calls("[__import__('os').system('ls')]")
    Traceback (most recent call last):
    ...
    parl_mt_lib.calls.CallParseError: only plain function names may be called, not an attribute chain
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .progress_format import PREAMBLE_TAGS

MAX_CHARS = 20_000  # BFCL's longest gold step renders to < 2k characters
MAX_CALLS = 64
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PREAMBLE = re.compile(rf"^\s*<({'|'.join(PREAMBLE_TAGS)})>(.*?)</\1>", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\n?(.*?)\n?```$", re.DOTALL)


class CallParseError(ValueError):
    """Model text that is not a well-formed, literal-only list of calls. ``.reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Call:
    """One function call: a plain name, positional literals (rare) and keyword literals."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple = ()

    def render(self) -> str:
        """Canonical ``name(a=..., b=...)`` string built from ``repr`` of literals (safe to re-parse)."""
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def with_keywords(self, param_names: list[str]) -> "Call":
        """Map positional arguments to keywords using the function doc's parameter order."""
        if not self.args:
            return self
        if len(self.args) > len(param_names):
            raise CallParseError(f"{self.name} takes at most {len(param_names)} arguments, got {len(self.args)}")
        kwargs = dict(zip(param_names, self.args))
        for k, v in self.kwargs.items():
            if k in kwargs:
                raise CallParseError(f"{self.name} got multiple values for argument {k!r}")
            kwargs[k] = v
        return Call(self.name, kwargs)


def strip_preamble(text: str) -> tuple[str, dict[str, str]]:
    """Remove leading ``<think>/<summary>/<plan>`` blocks; return (rest, {tag: content})."""
    blocks: dict[str, str] = {}
    while True:
        m = _PREAMBLE.match(text)
        if not m:
            return text.strip(), blocks
        blocks[m.group(1)] = m.group(2).strip()
        text = text[m.end():]


def _literal(node: ast.AST, where: str) -> Any:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            raise CallParseError(f"calls inside arguments are not allowed ({where})")
        if isinstance(sub, (ast.Name, ast.Attribute, ast.Subscript, ast.Lambda, ast.comprehension,
                            ast.JoinedStr, ast.Starred, ast.NamedExpr)):
            raise CallParseError(f"{where} must be a literal, got {type(sub).__name__}")
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError) as err:  # 1e400+2j
        raise CallParseError(f"{where} must be a literal ({err})") from None
    _check_finite(value, where)
    return value


def _check_finite(value: Any, where: str) -> None:
    """Refuse values whose canonical rendering (``repr``) is a name, not a literal -- ``...`` (``Ellipsis``), ``inf``,
    ``nan`` -- so every accepted call re-renders into text that parses back (the next prompt carries it: a
    SmolLM2 policy copying the signatures' ``a=...`` placeholder once crashed a rollout there). A reason that names
    the value; :func:`_check_reparses` is the general check every accepted call then passes."""
    if value is Ellipsis or (isinstance(value, float) and not math.isfinite(value)) or \
            (isinstance(value, complex) and not (math.isfinite(value.real) and math.isfinite(value.imag))):
        raise CallParseError(f"{where} must be a value, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(k, where)
            _check_finite(v, where)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _check_finite(v, where)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise CallParseError(f"function name must be a plain public identifier, got {name!r}")
    return name


def _parse_python(text: str) -> list[Call]:
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise CallParseError(f"not a list of calls: {type(err).__name__}: {err}") from None
    body = tree.body
    if not isinstance(body, ast.List):
        raise CallParseError(f"expected a list of calls, got {type(body).__name__}")
    calls = []
    for node in body.elts:
        if not isinstance(node, ast.Call):
            raise CallParseError(f"list element is a {type(node).__name__}, not a call")
        if not isinstance(node.func, ast.Name):
            kind = {"Attribute": "an attribute chain", "Call": "a call result", "Subscript": "a subscript"}
            raise CallParseError("only plain function names may be called, not "
                                 + kind.get(type(node.func).__name__, type(node.func).__name__))
        name = _check_name(node.func.id)
        args = tuple(_literal(a, f"argument {i} of {name}") for i, a in enumerate(node.args))
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise CallParseError(f"**kwargs unpacking is not allowed in {name}")
            if kw.arg.startswith("_"):
                raise CallParseError(f"private keyword {kw.arg!r} in {name}")
            kwargs[kw.arg] = _literal(kw.value, f"{name}({kw.arg}=...)")
        calls.append(Call(name, kwargs, args))
    return calls


def _parse_json(blocks: list[str]) -> list[Call]:
    calls = []
    for raw in blocks:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, an int over the digit limit, deep nesting
            raise CallParseError(f"tool_call is not valid JSON: {err}") from None
        if not isinstance(obj, dict) or "name" not in obj:
            raise CallParseError("tool_call must be an object with 'name' and 'arguments'")
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError) as err:
                raise CallParseError(f"tool_call arguments are not valid JSON: {err}") from None
        if not isinstance(args, dict) or not all(isinstance(k, str) and _IDENT.match(k) for k in args):
            raise CallParseError("tool_call arguments must be an object with identifier keys")
        name = _check_name(obj["name"])
        _check_finite(args, f"{name} arguments")  # json.loads takes NaN, Infinity, 1e999
        calls.append(Call(name, dict(args)))
    return calls


def _check_reparses(call: Call, max_chars: int) -> None:
    """A step keeps ``call.render()`` and the next prompt re-parses it: it must parse back, within ``max_chars``.
    Refused: a keyword used as a name (``from=``, ``None()``); nesting that a complex number's parentheses push past
    the python parser's limit; escapes that make the text several times longer; an int past Python's 4,300-digit
    ``repr`` limit."""
    try:
        text = call.render()
        if len(text) > max_chars:
            raise CallParseError(f"{len(text)} characters rendered (limit {max_chars})")
        _parse_python(text)
    except (ValueError, RecursionError) as err:  # CallParseError is a ValueError
        raise CallParseError(f"{call.name}: not expressible as a python call ({err})") from None


def parse_calls(text: str, *, max_chars: int = MAX_CHARS) -> list[Call]:
    """Parse one model message into calls. ``[]`` means the model chose to make no call.

    Raises :class:`CallParseError` (a ``ValueError``) with ``.reason`` on anything else.
    """
    if not isinstance(text, str):
        raise CallParseError(f"expected text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise CallParseError(f"message has {len(text)} characters (limit {max_chars})")
    body, _ = strip_preamble(text)
    blocks = _TOOL_CALL.findall(body)
    calls = _parse_json(blocks) if blocks else _parse_python(body) if body else []
    if len(calls) > MAX_CALLS:
        raise CallParseError(f"{len(calls)} calls in one message (limit {MAX_CALLS})")
    for call in calls:
        _check_reparses(call, max_chars)
    return calls


def parse_gold(call_str: str, param_order: dict[str, list[str]]) -> Call:
    """Parse one ground-truth call string and normalise positional arguments to keywords."""
    (call,) = parse_calls(call_str)
    return call.with_keywords(param_order.get(call.name, []))


def _jsonable(value: Any) -> Any:
    """A parsed literal as JSON data: python-only values (set, bytes, complex) and non-JSON dict keys (a tuple) as
    their python text, so a call parsed from python-style text can still be shown in the JSON styles.

    >>> _jsonable({(1, 2): {3}, "b": (b"x", 1j)})
    {'(1, 2)': '{3}', 'b': ["b'x'", '1j']}
    """
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else repr(k): _jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def to_tool_calls(calls: list[Call]) -> list[dict]:
    """Calls as chat-template ``tool_calls`` (the Qwen2.5 template renders them as JSON)."""
    return [{"type": "function", "function": {"name": c.name, "arguments": _jsonable(dict(c.kwargs))}} for c in calls]


def render_calls(calls: list[Call], style: str = "python") -> str:
    """Calls as model text: BFCL's ``[f(a=1)]`` (``python``) or ``<tool_call>`` JSON blocks (``json``)."""
    if style == "python":
        return "[" + ", ".join(c.render() for c in calls) + "]"
    if style == "json":
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": c.name, "arguments": _jsonable(c.kwargs)}) + "\n</tool_call>"
            for c in calls
        )
    raise ValueError(f"unknown call style {style!r}; use 'python' or 'json'")


# ------------------------------------------------------------------ comparison
#
# Hand-written rather than a deep-diff library (deepdiff, dictdiffer): we need a *hashable* key, so that
# calls can sit in sets and multisets (rewards count remaining gold calls), and one type rule that
# deep-diff tools do not offer as a single switch (bool apart from numbers, list and tuple alike).

def value_key(value: Any) -> Any:
    """Hashable key of an argument value; two values get equal keys iff they are the same argument.

    The rule is BFCL's: its multi-turn checker compares executed state with Python ``==``, so numbers
    compare by value (``10 == 10.0``). Two departures from plain ``==``, both about types:

    * ``bool`` is not a number: ``True`` never equals ``1`` (nor ``False`` ``0``), because a flag and
      a count are different arguments even though Python says ``True == 1``;
    * a ``list`` and a ``tuple`` with the same items are the same sequence (the JSON tool-call format
      has no tuple, so the same call written in the two formats must compare equal).

    Lists, tuples, sets and dicts compare recursively with the same rule; dict keys too.

    Example:
        >>> value_key(10) == value_key(10.0), value_key(True) == value_key(1)
        (True, False)
        >>> value_key({"a": [1, (2.0, False)]}) == value_key({"a": (1.0, [2, False])})
        True
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float, complex)):
        return ("num", value)  # hash(10) == hash(10.0) and 10 == 10.0: equal keys, same bucket
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(value_key(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(value_key(v) for v in value))
    if isinstance(value, dict):
        return ("map", frozenset((value_key(k), value_key(v)) for k, v in value.items()))
    if value is None or isinstance(value, (str, bytes)):
        return (type(value).__name__, value)
    return (type(value).__name__, repr(value))  # no other literal reaches here (parser: literals only)


def _as_call(call_or_text: "Call | str") -> Call:
    if isinstance(call_or_text, Call):
        return call_or_text
    calls = parse_calls(call_or_text)
    if len(calls) != 1:
        raise CallParseError(f"expected exactly one call, got {len(calls)}")
    return calls[0]


def call_key(call_or_text: "Call | str", param_order: dict[str, list[str]] | None = None) -> tuple:
    """Hashable canonical key of one call: its name and keyword arguments, keyword order ignored,
    values by :func:`value_key` (numbers by value, ``bool`` apart from numbers).

    Positional arguments are named from ``param_order`` (function -> parameter names in doc order,
    e.g. :func:`parl_mt_lib.bfcl.param_order`) via :meth:`Call.with_keywords`; a function that
    ``param_order`` does not list (or ``param_order=None``) keeps them positional in the key.
    Text that is not exactly one call raises :class:`CallParseError`.

    Example:
        >>> call_key("mv(destination='b', source='a')") == call_key("mv(source='a', destination='b')")
        True
        >>> call_key("f(n=10.0)") == call_key(Call("f", {"n": 10})), call_key("f(a=True)") == call_key("f(a=1)")
        (True, False)
        >>> call_key("sort('a.txt')", {"sort": ["file_name"]}) == call_key("sort(file_name='a.txt')")
        True
    """
    call = _as_call(call_or_text)
    names = None if param_order is None else param_order.get(call.name)
    if names is not None:
        call = call.with_keywords(names)
    return (call.name, tuple(value_key(a) for a in call.args),
            frozenset((k, value_key(v)) for k, v in call.kwargs.items()))


def same_call(a: "Call | str", b: "Call | str", param_order: dict[str, list[str]] | None = None) -> bool:
    """Whether two calls (each a :class:`Call` or call text) are the same call under :func:`call_key`.
    Text that does not parse to exactly one call never equals anything (not even itself).

    Example:
        >>> same_call("f(n=10, m='x')", "f(m='x', n=10.0)"), same_call("f(", "f(")
        (True, False)
    """
    try:
        return call_key(a, param_order) == call_key(b, param_order)
    except (CallParseError, ValueError):
        return False


def same_calls(a_list, b_list, param_order: dict[str, list[str]] | None = None) -> bool:
    """Whether two ordered sequences of calls are pairwise :func:`same_call` (same length, same order).

    Example:
        >>> same_calls(["cd(folder='a')", "ls(a=True)"], [Call("cd", {"folder": "a"}), "ls(a=True)"])
        True
        >>> same_calls(["cd(folder='a')", "ls(a=True)"], ["ls(a=True)", "cd(folder='a')"])
        False
    """
    a_list, b_list = list(a_list), list(b_list)
    return len(a_list) == len(b_list) and all(same_call(a, b, param_order) for a, b in zip(a_list, b_list))
