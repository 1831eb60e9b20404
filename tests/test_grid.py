"""Nothing is reused silently: the one grid runner, fingerprints and directory claims, the PAG build reuse rule,
the RL seed grid (training faked: the rule is what is tested, not RL)."""
import json
import shutil

import pytest

from parl_mt_lib.grid import Cell, run_grid
from parl_mt_lib.runtime import (ConfigError, artifact_card, claim_dir, content_fingerprint, fingerprint,
                                 input_fingerprint, read_fingerprint, write_fingerprint)

CALLS = []


def job(x, fail=False):
    """A module-level grid job (spawned workers import it); records each call in this process."""
    CALLS.append(x)
    if fail:
        raise RuntimeError(f"job {x} failed")
    return {"x": x, "double": 2 * x}


def _cells(xs, tag="v1", fail=()):
    return [Cell(f"c{x}", job, {"x": x, "fail": x in fail}, fingerprint({"x": x, "tag": tag})) for x in xs]


def test_grid_reuses_only_matching_fingerprints(tmp_path):
    CALLS.clear()
    first = run_grid(_cells([1, 2]), tmp_path, progress=False)
    assert first["ran"] == ["c1", "c2"] and CALLS == [1, 2] and first["cells"]["c2"]["double"] == 4
    again = run_grid(_cells([1, 2]), tmp_path, progress=False)
    assert again["reused"] == ["c1", "c2"] and again["ran"] == [] and CALLS == [1, 2]
    changed = run_grid(_cells([1]) + _cells([2], tag="v2"), tmp_path, progress=False)
    assert changed["ran"] == ["c2"] and CALLS == [1, 2, 2]
    assert json.loads((tmp_path / "cells.json").read_text())["c2"]["fingerprint"] == fingerprint({"x": 2, "tag": "v2"})
    # a record without a fingerprint (written before fingerprints) is never reused
    rec = json.loads((tmp_path / "cells.json").read_text())
    rec["c1"].pop("fingerprint")
    (tmp_path / "cells.json").write_text(json.dumps(rec))
    assert run_grid(_cells([1, 2], tag="v1")[:1], tmp_path, progress=False)["ran"] == ["c1"]


def test_grid_saves_each_cell_as_it_finishes(tmp_path):
    CALLS.clear()
    with pytest.raises(RuntimeError, match="job 2 failed"):
        run_grid(_cells([1, 2, 3], fail=(2,)), tmp_path, progress=False)
    assert set(json.loads((tmp_path / "cells.json").read_text())) == {"c1"}  # cell 3 never started
    res = run_grid(_cells([1, 2, 3]), tmp_path, progress=False)
    assert res["reused"] == ["c1"] and res["ran"] == ["c2", "c3"]


def test_grid_rejects_duplicate_keys_and_missing_fingerprints(tmp_path):
    with pytest.raises(ConfigError, match="unique keys"):
        run_grid(_cells([1]) + _cells([1]), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="needs a fingerprint"):
        run_grid([Cell("a", job, {"x": 1}, "")], tmp_path, progress=False)


def test_claim_dir_resumes_same_run_refuses_another_keeps_files(tmp_path):
    d = tmp_path / "run"
    a, b = artifact_card({"lr": 1.0, "r": {"x": 1}}, {"data": "d1"}), artifact_card({"lr": 1.0, "r": {"x": 2}},
                                                                                    {"data": "d2"})
    assert claim_dir(d, a) is False and claim_dir(d, a) is True
    (d / "weights.bin").write_bytes(b"old")
    with pytest.raises(ConfigError) as err:
        claim_dir(d, b, what="recipe")
    msg = str(err.value)
    assert "\n" not in msg and "another recipe" in msg and "config.r.x" in msg and "inputs.data" in msg
    assert (d / "weights.bin").read_bytes() == b"old" and read_fingerprint(d) == a  # nothing touched
    assert claim_dir(d, b, replace=True) is False  # a grid re-running its own stale cell
    assert not (d / "weights.bin").exists() and read_fingerprint(d) == b
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no fingerprint.json"):
        claim_dir(legacy, a)


def test_input_fingerprints(tmp_path, toy_path):
    d = tmp_path / "ckpt"
    shutil.copytree(toy_path, d)
    content = input_fingerprint(d)
    assert content == content_fingerprint(d) == input_fingerprint(d)  # a model dir without a run fingerprint
    (d / "config.json").write_text((d / "config.json").read_text() + " ")
    assert input_fingerprint(d) != content
    write_fingerprint(d, artifact_card({"lr": 1}))
    assert input_fingerprint(d) == artifact_card({"lr": 1})["fingerprint"]  # the run that wrote it
    write_fingerprint(d, {**artifact_card({"lr": 1}), "output": "feedfacefeedface"})
    assert input_fingerprint(d) == "feedfacefeedface"  # recorded content hash first (data)
    assert input_fingerprint("toy") == content_fingerprint(toy_path)
    assert input_fingerprint("oracle") == fingerprint({"name": "oracle"}) != input_fingerprint("openai:m")
    big = tmp_path / "big" / "w.bin"  # over 2 MiB: size, first and last MiB only
    big.parent.mkdir()
    big.write_bytes(b"a" * (3 * 2**20))
    fp = content_fingerprint(big.parent)
    with open(big, "r+b") as fh:
        fh.seek(2**20 + 10)
        fh.write(b"b")
    assert content_fingerprint(big.parent) == fp  # the documented blind spot: the middle of a big file
    with open(big, "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"b")
    assert content_fingerprint(big.parent) != fp


def test_pag_build_reuse_rule(tmp_path, monkeypatch):
    from parl_mt_lib import pag_build
    from parl_mt_lib.pag_build import PAGConfig, build_pag

    calls = []
    real = pag_build.synthesize
    monkeypatch.setattr(pag_build, "synthesize", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = PAGConfig(n_tasks=4, seed=0, verify_limit=0)
    out = tmp_path / "pag"
    card = build_pag(cfg, out, progress=False)
    fp = read_fingerprint(out)
    assert len(calls) == 1 and fp["fingerprint"] == card["config_fingerprint"] and fp["config"]["n_tasks"] == 4
    assert input_fingerprint(out) == fp["output"]  # later runs record the data they read
    assert build_pag(cfg, out, progress=False) == card and len(calls) == 1  # same config: reused, not rebuilt
    assert build_pag(cfg, out, progress=False, reuse=False)["fingerprint"] == card["fingerprint"] and len(calls) == 2
    other = build_pag(PAGConfig(n_tasks=4, seed=1, verify_limit=0), out, progress=False)
    assert len(calls) == 3 and read_fingerprint(out)["fingerprint"] != fp["fingerprint"]
    assert other["fingerprint"] != card["fingerprint"] and input_fingerprint(out) != fp["output"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a PAG build"):
        build_pag(cfg, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine" and len(calls) == 3


def _fake_train_rl(calls):
    def train_rl(recipe, out_dir, *, progress=True, **kw):
        from pathlib import Path

        calls.append(recipe.seed)
        out = Path(out_dir)
        assert read_fingerprint(out) is not None  # the cell claimed its directory first
        (out / "final").mkdir(exist_ok=True)
        (out / "iterations.jsonl").write_text(json.dumps(
            {"iteration": 0, "reward_mean": 0.5, "terms": {"task": 0.5}, "heldout_success": 0.25}) + "\n")
        return {"method": recipe.method, "seed": recipe.seed, "iterations": 1, "reward_first20": 0.5,
                "reward_last20": 0.5, "heldout_start": 0.25, "heldout_final": 0.25, "cost": {},
                "final_dir": str(out / "final"), "recipe": {"learning_rate": recipe.learning_rate}}
    return train_rl


def test_rl_grid_reruns_a_seed_when_recipe_or_init_changes(pag_dir, toy_path, tmp_path, monkeypatch):
    from parl_mt_lib import rl

    calls = []
    monkeypatch.setattr(rl, "train_rl", _fake_train_rl(calls))
    init = tmp_path / "init"
    shutil.copytree(toy_path, init)
    ov = {"data": str(pag_dir), "init": str(init), "iterations": 1}
    out = tmp_path / "rl"
    m = rl.run_rl_grid("recipes/toy/pag_rl.yaml", (0, 1), out, ov, progress=False)
    stamped = read_fingerprint(out / "seed0" / "final")  # the run's card + the content hash of the weights
    assert calls == [0, 1] and {k: v for k, v in stamped.items() if k != "output"} == read_fingerprint(out / "seed0")
    assert stamped["output"] == content_fingerprint(out / "seed0" / "final")
    assert rl.run_rl_grid("recipes/toy/pag_rl.yaml", (0, 1), out, ov, progress=False)["reused_seeds"] == [
        "seed0", "seed1"] and calls == [0, 1]
    rl.run_rl_grid("recipes/toy/pag_rl.yaml", (0, 1), out, {**ov, "learning_rate": 1e-3}, progress=False)
    assert calls == [0, 1, 0, 1]
    write_fingerprint(init, artifact_card({"retrained": True}))  # the starting checkpoint changed
    again = rl.run_rl_grid("recipes/toy/pag_rl.yaml", (0,), out, {**ov, "learning_rate": 1e-3}, progress=False)
    assert calls == [0, 1, 0, 1, 0] and again["reused_seeds"] == []
    assert m["per_seed"]["0"]["fingerprint"] != again["per_seed"]["0"]["fingerprint"]


def test_fingerprint_is_stable_for_plain_objects():
    """Task objects may hold plain objects (a benchmark instance): their default str has a memory address."""
    class Bench:
        name = "counter"

    assert fingerprint({"benchmark": Bench()}) == fingerprint({"benchmark": Bench()})
    assert fingerprint({"x": (1, 2)}) == fingerprint({"x": [1, 2]}) != fingerprint({"x": [2, 1]})
