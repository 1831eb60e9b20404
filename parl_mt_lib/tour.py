"""What a BFCL multi-turn entry looks like: per-category statistics, a replay with state changes,
and how the prompt grows with the history (the redundancy PARL-MT attacks). Used by notebook 00.

Example:
    >>> from parl_mt_lib.bfcl import load_entries
    >>> df = category_stats(load_entries("all"))
    >>> int(df.loc["multi_turn_base", "entries"]), round(float(df.loc["multi_turn_base", "gold_calls_mean"]), 2)
    (200, 5.8)
"""
from __future__ import annotations

import pandas as pd

from .context import FullHistoryContext, render_prompt, system_prompt
from .env import state_diff
from .policies import OraclePolicy
from .rollout import run_episodes


def category_stats(entries) -> pd.DataFrame:
    """One row per category: sizes of turns, gold calls, classes, tool docs, special turns."""
    rows = []
    for e in entries:
        calls = [len(t) for t in e.gold]
        rows.append({"category": e.category, "turns": len(e.turns), "gold_calls": sum(calls),
                     "max_calls_per_turn": max(calls), "empty_gold_turns": sum(c == 0 for c in calls),
                     "holdout_turns": len(e.missed_functions), "classes": len(e.involved_classes),
                     "tool_docs": len(e.functions_at(len(e.turns))),
                     "system_prompt_chars": len(system_prompt(e.functions))})
    df = pd.DataFrame(rows)
    agg = df.groupby("category").agg(
        entries=("turns", "size"), turns_mean=("turns", "mean"), gold_calls_mean=("gold_calls", "mean"),
        gold_calls_total=("gold_calls", "sum"), max_calls_per_turn=("max_calls_per_turn", "max"),
        empty_gold_turns=("empty_gold_turns", "sum"), holdout_turns=("holdout_turns", "sum"),
        classes_mean=("classes", "mean"), tool_docs_mean=("tool_docs", "mean"),
        system_prompt_chars_mean=("system_prompt_chars", "mean"))
    return agg.round(2)


def replay(entry, policy=None, max_chars: int = 160) -> pd.DataFrame:
    """Play ``entry`` (oracle by default) and list every step: request, calls, results, state changes."""
    policy = policy or OraclePolicy()
    rows, last = [], {}

    def on_step(ep, step):
        now = ep.env.state()
        before = last.get("state") or _initial_state(ep)
        diff = state_diff(before, now)
        last["state"] = now
        rows.append({"turn": step.turn, "request": _request(ep.entry, step.turn)[:max_chars],
                     "output": step.output[:max_chars], "results": " | ".join(r[:60] for r in step.results),
                     "state_changes": "; ".join(f"{c}.{a}" for c, attrs in diff.items() for a in attrs),
                     "error": step.error})

    run_episodes(policy, [entry], on_step=on_step, progress=False)
    return pd.DataFrame(rows)


def _initial_state(ep):
    from .env import Environment

    return Environment(ep.entry).state()


def _request(entry, turn: int) -> str:
    msgs = entry.turn_messages(turn)
    return msgs[0]["content"] if msgs else ""


def prompt_growth(entries, tokenizer, context=None) -> pd.DataFrame:
    """Oracle episodes under a context builder; per step, prompt tokens and conversation tokens
    (prompt minus the shared system prompt with the tool docs)."""
    context = context or FullHistoryContext()
    rows, sys_tokens_of = [], {}

    def on_step(ep, step):
        if ep.entry.id not in sys_tokens_of:
            sys_tokens_of[ep.entry.id] = len(tokenizer(render_prompt(tokenizer, context.messages(ep)[:1]),
                                                       add_special_tokens=False).input_ids)
        sys_tokens = sys_tokens_of[ep.entry.id]
        rows.append({"entry": ep.entry.id, "category": ep.entry.category, "context": context.name,
                     "step": len(ep.steps) - 1, "turn": step.turn, "prompt_tokens": step.prompt_tokens,
                     "conversation_tokens": step.prompt_tokens - sys_tokens})

    run_episodes(OraclePolicy(tokenizer=tokenizer), entries, context, on_step=on_step, progress=False)
    return pd.DataFrame(rows)
