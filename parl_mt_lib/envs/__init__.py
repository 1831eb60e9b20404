"""Benchmarks on one protocol (:mod:`.base`): BFCL multi-turn and the synthetic PAG tasks (:mod:`.bfcl`)."""
from .base import (Benchmark, Environment, ScriptedUser, UserSource, UserTurn, Verdict, assert_trainable,  # noqa: F401
                   benchmark_of, get_benchmark, param_order, register, tasks_from_refs)
