"""Progress awareness: teachers that write requests / summaries / plans, and the teacher policy.

Every step's assistant output in PARL-MT is ``<summary>…</summary><plan>…</plan>`` followed by the call
(or by nothing, when the turn is over); the format lives in :mod:`.progress_format` and the progress-aware
context that reads it in :mod:`.context` (``ProgressContext``, re-exported here).

Teachers share one interface (``request``, ``clarify``, ``progress``):
* :class:`TemplateTeacher` — deterministic, offline, written from the executed trajectory (default);
* :class:`LLMTeacher` over :class:`HFBackend` (a local transformers model) or :class:`OpenAIBackend`
  (any OpenAI-compatible endpoint; key from an environment variable; retries with backoff; bounded
  concurrency; answers cached on disk so a rerun costs nothing). The LLM teacher asks for
  summary/plan in the tag format and falls back to the template on malformed answers (counted).

Example:
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> from parl_mt_lib.rollout import run_episodes
    >>> (ep,) = run_episodes(TeacherPolicy(TemplateTeacher()), [entry_by_id("multi_turn_base_0")],
    ...                      ProgressContext(), progress=False)
    >>> print(ep.steps[1].output)
    <summary>Now done: cd('document').</summary><plan>Next: mkdir('temp'), then mv.</plan>[mkdir(dir_name='temp')]
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .calls import Call, CallParseError, parse_calls, render_calls
from .context import FullHistoryContext, ProgressContext  # noqa: F401  (ProgressContext: re-exported)
from .policies import gold_step
from .progress_format import format_progress, parse_progress
from .rollout import Generation


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _first_sentence(doc: dict) -> str:
    desc = doc.get("description", "").split("Tool description:")[-1]
    desc = desc.split(" Note that the provided function")[0].strip()
    first = re.split(r"(?<=[a-z0-9)])\. ", desc)[0].rstrip(".")
    words = re.split(r"[,;:]", first)[0].split()[:8]  # short phrases keep templated requests compact
    return " ".join(words) or doc["name"].replace("_", " ")


def _compact(call_text: str) -> str:
    """``name(first value)``: enough to say what was done without repeating every argument."""
    try:
        (call,) = parse_calls(call_text)
    except (CallParseError, ValueError):
        return _short(call_text, 30)
    first = next(iter(call.kwargs.values()), None) if call.kwargs else (call.args[0] if call.args else None)
    return f"{call.name}({_short(repr(first), 24)})" if first is not None else f"{call.name}()"


class TemplateTeacher:
    """Deterministic requests, summaries and plans written from the executed trajectory."""

    name = "template"
    OPENERS = ["", "Please ", "Could you ", "I need you to ", "Next, "]

    def __init__(self, seed: int = 0, docs: dict[str, dict] | None = None):
        from .bfcl import CLASSES, class_docs

        self.seed = seed
        self.docs = docs or {d["name"]: d for c in CLASSES for d in class_docs(c)}

    def _rng(self, *key) -> random.Random:
        return random.Random(hashlib.sha256(json.dumps([self.seed, *key], default=str).encode()).digest())

    def phrase(self, call: Call, hide: str | None = None) -> str:
        doc = self.docs.get(call.name, {"name": call.name, "description": call.name})
        what = _first_sentence(doc)
        what = what[0].lower() + what[1:] if what else call.name
        args = [f"{k.replace('_', ' ')} {v!r}" for k, v in call.kwargs.items() if k != hide]
        return what + (f" ({', '.join(args)})" if args else "")

    def request(self, calls: list[Call], hide: tuple[str, str] | None = None) -> str:
        """One user turn asking for ``calls``; ``hide=(name, param)`` leaves that value out (miss_param)."""
        rng = self._rng("req", [c.render() for c in calls], hide)
        parts = [self.phrase(c, hide[1] if hide and c.name == hide[0] else None) for c in calls]
        text = rng.choice(self.OPENERS) + "; then ".join(parts) + "."
        return text[0].upper() + text[1:]

    def clarify(self, param: str, value) -> str:
        return f"Sorry, I forgot: the {param.replace('_', ' ')} is {value!r}."

    def paraphrase(self, text: str, seed: int) -> str:
        """Cheap deterministic paraphrase: another opener and connective (the LLM teacher rewrites)."""
        rng = self._rng("para", text, seed)
        body = text
        for o in sorted(self.OPENERS, key=len, reverse=True):
            if o and body.startswith(o):
                body = body[len(o):]
                break
        body = body.replace("; then ", rng.choice(["; after that ", ", and then ", "; next "]))
        out = rng.choice([o for o in self.OPENERS if o]) + body[0].lower() + body[1:]
        return out

    def progress(self, ep, remaining: list[Call]) -> tuple[str, str]:
        """(summary, plan) before the next step of ``ep`` given the turn's remaining gold calls."""
        earlier = [c for s in ep.steps if s.turn < ep.turn for c in s.calls]
        now = [s for s in ep.steps if s.turn == ep.turn]
        parts = []
        if ep.turn:
            names = Counter(c.split("(")[0] for c in earlier)
            done = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in names.items()) or "nothing"
            parts.append(f"{ep.turn} earlier request(s): {done}.")
        this = [_compact(c) for s in now for c in s.calls]
        if this:
            parts.append(f"Now done: {', '.join(this)}.")
        elif not ep.turn:
            parts.append("Nothing done yet.")
        summary = " ".join(parts)
        if remaining:  # the next call by name and first value; the rest by name
            plan = "Next: " + ", then ".join([_compact(remaining[0].render())] + [c.name for c in remaining[1:]]) + "."
        elif now or any(t for t in ep.entry.gold_calls[ep.turn:ep.turn + 1]):
            plan = "The request is complete; reply to the user."
        else:
            plan = "This cannot be done with the information and tools I have; ask the user or explain."
        return summary, plan


class TeacherPolicy:
    """Replays the gold calls, writing the teacher's summary + plan before each (one call per step)."""

    name = "teacher"

    def __init__(self, teacher, style: str = "python", with_progress: bool = True):
        self.teacher, self.style, self.with_progress = teacher, style, with_progress

    def reply(self, ep) -> str:
        """What the policy says when the turn's gold calls are done (BFCL: nothing; τ-bench: the gold reply)."""
        return ""

    def teacher_of(self, ep):
        return self.teacher

    def generate(self, requests):
        out = []
        for req in requests:
            ep = req.episode
            chunk, remaining = gold_step(ep)
            call_text = render_calls(chunk, self.style) if chunk else self.reply(ep)
            if self.with_progress:
                summary, plan = self.teacher_of(ep).progress(ep, remaining)
                call_text = format_progress(summary, plan, call_text)
            out.append(Generation(call_text))
        return out


# ------------------------------------------------------------------ LLM teachers

LLM_PROMPT = """You are annotating a tool-use conversation. Write a short summary of what has been asked and done so
far (calls and key results) and a plan for the rest of the current request, which must lead to the next call.
Answer exactly as <summary>...</summary><plan>...</plan>.

Conversation so far:
{history}

Remaining calls of the current request: {remaining}"""


class LLMTeacher(TemplateTeacher):
    """Summary/plan (and paraphrases) from an LLM backend; template fallback on malformed answers."""

    def __init__(self, backend, seed: int = 0):
        super().__init__(seed)
        self.backend, self.name, self.fallbacks = backend, f"llm:{backend.name}", 0

    def progress(self, ep, remaining):
        history = "\n".join(f"[{m['role']}] {_short(m['content'], 300)}"
                            for m in FullHistoryContext().messages(ep)[1:])
        answer = self.backend.complete([LLM_PROMPT.format(history=history,
                                                          remaining=[c.render() for c in remaining])])[0]
        block = parse_progress((answer or "").strip())
        if block is not None:
            return block.summary, block.plan
        self.fallbacks += 1
        return super().progress(ep, remaining)

    def paraphrase(self, text: str, seed: int) -> str:
        answer = self.backend.complete([f"Paraphrase this request, keeping every name and value exactly:\n{text}"])[0]
        return answer.strip() or super().paraphrase(text, seed)


class _CachedBackend:
    """Disk cache keyed by (backend name, prompt): a rerun with the same prompts costs nothing."""

    def __init__(self, name: str, cache_dir: str | os.PathLike | None):
        from .runtime import cache_dir as default_cache

        self.name = name
        self.cache = Path(cache_dir or default_cache() / "teacher") / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.cache.mkdir(parents=True, exist_ok=True)

    def _path(self, prompt: str) -> Path:
        return self.cache / (hashlib.sha256(prompt.encode()).hexdigest()[:24] + ".json")

    def complete(self, prompts: list[str]) -> list[str]:
        from .runtime import atomic_write_json

        todo = [p for p in prompts if not self._path(p).exists()]
        for p, a in zip(todo, self._complete(todo) if todo else []):
            atomic_write_json(self._path(p), {"prompt": p, "answer": a})
        return [json.loads(self._path(p).read_text())["answer"] for p in prompts]


class OpenAIBackend(_CachedBackend):
    """An OpenAI-compatible endpoint (e.g. ``vllm serve``) behind the teacher interface."""

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, retries: int = 3, backoff: float = 0.5, timeout: float = 120.0,
                 cache_dir=None, temperature: float = 0.0, max_tokens: int = 300):
        from .policies import OpenAIPolicy

        super().__init__(f"openai_{model}", cache_dir)
        self.http = OpenAIPolicy(model, base_url, api_key_env=api_key_env, max_concurrency=max_concurrency,
                                 retries=retries, backoff=backoff, timeout=timeout, temperature=temperature,
                                 max_tokens=max_tokens)

    def _one(self, prompt: str) -> str:
        resp = self.http._post({"model": self.http.model, "messages": [{"role": "user", "content": prompt}],
                                "temperature": self.http.temperature, "max_tokens": self.http.max_tokens})
        return resp["choices"][0]["message"].get("content") or ""

    def _complete(self, prompts):
        with ThreadPoolExecutor(max_workers=self.http.max_concurrency) as pool:
            return list(pool.map(self._one, prompts))


class HFBackend(_CachedBackend):
    """A local transformers model behind the teacher interface (greedy)."""

    def __init__(self, model_spec: str, cache_dir=None, max_new_tokens: int = 200):
        from .models import load_model

        super().__init__(f"hf_{model_spec}", cache_dir)
        self.model, self.tok = load_model(model_spec)
        self.max_new_tokens = max_new_tokens

    def _complete(self, prompts):
        from .policies import HFPolicy
        from .rollout import StepRequest

        pol = HFPolicy(self.model, self.tok, max_new_tokens=self.max_new_tokens)
        reqs = [StepRequest([{"role": "user", "content": p}], None, None) for p in prompts]
        return [g.text for g in pol.generate(reqs)]


def make_teacher(kind: str = "template", *, seed: int = 0, model: str | None = None,
                 base_url: str = "http://127.0.0.1:8000/v1", cache_dir=None, **kw):
    """``template`` | ``hf`` (``model`` = dir / hub id / toy) | ``openai`` (``model`` = served name)."""
    from .runtime import ConfigError

    if kind == "template":
        return TemplateTeacher(seed)
    if kind == "hf":
        return LLMTeacher(HFBackend(model or "toy", cache_dir), seed)
    if kind == "openai":
        if not model:
            raise ConfigError("teacher 'openai' needs model=<served model name> (and base_url)")
        return LLMTeacher(OpenAIBackend(model, base_url, cache_dir=cache_dir, **kw), seed)
    raise ConfigError(f"unknown teacher {kind!r}; choose template, hf or openai")
