"""``bf16: true`` on the CPU trains under bf16 autocast with fp32 master weights (AMX-BF16), not silently in fp32,
and the run's card says so (a change of precision is a different artifact)."""
import math

import pytest
import torch

from parl_mt_lib.sft import load_recipe, make_trainer, sft_fingerprint

pytestmark = pytest.mark.model


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_bf16_recipe_autocasts_on_cpu_with_fp32_weights(pag_dir, tmp_path):
    recipe = load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "max_steps": 1, "bf16": True,
                                                  "per_device_train_batch_size": 2, "save_steps": 10})
    trainer = make_trainer(recipe, tmp_path)
    assert trainer.args.bf16 and trainer.args.use_cpu
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    seen = []
    linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert seen and set(seen) == {torch.bfloat16}, seen
    fp32 = load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir)})
    assert sft_fingerprint(recipe)["config"]["precision"] == "fp32+bf16-autocast"
    assert sft_fingerprint(fp32)["config"]["precision"] == "fp32"
