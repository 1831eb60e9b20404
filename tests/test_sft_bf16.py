"""``bf16: true`` on the CPU trains under bf16 autocast with fp32 master weights (AMX-BF16), not silently in fp32."""
import math

import pytest
import torch

from parl_mt_lib.sft import load_recipe, make_trainer

pytestmark = pytest.mark.model


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_bf16_recipe_autocasts_on_cpu_with_fp32_weights(pag_dir, tmp_path):
    recipe = load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "max_steps": 1, "bf16": True,
                                                  "per_device_train_batch_size": 2, "save_steps": 10})
    trainer = make_trainer(recipe, tmp_path)
    assert trainer.args.bf16 and trainer.args.use_cpu
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    out = trainer.train()
    assert math.isfinite(out.training_loss)
