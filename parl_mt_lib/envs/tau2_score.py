"""τ-bench scoring: the episode as tau2's ``SimulationRun``, tau2's evaluator, pass^k, do-nothing floor."""
from __future__ import annotations

import functools
import json
import uuid

from .base import Verdict
from .tau2_env import fresh_environment
from .tau2_tasks import (MAX_ERRORS, MAX_STEPS, Tau2Task, _gc_paused, _raw_tasks, load_tasks,  # noqa: F401  (load_tasks: doctest)
                         make_task, raw_task)


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
    """Our episode as tau2's own ``SimulationRun`` record (see the :mod:`.tau2` doc)."""
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
