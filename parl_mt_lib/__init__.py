"""parl-mt: a runnable reproduction of PARL-MT (progress-aware multi-turn function calling).

Modules, in dependency order: ``runtime`` (errors, paths, provenance) -> ``calls`` (safe parser)
-> ``bfcl`` (data) -> ``env`` (environment state + executor) -> ``context`` (prompt + masks)
-> ``rollout`` (driver) -> ``policies`` / ``models`` / ``toy_model`` -> ``evaluate`` (official
scoring, runner) -> ``bench`` (throughput benchmarks).
"""
__version__ = "0.1.0"
