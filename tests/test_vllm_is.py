"""Off-policy correction for a separate sampler (TRL's vLLM importance-sampling correction), without vLLM: the
weights, where they enter the loss, and that the RL update logs them."""
import math

import pytest
import torch

from parl_mt_lib.grpo import grpo_loss, importance_weights


def test_weights_truncate_mask_and_sequence_modes():
    old = torch.tensor([[0.0, -1.0, -1.0, -2.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    sampler = torch.tensor([[5.0, -1.5, -3.0, -2.0]])  # column 0 is outside the mask: weight 1 whatever it holds
    w = importance_weights(old, sampler, mask, "token_truncate", cap_max=3.0)
    assert w[0].tolist() == pytest.approx([1.0, math.exp(0.5), 3.0, 1.0])
    assert importance_weights(old, sampler, mask, "token_mask", cap_max=3.0)[0].tolist() == \
        pytest.approx([1.0, math.exp(0.5), 0.0, 1.0])
    seq = importance_weights(old, sampler, mask, "sequence_truncate", cap_max=100.0)
    assert seq[0].tolist() == pytest.approx([math.exp(2.5)] * 4)
    assert importance_weights(old, sampler, mask, "sequence_mask", cap_max=3.0).tolist() == [[0.0] * 4]
    assert importance_weights(old, sampler, mask, "none").tolist() == [[1.0] * 4]
    assert importance_weights(old, old, mask).tolist() == [[1.0] * 4]  # on-policy: no correction
    with pytest.raises(ValueError, match="importance sampling mode"):
        importance_weights(old, old, mask, "tis")


def test_weight_multiplies_the_policy_term_not_the_kl():
    logp = torch.tensor([[0.0, -1.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    adv, ref = torch.tensor([1.0]), torch.tensor([[0.0, -1.5, -2.0]])
    w = torch.tensor([[1.0, 2.0, 0.5]])
    plain, _ = grpo_loss(logp, logp.detach(), None, adv, mask, 2)
    weighted, _ = grpo_loss(logp, logp.detach(), None, adv, mask, 2, is_weight=w)
    assert float(plain) == pytest.approx(-1.0) and float(weighted) == pytest.approx(-(2.0 + 0.5) / 2)
    kl_plain, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, 2, beta=0.5)
    kl_weighted, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, 2, beta=0.5, is_weight=w)
    assert float(kl_weighted) - float(weighted) == pytest.approx(float(kl_plain) - float(plain))


@pytest.mark.model
def test_recipe_is_fields_validated_and_used_by_the_update(toy):
    """``is_mode`` / ``is_cap`` are recipe fields (defaults: TRL's token_truncate at 3.0), bad values stop with one
    line, and the update weights tokens with them: a sampler far less likely than the trainer (log-prob -20 per
    token) gives weights capped at ``is_cap``, zeroed by ``token_mask``, 1 with ``none``."""
    from parl_mt_lib.rl_recipe import load_rl_recipe
    from parl_mt_lib.rl_update import update
    from parl_mt_lib.runtime import ConfigError

    base = load_rl_recipe("recipes/toy/pag_rl.yaml")
    assert (base.is_mode, base.is_cap) == ("token_truncate", 3.0)
    for bad, needle in [({"is_mode": "tis"}, "is_mode must be one of token_truncate"),
                        ({"is_cap": 0.5}, "is_cap must be a number >= 1"), ({"is_cap": "3"}, "is_cap")]:
        with pytest.raises(ConfigError, match=needle) as err:
            load_rl_recipe("recipes/toy/pag_rl.yaml", bad)
        assert "\n" not in str(err.value)
    model, tok = toy
    start = {k: v.clone() for k, v in model.state_dict().items()}
    comp = tok(" ls()").input_ids
    sample = {"prompt_ids": tok("hello").input_ids, "completion_ids": comp, "advantage": 1.0,
              "logprobs": [-20.0] * len(comp)}
    seen = {}
    try:
        for over in ({}, {"is_cap": 1.5}, {"is_mode": "token_mask"}, {"is_mode": "none"}):
            recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {"learning_rate": 0.0, **over})
            opt = torch.optim.AdamW(model.parameters(), lr=0.0)
            row = update(model, opt, [dict(sample)], recipe, tok.pad_token_id, None)
            seen[str(over)] = (row["is_weight_min"], row["is_weight_max"])
    finally:
        model.load_state_dict(start)
    assert seen == {"{}": (3.0, 3.0), "{'is_cap': 1.5}": (1.5, 1.5), "{'is_mode': 'token_mask'}": (0.0, 0.0),
                    "{'is_mode': 'none'}": (1.0, 1.0)}, seen
