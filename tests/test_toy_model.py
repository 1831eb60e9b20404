"""Model tier: the embedded model builds deterministically and loads like a hub model."""
import hashlib

import pytest

from parl_mt_lib.toy_model import ToyConfig, build_toy_model

pytestmark = pytest.mark.model


def _digest(path):
    h = hashlib.sha256()
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        h.update((path / name).read_bytes())
    return h.hexdigest()


def test_deterministic_build(tmp_path, toy_path):
    again = build_toy_model(out_dir=tmp_path / "toy")
    assert _digest(again) == _digest(toy_path)


def test_loads_like_a_hub_model(toy):
    model, tok = toy
    assert model.config.model_type == "qwen2" and model.config.max_position_embeddings >= 8192
    assert tok.padding_side == "left" and tok.eos_token == "<|im_end|>"
    assert len(tok) == model.config.vocab_size and ToyConfig().vocab_size <= len(tok)
    for t in ("<tool_call>", "</tool_call>", "<summary>", "<plan>"):
        assert len(tok(t, add_special_tokens=False).input_ids) == 1
