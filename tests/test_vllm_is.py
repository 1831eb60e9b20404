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
