"""Ablations (notebook 07), the pure pieces: the rows the issue asks for, which stages a row reuses from 02/03
(fingerprint-equal up to paths and held-out settings) and which it trains, the budget (whole rows dropped, lowest
priority first, never seeds), measured costs, and the paired differences. No training: checkpoints are fake
directories holding the cards the real runs write."""
import json
import re
from pathlib import Path

import pytest

from parl_mt_lib import ablations as A
from parl_mt_lib.runtime import ConfigError, write_fingerprint

REPO = Path(__file__).resolve().parents[1]


def test_every_row_the_issue_lists_is_defined():
    keys = [r.key for r in A.ROWS]
    assert keys[0] == A.REFERENCE == "parl_mt"
    assert set(keys) == {"parl_mt", "no_pag_data", "no_pag_rl", "pag_mt_grpo", "context_full_history",
                         "no_format_reward", "no_call_reward", "no_efficiency_reward", "no_verification",
                         "no_augmentation"}
    st = {r.key: A.row_stages(r) for r in A.ROWS}
    assert st["parl_mt"] == {"pag": None, "sft": "progress", "rl": "pag_rl", "rewards_dropped": None,
                             "context": "progress"}
    assert st["no_pag_data"]["sft"] == "plain" and st["no_pag_data"]["rl"] == "pag_rl"
    assert st["no_pag_rl"]["rl"] is None and st["no_pag_rl"]["context"] == "progress"
    assert st["pag_mt_grpo"]["rl"] == "mt_grpo" and st["pag_mt_grpo"]["context"] == "full_history"
    assert st["context_full_history"]["context"] == "full_history" and st["context_full_history"]["rl"] == "pag_rl"
    assert [st[f"no_{t}_reward"]["rewards_dropped"] for t in ("format", "call", "efficiency")] == \
        ["format", "call", "efficiency"]
    assert st["no_verification"]["pag"] == {"verifier": "none"}
    assert st["no_augmentation"]["pag"] == {"paraphrase": False, "schema": False, "mask": False}
    assert len({r.priority for r in A.ROWS}) == len(A.ROWS)  # the budget's drop order is total


def test_resolve_rows_puts_the_reference_first_and_refuses_unknown_rows():
    assert [r.key for r in A.resolve_rows(["no_call_reward"])] == ["parl_mt", "no_call_reward"]
    with pytest.raises(ConfigError, match="unknown ablation row.*'nope'.*known: parl_mt"):
        A.resolve_rows(["nope"])


def test_select_rows_drops_whole_rows_lowest_priority_first_and_never_the_reference():
    shared = {"eval/parl_mt/syn/seed0": 10.0}
    jobs = {"parl_mt": {**shared, "rl/parl_mt/seed0": 100.0},
            "no_pag_rl": {"eval/no_pag_rl/syn/seed0": 10.0},
            "context_full_history": {**shared, "eval/context_full_history/syn/seed0": 10.0},  # shares ref's cell
            "no_verification": {**shared},                                # its data equal the reference's
            "no_augmentation": {f"sft/no_augmentation/seed{s}": 200.0 for s in range(3)}}
    kept, dropped = A.select_rows(jobs, budget_s=None, workers=1)
    assert kept == list(jobs) and dropped == []
    kept, dropped = A.select_rows(jobs, budget_s=150, workers=1)
    assert kept == ["parl_mt", "no_pag_rl", "context_full_history", "no_verification"]  # 600 s of SFT: one row
    assert [d["row"] for d in dropped] == ["no_augmentation"] and dropped[0]["saved_s"] == 600.0
    kept, dropped = A.select_rows(jobs, budget_s=1, workers=1)
    assert kept == ["parl_mt", "no_verification"]        # costs nothing beyond the reference's cells: stays
    assert [d["row"] for d in dropped] == ["no_augmentation", "context_full_history", "no_pag_rl"]
    # two workers: a stage's jobs share the cores, the longest job bounds it from below
    assert A.estimate_wall({"sft/a": 200.0, "sft/b": 200.0, "sft/c": 200.0, "eval/x": 4.0}, 2) == 304.0
    assert A.estimate_wall({"train|sft/a": 200.0, "train|rl/b": 100.0, "train|rl/c": 100.0, "rl|rl/d": 50.0}, 2) == 250.0


def test_measured_costs_come_from_recorded_cells(tmp_path):
    assert A.measured_costs(tmp_path) == A.DEFAULT_COSTS
    d = A.DEFAULT_COSTS
    cells = {"sft/a/seed0": {"kind": "sft", "global_step": 100, "wall_s": d["sft_overhead_s"] + 30.0},
             "sft/a/seed1": {"kind": "sft", "global_step": 100, "wall_s": d["sft_overhead_s"] + 50.0},
             "rl/no_call_reward/seed0": {"kind": "rl", "episodes": 500, "wall_s": d["rl_overhead_s"] + 100.0},
             "eval/x/bfcl/seed0": {"kind": "eval", "benchmark": "bfcl", "total": 10, "wall_s": 12.0},
             "pag/c": {"kind": "pag", "wall_s": 9.0}}
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    c = A.measured_costs(tmp_path)
    assert c["sft_s_per_step"] == pytest.approx(0.4) and c["rl_s_per_episode"] == pytest.approx(0.2)
    assert c["rl_s_per_episode_by_row"]["no_call_reward"] == pytest.approx(0.2)
    assert c["rl_s_per_episode_by_row"]["no_pag_data"] == d["rl_s_per_episode_by_row"]["no_pag_data"]
    assert c["eval_s_per_task_by_benchmark"]["bfcl"] == pytest.approx((12.0 - d["eval_overhead_s"]) / 10)
    assert c["pag_s"] == 9.0 and A.DEFAULT_COSTS == d  # the defaults themselves are left alone
    assert A.job_cost({"kind": "rl", "episodes": 500, "row": "no_call_reward"}, c) == pytest.approx(108.0)
    assert A.job_cost({"kind": "rl", "episodes": 500, "row": "unmeasured"}, c) == pytest.approx(108.0)


@pytest.mark.parametrize("budget_s, dropped_rows", [
    (600, ["no_augmentation"]),                          # plan()'s default
    (480, ["no_augmentation", "no_efficiency_reward"]),  # notebook 07's default: make reproduce <= 25 min
])
def test_default_budget_drops_the_lowest_priority_expensive_rows(budget_s, dropped_rows):
    """With the measured default costs, a clean run of every row (02/03 reused) exceeds 600 s; the budget drops
    PAG w/o augmentation (3 SFT trainings of 960 steps + its RL) and keeps every other row with all seeds; 07's
    480 s also drops the next-lowest-priority row that costs anything (no_verification reuses the reference's)."""
    c, seeds = A.DEFAULT_COSTS, (0, 1, 2)
    ev = {f"eval|eval/{r.key}/{b}/seed{s}": A.job_cost({"kind": "eval", "tasks": n, "benchmark": b}, c)
          for r in A.ROWS for b, n in (("synthetic", 40), ("bfcl", 12)) for s in seeds}
    jobs = {}
    for r in A.ROWS:
        j = {k: v for k, v in ev.items() if f"/{r.key}/" in k}
        if r.key in ("parl_mt", "no_pag_rl", "context_full_history", "no_verification"):
            j = {} if r.key == "no_verification" else j     # reused checkpoints; no_verification's data = reference
        elif r.key == "no_augmentation":
            j.update({f"train|sft/{r.key}/seed{s}": A.job_cost({"kind": "sft", "steps": 960}, c) for s in seeds})
            j.update({f"rl|rl/{r.key}/seed{s}": A.job_cost({"kind": "rl", "episodes": 576, "row": r.key}, c)
                      for s in seeds})
        else:
            j.update({f"train|rl/{r.key}/seed{s}": A.job_cost({"kind": "rl", "episodes": 576, "row": r.key}, c)
                      for s in seeds})
        jobs[r.key] = j
    kept, dropped = A.select_rows(jobs, budget_s=budget_s, workers=2)
    assert [d["row"] for d in dropped] == dropped_rows and len(kept) == len(A.ROWS) - len(dropped_rows)


def test_notebook_07_budget_is_the_one_tested_above():
    """07's default budget is one of the budgets whose drops the test above pins (change both together)."""
    nb = json.loads((REPO / "notebooks" / "07_ablations.ipynb").read_text())
    params = next("".join(c["source"]) for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert re.search(r"^budget_s = 480\b", params, re.M), params


def _cell(valid, steps=3, prompt=100, gen=20):
    return {"accuracy": sum(valid) / len(valid), "correct": sum(valid), "total": len(valid),
            "tasks": {f"t{i}": {"valid": bool(v), "steps": steps, "prompt_tokens": prompt, "generated_tokens": gen}
                      for i, v in enumerate(valid)}}


def test_summarize_paired_differences_over_tasks_and_intervals_over_seeds():
    ref = {0: [1, 1, 0, 0], 1: [1, 0, 0, 0], 2: [1, 1, 1, 0]}
    row = {0: [1, 1, 1, 0], 1: [1, 1, 0, 0], 2: [1, 1, 1, 1]}
    ev = {("parl_mt", "syn", s): _cell(v) for s, v in ref.items()}
    ev.update({("no_pag_rl", "syn", s): _cell(v, steps=5, prompt=300) for s, v in row.items()})
    out = A.summarize(ev, ["parl_mt", "no_pag_rl"], ["syn"], [0, 1, 2], n_boot=2000)
    t = {x["row"]: x for x in out["table"]}
    assert t["parl_mt"]["mean"] == pytest.approx(0.5) and t["parl_mt"]["interval"] == "t over training seeds"
    from parl_mt_lib.stats import seed_interval

    assert t["parl_mt"]["ci95"] == seed_interval([0.5, 0.25, 0.75])
    assert t["no_pag_rl"]["steps_per_task"] == 5 and t["no_pag_rl"]["prompt_tokens_per_task"] == 300
    # per task, averaged over seeds: ref (1, 2/3, 1/3, 0), row (1, 1, 2/3, 1/3) -> mean difference 0.25
    d = t["no_pag_rl"]["delta"]
    assert d["diff"] == pytest.approx(0.25) and d["n"] == 4 and d["ci95"][0] <= 0.25 <= d["ci95"][1]
    assert t["parl_mt"]["delta"] is None and out["missing_cells"] == []
    # a missing cell is listed, one seed falls back to Wilson over items
    one = A.summarize({("parl_mt", "syn", 0): _cell([1, 0])}, ["parl_mt"], ["syn"], [0, 1])
    assert one["missing_cells"] == ["parl_mt/syn/seed1"] and one["table"][0]["interval"].startswith("Wilson")


# ------------------------------------------------------------------ the plan on fake checkpoints


def _pag(path, output):
    path.mkdir(parents=True)
    (path / "card.json").write_text(json.dumps({"config": {"verifier": "lexical"}}))
    for f in ("tasks", "train", "validation"):  # loadable, no tasks (07's eval cells key by the tasks' prompts)
        (path / f"{f}.jsonl").write_text("")
    write_fingerprint(path, {"fingerprint": "cfg", "config": {}, "inputs": {}, "output": output})
    return str(path)


def _ckpt(path, card):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    write_fingerprint(path, {**card, "output": f"weights-of-{path.parent.parent.name}-{path.parent.name}"})


@pytest.fixture
def fake_runs(tmp_path, toy_path):
    """02 (both views) and 03 as their notebooks leave them: final/ with the run's card (+ weights hash)."""
    from parl_mt_lib.rl import load_rl_recipe, rl_fingerprint
    from parl_mt_lib.sft import load_recipe, sft_fingerprint

    data = _pag(tmp_path / "01_pag_toy", "data-hash")
    for view in ("progress", "plain"):
        for s in (0, 1, 2):
            r = load_recipe("recipes/toy/sft.yaml", {"data": data, "view": view, "seed": s})
            _ckpt(tmp_path / "02_sft" / view / f"seed{s}" / "final", sft_fingerprint(r))
    for s in (0, 1, 2):  # as 03 ran it: the recipe's own held-out settings (eval_tasks 40)
        r = load_rl_recipe("recipes/toy/pag_rl.yaml", {"data": data, "seed": s,
                                                      "init": str(tmp_path / "02_sft/progress/seed{seed}/final")})
        _ckpt(tmp_path / "03_pag_rl" / f"seed{s}" / "final", rl_fingerprint(r))
    return tmp_path


def _settings(root, **kw):
    return A.Settings(data=str(root / "01_pag_toy"), sft_dir=str(root / "02_sft"), pag_rl_dir=str(root / "03_pag_rl"),
                      mt_grpo_dir=str(root / "04_mt_grpo"), out_dir=str(root / "07"),
                      benchmarks={"synthetic": {"tasks": str(root / "01_pag_toy"), "limit": 4},
                                  "bfcl": {"bfcl": "all", "limit": 1}}, **kw)


def test_plan_reuses_what_equals_an_existing_run_and_trains_the_rest(fake_runs):
    root = fake_runs
    pag = {"no_verification": _pag(root / "07/pag/no_verification", "data-hash"),      # verification dropped nothing
           "no_augmentation": _pag(root / "07/pag/no_augmentation", "smaller-data")}
    p = A.Plan(_settings(root), A.resolve_rows(), pag)
    src = p.sources()
    assert src["parl_mt"]["checkpoint"] == f"reused {root}/03_pag_rl"              # 03's seeds, eval_tasks aside
    assert src["no_pag_rl"]["checkpoint"] == f"reused {root}/02_sft/progress"
    assert src["context_full_history"]["checkpoint"] == f"reused {root}/03_pag_rl"
    assert src["no_verification"]["checkpoint"] == f"reused {root}/03_pag_rl"       # byte-identical data
    assert src["no_pag_data"] == {"checkpoint": "trained here (rl/no_pag_data)", "sft": f"reused {root}/02_sft/plain"}
    assert src["no_augmentation"] == {"checkpoint": "trained here (rl/no_augmentation)",
                                      "sft": "trained here (sft/no_augmentation)"}
    rl = {(c.key, c.kwargs["seed"]) for c in p.cells("rl", ["no_call_reward"])}
    assert rl == {(f"rl/no_call_reward/seed{s}", s) for s in (0, 1, 2)}
    cell = p.cells("rl", ["no_call_reward"])[0]
    assert "call" not in cell.kwargs["overrides"]["rewards"] and cell.kwargs["overrides"]["eval_tasks"] == 0
    assert [c.key for c in p.cells("sft")] == [f"sft/no_augmentation/seed{s}" for s in (0, 1, 2)]
    # no_augmentation's RL starts from checkpoints not trained yet: its fingerprint waits for the SFT stage
    with pytest.raises(ConfigError, match="wait for an earlier stage"):
        p.cells("rl", ["no_augmentation"])
    jobs = p.row_jobs(A.DEFAULT_COSTS)
    # SFT and the RL that can start train side by side; RL from this run's SFT waits for it
    assert set(jobs["no_augmentation"]) >= {"train|sft/no_augmentation/seed0", "rl|rl/no_augmentation/seed2"}
    assert "train|rl/no_call_reward/seed1" in jobs["no_call_reward"]
    assert not any(k.startswith(("train|", "rl|")) for k in jobs["parl_mt"])
    assert [c.key for c in p.cells("rl", ["no_call_reward", "no_augmentation"], ready_only=True)] == \
        [f"rl/no_call_reward/seed{s}" for s in (0, 1, 2)]
    # rows that play the same checkpoint in the same context share one evaluation
    p.eval_jobs()
    assert p.eval_key["no_verification", "synthetic", 1] == p.eval_key["parl_mt", "synthetic", 1] == \
        "eval/parl_mt/synthetic/seed1"
    assert p.eval_key["context_full_history", "bfcl", 0] == "eval/context_full_history/bfcl/seed0"


def test_fewer_rl_iterations_retrain_the_reference_too(fake_runs):
    p = A.Plan(_settings(fake_runs, rl_overrides={"iterations": 12}), A.resolve_rows(["no_call_reward"]), {})
    assert p.sources()["parl_mt"]["checkpoint"] == "trained here (rl/parl_mt)"
    assert {c.kwargs["overrides"]["iterations"] for c in p.cells("rl")} == {12}


def test_plan_refuses_a_reward_the_recipe_does_not_have(fake_runs):
    with pytest.raises(ConfigError, match="no 'efficiency' reward to drop"):
        A.Plan(_settings(fake_runs, rl_overrides={"rewards": {"format": 0.25, "call": 0.5, "task": 1.0}}),
               A.resolve_rows(["no_efficiency_reward"]), {})


@pytest.mark.model
@pytest.mark.slow
def test_held_out_play_inside_rl_does_not_change_the_trained_weights(pag_dir, tmp_path):
    """What RL_SAME relies on (07 reuses 03's runs although its own RL cells skip the in-loop held-out play): the
    same recipe trained with and without held-out evaluation ends with identical weights, updates included."""
    import torch
    from transformers import AutoModelForCausalLM

    from parl_mt_lib.rl import load_rl_recipe, train_rl
    from parl_mt_lib.sft import load_recipe, train_sft

    init = train_sft(load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "view": "plain", "max_steps": 30,
                                                           "per_device_train_batch_size": 4, "save_steps": 1000}),
                     tmp_path / "sft")["final_dir"]
    weights, rows = [], []
    for name, held in (("with", 2), ("without", 0)):
        r = load_rl_recipe("recipes/toy/mt_grpo.yaml", {"data": str(pag_dir), "init": init, "iterations": 2,
                                                       "group_size": 3, "tasks_per_iteration": 2, "task_pool": 2,
                                                       "max_new_tokens": 12,
                                                      "eval_tasks": held, "eval_every": 1, "max_steps_per_turn": 2})
        m = train_rl(r, tmp_path / name, progress=False)
        weights.append(AutoModelForCausalLM.from_pretrained(m["final_dir"]).state_dict())
        rows.append([json.loads(x) for x in (tmp_path / name / "iterations.jsonl").read_text().splitlines()])
    assert rows[0][0]["heldout_success"] is not None and rows[1][0]["heldout_success"] is None
    assert any(not r["skipped"] for r in rows[0])                       # the weights really moved
    assert [r["reward_mean"] for r in rows[0]] == [r["reward_mean"] for r in rows[1]]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
