"""The one definition of PARL-MT's progress block: writing, parsing and validating
``<summary>…</summary><plan>…</plan>`` followed by the step's calls (or by nothing, when the turn is over).

Used by the teachers (:mod:`.progress`), the progress-aware context (:mod:`.context`), the ``format`` reward and
every metric that asks "is this output well formed" (:mod:`.rewards`), verification and SFT targets (:mod:`.pag`).
The call parser (:mod:`.calls`) strips these blocks (and ``<think>``) before parsing calls.

Example:
    >>> text = format_progress("Now done: cd('a').", "Next: ls().", "[ls()]")
    >>> text
    "<summary>Now done: cd('a').</summary><plan>Next: ls().</plan>[ls()]"
    >>> parse_progress(text)
    Progress(summary="Now done: cd('a').", plan='Next: ls().', rest='[ls()]')
    >>> parse_progress("[ls()]") is None, progress_ok(text), progress_ok("<plan>x</plan>[ls()]")
    (True, True, False)
"""
from __future__ import annotations

import re
from typing import NamedTuple

TAGS = ("summary", "plan")
PREAMBLE_TAGS = ("think", *TAGS)  # blocks the call parser strips before the calls

# summary first, then plan, at the start of the message (whitespace between allowed)
_BLOCK = re.compile(r"^\s*<summary>(.*?)</summary>\s*<plan>(.*?)</plan>", re.DOTALL)

INSTRUCTION = (
    "Before each action, write a short summary of what has been asked and done so far inside "
    "<summary>...</summary> and a plan of what remains for the current request inside <plan>...</plan>; "
    "then output the function calls (or nothing, if the request is complete or cannot be done)."
)
INSTRUCTION_SHORT = "First write <summary>...</summary> and <plan>...</plan>, then the calls."


class Progress(NamedTuple):
    summary: str
    plan: str
    rest: str  # what follows the block: the calls, or nothing


def format_progress(summary: str, plan: str, calls_text: str = "") -> str:
    """The progress block, then the calls exactly as given (already rendered in the call style)."""
    return f"<summary>{summary}</summary><plan>{plan}</plan>{calls_text}"


def parse_progress(text: str) -> Progress | None:
    """``Progress(summary, plan, rest)`` if ``text`` starts with a summary block then a plan block, else ``None``."""
    m = _BLOCK.match(text or "")
    if not m:
        return None
    return Progress(m.group(1).strip(), m.group(2).strip(), text[m.end():].strip())


def progress_ok(text: str) -> bool:
    """A well-formed progress block at the start (what follows is checked by the call parser)."""
    return parse_progress(text) is not None
