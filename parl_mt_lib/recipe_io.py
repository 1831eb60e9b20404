"""Recipes: one YAML per model x stage read into its dataclass (``SFTRecipe``, ``RLRecipe``), every value checked
against its field's type, and what a recipe's ``bf16`` means on this machine (part of every run's card).

Example:
    >>> from parl_mt_lib.sft import SFTRecipe
    >>> load_yaml_recipe("recipes/toy/sft.yaml", SFTRecipe, {"learning_rate": "2e-3"}).learning_rate
    0.002
    >>> precision_card(False), precision(False)
    ({}, 'fp32')
"""
from __future__ import annotations

import re
import types
import typing

from .runtime import ConfigError, repo_path


def precision(bf16: bool) -> str:
    """What a recipe's ``bf16`` means on this machine, which changes the weights a run makes: bf16 weights on a GPU,
    fp32 weights under bf16 autocast on the CPU; ``fp32`` without it (on either)."""
    import torch

    return "fp32" if not bf16 else ("bf16" if torch.cuda.is_available() else "fp32+bf16-autocast")


def load_yaml_recipe(path, cls, overrides: dict | None = None, hint: str = "recipes/"):
    """A dataclass ``cls`` from a YAML file + non-None ``overrides``; a missing file, bad YAML, unknown keys or
    bad values stop with a one-line :class:`ConfigError` (``hint`` says where recipes live)."""
    import dataclasses

    import yaml

    p = repo_path(path)
    if not p.exists():
        raise ConfigError(f"recipe {path} not found; see {hint}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {unknown} in {path}; known keys: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    raw = {k: _typed(k, v, hints.get(k), path) for k, v in raw.items()}
    try:
        return cls(**raw)
    except TypeError as err:
        raise ConfigError(f"bad recipe {path}: {err}") from None


YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # what PyYAML (YAML 1.1) leaves a string: 2e-3


def _typed(key: str, value, hint, path):
    """``value`` checked against a recipe field's type (``bool``, ``int``, ``float``, or one of them ``| None``):
    an exponent written without a dot (``2e-3``: a string to PyYAML, which reads YAML 1.1) becomes the number meant;
    anything else of the wrong type stops in one line (an int stays an int in a float field: run keys hash it as
    written). Other field types pass as they are.

    >>> _typed("learning_rate", "2e-3", float, "r.yaml"), _typed("max_steps", 150, int | None, "r.yaml")
    (0.002, 150)
    >>> _typed("seed", 1.5, int, "r.yaml")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: bad recipe r.yaml: seed must be an integer, got 1.5
    """
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in args:
        return value
    base = [a for a in args if a is not type(None)]
    if len(base) != 1 or base[0] not in (bool, int, float):
        return value
    base = base[0]
    if base is float and isinstance(value, str) and YAML11_FLOAT.fullmatch(value.strip()):
        value = float(value)
    ok = isinstance(value, bool) if base is bool else (
        not isinstance(value, bool) and isinstance(value, int if base is int else (int, float)))
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number"}[base]
        raise ConfigError(f"bad recipe {path}: {key} must be {want}, got {value!r}")
    return value


def precision_card(bf16: bool) -> dict:
    """``{"precision": ...}`` for a bf16 recipe, ``{}`` for an fp32 one: the key cards made before it existed (fp32
    runs and cells) never had, so theirs stand."""
    return {"precision": precision(bf16)} if bf16 else {}
