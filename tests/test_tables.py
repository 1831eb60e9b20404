"""README's generated result tables (parl_mt_lib.tables): a fake results/ tree shaped like the writers' output
(evaluate.summarize, sft.run_sft_grid, rl.run_rl_grid, compare.compare_methods, pag_build card), and the real README."""
import csv
import json
import shutil

import pytest

from parl_mt_lib import tables
from parl_mt_lib.evaluate import summarize
from parl_mt_lib.runtime import REPO_ROOT, ConfigError
from parl_mt_lib.stats import seed_interval, wilson

PROV = {"packages": {"parl-mt": "0.1.0"}, "git_sha": "0123456789abcdef0123456789abcdef01234567-dirty",
        "device": {"platform": "Linux-6.1-x86_64-with-glibc2.36", "python": "3.11.9", "cpu_count": 2,
                   "torch_threads": 1, "cuda": None},
        "time_utc": "2026-11-24T10:00:00Z", "seeds": [0, 1, 2], "wall_clock_s": 12.5}
CATS = ["base", "miss_func", "miss_param", "long_context"]


def _w(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _eval_metrics(valid_by_seed: dict, limit):
    rows = [{"seed": s, "id": f"multi_turn_{c}_{i}", "category": c, "valid": v(c, i)}
            for s, v in valid_by_seed.items() for c in CATS for i in range(limit)]
    m = summarize(rows, CATS, list(valid_by_seed))
    m.update(seeds=list(valid_by_seed), config={"policy": "x", "limit": limit}, provenance=PROV)
    return m


def _sft_summary(values: dict) -> dict:
    return {m: {"mean": sum(v.values()) / len(v), "ci95_seeds": seed_interval(list(v.values())),
                "per_seed": {str(s): x for s, x in v.items()}} for m, v in values.items()}


def fake_results(root):
    """A small results/ tree with every input the tables read, shaped by the writers' code."""
    _w(root / "05_evaluate/oracle/metrics.json",
       _eval_metrics({0: lambda c, i: not (c == "base" and i == 3)}, limit=10))
    _w(root / "05_evaluate/toy/metrics.json", _eval_metrics({s: lambda c, i: False for s in (0, 1, 2)}, limit=5))
    for d in ("airline", "retail"):  # envs.tau2.evaluate_tau2's metrics (pass^k as its pass_hat_k writes them)
        for kind, trials, p in (("oracle", 1, 1.0), ("toy", 3, 0.2), ("smollm2", 3, 0.4)):
            _w(root / {**tables.INPUTS, **tables.OPTIONAL_INPUTS}[f"tau2_{d}_{kind}"], {
                "categories": {f"tau2_{d}": {"correct": 1, "total": 5 * trials}}, "provenance": PROV,
                "tau2": {"trials": trials, "user": "scripted", "note": "scripted user: not comparable to published "
                         "numbers", "do_nothing_floor": 0.2, "pass_hat_k": {
                             "pass^k": {str(k): p for k in range(1, trials + 1)},
                             "ci95": {str(k): [0.0, 1.0] for k in range(1, trials + 1)}}}})
    for d, n in (("01_pag", 240), ("01_pag_toy", 500)):
        _w(root / d / "card.json", {
            "source": "synthetic", "n_tasks": n, "n_tasks_validation": 40, "n_steps": 1449, "n_call_steps": 900,
            "n_examples": {"train": 1500, "validation": 250}, "kept": 1416, "dropped": 33, "gold_pass_rate": 1.0,
            "overlap_with_eval": 0, "teacher": "template", "seeds": [0], "fingerprint": "abc",
            "token_stats": {"conversation_tokens_progress": {"mean": 80.5, "max": 200},
                            "conversation_tokens_full_history": {"mean": 150.25, "max": 900}},
            "context_ratio_at_step6": {"synthetic": 3.1, "BFCL base": 3.7},
            "provenance": {**PROV, "wall_clock_s": 61.2}})
    cells = {f"sft-{v}-seed{s}": {"kind": "sft", "view": v, "seed": s, "global_step": 960,
                                  "train_runtime_s": 120.0 + 10 * s, "loss_curve": [[1, 3.0], [960, 0.5]],
                                  "tf_n_steps": 6}
             for v in ("plain", "progress") for s in (0, 1, 2)}
    # sft.HEADLINE_METRICS: free-running task_success / format_validity / step_accuracy / call_accuracy, then tf_*
    names = ("task_success", "format_validity", "step_accuracy", "call_accuracy", "tf_format_validity",
             "tf_step_exact_match", "tf_call_exact_match")
    base = {"plain": (0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.0), "progress": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)}
    trained = {"plain": [(0.5, 1.0, 0.9, 0.8, 1.0, 0.9, 0.8), (0.28, 0.99, 0.7, 0.4, 1.0, 0.7, 0.4),
                         (0.1, 1.0, 0.6, 0.2, 1.0, 0.6, 0.2)],
               "progress": [(0.55, 0.98, 0.81, 0.62, 0.97, 0.85, 0.7), (0.53, 0.97, 0.8, 0.61, 0.97, 0.85, 0.7),
                            (0.45, 0.99, 0.82, 0.63, 0.97, 0.85, 0.7)]}
    summary = {}
    for v in ("plain", "progress"):
        summary[f"base-{v}"] = _sft_summary({n: {None: x} for n, x in zip(names, base[v])})
        summary[f"sft-{v}"] = _sft_summary({n: {s: trained[v][s][i] for s in (0, 1, 2)} for i, n in enumerate(names)})
    summary = {k: summary[k] for k in ("base-plain", "sft-plain", "base-progress", "sft-progress")}
    _w(root / "02_sft/metrics.json", {"summary": summary, "cells": cells, "seeds": [0, 1, 2],
                                      "variants": ["plain", "progress"], "recipe": {},
                                      "held_out": {"n_steps": 150, "n_tasks": 40}, "provenance": PROV})
    for d, method, base in (("03_pag_rl", "pag_rl", 1.5), ("04_mt_grpo", "mt_grpo", 1.0)):
        recipe = {"method": method, "iterations": 10, "group_size": 4, "tasks_per_iteration": 6}
        per_seed, rows = {}, []
        for s in (0, 1, 2):
            rewards = [base + 0.02 * i - 0.1 * s for i in range(10)]
            for i, r in enumerate(rewards):
                rows.append({"iteration": i, "reward_mean": r, "train_task_success": 0.5 + 0.03 * i, "seed": s,
                             "heldout_success": 0.5 if i == 0 else ""})
            cost = {"prompt_tokens_per_step": 107.0 if method == "pag_rl" else 108.0,
                    "generated_tokens_per_step": 32.0 if method == "pag_rl" else 8.0,
                    "generated_tokens_per_episode": 96.0, "steps_per_episode": 3.0, "rollout_s": 0.5,
                    "update_s": 0.7, "peak_mem_mb": 900.0, "logprob_gap_mean": 2e-6 * (s + 1),
                    "logprob_gap_max": [4e-5, 9e-5, None][s]}
            per_seed[str(s)] = {"reward_first20": sum(rewards[:2]) / 2, "reward_last20": sum(rewards[-2:]) / 2,
                                "heldout_start": 0.5 - 0.05 * s, "heldout_final": 0.45 - 0.05 * s,
                                "cost": cost, "final_dir": f"/abs/{d}/seed{s}/final"}
            _w(root / d / f"seed{s}/metrics.json", {"method": method, "seed": s, "iterations": 10,
                                                    "n_heldout_tasks": 40, "provenance": PROV})
        _w(root / d / "metrics.json", {"method": method, "seeds": [0, 1, 2], "per_seed": per_seed,
                                       "recipe": recipe, "provenance": PROV})
        with open(root / d / "iterations.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    # six-way: per-task verdicts in each run's entries.jsonl, the table as compare_methods builds it
    success = {"base": 0.0, "cot": 0.0, "sft_plain": 0.3, "sft_pag": 0.5, "mt_grpo": 0.3, "parl_mt": 0.45}
    runs, table = [], []
    for m, p in success.items():
        seeds = (0,) if m in ("base", "cot") else (0, 1, 2)
        for b, n in (("synthetic", 20), ("bfcl", 12)):
            accs = []
            for s in seeds:
                valid = [b == "synthetic" and (i * 7 + s) % 20 < round(p * 20) for i in range(n)]
                path = root / "06_compare" / m / b / f"seed{s}" / "entries.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps({"seed": 0, "id": f"{b}_{i}", "category": b, "valid": v}) + "\n"
                                        for i, v in enumerate(valid)))
                runs.append({"method": m, "benchmark": b, "seed": s, "accuracy": sum(valid) / n,
                             "correct": sum(valid), "total": n})
                accs.append(sum(valid) / n)
            ci, kind = (seed_interval(accs), "t over training seeds") if len(accs) > 1 else \
                (wilson(round(accs[0] * n), n), "Wilson over items (one run)")
            table.append({"method": m, "benchmark": b, "mean": sum(accs) / len(accs), "ci95_low": ci[0],
                          "ci95_high": ci[1], "interval": kind, "n_seeds": len(accs), "n_items": n})
    _w(root / "06_compare/comparison.json", {"table": table, "runs": runs, "methods": {}, "benchmarks": {},
                                             "seeds": [0, 1, 2], "excluded_bfcl_ids": {"bfcl": 8},
                                             "provenance": PROV})
    _w(root / "07_ablations/ablations.json", fake_ablations())
    return root


ABL_SUCCESS = {"parl_mt": 0.45, "no_pag_rl": 0.5, "context_full_history": 0.2, "no_call_reward": 0.3}


def fake_ablations(n_tasks: int = 20) -> dict:
    """07's ablations.json as ablations.run writes it: eval cells summarised by ablations.summarize (paired
    differences included), rows with where their checkpoints come from, the budget, missing τ-bench."""
    from parl_mt_lib import ablations as A

    evals = {}
    for r, p in ABL_SUCCESS.items():
        for s in (0, 1, 2):
            valid = [(i * 7 + s) % n_tasks < round(p * n_tasks) for i in range(n_tasks)]
            evals[r, "synthetic", s] = {"accuracy": sum(valid) / n_tasks, "correct": sum(valid), "total": n_tasks,
                                        "tasks": {f"t{i}": {"valid": v, "steps": 3 + (r == "context_full_history"),
                                                            "prompt_tokens": 300 if "context" in r else 150,
                                                            "generated_tokens": 90} for i, v in enumerate(valid)}}
    res = A.summarize(evals, list(ABL_SUCCESS), ["synthetic"], [0, 1, 2], n_boot=2000)
    rows = [{"row": k, "label": A.ROWS_BY_KEY[k].label, "removes": A.ROWS_BY_KEY[k].removes, "kept": True,
             **A.row_stages(A.ROWS_BY_KEY[k]),
             "checkpoint": "trained here (rl/no_call_reward)" if k == "no_call_reward" else "reused results/03_pag_rl",
             "rl_iterations": None if k == "no_pag_rl" else 24} for k in ABL_SUCCESS]
    rows.append({"row": "no_augmentation", "label": "PAG w/o augmentation", "kept": False})
    return {"reference": "parl_mt", "rows": rows, **res, "seeds": [0, 1, 2],
            "budget": {"budget_s": 600, "estimate_s": 580.0,
                       "dropped_rows": [{"row": "no_augmentation", "saved_s": 300.0, "reason": "estimate"}]},
            "missing_benchmarks": {"tau2_airline": "not available here"}, "provenance": PROV}


@pytest.fixture
def results(tmp_path):
    return fake_results(tmp_path / "results")


def _readme(path, block=""):
    path.write_text(f"# title\n\nprose before\n\n{tables.BEGIN}\n{block}{tables.END}\n\nprose after\n")
    return path


def test_generation_is_deterministic_and_reads_every_table(results, tmp_path):
    a = tables.render_block(results)
    shutil.copytree(results, tmp_path / "elsewhere")
    assert tables.render_block(tmp_path / "elsewhere") == a == tables.render_block(results)  # no paths, no clock
    body, missing = tables.generate(results)
    assert missing == []
    assert "not run:" not in body and "/abs/" not in body and str(tmp_path) not in body
    assert "9/10 = 0.90" in body                                   # oracle base: one entry fails
    assert "| airline | untrained SmolLM2-135M-Instruct (vLLM, signatures docs) | 1/15 | 3 | pass^1 0.40" in body
    assert "0/15 = 0.00 [0.00, 0.00]" in body                      # toy: 3 seeds x 5 entries, t over seeds
    sft_pag = next(line for line in body.splitlines() if line.startswith("| SFT-PAG (progress view) | 0.51"))
    assert sft_pag == "| SFT-PAG (progress view) | 0.51 [0.38, 0.64] | 0.98 [0.96, 1.00] | 0.81 [0.79, 0.83] " \
                      "| 0.62 [0.60, 0.64] | 0.55 / 0.53 / 0.45 |"   # free-running metrics + task success per seed
    assert "| SFT-PAG (progress view) | 0.97 [0.97, 0.97] | 0.85 [0.85, 0.85] | 0.70 [0.70, 0.70] |" in body
    assert body.index("step accuracy (own trajectory)") < body.index("Teacher-forced diagnosis")
    assert "960 training steps per cell, 2.0–2.3 min each" in body
    assert "names the next call; 6 of the 150 held-out steps):" in body  # tf_* on 02's eval_limit rows, not all
    assert "| PAG-RL | 0 | 10 | 1.51 → 1.67 | 0.52 → 0.76 | 0.50 → 0.45 |" in body
    assert "mean change [t over seeds]" in body
    assert "| PAG-RL (progress context) | 107.00 | 32.00 |" in body and "generated tokens / step ×4.00" in body
    assert "| 900.00 | 4.0e-06 | 9.0e-05 |" in body                  # gap: mean of seeds, max over seeds (None skipped)
    assert "| synthetic (20 items) |" in body and "| PARL-MT − SFT-PAG | what PAG-RL adds to SFT-PAG | synthetic | 20 |" in body
    assert "git 0123456-dirty, Linux-6.1-x86_64-with-glibc2.36, 2 CPUs, 2026-11-24" in body
    assert "Excluded from BFCL as hold-out training ids: 8 from bfcl." in body
    # 07: success per row, the paired difference to full PARL-MT, steps and tokens per task, sources, budget
    assert "| full PARL-MT | 0.45 [0.45, 0.45] | reference | 3.0 | 150 | 90 | 3 |" in body
    assert "| PARL-MT, full-history context | 0.20 [0.20, 0.20] | −0.25 [" not in body   # ASCII minus, signed
    assert "| PARL-MT, full-history context | 0.20 [0.20, 0.20] | -0.25 [" in body and "| 4.0 | 300 | 90 | 3 |" in body
    assert "- PAG-RL w/o call reward: trained here (rl/no_call_reward) (24 RL iterations)" in body
    assert "Dropped for the budget (whole rows, never seeds): PAG w/o augmentation (~300 s)." in body
    assert "Not evaluated: tau2_airline (not available here)." in body
    for rel in tables.INPUTS.values():
        assert f"from `results/{rel}`" in body                     # every table names its run


def test_paired_difference_matches_the_per_task_mean(results):
    body = tables.generate(results)[0]
    row = next(line for line in body.splitlines() if line.startswith("| SFT-PAG − SFT-plain |") and "synthetic" in line)
    # synthetic: 10 of 20 tasks succeed per seed for SFT-PAG, 6 of 20 for SFT-plain -> +0.20 on average
    assert "| +0.20 [" in row


def test_write_then_check_and_stale_block_detected(results, tmp_path, capsys):
    readme = _readme(tmp_path / "README.md", "typed by hand\n")
    assert tables.check_readme(readme, results)                     # a hand-typed block disagrees
    assert tables.write_readme(readme, results) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nprose before\n\n") and text.endswith("\n\nprose after\n")
    assert tables.check_readme(readme, results) == [] and tables.write_readme(readme, results) is False
    assert tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0

    # the results change (another run): README's block is now stale, one line per differing line
    m = json.loads((results / "02_sft/metrics.json").read_text())
    m["summary"]["sft-progress"]["task_success"]["mean"] = 0.49
    (results / "02_sft/metrics.json").write_text(json.dumps(m))
    diffs = tables.check_readme(readme, results)
    assert len(diffs) == 2 and "stale" in diffs[0] and "0.51" in diffs[0] and "0.49" in diffs[1]
    capsys.readouterr()
    assert tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == diffs

    # so is a rerun of the ablations (07) that moved one row
    tables.write_readme(readme, results)
    a = json.loads((results / "07_ablations/ablations.json").read_text())
    next(t for t in a["table"] if t["row"] == "no_pag_rl")["mean"] = 0.55
    (results / "07_ablations/ablations.json").write_text(json.dumps(a))
    diffs = tables.check_readme(readme, results)
    assert len(diffs) == 2 and "| w/o PAG-RL (SFT-PAG) | 0.50 [" in diffs[0] and "| 0.55 [" in diffs[1]
    tables.write_readme(readme, results)

    # a hand edit inside the block is caught too
    tables.write_readme(readme, results)
    readme.write_text(readme.read_text().replace("0.49 [", "0.52 ["))
    assert any("0.52" in d for d in tables.check_readme(readme, results))


def test_missing_inputs_are_listed_never_faked(results):
    (results / "03_pag_rl/metrics.json").unlink()
    (results / "04_mt_grpo/iterations.csv").unlink()
    (results / "06_compare/parl_mt/synthetic/seed1/entries.jsonl").unlink()
    shutil.rmtree(results / "07_ablations")
    body, missing = tables.generate(results)
    assert "- not run: `results/07_ablations/ablations.json`" in body
    assert "- not run: `results/03_pag_rl/metrics.json`" in body
    assert "- not run: `results/06_compare/parl_mt/synthetic/seed1/entries.jsonl`" in body
    assert "- not run: `results/04_mt_grpo/iterations.csv`" in body
    assert set(missing) == {"results/03_pag_rl/metrics.json", "results/04_mt_grpo/iterations.csv",
                            "results/06_compare/parl_mt/synthetic/seed1/entries.jsonl",
                            "results/07_ablations/ablations.json"}
    assert "| PAG-RL |" not in body and "| MT-GRPO | 0 | 10 |" in body   # the rest is still drawn
    assert "| MT-GRPO (full history) |" in body and "PAG-RL (progress context)" not in body
    assert "| SFT-PAG (progress view) | 0.51 [0.38, 0.64] |" in body
    shutil.rmtree(results)
    body, missing = tables.generate(results)
    assert len(missing) == len(tables.INPUTS) and all(f"not run: `results/{r}`" in body for r in tables.INPUTS.values())
    assert "small/" not in body  # make reproduce-small's rows: absent, and not listed as "not run"


def test_main_block_is_not_rewritten_from_small_tau2_runs_alone(results, tmp_path):
    """Only the small model's 05 τ-bench runs are there (no 02-06 of ``make reproduce-small``): ``--write`` refuses
    in one line and README keeps its block (it would turn every table of the committed runs into "not run"); with
    the main inputs there, the small rows join the main τ-bench table."""
    small = tmp_path / "only_small"
    for rel in tables.OPTIONAL_INPUTS.values():
        (small / rel).parent.mkdir(parents=True)
        shutil.copy(results / rel, small / rel)
    readme = _readme(tmp_path / "README.md", "old block\n")
    before = readme.read_text()
    assert tables.main(["--write", "--results", str(small), "--readme", str(readme)]) == 0  # one line, a no-op
    with pytest.raises(ConfigError, match="holds the inputs of neither"):
        tables.write_readme(readme, small)
    assert readme.read_text() == before
    assert tables.write_readme(readme, results) and "untrained SmolLM2-135M-Instruct" in readme.read_text()


def test_older_sft_metrics_are_shown_as_teacher_forced(results):
    # metrics.json written before the leak-free metrics: step/call exact match were teacher-forced on gold contexts
    m = json.loads((results / "02_sft/metrics.json").read_text())
    for row in m["summary"].values():
        for k in ("step_accuracy", "call_accuracy", "tf_format_validity", "tf_step_exact_match", "tf_call_exact_match"):
            row.pop(k)
        row["step_exact_match"] = {"mean": 0.81, "ci95_seeds": None, "per_seed": {}}
    for cell in m["cells"].values():
        cell.pop("tf_n_steps")
    (results / "02_sft/metrics.json").write_text(json.dumps(m))
    body = tables.generate(results)[0]
    head, forced = body.split("Teacher-forced diagnosis", 1)
    assert forced.startswith(" on held-out gold contexts (not comparable across views: the progress view's gold "
                             "context names the next call; 150 held-out steps):")
    assert "step exact match" not in head.split("#### SFT")[1] and "| step exact match |" in forced


@pytest.mark.parametrize("text", ["no markers\n", f"{tables.END}\n{tables.BEGIN}\n",
                                  f"{tables.BEGIN}\n{tables.END}\n{tables.BEGIN}\n{tables.END}\n"])
def test_readme_without_one_block_is_a_one_line_error(tmp_path, text, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(ConfigError, match="exactly one"):
        tables.check_readme(readme, tmp_path)
    assert tables.main(["--write", "--readme", str(readme), "--results", str(tmp_path)]) == 2
    assert readme.read_text() == text
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_corrupt_input_is_a_one_line_error(results):
    (results / "02_sft/metrics.json").write_text("{torn")
    with pytest.raises(ConfigError, match="results/02_sft/metrics.json is not valid JSON"):
        tables.generate(results)


# ------------------------------------------------------------------ the real README


def test_real_readme_has_one_generated_block():
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(tables.BEGIN) == 1 and text.count(tables.END) == 1


def test_real_readme_block_matches_real_results():
    present = [r for r in tables.INPUTS.values() if (REPO_ROOT / "results" / r).exists()]
    if not present and not tables.has_small(REPO_ROOT / "results"):
        pytest.skip("results/ holds none of the tables' inputs (nothing was run here, e.g. CI or a fresh clone): "
                    "README's generated block can only be checked after `make reproduce`")
    diffs = tables.check_readme(REPO_ROOT / "README.md", REPO_ROOT / "results")
    assert not diffs, ("README's generated block does not describe results/ (run `make tables`):\n"
                       + "\n".join(diffs[:20]))


def test_tau2_section_oracle_pass1_toy_pass_k_and_06_rows(tmp_path):
    """τ-bench: oracle pass^1 and the toy's pass^1..3 per domain from 05's metrics (as envs.tau2.evaluate_tau2 writes
    them, pass^k by its own pass_hat_k), and 06's τ-bench rows with the scripted-user label; missing runs say so."""
    pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
    from parl_mt_lib.envs.tau2 import SCRIPTED_NOTE, pass_hat_k, user_provenance

    def run(domain, kind, valid, trials):
        rows = [{"id": f"t{i}", "seed": s, "valid": valid(i, s)} for i in range(4) for s in range(trials)]
        ok = sum(r["valid"] for r in rows)
        return {"categories": {f"tau2_{domain}": {"correct": ok, "total": len(rows), "accuracy": ok / len(rows)}},
                "provenance": PROV, "tau2": {"domain": domain, "trials": trials, **user_provenance("scripted"),
                                             "pass_hat_k": json.loads(json.dumps(pass_hat_k(rows))),
                                             "do_nothing_floor": 0.25}}

    _w(tmp_path / "05_evaluate/tau2_airline_oracle/metrics.json", run("airline", "oracle", lambda i, s: True, 1))
    _w(tmp_path / "05_evaluate/tau2_airline_toy/metrics.json", run("airline", "toy", lambda i, s: i == 0 or s == 0, 3))
    _w(tmp_path / "06_compare/comparison.json", {"provenance": PROV, "table": [
        {"method": m, "benchmark": "tau2_airline", "mean": 0.25, "ci95_low": 0.05, "ci95_high": 0.7, "n_seeds": 1,
         "n_items": 4, "interval": "Wilson over items (one run)", "note": SCRIPTED_NOTE, "do_nothing_floor": 0.25}
        for m in ("base", "parl_mt")] + [
        {"method": "sft_pag", "benchmark": "tau2_airline", "mean": 0.25, "ci95_low": 0.05, "ci95_high": 0.7,
         "n_seeds": 1, "n_items": 4, "interval": "Wilson over items (one run)", "note": SCRIPTED_NOTE}] + [
        {"method": "sft_pag", "benchmark": "synthetic", "mean": 0.5, "ci95_low": 0.4, "ci95_high": 0.6, "n_seeds": 3,
         "n_items": 4, "interval": "t over training seeds"}],
        "runs": [{"method": m, "benchmark": "tau2_airline", "seed": 0} for m in ("sft_pag", "parl_mt")]})
    for m in ("sft_pag", "parl_mt"):  # per-task verdicts for the paired differences
        (tmp_path / f"06_compare/{m}/tau2_airline/seed0").mkdir(parents=True)
        (tmp_path / f"06_compare/{m}/tau2_airline/seed0/entries.jsonl").write_text(
            "".join(json.dumps({"id": f"t{i}", "valid": i == 0}) + "\n" for i in range(4)))
    text = tables.render_block(tmp_path)
    # the paired rows carry the scripted-user caveat; one method's two kinds of interval are both named
    assert f"| PARL-MT − SFT-PAG | what PAG-RL adds to SFT-PAG | tau2_airline ({SCRIPTED_NOTE}) | 4 |" in text
    assert ("SFT-PAG: Wilson over items (one run), 1 run(s) (tau2_airline); t over training seeds, 3 run(s) "
            "(synthetic)") in text
    section = text[text.index("#### τ-bench"):]
    assert "| airline | oracle (gold actions) | 4/4 | 1 | pass^1 1.00 [0.51, 1.00] | 0.25 | scripted (" in section
    # toy: task 0 always passes, the others only in trial 0 -> pass^1 = 0.5, pass^2 = pass^3 = 0.25
    assert "pass^1 0.50 [0.15, 0.85]; pass^2 0.25 [0.05, 0.70]; pass^3 0.25 [0.05, 0.70]" in section
    assert f"Six-way comparison on τ-bench (notebook 06; {SCRIPTED_NOTE}" in section
    assert "| tau2_airline (4 tasks, floor 0.25) | 0.25 [0.05, 0.70] | 0.25 [0.05, 0.70] |" in section
    assert f"tau2_airline (4 items; {SCRIPTED_NOTE})" in text  # the six-way table labels the row too
    assert "not run: `results/05_evaluate/tau2_retail_oracle/metrics.json`" in section


def test_small_model_block_from_results_small_alone(results, tmp_path, capsys):
    """make reproduce-small's tables go into their own README block, from results/small/ only: written where
    that target ran even when `make reproduce` did not (the main block is then left as it is), checked by
    --check, named `results/small/...` in every source line, with the target's wall-clock from run.json."""
    from parl_mt_lib.runtime import atomic_write_json

    only_small = tmp_path / "only_small"
    for rel in ("02_sft", "03_pag_rl", "04_mt_grpo", "06_compare"):
        shutil.copytree(results / rel, only_small / "small" / rel)
    for rel in tables.OPTIONAL_INPUTS.values():  # the untrained model's τ-bench runs (05)
        (only_small / rel).parent.mkdir(parents=True)
        shutil.copy(results / rel, only_small / rel)
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{tables.BEGIN}\nmain block kept\n{tables.END}\n\n{tables.BEGIN_SMALL}\n"
                      f"{tables.END_SMALL}\nafter\n")
    assert tables.main(["--write", "--results", str(only_small), "--readme", str(readme)]) == 0
    assert "main block left as it is" in capsys.readouterr().out
    text = readme.read_text()
    assert "main block kept" in text and text.endswith(f"{tables.END_SMALL}\nafter\n")
    small = text[text.index(tables.BEGIN_SMALL):]
    assert "#### SmolLM2 · Six-way comparison" in small and "PARL-MT − SFT-PAG" in small
    assert "from `results/small/06_compare/comparison.json`" in small and "from `results/06_compare" not in small
    assert "wall-clock not recorded" in small
    assert "#### SmolLM2 · τ-bench: the untrained model" in small and "untrained SmolLM2-135M-Instruct" in small
    assert "from `results/small/05_tau2_retail_smollm2/metrics.json`" in small
    run = {"provenance": {**PROV, "wall_clock_s": 5130.0}}
    atomic_write_json(only_small / "small" / tables.SMALL_RUN, run)  # written before the target recorded resumes
    assert tables.check_readme(readme, only_small)  # stale now: run.json appeared
    assert tables.write_readme(readme, only_small)
    assert "took 85.5 min of wall-clock (every stage included; no stage reports reused work" in readme.read_text()
    atomic_write_json(only_small / "small" / tables.SMALL_RUN, {**run, "resumed": False})
    assert tables.write_readme(readme, only_small)
    assert "took 85.5 min of wall-clock (a clean run from an empty `results/small/`" in readme.read_text()
    assert tables.check_readme(readme, only_small) == []
    atomic_write_json(only_small / "small" / tables.SMALL_RUN, {**run, "resumed": True})  # e.g. after an OOM kill
    assert tables.write_readme(readme, only_small)
    assert "found earlier outputs in `results/small/` to resume from: not the time of a clean run" in readme.read_text()
    atomic_write_json(only_small / "small" / tables.SMALL_RUN, {**run, "resumed": False})
    # a rerun that reused finished cells says so: its wall-clock is not a clean run's
    m = json.loads((only_small / "small/06_compare/comparison.json").read_text())
    (only_small / "small/06_compare/comparison.json").write_text(json.dumps({**m, "reused_cells": ["base/syn/seed0"]}))
    assert tables.write_readme(readme, only_small)
    assert "which reused finished work in 06_compare: not the time of a clean run" in readme.read_text()
    # a README without the small block: one line, nothing written
    bare = _readme(tmp_path / "BARE.md", "old\n")
    assert tables.main(["--write", "--results", str(only_small), "--readme", str(bare)]) == 2
    assert "old" in bare.read_text() and "SmolLM2" not in bare.read_text()
    # where it did not run, the small block is neither written nor checked
    assert not tables.has_small(results) and tables.check_readme(readme, results) != []


def test_real_readme_has_one_small_model_block():
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(tables.BEGIN_SMALL) == 1 and text.count(tables.END_SMALL) == 1
    assert text.index(tables.BEGIN_SMALL) < text.index(tables.END_SMALL)
