"""The diagnosis scripts under benchmarks/: which tasks they play (never evaluation entries) and how they read runs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from parl_mt_lib.dev_split import dev_tasks, parse_variant
from parl_mt_lib.runtime import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("text,want", [
    ("recipe:", ("recipe", {})),
    ("lr:learning_rate=2e-3", ("lr", {"learning_rate": "2e-3"})),  # the recipe loader makes it 0.002
    ("b:max_steps=200,bf16=false", ("b", {"max_steps": 200, "bf16": False})),
])
def test_dev_probe_reads_variants(text, want):
    assert parse_variant(text) == want


@pytest.mark.parametrize("text", ["lr:learning_rate", ":max_steps=2", "p:view=plain", "d:data=elsewhere",
                                  "../up:max_steps=2", "a/b:max_steps=2", ".hidden:max_steps=2"])
def test_dev_probe_refuses_a_variant_it_cannot_read(text):
    with pytest.raises(ConfigError):
        parse_variant(text)


def test_dev_tasks_drop_a_draw_equal_to_a_build_task(pag_dir, monkeypatch):
    """A fresh draw whose gold calls equal a build task's (train or held out) is not a dev task."""
    import parl_mt_lib.synth as synth
    from parl_mt_lib.pag_build import load_pag

    _splits, built = load_pag(pag_dir)
    real = synth.synthesize

    def with_a_copy(cfg, *args, **kw):
        tasks = real(cfg, *args, **kw)
        copy = next(iter(built.values()))
        return [tasks[0], type(copy)(**{**vars(copy), "id": "synth_1_copy"}), *tasks[1:]]

    monkeypatch.setattr(synth, "synthesize", with_a_copy)
    assert "synth_1_copy" not in {t.id for t in dev_tasks(pag_dir, 6, seed=1)}


def test_dev_tasks_are_new_draws_of_the_builds_generator(pag_dir):
    """Dev tasks: the build's curriculum, another seed, none a training or held-out task of the build."""
    from parl_mt_lib.pag_build import load_pag
    from parl_mt_lib.synth import _fingerprint

    _splits, built = load_pag(pag_dir)
    dev = dev_tasks(pag_dir, 6, seed=1)
    assert len(dev) == 6 and len({t.id for t in dev}) == 6
    assert not {t.id for t in dev} & set(built)
    assert not {_fingerprint(t.gold_calls) for t in dev} & {_fingerprint(t.gold_calls) for t in built.values()}
    card = json.loads((pag_dir / "card.json").read_text())["config"]["synth"]
    assert {c for t in dev for c in t.involved_classes} <= set(card["classes"])
    assert all(len(turn) == 1 for t in dev for turn in t.gold_calls if turn)  # the build's calls_per_turn (1, 1)
    assert [t.id for t in dev_tasks(pag_dir, 6, seed=1)] == [t.id for t in dev]  # deterministic
    with pytest.raises(ConfigError, match="seed other than its own"):
        dev_tasks(pag_dir, 6, seed=0)


def test_pool_probe_reads_the_drawn_tasks_recorded_else_recomputes_them(tmp_path):
    from parl_mt_lib.rl import iteration_batch

    probe = _script("rl_pool_probe")
    pool = [NS(id=f"t{i}") for i in range(10)]
    recipe = NS(seed=0, tasks_per_iteration=2, iterations=3)
    run = tmp_path / "run"
    run.mkdir()
    rule = {t.id for it in range(3) for t in iteration_batch(recipe, pool, it)}
    assert probe.drawn_ids(run, recipe, pool) == rule  # no iterations.jsonl: the recipe's iterations
    rows = [{"iteration": 0, "task_ids": ["t9", "t1"]}, {"iteration": 1, "task_ids": ["t1", "t4"]}]
    (run / "iterations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert probe.drawn_ids(run, recipe, pool) == {"t9", "t1", "t4"}
    (run / "iterations.jsonl").write_text(json.dumps({"iteration": 0}) + "\n")  # an older run: the rule, 1 iteration
    assert probe.drawn_ids(run, recipe, pool) == {t.id for t in iteration_batch(recipe, pool, 0)}


def test_dev_probe_refuses_repeated_variants_and_builds_it_cannot_draw_from(pag_dir, tmp_path):
    import shutil

    probe = _script("sft_dev_probe")
    with pytest.raises(ConfigError, match="share a name"):
        probe.main(["--pag", str(pag_dir), "--variant", "a:", "--variant", "a:max_steps=2", "--out", str(tmp_path)])
    other = tmp_path / "hf_teacher"
    shutil.copytree(pag_dir, other)
    card = json.loads((other / "card.json").read_text())
    card["config"]["teacher"] = "hf"
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="template teacher"):
        dev_tasks(other, 2, seed=1)
    (other / "card.json").write_text(json.dumps({"source": "tau2"}))  # a τ-bench build's card has no config
    with pytest.raises(ConfigError, match="not a synthetic PAG build"):
        dev_tasks(other, 2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_teacher"]  # nothing written


@pytest.mark.parametrize("key", ["init", "data", "eval_tasks", "seed", "method", "tool_docs", "max_new_tokens",
                                 "rollout_backend", "lora_sync", "generation_batch_size"])
def test_rl_dev_probe_refuses_per_variant_inputs_and_held_out_play(key, tmp_path):
    """Every RL variant starts from one checkpoint and data and is played as the start is; none plays the run's
    held-out (evaluation) tasks."""
    probe = _script("rl_dev_probe")
    with pytest.raises(ConfigError, match=key):
        probe.main(["--variant", f"v:{key}=1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_rl_dev_probe_refuses_a_variant_named_like_the_start(tmp_path):
    with pytest.raises(ConfigError, match="probe's own"):
        _script("rl_dev_probe").main(["--variant", "start:learning_rate=3e-4", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_rl_dev_probe_trains_without_held_out_tasks(monkeypatch, tmp_path):
    """The probe's recipes have eval_tasks 0, so train_rl never plays an evaluation entry while choosing."""
    probe = _script("rl_dev_probe")
    import parl_mt_lib.dev_split as dev_split
    import parl_mt_lib.evaluate as ev
    import parl_mt_lib.rl as rl

    seen = {}

    def fake_train(recipe, out, **kw):
        seen["eval_tasks"], seen["kw"] = recipe.eval_tasks, kw
        raise SystemExit(0)

    dev = [NS(id="synth_1_0")]
    played = []
    monkeypatch.setattr(dev_split, "dev_tasks", lambda *a, **k: dev)
    monkeypatch.setattr(ev, "evaluate", lambda policy, **k: played.append((policy, k["entries"])) or {"overall": 0.0})
    monkeypatch.setattr("parl_mt_lib.compare.task_verdicts", lambda d: {})
    monkeypatch.setattr(rl, "train_rl", fake_train)
    monkeypatch.setattr("parl_mt_lib.runtime.input_fingerprint", lambda path: "fp")  # no checkpoint in a fresh clone
    with pytest.raises(SystemExit):
        probe.main(["--variant", "lr:learning_rate=3e-4", "--out", str(tmp_path)])
    assert seen == {"eval_tasks": 0, "kw": {}}
    assert played == [("results/small/02_sft/progress/seed0/final", dev)]  # the start, on the dev tasks only
