"""The six-way comparison runner: per-seed evaluate runs, intervals, missing checkpoints, the cost table."""
import pandas as pd
import pytest

from parl_mt_lib.compare import compare_methods, cost_table, default_methods
from parl_mt_lib.runtime import ConfigError


def test_compare_runs_every_method_seed_and_benchmark(pag_dir, tmp_path):
    methods = {"oracle_once": {"policy": "oracle", "context": "full_history", "seeded": False},
               "oracle_seeded": {"policy": "oracle", "context": "progress"}}
    benches = {"synthetic": {"tasks": str(pag_dir), "limit": 2}, "bfcl": {"bfcl": "base", "limit": 2}}
    res = compare_methods(methods, (0, 1), benches, tmp_path / "cmp", progress=False)
    table = pd.DataFrame(res["table"]).set_index(["method", "benchmark"])
    assert len(res["runs"]) == 1 * 2 + 2 * 2  # unseeded: one run per benchmark; seeded: one per seed
    assert table.loc[("oracle_seeded", "bfcl"), "n_seeds"] == 2
    assert table.loc[("oracle_once", "synthetic"), "interval"].startswith("Wilson")
    assert (table["mean"] == 1.0).all()  # the oracle solves everything (base_0, base_1 and the synthetic tasks)
    assert (tmp_path / "cmp" / "comparison.csv").exists()
    assert (tmp_path / "cmp" / "oracle_seeded" / "bfcl" / "seed1" / "metrics.json").exists()


def test_missing_checkpoint_is_named_before_anything_runs(tmp_path):
    methods = default_methods(sft_dir=str(tmp_path / "no_sft"))
    with pytest.raises(ConfigError, match="method 'sft_plain', seed 0"):
        compare_methods(methods, (0,), {"bfcl": {"bfcl": "base", "limit": 1}}, tmp_path / "cmp", progress=False)
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(ConfigError, match="lora_sync must be one of"):  # before any cell is fingerprinted
        compare_methods({"oracle": {"policy": "oracle", "context": "full_history", "seeded": False}}, (0,),
                        {"bfcl": {"bfcl": "base", "limit": 1}}, tmp_path / "cmp", progress=False, lora_sync="merge")
    assert not (tmp_path / "cmp").exists()


def test_cost_table_needs_both_runs(tmp_path):
    pd.DataFrame([{"iteration": 0, "seed": 0, "prompt_tokens_per_step": 90.0, "generated_tokens_per_step": 30.0,
                   "generated_tokens_per_episode": 90.0, "steps_per_episode": 3.0, "rollout_s": 1.0,
                   "update_s": 1.0, "peak_mem_mb": 900.0}]).to_csv(tmp_path / "iterations.csv", index=False)
    t = cost_table({"pag_rl": tmp_path})
    assert t.loc["pag_rl", "prompt_tokens_per_step"] == 90.0
    with pytest.raises(ConfigError, match="run the RL notebook"):
        cost_table({"mt_grpo": tmp_path / "missing"})


def test_bfcl_excludes_the_holdout_training_ids(pag_dir, tmp_path):
    """Hygiene: tasks from a bfcl_holdout PAG directory (it has split.json) -> BFCL runs skip its training ids."""
    import json
    import shutil

    from parl_mt_lib.runtime import read_jsonl

    holdout = tmp_path / "holdout_pag"
    shutil.copytree(pag_dir, holdout)
    (holdout / "split.json").write_text(json.dumps({"train_ids": ["multi_turn_base_0"], "eval_ids": [], "seed": 0}))
    methods = {"oracle": {"policy": "oracle", "context": "full_history", "seeded": False}}
    benches = {"synthetic": {"tasks": str(holdout), "limit": 1}, "bfcl": {"bfcl": "base", "limit": 2}}
    compare_methods(methods, (0,), benches, tmp_path / "cmp", progress=False)
    ids = {r["id"] for r in read_jsonl(tmp_path / "cmp" / "oracle" / "bfcl" / "seed0" / "entries.jsonl")}
    assert ids == {"multi_turn_base_1"}


def test_retrained_checkpoint_is_evaluated_again(pag_dir, tmp_path, toy_path):
    """A comparison cell is reused only while the checkpoint behind it is the same (06 reported old verdicts)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    ckpt = tmp_path / "ckpt"
    shutil.copytree(toy_path, ckpt)
    methods = {"m": {"policy": str(ckpt), "context": "progress", "seeded": False}}
    benches = {"synthetic": {"tasks": str(pag_dir), "limit": 1}}
    kw = dict(max_new_tokens=4, progress=False)
    first = compare_methods(methods, (0,), benches, tmp_path / "cmp", **kw)
    rows = tmp_path / "cmp" / "m" / "synthetic" / "seed0" / "entries.jsonl"
    stamp = rows.stat().st_mtime_ns
    again = compare_methods(methods, (0,), benches, tmp_path / "cmp", **kw)
    assert rows.stat().st_mtime_ns == stamp  # unchanged: reused
    model = AutoModelForCausalLM.from_pretrained(str(ckpt))  # "retrain" it in place
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(str(ckpt))
    third = compare_methods(methods, (0,), benches, tmp_path / "cmp", **kw)
    assert rows.stat().st_mtime_ns != stamp  # evaluated again, not the old verdicts
    assert third["runs"][0]["total"] == first["runs"][0]["total"] == 1
    assert again["reused_cells"] == ["m/synthetic/seed0"] and third["reused_cells"] == []


def test_trained_on_ids_follow_the_recorded_recipes(tmp_path):
    """Review finding: BFCL exclusions came only from the benchmarks' PAG directories; a checkpoint trained on a
    bfcl_holdout directory that 06 does not list would have been scored on its own training entries."""
    import json

    from parl_mt_lib.compare import trained_on_ids

    pag = tmp_path / "pag"
    pag.mkdir()
    (pag / "split.json").write_text(json.dumps({"train_ids": ["multi_turn_base_7"], "eval_ids": []}))
    sft = tmp_path / "sft" / "seed1" / "final"
    sft.mkdir(parents=True)
    (sft / "recipe.resolved.json").write_text(json.dumps({"data": str(pag), "seed": 1}))
    rl = tmp_path / "rl" / "final"
    rl.mkdir(parents=True)
    (rl / "recipe.resolved.json").write_text(json.dumps({"data": str(tmp_path / "synthetic"), "seed": 1,
                                                         "init": str(tmp_path / "sft" / "seed{seed}" / "final")}))
    assert trained_on_ids(rl) == ["multi_turn_base_7"]  # through the RL run's starting checkpoint
    assert trained_on_ids("oracle") == [] and trained_on_ids(tmp_path / "nothing") == []


def test_tau2_rows_test_split_scripted_user_labelled_and_seed_budget(tmp_path):
    """τ-bench benchmarks: tau2's test tasks with the scripted user, every row labelled not comparable to published
    numbers; ``training_seeds`` evaluates only the first training seeds there (unseeded methods run once anyway)."""
    pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
    from parl_mt_lib.envs.tau2 import SCRIPTED_NOTE, load_tasks
    from parl_mt_lib.runtime import read_jsonl

    methods = {"once": {"policy": "oracle", "context": "full_history", "seeded": False},
               "seeded": {"policy": "oracle", "context": "progress"}}
    benches = {"bfcl": {"bfcl": "base", "limit": 1},
               "tau2_airline": {"tau2": "airline", "limit": 2, "training_seeds": 1, "max_new_tokens": 8}}
    res = compare_methods(methods, (0, 1), benches, tmp_path / "cmp", progress=False)
    runs = pd.DataFrame(res["runs"])
    tau = runs[runs.benchmark == "tau2_airline"]
    assert sorted(zip(tau.method, tau.seed)) == [("once", 0), ("seeded", 0)]  # seed 1 only on BFCL
    assert len(runs[runs.benchmark == "bfcl"]) == 3 and (tau.note == SCRIPTED_NOTE).all()
    table = pd.DataFrame(res["table"]).set_index(["method", "benchmark"])
    assert (table.loc[[("once", "tau2_airline"), ("seeded", "tau2_airline")], "note"] == SCRIPTED_NOTE).all()
    assert table.loc[("seeded", "tau2_airline"), "n_items"] == 2
    ids = {r["id"] for r in read_jsonl(tmp_path / "cmp" / "once" / "tau2_airline" / "seed0" / "entries.jsonl")}
    assert ids == {t.id for t in load_tasks("airline", "test", limit=2)}  # the test split, never train
    with pytest.raises(ConfigError, match="domain"):
        compare_methods(methods, (0,), {"t": {"tau2": "telecom"}}, tmp_path / "bad", progress=False)


def test_tau2_cells_are_redone_when_the_agent_prompt_changes(tmp_path, monkeypatch):
    """06's τ-bench cells: the agent's system prompt is our code (tau2_prompt), so it is part of the cell's
    fingerprint; the same prompt reuses the cell, another one redoes it (review finding: it was not)."""
    pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
    from parl_mt_lib.envs import tau2_prompt

    methods = {"once": {"policy": "oracle", "context": "full_history", "seeded": False}}
    benches = {"tau2_retail": {"tau2": "retail", "limit": 1, "max_new_tokens": 8}}
    run = lambda: len(compare_methods(methods, (0,), benches, tmp_path / "cmp", progress=False)["reused_cells"])
    assert run() == 0 and run() == 1
    monkeypatch.setattr(tau2_prompt, "REPLY_RULE", tau2_prompt.REPLY_RULE + " Be brief.")
    assert run() == 0


def test_bfcl_progress_cells_are_redone_when_the_progress_instruction_changes(tmp_path, monkeypatch):
    """Second review: only τ-bench cells were keyed by the prompt, so BFCL / synthetic cells were reused after a
    change to the progress instruction (our code). Every 06 cell is keyed by it now."""
    from parl_mt_lib import progress_format

    methods = {"once": {"policy": "oracle", "context": "progress", "seeded": False}}
    benches = {"bfcl": {"bfcl": "base", "limit": 1}}
    run = lambda: len(compare_methods(methods, (0,), benches, tmp_path / "cmp", progress=False)["reused_cells"])
    assert run() == 0 and run() == 1
    monkeypatch.setattr(progress_format, "INSTRUCTION", progress_format.INSTRUCTION + " Be brief.")
    assert run() == 0


def _runs(tmp_path, verdicts: dict) -> dict:
    """A compare_methods-shaped result whose runs' entries.jsonl hold ``verdicts[(method, bench, seed)]``."""
    import json

    runs = []
    for (m, b, s), vs in verdicts.items():
        d = tmp_path / m / b / f"seed{s}"
        d.mkdir(parents=True)
        (d / "entries.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "seed": 0, "valid": v}) + "\n"
                                                 for i, v in enumerate(vs)))
        runs.append({"method": m, "benchmark": b, "seed": s, "results_dir": str(d)})
    return {"runs": runs}


@pytest.mark.parametrize("a, b, diff, excludes_0", [
    ([1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0], 1.0, True),       # a solves every task b fails
    ([1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1], 0.0, False),      # same success, other tasks: no difference
    ([0, 0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1], -0.875, True),     # a worse: the sign is a - b
    ([1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], 0.125, False),    # one task of eight: interval holds 0
])
def test_paired_differences_pair_tasks_by_id(tmp_path, a, b, diff, excludes_0):
    from parl_mt_lib.compare import paired_differences

    res = _runs(tmp_path, {("parl_mt", "synthetic", 0): a, ("sft_pag", "synthetic", 0): b})
    (d,) = paired_differences(res, pairs=(("parl_mt", "sft_pag"), ("sft_pag", "sft_plain")), n_boot=2000)
    assert (d["a"], d["b"], d["benchmark"], d["n"]) == ("parl_mt", "sft_pag", "synthetic", 8)
    assert d["diff"] == pytest.approx(diff) and d["excludes_0"] is excludes_0
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]


def test_paired_differences_average_each_task_over_seeds(tmp_path):
    from parl_mt_lib.compare import paired_differences

    # seed 0 solves t0 only, seed 1 solves t0 and t1: a's per-task means are 1, .5, 0 against b's 0, 0, 0
    res = _runs(tmp_path, {("a", "syn", 0): [1, 0, 0], ("a", "syn", 1): [1, 1, 0], ("b", "syn", 0): [0, 0, 0]})
    (d,) = paired_differences(res, pairs=(("a", "b"),), n_boot=500)
    assert d["diff"] == pytest.approx(0.5)


def test_paired_differences_give_no_interval_below_five_tasks(tmp_path):
    """One τ-bench task per method gives a bootstrap 'interval' [d, d]: reported without one, never as excluding 0."""
    from parl_mt_lib.compare import MIN_PAIRED_TASKS, paired_differences

    res = _runs(tmp_path, {("a", "tau", 0): [1] * (MIN_PAIRED_TASKS - 1), ("b", "tau", 0): [0] * (MIN_PAIRED_TASKS - 1)})
    (d,) = paired_differences(res, pairs=(("a", "b"),), n_boot=200)
    assert d["diff"] == 1.0 and d["ci95"] is None and d["excludes_0"] is False
