"""Rollout backends: the contract every generator meets, and the registry the RL loop and evaluation pick from.

A backend takes step requests (:class:`~parl_mt_lib.rollout.StepRequest`: context messages + tools + the episode)
and returns one :class:`~parl_mt_lib.rollout.Generation` per request — the text, and when asked (``keep_tokens``)
the exact prompt ids, completion ids and the sampler's log-probs of the sampled tokens. It also has two hooks:
``reseed(seed)`` and ``load_weights(model=None, adapter_dir=None)`` (take new weights or a new LoRA adapter before
the next rollouts). The RL loop picks its backend by name from the recipe (``rollout_backend``); a new engine
(e.g. vLLM) is one more class registered here with :func:`register_backend`.

Backends in the box: ``hf`` (:class:`~parl_mt_lib.policies.HFPolicy`, transformers ``generate``), ``oracle`` (gold
calls), ``scripted`` (``fn(request) -> text``, a ``MockModel``), ``openai`` (any OpenAI-compatible endpoint),
``vllm`` (:class:`~parl_mt_lib.backends_vllm.VLLMBackend`: a vLLM engine, CPU or GPU; token ids, sampler log-probs,
LoRA / full weights synced through ``load_weights``).

Example:
    >>> sorted(BACKENDS)
    ['hf', 'openai', 'oracle', 'scripted', 'vllm']
    >>> b = make_rollout_backend("scripted", fn=lambda req: "[ls()]")
    >>> isinstance(b, RolloutBackend), b.generate([None])[0].text
    (True, '[ls()]')
    >>> make_rollout_backend("sglang")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: unknown rollout_backend 'sglang'; choose from hf, openai, oracle, scripted, vllm
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from .runtime import ConfigError


@runtime_checkable
class RolloutBackend(Protocol):
    name: str
    style: str

    def generate(self, requests: list) -> list: ...

    def reseed(self, seed: int) -> None: ...

    def load_weights(self, model=None, adapter_dir=None) -> None: ...


def _hf(*, model=None, tokenizer=None, **kw):
    from .policies import HFPolicy

    if model is None or tokenizer is None:
        raise ConfigError("rollout_backend 'hf' needs a model and its tokenizer")
    return HFPolicy(model, tokenizer, **kw)


def _oracle(*, model=None, tokenizer=None, **kw):
    from .policies import OraclePolicy

    return OraclePolicy(tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in ("calls_per_step", "style")})


def _scripted(*, fn=None, model=None, tokenizer=None, **kw):
    from .policies import ScriptedPolicy

    if fn is None:
        raise ConfigError("rollout_backend 'scripted' needs fn(request) -> text")
    return ScriptedPolicy(fn, tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in ("name", "style",
                                                                                           "keep_tokens")})


def _openai(*, served_model: str | None = None, model=None, tokenizer=None, **kw):
    from .policies import OpenAIPolicy

    if not served_model:
        raise ConfigError("rollout_backend 'openai' needs served_model=<name> (and base_url)")
    keep = ("base_url", "api_key_env", "max_concurrency", "retries", "backoff", "timeout", "temperature", "seed",
            "style")
    return OpenAIPolicy(served_model, **{k: v for k, v in kw.items() if k in keep},
                        **({"max_tokens": kw["max_new_tokens"]} if "max_new_tokens" in kw else {}))


def _vllm(**kw):
    from .backends_vllm import _factory

    return _factory(**kw)


BACKENDS = {"hf": _hf, "oracle": _oracle, "scripted": _scripted, "openai": _openai, "vllm": _vllm}
# the backends an RL recipe can name: built from the recipe and the trainer's model alone, and returning token ids
# + sampler log-probs (``scripted`` needs a function and ``openai`` a served model: pass them to ``train_rl`` ready
# made; ``oracle`` keeps no tokens)
RECIPE_BACKENDS = {"hf", "vllm"}


def register_backend(name: str, factory, *, from_recipe: bool = False) -> None:
    """Add a backend: ``factory(*, model=None, tokenizer=None, **options) -> RolloutBackend``; ``from_recipe``: an
    RL recipe may name it (it builds from the trainer's model and returns token ids and sampler log-probs)."""
    BACKENDS[name] = factory
    if from_recipe:
        RECIPE_BACKENDS.add(name)


@contextmanager
def greedy(backend):
    """``backend`` with sampling switched off for the block (held-out evaluation through the RL's own engine: the
    same weights the next rollouts use, greedy); its temperature is restored after.

    >>> b = make_rollout_backend("scripted", fn=lambda req: "[ls()]")
    >>> b.temperature = 1.0
    >>> with greedy(b) as g:
    ...     g.temperature
    0.0
    >>> b.temperature
    1.0
    """
    if not hasattr(backend, "temperature"):
        raise ConfigError(f"rollout backend {getattr(backend, 'name', backend)!r} has no temperature to switch off "
                          "for greedy held-out play; use rollout_backend: hf")
    old = backend.temperature
    backend.temperature = 0.0
    try:
        yield backend
    finally:
        backend.temperature = old


def make_rollout_backend(kind: str, **kw):
    """A backend by name (see the module doc); options a backend does not take are ignored only where listed."""
    if kind not in BACKENDS:
        raise ConfigError(f"unknown rollout_backend {kind!r}; choose from {', '.join(sorted(BACKENDS))}")
    return BACKENDS[kind](**kw)
