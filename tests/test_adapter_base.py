"""A saved PEFT adapter names its base model by absolute path; results copied from another checkout or machine (a
fresh-clone run's ``results/small``) must still load when this checkout has the same cached base model."""
from __future__ import annotations

import json

import pytest
import torch

from parl_mt_lib.models import adapter_base, load_model
from parl_mt_lib.runtime import ConfigError
from parl_mt_lib.toy_model import build_toy_model

pytestmark = pytest.mark.model


def _adapter(tmp_path, named: str):
    from peft import LoraConfig, get_peft_model

    model, tok = load_model("toy", dtype=torch.float32, device="cpu")
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))
    out = tmp_path / "adapter"
    pm.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    cfg_file = out / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = named
    cfg_file.write_text(json.dumps(cfg))
    return out, pm


def test_an_adapter_whose_base_moved_loads_from_this_checkouts_cache(tmp_path):
    toy = build_toy_model()
    elsewhere = f"/tmp/gone-checkout/main/.cache/{toy.name}"  # the run's checkout, deleted since
    adapter, pm = _adapter(tmp_path, elsewhere)
    assert adapter_base(adapter) == str(toy)
    model, _tok = load_model(str(adapter), dtype=torch.float32, device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():  # the adapter's own weights on the right base, not the base alone
        assert torch.allclose(model(ids).logits, pm(ids).logits, atol=1e-5)

    from parl_mt_lib.vllm_engine import adapter_of

    assert adapter_of(str(adapter))["base"] == str(toy)


@pytest.mark.parametrize("named", ["/tmp/gone-checkout/main/.cache/toy-000000000000",  # a toy of another key
                                   "/tmp/gone/.cache/other-model", ""])
def test_an_adapter_whose_base_is_gone_and_unknown_is_one_line(tmp_path, named):
    adapter, _pm = _adapter(tmp_path, named)
    with pytest.raises(ConfigError, match="base model"):
        adapter_base(adapter)
    with pytest.raises(ConfigError, match="base model"):
        load_model(str(adapter))


def test_sft_evaluation_plays_an_adapter_whose_base_moved(tmp_path, pag_dir):
    """02's SFT cell evaluates its final adapter through load_model (transformers' own adapter loading only tries
    the saved base path: a results directory from another checkout stopped there)."""
    from parl_mt_lib.sft import evaluate_sft_model, load_recipe

    toy = build_toy_model()
    adapter, _pm = _adapter(tmp_path, f"/tmp/gone-checkout/main/.cache/{toy.name}")
    recipe = load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "view": "plain"})
    m = evaluate_sft_model(adapter, "plain", recipe, eval_limit=1, task_limit=1)
    assert m["n_tasks"] == 1
