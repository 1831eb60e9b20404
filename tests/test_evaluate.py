"""Evaluation runner: files, resume after interruption, and bad input."""
import json

import pytest
from helpers import ExplodingBackend

from parl_mt_lib.evaluate import agreement_with_official, evaluate, seed_interval, summarize, wilson
from parl_mt_lib.runtime import ConfigError, read_jsonl


def test_oracle_run_writes_metrics_and_resumes(tmp_path):
    out = tmp_path / "run"
    m = evaluate("oracle", ["base", "miss_param"], limit=3, seeds=[0, 1], results_dir=out, progress=False)
    assert m["categories"]["multi_turn_base"] == {**m["categories"]["multi_turn_base"], "accuracy": 1.0,
                                                  "correct": 6, "total": 6}
    assert m["overall"] == 1.0 and m["seeds"] == [0, 1]
    prov = m["provenance"]
    assert prov["packages"]["bfcl-eval"] == "2025.9.18" and prov["git_sha"] and prov["device"]
    assert "wall_clock_s" in prov and prov["seeds"] == [0, 1]
    assert json.loads((out / "config.json").read_text())["policy"] == "oracle"
    rows = read_jsonl(out / "entries.jsonl")
    assert len(rows) == 12 and all(r["valid"] for r in rows)

    # simulate a kill mid-write: drop the last 5 rows and leave a torn line
    lines = (out / "entries.jsonl").read_text().splitlines(keepends=True)
    (out / "entries.jsonl").write_text("".join(lines[:-5]) + lines[-5][:20])
    m2 = evaluate("oracle", ["base", "miss_param"], limit=3, seeds=[0, 1], results_dir=out, progress=False)
    rows = read_jsonl(out / "entries.jsonl")
    assert len(rows) == 12 and len({(r["seed"], r["id"]) for r in rows}) == 12
    assert m2["categories"] == m["categories"]

    agree = agreement_with_official(rows)
    assert agree["checked"] == agree["agree"] == 12
    hostile = dict(rows[0], turns=[["open(file='x', mode='w')"]] + rows[0]["turns"][1:])
    assert agreement_with_official([hostile])["skipped_untrusted"] == 1


def test_bad_input_is_one_clear_error(tmp_path):
    out = tmp_path / "run"
    evaluate("oracle", ["base"], limit=1, results_dir=out, progress=False)
    before = (out / "entries.jsonl").read_text()
    with pytest.raises(ConfigError, match="another evaluation config"):
        evaluate("oracle", ["base"], limit=1, prompting="cot", results_dir=out, progress=False)
    assert (out / "entries.jsonl").read_text() == before  # nothing lost
    with pytest.raises(ConfigError, match="unknown category"):
        evaluate("oracle", ["nope"], results_dir=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate("./missing/model", ["base"], limit=1, results_dir=tmp_path / "y", progress=False)
    with pytest.raises(ConfigError, match="seeds"):
        evaluate("oracle", ["base"], seeds=["a"], results_dir=tmp_path / "z", progress=False)
    with pytest.raises(ConfigError, match="limit"):
        evaluate("oracle", ["base"], limit=0, results_dir=tmp_path / "w", progress=False)
    with pytest.raises(ConfigError, match="prompting"):
        evaluate("oracle", ["base"], prompting="magic", results_dir=tmp_path / "v", progress=False)
    with pytest.raises(ConfigError, match="lora_sync must be one of adapter, merged"):  # whatever the backend
        evaluate("oracle", ["base"], lora_sync="merge", results_dir=tmp_path / "u", progress=False)
    assert not (tmp_path / "u").exists()


def test_corrupt_model_dir(tmp_path):
    from parl_mt_lib.models import load_model

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt|unreadable|could not load"):
        load_model(str(tmp_path))


def test_statistics():
    assert seed_interval([0.5]) is None
    lo, hi = seed_interval([0.4, 0.5, 0.6])
    assert lo < 0.5 < hi
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    rows = [{"category": "c", "seed": s, "valid": v} for s, v in [(0, True), (0, False), (1, True), (1, True)]]
    m = summarize(rows, ["c"], [0, 1])
    assert m["categories"]["c"]["accuracy"] == 0.75 and m["overall_per_seed"] == [0.5, 1.0]


@pytest.mark.parametrize("args,needle", [
    (["--categories", "bogus"], "unknown category"),
    (["--policy", "./no/such/model", "--categories", "base"], "does not exist"),
    (["--categories", "base", "--limit", "0"], "limit must be a positive integer"),
    (["--categories", "base", "--prompting", "magic"], "unknown prompting"),
])
def test_cli_bad_input_one_line(tmp_path, capsys, args, needle):
    from parl_mt_lib.evaluate import main

    out = tmp_path / "run"
    assert main(args + ["--results-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("error: ")
    assert not out.exists()  # nothing written


def test_cli_oracle(tmp_path, capsys):
    from parl_mt_lib.evaluate import main

    assert main(["--categories", "miss_func", "--limit", "2", "--results-dir", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == 1.0


def _retrain(ckpt):
    """Stand-in for retraining a checkpoint in place: same files, other weights."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ckpt))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(str(ckpt))


def test_run_dir_of_a_retrained_checkpoint_is_not_reused(tmp_path, toy_path):
    """Defect (issue 11): the directory's verdicts were reused after the checkpoint behind them was retrained."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(toy_path, ckpt)
    out = tmp_path / "run"
    kw = dict(limit=1, max_new_tokens=4, tool_docs="minimal", results_dir=out, progress=False)
    evaluate(str(ckpt), ["base"], **kw)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _retrain(ckpt)
    with pytest.raises(ConfigError) as err:
        evaluate(str(ckpt), ["base"], **kw)
    assert "\n" not in str(err.value) and "inputs.policy" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # refused, nothing lost


def test_fingerprint_keys_the_run(tmp_path, toy_path):
    """A checkpoint carrying a run fingerprint (our trainers' final/) is known by it; more seeds extend a run;
    ``replace=True`` (a grid re-running its cell) starts the directory over."""
    import shutil

    from parl_mt_lib.runtime import artifact_card, read_fingerprint, write_fingerprint

    ckpt = tmp_path / "final"
    shutil.copytree(toy_path, ckpt)
    write_fingerprint(ckpt, artifact_card({"recipe": "a"}))
    out = tmp_path / "run"
    kw = dict(limit=1, max_new_tokens=4, tool_docs="minimal", results_dir=out, progress=False)
    evaluate(str(ckpt), ["base"], **kw)
    card = read_fingerprint(out)
    assert card["inputs"]["policy"] == artifact_card({"recipe": "a"})["fingerprint"]
    assert set(card["config"]) == {"policy", "prompting", "style", "temperature", "max_new_tokens", "context",
                                   "tool_docs", "base_url", "agent_prompt"}
    m = evaluate(str(ckpt), ["base"], seeds=[0, 1], **kw)  # same fingerprint: seed 0 reused, seed 1 added
    assert len(read_jsonl(out / "entries.jsonl")) == 2 and m["seeds"] == [0, 1]
    write_fingerprint(ckpt, artifact_card({"recipe": "b"}))  # retrained under another recipe
    with pytest.raises(ConfigError, match="inputs.policy"):
        evaluate(str(ckpt), ["base"], **kw)
    evaluate("oracle", ["base"], **{**kw, "results_dir": tmp_path / "o"})
    with pytest.raises(ConfigError, match="inputs.tasks"):  # another task set: refused, not mixed
        evaluate("oracle", ["base"], **{**kw, "limit": 2, "results_dir": tmp_path / "o"})
    evaluate(str(ckpt), ["base"], replace=True, **kw)
    assert len(read_jsonl(out / "entries.jsonl")) == 1 and read_fingerprint(out)["inputs"]["policy"] == \
        artifact_card({"recipe": "b"})["fingerprint"]


def test_a_changed_agent_prompt_is_not_mixed_into_an_earlier_run(tmp_path, monkeypatch):
    """Review finding (issue 14): 05's fingerprint held the config but not the agent's prompt text (our code), so
    more trials after a prompt change were pooled with the old ones into one pass^k. Now it is refused."""
    from parl_mt_lib import progress_format

    kw = dict(limit=1, context="progress", results_dir=tmp_path / "o", progress=False)
    evaluate("oracle", ["base"], **kw)
    monkeypatch.setattr(progress_format, "INSTRUCTION", progress_format.INSTRUCTION + " Be brief.")
    with pytest.raises(ConfigError, match="config.agent_prompt"):
        evaluate("oracle", ["base"], seeds=[0, 1], **kw)


def test_checkpoint_retrained_in_place_under_the_same_recipe_is_a_new_input(tmp_path, toy_path):
    """Review finding: a checkpoint keyed only by its run's card (recipe + inputs) kept its identity when retrained
    under the same recipe (a code fix, another machine). Our trainers stamp the weights' content hash as well."""
    import shutil

    from parl_mt_lib.runtime import artifact_card, stamp_checkpoint

    ckpt = tmp_path / "final"
    shutil.copytree(toy_path, ckpt)
    card = artifact_card({"recipe": "a"})
    stamp_checkpoint(ckpt, card)
    kw = dict(limit=1, max_new_tokens=4, tool_docs="minimal", results_dir=tmp_path / "run", progress=False)
    evaluate(str(ckpt), ["base"], **kw)
    evaluate(str(ckpt), ["base"], **kw)  # same weights, same card: the run is reused
    _retrain(ckpt)
    stamp_checkpoint(ckpt, card)  # the same recipe and inputs, other weights
    with pytest.raises(ConfigError, match="inputs.policy"):
        evaluate(str(ckpt), ["base"], **kw)


def test_rollout_backend_is_checked_recorded_and_fingerprinted(tmp_path, toy_path, monkeypatch):
    """Notebook 05's ``rollout_backend``: one way to ask for vLLM (a ``vllm:`` prefix points at the parameter),
    refused where there is no model to serve; the engine is recorded in config.json / metrics.json and in the
    fingerprint, so an HF run's directory is never resumed by vLLM (nor the reverse); checked before a server
    would start."""
    from parl_mt_lib import backends_vllm
    from parl_mt_lib.runtime import read_fingerprint

    kw = dict(limit=1, max_new_tokens=4, tool_docs="minimal", progress=False)
    for policy, backend, needle in [("vllm:toy", "hf", "rollout_backend='vllm'"),
                                    ("oracle", "vllm", "serves a model"),
                                    ("openai:m", "vllm", "serves a model"),
                                    ("toy", "sglang", "unknown rollout_backend 'sglang'")]:
        out = tmp_path / policy.replace(":", "_")
        with pytest.raises(ConfigError, match=needle) as err:
            evaluate(policy, ["base"], results_dir=out, rollout_backend=backend, **kw)
        assert "\n" not in str(err.value) and not out.exists()
    out = tmp_path / "hf"
    m = evaluate(str(toy_path), ["base"], results_dir=out, **kw)
    assert m["config"]["rollout_backend"] == "hf"
    assert json.loads((out / "config.json").read_text())["rollout_backend"] == "hf"
    assert "rollout_backend" not in read_fingerprint(out)["config"]  # HF runs keep their earlier fingerprint
    assert evaluate("oracle", ["base"], results_dir=tmp_path / "o", **kw)["config"]["rollout_backend"] is None
    monkeypatch.setattr(backends_vllm, "vllm_available", lambda: True)  # the refusal comes before any server
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="rollout_backend") as err:
        evaluate(str(toy_path), ["base"], results_dir=out, rollout_backend="vllm", **kw)
    assert "\n" not in str(err.value) and {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(backends_vllm, "vllm_available", lambda: False)
    with pytest.raises(ConfigError, match="needs vLLM: run `make install`"):
        evaluate(str(toy_path), ["base"], results_dir=tmp_path / "v", rollout_backend="vllm", **kw)
    assert not (tmp_path / "v").exists()


def test_sampled_runs_are_keyed_by_their_batch_schedule(tmp_path, toy_path):
    """Defect (issue 12 review): at temperature > 0 the episodes depend on how they are batched (batch size, the
    refill schedule), but the fingerprint left both out, so a directory sampled under one schedule was resumed
    under another. Greedy runs keep their fingerprint (more seeds, another batch size: the same run)."""
    from parl_mt_lib.runtime import read_fingerprint

    kw = dict(limit=2, max_new_tokens=4, tool_docs="minimal", progress=False)
    out = tmp_path / "sampled"
    evaluate(str(toy_path), ["base"], results_dir=out, temperature=0.7, batch_size=2, **kw)
    card = read_fingerprint(out)["config"]
    assert card["batch_size"] == 2 and card["schedule"] == "refill-v1"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="batch_size") as err:
        evaluate(str(toy_path), ["base"], results_dir=out, temperature=0.7, batch_size=1, **kw)
    assert "\n" not in str(err.value) and {p.name: p.read_bytes() for p in out.iterdir()} == before
    out = tmp_path / "greedy"
    evaluate(str(toy_path), ["base"], results_dir=out, batch_size=2, **kw)
    assert "batch_size" not in read_fingerprint(out)["config"] and "schedule" not in read_fingerprint(out)["config"]
    evaluate(str(toy_path), ["base"], results_dir=out, batch_size=1, **kw)  # reused, not refused


def _fake_vllm(monkeypatch, built):
    from parl_mt_lib import backends_vllm, vllm_engine
    from parl_mt_lib import evaluate as ev

    monkeypatch.setattr(backends_vllm, "vllm_available", lambda: True)
    monkeypatch.setattr(vllm_engine, "engine_version", lambda: "0.0.test")
    monkeypatch.setattr(ev, "make_eval_policy", lambda *a, **k: built.append(ExplodingBackend("vllm")) or built[-1])


def test_the_engine_evaluate_starts_is_closed_when_a_rollout_fails(tmp_path, toy_path, monkeypatch):
    """The vLLM engine started by ``evaluate`` ends with it, also when a rollout raises (the error propagates)."""
    built = []
    _fake_vllm(monkeypatch, built)
    with pytest.raises(RuntimeError, match="engine crashed"):
        evaluate(str(toy_path), ["base"], limit=1, results_dir=tmp_path / "v", rollout_backend="vllm",
                 progress=False, seeds=[0, 1])
    assert len(built) == 1 and built[0].closed == 1


def test_the_vllm_engine_version_and_dtype_are_in_the_card(tmp_path, toy_path, monkeypatch):
    """Review finding (issue 12): the card named the engine only as 'vllm'; its version and dtype decide the
    tokens too (vLLM's default ran fp32 checkpoints in half precision until a79fad6)."""
    from parl_mt_lib.vllm_engine import default_dtype
    from parl_mt_lib.runtime import read_fingerprint

    _fake_vllm(monkeypatch, [])
    out = tmp_path / "v"
    with pytest.raises(RuntimeError):
        evaluate(str(toy_path), ["base"], limit=1, results_dir=out, rollout_backend="vllm", progress=False)
    engine = f"vllm 0.0.test {default_dtype()}"
    assert read_fingerprint(out)["config"]["engine"] == engine
    assert json.loads((out / "config.json").read_text())["engine"] == engine
