"""Recipe values are checked against their fields' types when a recipe is read (one line, before any model loads).

PyYAML reads YAML 1.1, where ``2e-3`` (no dot) is a *string*: a recipe or ``-y`` override written that way used to
reach ``torch.optim.AdamW`` and stop the run with a traceback after the model had loaded.
"""
from __future__ import annotations

import pytest

from parl_mt_lib.rl_recipe import load_rl_recipe
from parl_mt_lib.runtime import ConfigError
from parl_mt_lib.sft import load_recipe

SFT, RL = "recipes/toy/sft.yaml", "recipes/toy/pag_rl.yaml"


def _write(tmp_path, src, extra: str):
    p = tmp_path / "recipe.yaml"
    p.write_text(open(src).read() + "\n" + extra + "\n")
    return p


@pytest.mark.parametrize("loader,src", [(load_recipe, SFT), (load_rl_recipe, RL)])
@pytest.mark.parametrize("line,key,value", [
    ("learning_rate: 2e-3", "learning_rate", 0.002),      # YAML 1.1: a string
    ("learning_rate: 1", "learning_rate", 1),              # an int as written (run keys hash it so)
    ("seed: 3", "seed", 3),
    ("bf16: true", "bf16", True),
])
def test_numbers_written_the_yaml_1_1_way_load_as_numbers(tmp_path, loader, src, line, key, value):
    r = loader(_write(tmp_path, src, line))
    got = getattr(r, key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("loader,src", [(load_recipe, SFT), (load_rl_recipe, RL)])
@pytest.mark.parametrize("line,msg", [
    ("learning_rate: fast", "learning_rate must be a number, got 'fast'"),
    ("learning_rate: '0.001'", "learning_rate must be a number, got '0.001'"),  # quoted on purpose: not ours to guess
    ("learning_rate: true", "learning_rate must be a number, got True"),
    ("seed: 1.5", "seed must be an integer, got 1.5"),
    ("seed: zero", "seed must be an integer, got 'zero'"),
    ("bf16: 'yes'", "bf16 must be true or false, got 'yes'"),
    ("bf16: 1", "bf16 must be true or false, got 1"),
])
def test_values_of_the_wrong_type_stop_in_one_line(tmp_path, loader, src, line, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")) as err:
        loader(_write(tmp_path, src, line))
    assert "\n" not in str(err.value) and "recipe.yaml" in str(err.value)


def test_overrides_are_checked_too():
    assert load_recipe(SFT, {"learning_rate": "2e-3"}).learning_rate == 0.002
    with pytest.raises(ConfigError, match="max_steps must be an integer"):
        load_recipe(SFT, {"max_steps": "many"})


def test_generic_and_other_field_types_pass_as_they_are():
    from parl_mt_lib.recipe_io import _typed

    assert _typed("xs", [0.1], list[float], "r.yaml") == [0.1]
    assert _typed("turns", (1, 3), tuple[int, int], "r.yaml") == (1, 3)
    assert _typed("rewards", {"task": 1}, dict, "r.yaml") == {"task": 1}


def test_optional_fields_take_none_and_their_type():
    assert load_rl_recipe(RL, {"task_pool": 8}).task_pool == 8
    assert load_rl_recipe(RL).clip_eps_high is None
    with pytest.raises(ConfigError, match="task_pool must be an integer"):
        load_rl_recipe(RL, {"task_pool": "all"})

