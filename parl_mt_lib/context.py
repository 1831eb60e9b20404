"""Context builders: episode record -> the messages the policy sees at the next step; plus token masks.

A builder is a pure function of the episode record (user turns, steps, results) and sees only the benchmark
protocol (:mod:`parl_mt_lib.envs`), so the rollout driver never changes when the context changes.

* ``FullHistoryContext`` is BFCL's own context: system prompt with all tool docs, then every user message,
  assistant output and tool result so far.
* ``ProgressContext`` is PARL-MT's: system prompt with tools (+ the progress instruction), the current request,
  the latest step's summary + plan *and the calls it made* (canonical text, in the call style), and those calls'
  results; at a new turn the previous turn's last summary is carried into the request. The exact rendered format
  is in README ("The progress context, exactly").

Example:
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> from parl_mt_lib.rollout import Episode
    >>> ctx = FullHistoryContext()
    >>> msgs = ctx.messages(Episode(entry_by_id("multi_turn_base_0")))
    >>> [m["role"] for m in msgs], msgs[0]["content"][:35]
    (['system', 'user'], 'You are an expert in composing func')
"""
from __future__ import annotations

import json
import re

from .calls import parse_calls, render_calls
from .progress_format import format_progress, parse_progress
from .runtime import ConfigError

PROMPTINGS = ("plain", "cot")
STYLES = ("python", "json")
# full: BFCL's JSON docs; names: one line per function; none: no docs; minimal: no docs and only BFCL's
# output-format sentence (the toy curriculum: on 2 CPU cores every prompt token costs training time); signatures:
# that sentence + one line per function, ``name(required, optional=...)`` (SmolLM2 tokens over 20 synthetic tasks of
# GorillaFileSystem + TicketAPI, ~22 functions: ~200 vs ~665 names and ~5.5k full; multi_turn_base_0, 32 functions:
# 315 / 840 / 7,916): the compact docs a real model on 2 cores can train with (LOG.md 2026-11-25); described: a
# signature line with the first sentence of the function's description (~390 tokens on those 20 tasks): the synthetic
# users word a request with the opening words of that description, so a model can match it to the name (LOG.md
# 2026-12-04: most failed held-out SmolLM2 tasks with signatures began with a wrong function)
TOOL_DOCS = ("full", "names", "none", "minimal", "signatures", "described")
SHORT_DOCS = ("minimal", "signatures", "described")  # one-sentence prompt and the short progress instruction
LISTED_DOCS = ("signatures", "described")  # short docs that list the functions
MINIMAL_FORMAT = "[func(param=value)]"
MINIMAL_PROMPT = f"You are an expert in composing functions. Answer with function calls in the format {MINIMAL_FORMAT}."
JSON_FORMAT = '<tool_call>{"name": ..., "arguments": {...}}</tool_call>'  # style json (Qwen2.5 / Hermes)
COT_INSTRUCTION = (
    "Before your function calls, think step by step about what the user asked, what has been done and "
    "what remains, inside <think>...</think>. Then output the function calls in the required format "
    "after </think>. If nothing remains to be done, output only the <think> block."
)


def _first_sentence(f: dict) -> str:
    """The first sentence of a function's description (BFCL's class preamble before "Tool description:" dropped; a
    sentence ends at ". " or a line break: τ-bench's docstrings go on for paragraphs).

    >>> _first_sentence({"description": "Part of a file system. Tool description: Remove a file. Note: Python 3."})
    'Remove a file'
    >>> _first_sentence({"description": "Return items of an order.\\n\\nArgs:\\n    order_id: the order."})
    'Return items of an order'
    """
    text = f.get("description", "").split("Tool description:")[-1].strip()
    return re.split(r"\.\s|\n", text, maxsplit=1)[0].strip().rstrip(".")


def _doc_lines(functions: list[dict]) -> str:
    lines = []
    for f in functions:
        params = ", ".join(f.get("parameters", {}).get("properties", {}))
        lines.append(f"- {f['name']}({params}): {_first_sentence(f)}")
    return "\n".join(lines)


def _signature_lines(functions: list[dict]) -> str:
    """One line per function: its name and parameters, optional ones as ``name=...``.

    >>> _signature_lines([{"name": "cp", "parameters": {"properties": {"src": {}, "dst": {}, "force": {}},
    ...                                                 "required": ["src", "dst"]}}])
    'cp(src, dst, force=...)'
    """
    lines = []
    for f in functions:
        spec = f.get("parameters", {})
        required = set(spec.get("required", []))
        names = list(spec.get("properties", {}))
        params = ", ".join([p for p in names if p in required] + [f"{p}=..." for p in names if p not in required])
        lines.append(f"{f['name']}({params})")
    return "\n".join(lines)


def _described_lines(functions: list[dict]) -> str:
    """One line per function: its signature (:func:`_signature_lines`) and the first sentence of its description.

    >>> _described_lines([{"name": "rmdir", "description": "Tool description: Remove a directory. Note: empty only.",
    ...                    "parameters": {"properties": {"dir_name": {}}, "required": ["dir_name"]}}])
    'rmdir(dir_name): Remove a directory'
    """
    return "\n".join(f"{_signature_lines([f])}: {_first_sentence(f)}" for f in functions)


def check_prompt_options(style: str = "python", prompting: str = "plain", tool_docs: str = "full") -> None:
    """One-line errors for an unknown call style, prompting or tool-docs mode."""
    if style not in STYLES:
        raise ConfigError(f"unknown call style {style!r}; choose from {STYLES}")
    if prompting not in PROMPTINGS:
        raise ConfigError(f"unknown prompting {prompting!r}; choose from {PROMPTINGS}")
    if tool_docs not in TOOL_DOCS:
        raise ConfigError(f"unknown tool_docs {tool_docs!r}; choose from {TOOL_DOCS}")
    if style == "json" and tool_docs in SHORT_DOCS:
        raise ConfigError(f"tool_docs {tool_docs!r} is a one-sentence prompt in the python call format; with style "
                          "'json' use tool_docs 'full' or 'none' (the tools then go through the chat template)")


def call_format(style: str = "python", tool_docs: str = "full") -> str:
    """How a call is written, as the system prompt names it (the one definition of each format): BFCL's Python
    format, its one-line form for ``tool_docs="minimal"``, or the chat template's tool-call format (``json``).

    >>> call_format("python", "minimal"), call_format("json")
    ('[func(param=value)]', '<tool_call>{"name": ..., "arguments": {...}}</tool_call>')
    """
    from bfcl_eval.constants.default_prompts import OUTPUT_FORMAT_MAPPING

    check_prompt_options(style, "plain", tool_docs)
    if style == "json":
        return JSON_FORMAT
    return MINIMAL_FORMAT if tool_docs in SHORT_DOCS else OUTPUT_FORMAT_MAPPING["python"]


def tools_section(functions: list[dict] | None, style: str = "python", tool_docs: str = "full") -> str:
    """The tool docs of a system prompt in BFCL's wording: the JSON docs (``full``), one line per function with its
    parameters and description (``names``), its signature (``signatures``) or signature and description's first
    sentence (``described``), or nothing (``none``, ``minimal``, and style ``json``: the tools go through the
    template)."""
    from bfcl_eval.constants.default_prompts import PROMPT_STYLE_TEMPLATES

    check_prompt_options(style, "plain", tool_docs)
    if style != "python" or tool_docs in ("none", "minimal"):
        return ""
    if tool_docs == "names":
        return "Functions you can invoke:\n" + _doc_lines(functions or []) + "\n"
    if tool_docs == "signatures":
        return "Functions you can invoke:\n" + _signature_lines(functions or []) + "\n"
    if tool_docs == "described":
        return "Functions you can invoke:\n" + _described_lines(functions or []) + "\n"
    return PROMPT_STYLE_TEMPLATES["classic"]["available_tools"].format(format="json",
                                                                      functions=json.dumps(functions, indent=4))


def system_prompt(functions: list[dict] | None, style: str = "python", prompting: str = "plain",
                  tool_docs: str = "full") -> str:
    """BFCL's default prompting system prompt (classic style, plaintext, JSON docs).

    ``style="json"`` drops the docs and the Python output format: the tools then go through the chat
    template's ``tools=`` argument and calls are ``<tool_call>`` JSON (Qwen2.5 / Hermes format).
    ``tool_docs="names"`` lists one line per function instead of the JSON docs; ``"none"`` lists none;
    ``"minimal"`` is one sentence (the toy curriculum: a 2-core CPU cannot train on ~9k-token prompts);
    ``"signatures"`` is that sentence and one line per function (a real model's compact docs); ``"described"``
    adds the first sentence of each function's description to its line.

    >>> print(system_prompt([{"name": "pwd", "parameters": {"properties": {}}}], tool_docs="signatures"))
    You are an expert in composing functions. Answer with function calls in the format [func(param=value)].
    Functions you can invoke:
    pwd()
    """
    from bfcl_eval.constants.default_prompts import PROMPT_STYLE_TEMPLATES, PROMPT_TEMPLATE_MAPPING

    check_prompt_options(style, prompting, tool_docs)
    t = PROMPT_STYLE_TEMPLATES["classic"]
    if tool_docs in SHORT_DOCS:
        docs = "\n" + tools_section(functions, style, tool_docs).rstrip("\n") if tool_docs in LISTED_DOCS else ""
        return MINIMAL_PROMPT + docs + ("\n" + COT_INSTRUCTION if prompting == "cot" else "")
    if style == "python":
        fmt = t["tool_call_no_tag"].format(output_format=call_format(style, tool_docs), param_types="")
        text = PROMPT_TEMPLATE_MAPPING["plaintext"].format(persona=t["persona"], task=t["task"],
                                                          tool_call_format=fmt,
                                                          multiturn_behavior=t["multiturn_behavior"],
                                                          available_tools=tools_section(functions, style, tool_docs))
    else:
        text = f"{t['persona']}{t['task']}\n\n{t['multiturn_behavior']}"
    if prompting == "cot":
        text += "\n\n" + COT_INSTRUCTION
    return text


def as_tools(functions: list[dict]) -> list[dict]:
    """BFCL docs in the OpenAI ``tools`` shape chat templates expect."""
    return [{"type": "function", "function": f} for f in functions]


def user_messages(turn, style: str = "python") -> list[dict]:
    """A user turn as the model reads it: with ``style="python"`` tool docs first offered in this turn are put in
    front of its message, as BFCL's prompting loop does (``json``: they go through the template's ``tools=``)."""
    msgs = [dict(m) for m in turn.messages]
    if turn.functions and style == "python" and msgs:
        msgs[0]["content"] = f"{turn.functions}\n{msgs[0]['content']}"
    return msgs


def calls_text(step, style: str = "python") -> str:
    """The calls a step made (canonical, re-rendered from parsed literals) as model text in the call style."""
    calls = [c for text in step.calls for c in parse_calls(text)]
    return render_calls(calls, style) if calls else ""


class FullHistoryContext:
    """BFCL's context: the whole conversation so far (grows with every step)."""

    name = "full_history"

    def __init__(self, style: str = "python", prompting: str = "plain", tool_docs: str = "full"):
        check_prompt_options(style, prompting, tool_docs)  # validate early
        self.style, self.prompting, self.tool_docs = style, prompting, tool_docs
        self._system: dict[tuple, str] = {}  # (task id, doc names) -> system prompt (a 40k-char JSON dump)

    def system_message(self, task) -> dict:
        """The task's benchmark writes the prompt (:meth:`parl_mt_lib.envs.Benchmark.system_prompt`: BFCL's, or
        τ-bench's with the domain policy); cached per task and offered docs."""
        from .envs import benchmark_of

        key = (task.id, tuple(f["name"] for f in task.functions))
        if key not in self._system:
            self._system[key] = benchmark_of(task).system_prompt(task, self.style, self.prompting, self.tool_docs)
        return {"role": "system", "content": self._system[key]}

    def tools(self, episode) -> list[dict] | None:
        if self.style != "json" or self.tool_docs == "none":
            return None
        return as_tools(episode.functions())

    def messages(self, episode) -> list[dict]:
        msgs = [self.system_message(episode.task)]
        for turn, user in enumerate(episode.turns):
            msgs.extend(user_messages(user, self.style))
            for step in episode.steps_of(turn):
                msgs.append({"role": "assistant", "content": step.output})
                for call, result in zip(step.calls, step.results):
                    msgs.append({"role": "tool", "name": call, "content": result})
        return msgs


class ProgressContext(FullHistoryContext):
    """PARL-MT's context: system + tools, the current request, the latest summary/plan with the calls the model
    actually made, and their results. At the start of a turn the previous turn's last summary is carried into the
    user message. A latest output without a progress block is shown as its calls only.
    """

    name = "progress"

    def system_message(self, task) -> dict:
        from .envs import benchmark_of

        msg = super().system_message(task)
        extra = benchmark_of(task).progress_instruction(short=self.tool_docs in SHORT_DOCS)
        return {"role": "system", "content": msg["content"] + "\n\n" + extra}

    def messages(self, episode) -> list[dict]:
        turn = episode.turn
        msgs = [self.system_message(episode.task)] + user_messages(episode.turns[turn], self.style)
        now = episode.steps_of(turn)
        if now:  # the latest summary + plan, the calls it made (what the model did, not what it planned), results
            last = now[-1]
            block, act = parse_progress(last.output), calls_text(last, self.style)
            content = format_progress(block.summary, block.plan, act) if block else act
            msgs.append({"role": "assistant", "content": content})
            msgs += [{"role": "tool", "name": c, "content": r} for c, r in zip(last.calls, last.results)]
        elif episode.steps:  # new turn: carry the latest summary forward
            block = parse_progress(episode.steps[-1].output)
            if block and block.summary and len(msgs) > 1:
                first = dict(msgs[1])
                first["content"] = f"<summary>{block.summary}</summary>\n\n" + first["content"]
                msgs[1] = first
        return msgs


def make_context(mode: str = "full_history", **kw):
    """Context builder by name: ``full_history`` (BFCL) or ``progress`` (PARL-MT: summary + plan replace history)."""
    builders = {"full_history": FullHistoryContext, "progress": ProgressContext}
    if mode not in builders:
        raise ConfigError(f"unknown context mode {mode!r}; choose from {sorted(builders)}")
    return builders[mode](**kw)


def render_prompt(tokenizer, messages: list[dict], tools=None) -> str:
    """The exact prompt string a chat model sees (its own chat template, generation prompt added)."""
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def encode_with_assistant_mask(tokenizer, messages: list[dict], tools=None) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and a 0/1 mask that is 1 exactly on assistant-generated tokens.

    Uses the template's ``{% generation %}`` markers (TRL's Qwen2.5 training template has them).
    """
    out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])
