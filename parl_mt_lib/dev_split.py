"""A dev split for choosing hyperparameters, never evaluation entries: fresh draws of a PAG build's own generator.

Used by the probes under ``benchmarks/`` (``sft_dev_probe.py``, ``rl_dev_probe.py``) that pick a recipe value by
playing variants on these tasks. The dev tasks are drawn by ``synth.synthesize`` with the build's curriculum knobs
and another seed: the same distribution as the build's held-out tasks, none a training or held-out task of the
build (a draw whose gold call sequence equals any build task is dropped, as the build drops duplicates; ids
``synth_<dev_seed>_*`` never collide with the build's).

    >>> parse_variant("lr2e-3:learning_rate=2e-3,max_steps=10")
    ('lr2e-3', {'learning_rate': '2e-3', 'max_steps': 10})
"""
from __future__ import annotations

import json


def parse_variant(text: str, reserved: tuple[str, ...] = ("view", "data")) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> ``(name, overrides)``; values are read as YAML (``launch.parse_sets``; the
    recipe loader then checks their types, ``2e-3`` included). Keys in ``reserved`` are set by the probe for every
    variant (its data and view), not per variant.

    >>> parse_variant("recipe:")
    ('recipe', {})
    """
    from .launch import parse_sets
    from .runtime import ConfigError

    name, _, spec = text.partition(":")
    if not name or "/" in name or name.startswith("."):  # the name is a directory under the probe's --out
        raise ConfigError(f"--variant takes NAME:KEY=VALUE,... with a plain NAME (no '/', no leading '.'), got {text!r}")
    overrides = parse_sets([item for item in spec.split(",") if item])
    if set(reserved) & set(overrides):
        raise ConfigError(f"--variant {name!r}: {', '.join(sorted(set(reserved) & set(overrides)))} is set by the "
                          "probe's own options for every variant, not per variant")
    return name, overrides


def unique_names(variants: list[tuple[str, dict]], taken: tuple[str, ...] = ()) -> None:
    """Two variants with one name would share an output directory, as would a variant named like one of the
    probe's own directories (``taken``): one line."""
    from .runtime import ConfigError

    if len({name for name, _ in variants}) < len(variants):
        raise ConfigError("two --variant share a name (and would share an output directory)")
    if {name for name, _ in variants} & set(taken):
        raise ConfigError(f"--variant names {sorted(taken)} are the probe's own; pick another name")


def dev_tasks(pag_dir, n: int, seed: int) -> list:
    """``n`` fresh tasks from the build's generator (its synth knobs, seed ``seed``), none equal to a build task."""
    from .pag_build import PAGConfig, load_pag
    from .runtime import ConfigError, repo_path
    from .synth import SynthConfig, _fingerprint, synthesize

    try:
        cfg = PAGConfig(**json.loads((repo_path(pag_dir) / "card.json").read_text())["config"])
    except (KeyError, TypeError) as err:  # a τ-bench build's card, or one from an older PAGConfig
        raise ConfigError(f"{pag_dir}: not a synthetic PAG build this code can read ({err!r})") from None
    own = cfg.synth.get("seed", cfg.seed)  # the seed the build's tasks were drawn with (as pag_build draws them)
    if cfg.source != "synthetic" or cfg.teacher != "template" or seed == own:
        raise ConfigError(f"dev tasks need a synthetic build with the template teacher (the one they are drawn with) "
                          f"and a seed other than its own ({own})")
    _splits, built = load_pag(repo_path(pag_dir))
    taken = {_fingerprint(t.gold_calls) for t in built.values()}
    drawn = synthesize(SynthConfig(**{**cfg.synth, "n_tasks": 2 * n, "seed": seed}))
    fresh = [t for t in drawn if _fingerprint(t.gold_calls) not in taken and t.id not in built]
    if len(fresh) < n:
        raise ConfigError(f"only {len(fresh)} of {n} dev tasks are new; ask for fewer")
    return fresh[:n]
