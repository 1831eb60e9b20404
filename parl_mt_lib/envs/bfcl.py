"""BFCL multi-turn and the synthetic PAG tasks on the benchmark protocol.

Both use the same pieces: tasks are :class:`~parl_mt_lib.bfcl.Entry` objects, the environment is the safe
executor over BFCL's own classes (:class:`parl_mt_lib.env.Environment`), the user says the entry's turns in order
(hold-out turns offer the missed functions with BFCL's prompt), and the scorer is BFCL's official
``multi_turn_checker`` (:func:`parl_mt_lib.evaluate.score_entry`). They are registered as two names so results say
which one a task came from (``synthetic`` tasks are never evaluation entries: :mod:`parl_mt_lib.splits`).

Example:
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> from parl_mt_lib.policies import OraclePolicy
    >>> from parl_mt_lib.rollout import run_episodes
    >>> (ep,) = run_episodes(OraclePolicy(), [entry_by_id("multi_turn_base_0")], progress=False)
    >>> BFCL.score(ep.task, ep).valid, BFCL.turn_scores(ep.task, ep)
    (True, [True, True, True, True])
"""
from __future__ import annotations

import dataclasses

from .base import Benchmark, ScriptedUser, Verdict, register


class BFCLBenchmark(Benchmark):
    def __init__(self, name: str):
        self.name = name

    def environment(self, task):
        from ..env import Environment

        return Environment(task)

    def user(self, task):
        from ..bfcl import HOLDOUT_PROMPT

        return ScriptedUser(task.turns, task.missed_functions, HOLDOUT_PROMPT)

    def score(self, task, episode) -> Verdict:
        from ..evaluate import score_entry

        return score_entry(task, episode.calls_per_turn())

    def assert_trainable(self, tasks: list) -> None:
        """BFCL's overlap rule against every evaluation entry (:func:`parl_mt_lib.splits.assert_disjoint`)."""
        from ..splits import assert_disjoint

        assert_disjoint(tasks)

    def turn_scores(self, task, episode) -> list[bool]:
        """Official checker on turns ``[0..t]`` (gold and user turns cut at ``t``) for every played turn ``t``."""
        from ..evaluate import score_entry

        turns = episode.calls_per_turn()
        return [score_entry(dataclasses.replace(task, gold=task.gold[:t + 1], turns=task.turns[:t + 1]),
                            turns[:t + 1]).valid for t in range(len(turns))]


BFCL = register(BFCLBenchmark("bfcl"))
SYNTHETIC = register(BFCLBenchmark("synthetic"))
