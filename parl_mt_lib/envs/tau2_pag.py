"""PARL-MT data on τ-bench: progress-aware (PAG) examples from tau2's TRAIN split, never its test split.

Each training task is played twice through our driver with the scripted user (:mod:`.tau2`): once under the
progress context (PARL-MT's view: system prompt with the domain policy and the progress instruction, the latest user
message — at a new turn with the previous summary carried in —, the latest summary/plan with the calls it made and
their results) and once under the full history (the plain SFT view). A teacher policy replays the gold actions one
call per step and, at the end of each turn, the gold reply to the user; under the progress context every output
starts with the teacher's ``<summary>…</summary><plan>…</plan>`` (:class:`~parl_mt_lib.progress.TemplateTeacher`,
with the domain's own tool docs). One example per step: the context the policy saw and the target.

Verification: each training task's teacher episode must score 1.0 with tau2's evaluator (the target trajectory is
correct by τ-bench's own rule); examples of a task that does not are dropped (counted in the card).

Hygiene: :func:`build` asserts in code that no training task is a test task (:func:`~.tau2.assert_disjoint`
against the whole test split of each domain), and training tasks come only from tau2's ``train`` split.

Example:
    >>> from parl_mt_lib.envs.tau2 import load_tasks
    >>> (task,) = load_tasks("retail", "train", limit=1)
    >>> ex = step_examples(task)
    >>> [e["kind"] for e in ex], ex[0]["completion_progress"][:26]
    (['call', 'call', 'call', 'call', 'reply', 'call', 'reply'], '<summary>Nothing done yet.')
    >>> ex[4]["plan"]
    "Ask the user to confirm: exchange_delivered_order_items('#W2378156')."
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..progress import TeacherPolicy
from ..runtime import ConfigError
from . import tau2 as T

SOURCE_SPLIT = "train"


class Tau2TeacherPolicy(TeacherPolicy):
    """The gold actions one call per step, then the turn's gold reply to the user; with ``with_progress`` each
    output starts with the teacher's summary and plan (the task's own teacher unless one is given)."""

    name = "tau2_teacher"

    def __init__(self, teacher=None, style: str = "python", with_progress: bool = True):
        super().__init__(teacher, style, with_progress)

    def reply(self, ep) -> str:
        return ep.task.gold_replies[ep.turn]

    def teacher_of(self, ep):
        return self.teacher or teacher_for(ep.task)


def teacher_for(task, seed: int = 0):
    """The template teacher on the task's own tool docs; at the end of a turn that precedes a write, its plan is to
    ask the user to confirm that write (τ-bench's policies require an explicit yes before any write)."""
    from ..progress import TemplateTeacher, _compact

    class Teacher(TemplateTeacher):
        def progress(self, ep, remaining):
            summary, plan = super().progress(ep, remaining)
            gold = ep.task.gold_calls
            if not remaining and ep.turn + 1 < len(gold) and gold[ep.turn + 1]:
                plan = f"Ask the user to confirm: {_compact(gold[ep.turn + 1][0].render())}."
            return summary, plan

    return Teacher(seed=seed, docs={d["name"]: d for d in task.functions})


class _Recording:
    """Keeps the context messages of every request a policy answers."""

    def __init__(self, inner):
        self.inner, self.style, self.name, self.prompts = inner, inner.style, inner.name, []

    def generate(self, requests):
        self.prompts += [r.messages for r in requests]
        return self.inner.generate(requests)


def step_examples(task, teacher=None, style: str = "python", verify: bool = False) -> list[dict]:
    """One example per teacher step of a τ-bench task: ``progress_messages`` / ``plain_messages`` (the context
    without its system message), ``completion_progress`` / ``completion_plain``, the step's ``kind`` (``call`` or
    ``reply``), its turn and ``user_message`` (the latest user message). With ``verify``, every example carries
    ``verified``: tau2's evaluator scored the task's teacher episode 1.0."""
    from ..context import FullHistoryContext, ProgressContext
    from ..rollout import run_episodes

    if task.split != SOURCE_SPLIT:
        raise ConfigError(f"PAG examples come from tau2's {SOURCE_SPLIT} split only; {task.id} is in {task.split!r}")
    teacher = teacher or teacher_for(task)
    prog = _Recording(Tau2TeacherPolicy(teacher, style))
    plain = _Recording(Tau2TeacherPolicy(teacher, style, with_progress=False))
    (ep_p,) = run_episodes(prog, [task], ProgressContext(style=style), progress=False)
    (ep_f,) = run_episodes(plain, [task], FullHistoryContext(style=style), progress=False)
    if len(ep_p.steps) != len(ep_f.steps):
        raise RuntimeError(f"{task.id}: progress and plain replays took different steps")
    verified = T.BENCHMARKS[task.domain].score(task, ep_p).valid if verify else None
    out = []
    for i, (sp, sf) in enumerate(zip(ep_p.steps, ep_f.steps)):
        from ..progress_format import parse_progress

        block = parse_progress(sp.output)
        out.append({"task_id": task.id, "domain": task.domain, "step": i, "turn": sp.turn,
                     "kind": "call" if sp.calls else "reply",
                     "user_message": ep_p.turns[sp.turn].messages[0]["content"],
                     "progress_messages": [dict(m) for m in prog.prompts[i] if m["role"] != "system"],
                     "plain_messages": [dict(m) for m in plain.prompts[i] if m["role"] != "system"],
                     "completion_progress": sp.output, "completion_plain": sf.output,
                     "summary": block.summary if block else "", "plan": block.plan if block else "",
                     "gold_call": "; ".join(sp.calls) or None, "style": style, "verified": verified})
    return out


def build(domains=T.DOMAINS, *, limit: int | None = None, style: str = "python", seed: int = 0,
          verify: bool = True, val_fraction: float = 0.1, out_dir=None) -> dict:
    """PAG examples for the training tasks of ``domains`` (tau2's train split; ``limit`` per domain). Asserts that
    no training task is a test task. ``val_fraction`` of the training tasks (seeded shuffle, at least one when there
    are two or more) are held out as ``validation`` (what notebooks 02-04 evaluate during training; tau2's test split
    is for notebook 05 and 06 only). With ``out_dir`` writes a PAG directory that notebooks 02 (SFT), 03 and 04 (RL)
    read like any other (:func:`parl_mt_lib.pag_build.load_pag`): ``train.jsonl``, ``validation.jsonl``,
    ``tasks.jsonl`` (one reference per task: benchmark, tau2 id, user source; the task itself comes from the package
    when read) and ``card.json``. Returns ``{"examples", "train", "validation", "tasks", "card"}``."""
    import random

    from ..runtime import atomic_dir, atomic_write_json, provenance

    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    t0 = time.time()
    tasks = [t for d in domains for t in T.load_tasks(d, SOURCE_SPLIT, limit=limit)]
    T.assert_disjoint(tasks, [t for d in domains for t in T.load_tasks(d, "test")])
    examples, dropped = [], []
    for task in tasks:
        exs = step_examples(task, teacher_for(task, seed), style, verify=verify)
        if verify and not exs[0]["verified"]:
            dropped.append(task.id)
            continue
        examples += exs
    order = sorted(t.id for t in tasks)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(order))) if len(order) > 1 and val_fraction > 0 else 0
    val_ids = set(order[:n_val])
    train = [e for e in examples if e["task_id"] not in val_ids]
    val = [e for e in examples if e["task_id"] in val_ids]
    card = {"source": f"tau2 {SOURCE_SPLIT} split", "benchmark": "tau2", "domains": list(domains),
            "n_tasks": len(tasks), "n_tasks_validation": len(val_ids),
            "n_examples": {"train": len(train), "validation": len(val)},
            "by_kind": {k: sum(e["kind"] == k for e in examples) for k in ("call", "reply")},
            "verified_by": "tau2 evaluator (teacher episode reward 1.0)" if verify else None,
            "dropped_tasks": dropped, "user": T.user_provenance("scripted"),
            "disjoint_from_test": "asserted (envs.tau2.assert_disjoint against every test task of these domains, "
                                  "at build and again whenever the directory is read)",
            "teacher": "template", "style": style, "seed": seed, "val_fraction": val_fraction,
            "provenance": provenance(seeds=[seed], wall_clock_s=round(time.time() - t0, 2), tau2=T._version())}
    if out_dir is not None:
        with atomic_dir(Path(out_dir)) as tmp:
            for name, rows in (("train", train), ("validation", val)):
                (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            (tmp / "tasks.jsonl").write_text("".join(json.dumps(task_ref(t)) + "\n" for t in tasks))
            atomic_write_json(tmp / "card.json", card)
    return {"examples": examples, "train": train, "validation": val, "tasks": {t.id: t for t in tasks}, "card": card}


def task_ref(task) -> dict:
    """How a PAG directory's ``tasks.jsonl`` names a τ-bench task: the package holds the task itself.

    >>> task_ref(T.make_task("retail", "0"))
    {'benchmark': 'tau2_retail', 'tau2_id': '0', 'user': 'scripted', 'user_options': {}}
    """
    return {"benchmark": task.benchmark, "tau2_id": task.tau2_id, "user": task.user,
            "user_options": dict(task.user_options)}


def sft_rows(examples: list[dict], tasks: dict, view: str = "progress", tool_docs: str = "full") -> list[dict]:
    """TRL prompt/completion rows of τ-bench examples: :func:`parl_mt_lib.pag.sft_rows` (the system message from the
    task's benchmark: tau2's agent template with the domain policy; the progress view adds the progress
    instruction), then the recorded context; the completion is the target."""
    from ..pag import sft_rows as rows

    return rows(examples, tasks, view, tool_docs)


def main(argv=None) -> int:
    """``python -m parl_mt_lib.envs.tau2_pag --out results/01_pag_tau2 [--domains airline retail] [--limit N]``: the
    PAG directory notebooks 02 (``data``), 03 and 04 (``data``) train on."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m parl_mt_lib.envs.tau2_pag", description=build.__doc__.split(".")[0])
    ap.add_argument("--out", required=True, help="output directory (replaced atomically)")
    ap.add_argument("--domains", nargs="+", default=list(T.DOMAINS), choices=list(T.DOMAINS))
    ap.add_argument("--limit", type=int, default=None, help="training tasks per domain (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    args = ap.parse_args(argv)
    try:
        card = build(args.domains, limit=args.limit, seed=args.seed, val_fraction=args.val_fraction,
                     out_dir=args.out)["card"]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {card['n_tasks']} tau2 training tasks ({card['n_tasks_validation']} held out), "
          f"{card['n_examples']['train']} / {card['n_examples']['validation']} examples, "
          f"{len(card['dropped_tasks'])} dropped, {card['provenance']['wall_clock_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
