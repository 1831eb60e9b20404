"""Notebook 08's figures and tables (parl_mt_lib.figures) on a tiny fake results/ tree shaped like the writers'
output: everything is drawn from results/ alone, numbers match their inputs, LaTeX is booktabs, and a deleted
input folder is listed as missing while the rest is still drawn."""
import csv
import json
import shutil
import time

import pytest

from parl_mt_lib import figures
from parl_mt_lib.evaluate import summarize

from test_tables import PROV, _w, fake_results

SCRIPTED_NOTE = "scripted user: not comparable to published numbers"  # what 06 rows carry (envs.tau2_users)

CATS = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
FILES = {"main_table.csv", "main_table.tex", "main_table.png", "ablation_table.csv", "ablation_table.tex",
         "ablation_table.png", "context_tokens.csv", "context_tokens.png", "learning_curves.csv",
         "learning_curves.png", "cost_table.csv", "cost_table.tex", "cost_table.png", "per_category.csv",
         "per_category.png"}


def figure_results(root):
    """test_tables' tree plus what only the figures read: each 06 run's metrics.json (per category, as
    evaluate.summarize writes it), gold context lengths (01), held-out curves (03, 04), prompt tokens per step."""
    fake_results(root)
    comp = json.loads((root / "06_compare/comparison.json").read_text())
    for r in comp["runs"]:
        d = root / "06_compare" / r["method"] / r["benchmark"] / f"seed{r['seed']}"
        rows = [json.loads(x) for x in (d / "entries.jsonl").read_text().splitlines()]
        for i, e in enumerate(rows):  # per-step prompt tokens: the progress context stays flat, full history grows
            n = 3
            grow = r["method"] in ("mt_grpo", "sft_plain", "base", "cot")
            e.update(n_steps=n, prompt_tokens=[100 + (60 * k if grow else 5 * k) for k in range(n)],
                     completion_tokens=[30 if r["method"] in ("parl_mt", "sft_pag") else 8] * n)
            if r["benchmark"] == "bfcl":
                e.update(category=CATS[i % 4], id=f"{CATS[i % 4]}_{i}")
        (d / "entries.jsonl").write_text("".join(json.dumps(e) + "\n" for e in rows))
        cats = CATS if r["benchmark"] == "bfcl" else ["synthetic"]
        m = summarize([{**e, "seed": 0} for e in rows], cats, [0])
        _w(d / "metrics.json", {**m, "seeds": [0], "provenance": PROV})
    for d in ("01_pag", "01_pag_toy"):
        with open(root / d / "context_lengths.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["task_id", "step", "progress", "full_history", "tasks"])
            for t in range(4):
                for step in range(7):
                    for tasks in ("synthetic", "BFCL base"):
                        w.writerow([f"{tasks}-{t}", step, 60 + 2 * step, 60 + 40 * step, tasks])
    for d in ("03_pag_rl", "04_mt_grpo"):
        with open(root / d / "heldout.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["seed", "iteration", "heldout_success"])
            for s in (0, 1, 2):
                for it, v in ((0, 0.5), (10, 0.45)):
                    w.writerow([s, it, v - 0.05 * s])
        it = list(csv.DictReader(open(root / d / "iterations.csv")))
        for row in it:
            row.update(prompt_tokens_per_step=107.0, generated_tokens_per_step=32.0, reward_format=0.9,
                       reward_call=0.3, reward_task=0.5)
        with open(root / d / "iterations.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(it[0]))
            w.writeheader()
            w.writerows(it)
    return root


@pytest.fixture
def results(tmp_path):
    return figure_results(tmp_path / "results")


def test_every_figure_and_table_from_results_alone(results):
    t0 = time.time()
    m = figures.make_figures(results)
    assert time.time() - t0 < 30
    out = results / "figures"
    assert set(m["written"]) == FILES and {p.name for p in out.iterdir()} == FILES | {"missing.txt", "manifest.json"}
    # only τ-bench is missing from this tree, and it is said so (not faked)
    tau = "τ-bench rows (benchmarks tau2_airline, tau2_retail) in results/06_compare/comparison.json"
    assert m["missing"] == [tau]
    assert (out / "missing.txt").read_text().startswith("τ-bench rows")
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    import pandas as pd

    main = pd.read_csv(out / "main_table.csv")
    row = main[(main.method == "sft_pag") & (main.column == "held-out synthetic")].iloc[0]
    assert row["mean"] == pytest.approx(0.5) and row["n_seeds"] == 3 and row["interval"] == "t over seeds"
    base = main[(main.method == "base") & (main.column == "BFCL base")].iloc[0]
    assert base["mean"] == 0 and base["interval"] == "Wilson over items" and base["ci95_high"] > 0
    assert set(main.column) >= {"BFCL base", "BFCL miss_func", "BFCL miss_param", "BFCL long_context", "BFCL overall"}
    tex = (out / "main_table.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\label{tab:main}" in tex
    assert "SFT-PAG & 0.50 [" in tex and "τ" not in tex and "$\\tau$-bench: not run" in tex
    abl = pd.read_csv(out / "ablation_table.csv")
    ctx = abl[abl.row == "context_full_history"].iloc[0]
    assert ctx["delta_vs_parl_mt"] == pytest.approx(-0.25) and ctx["prompt_tokens_per_task"] == 300
    cost = pd.read_csv(out / "cost_table.csv")
    gen = cost[(cost.method == "parl_mt") & (cost.metric == "gen. tok/task") & cost.phase.str.contains("synthetic")]
    assert gen["value"].iloc[0] == pytest.approx(90)
    ctx_csv = pd.read_csv(out / "context_tokens.csv")
    assert set(ctx_csv["source"]) == {"gold trajectories (01)", "RL policies' rollouts (06)",
                                      "RL training rollouts (03, 04)"}
    curves = pd.read_csv(out / "learning_curves.csv")
    assert set(curves["panel"]) == {"sft_loss", "reward PAG-RL", "reward MT-GRPO", "heldout"}
    assert json.loads((out / "manifest.json").read_text())["written"] == m["written"]


def test_a_deleted_input_folder_is_listed_and_the_rest_still_drawn(results, monkeypatch):
    monkeypatch.setattr(figures, "DPI", 60)  # what is drawn is checked here, not how sharp
    figures.make_figures(results)
    shutil.rmtree(results / "07_ablations")
    shutil.rmtree(results / "03_pag_rl")
    m = figures.make_figures(results)
    assert "results/07_ablations/ablations.json" in m["missing"]
    assert {"results/03_pag_rl/iterations.csv", "results/03_pag_rl/metrics.json"} <= set(m["missing"])
    missing_txt = (results / "figures" / "missing.txt").read_text().splitlines()
    assert "results/07_ablations/ablations.json" in missing_txt
    names = {p.name for p in (results / "figures").iterdir()}
    assert not any(n.startswith("ablation_table") for n in names)     # no stale figure left from the first run
    assert {"main_table.png", "context_tokens.png", "learning_curves.png", "cost_table.png",
            "per_category.png"} <= names
    import pandas as pd

    curves = pd.read_csv(results / "figures" / "learning_curves.csv")
    assert "reward PAG-RL" not in set(curves["panel"]) and "reward MT-GRPO" in set(curves["panel"])
    shutil.rmtree(results / "06_compare")
    m = figures.make_figures(results)
    assert "results/06_compare/comparison.json" in m["missing"] and "main_table.png" not in m["written"]
    assert "learning_curves.png" in m["written"]


def test_latex_is_escaped_booktabs():
    import pandas as pd

    tex = figures.to_latex(pd.DataFrame({"ablation": ["w/o PAG-RL (SFT-PAG)", "pass^1 & 50%"],
                                         "Δ vs PARL-MT": ["-0.05 [-0.10, 0.00]", "—"]}), "A & B", "tab:t")
    assert tex.count("\\toprule") == 1 and "\\&" in tex and "50\\%" in tex and "$\\Delta$" in tex
    assert "pass\\textasciicircum 1" in tex and "—" not in tex and "\\caption{A \\& B}" in tex
    assert "95\\% interval" in figures.to_latex(pd.DataFrame({"a": [1]}), "[95% interval]", "tab:u")


def test_tau_bench_rows_are_picked_up_when_06_has_them(results):
    """τ-bench runs in 06 (benchmark tau2_airline; evaluate_tau2's metrics with pass^k over trials) become main
    table columns, success and pass^k with intervals, and the table says the scripted user is not comparable."""
    comp = json.loads((results / "06_compare/comparison.json").read_text())
    for m, p in (("sft_pag", 0.4), ("parl_mt", 0.2)):
        for s in (0, 1, 2):
            d = results / "06_compare" / m / "tau2_airline" / f"seed{s}"
            ok = [i < round(p * 5) + s % 2 for i in range(5)]
            rows = [{"seed": t, "id": f"tau2_airline_{i}", "category": "tau2_airline", "valid": v and t == 0,
                     "n_steps": 4, "prompt_tokens": [200] * 4, "completion_tokens": [20] * 4}
                    for t in range(2) for i, v in enumerate(ok)]
            d.mkdir(parents=True)
            (d / "entries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            hat = {"pass^k": {"1": sum(ok) / 10, "2": 0.0}, "ci95": {"1": [0.0, 0.5], "2": [0.0, 0.3]}, "n_tasks": 5}
            _w(d / "metrics.json", {**summarize(rows, ["tau2_airline"], [0, 1]), "provenance": PROV,
                                    "tau2": {"pass_hat_k": hat}})
            # the label comes from the row, as 06 writes it (compare_cell's note; its metrics carry no tau2 block)
            comp["runs"].append({"method": m, "benchmark": "tau2_airline", "seed": s, "accuracy": sum(ok) / 10,
                                 "correct": sum(ok), "total": 10, "note": SCRIPTED_NOTE})
    (results / "06_compare/comparison.json").write_text(json.dumps(comp))
    m = figures.make_figures(results)
    assert not any(x.startswith("τ-bench rows") for x in m["missing"])
    import pandas as pd

    main = pd.read_csv(results / "figures/main_table.csv")
    cols = set(main.column)
    assert {"τ-bench airline", "τ-bench airline pass^1", "τ-bench airline pass^2"} <= cols
    p1 = main[(main.method == "parl_mt") & (main.column == "τ-bench airline pass^1")].iloc[0]
    assert p1["n_seeds"] == 3 and p1["mean"] == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert f"-bench: {SCRIPTED_NOTE}." in (results / "figures/main_table.tex").read_text()  # τ is $\\tau$ in TeX
