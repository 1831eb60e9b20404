"""Benchmarks on one protocol (:mod:`.base`): BFCL multi-turn and the synthetic PAG tasks (:mod:`.bfcl`)."""
from .base import (Benchmark, Environment, ScriptedUser, UserSource, UserTurn, Verdict, benchmark_of,  # noqa: F401
                   get_benchmark, param_order, register)
