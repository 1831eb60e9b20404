"""GRPO pieces: group advantages (grouping, broadcast, zero variance), turn credit, the clipped loss, completion
log-probs (logits only at completion positions) against the full-logits computation."""
import math

import pytest
import torch

from parl_mt_lib.grpo import (completion_logps, episode_advantages, group_advantages, grpo_loss, pad_batch,
                              turn_advantages)


def test_group_advantages_normalise_and_zero_variance():
    a = group_advantages([1.0, 0.0, 0.0, 0.0])
    assert sum(a) == pytest.approx(0) and a[0] > 0 > a[1]
    assert sum(x * x for x in a) / 4 == pytest.approx(1.0)
    assert group_advantages([0.3] * 4) == [0.0] * 4
    assert group_advantages([0.3, 0.3 + 1e-9]) == [0.0, 0.0]
    assert group_advantages([1.0, 0.0], scale=False) == [0.5, -0.5]
    assert group_advantages([]) == []
    assert all(math.isfinite(x) for x in group_advantages([5.0, 5.0, 5.0]))


def test_episode_advantages_group_by_task_only():
    groups = {"t1": [0, 1], "t2": [2, 3]}
    adv = episode_advantages(groups, {0: 1.0, 1: 0.0, 2: 7.0, 3: 7.0})
    assert adv == {0: 1.0, 1: -1.0, 2: 0.0, 3: 0.0}


def test_turn_advantages_only_over_episodes_that_reached_the_turn():
    groups = {"t": [0, 1, 2]}
    tr = {(0, 0): 1.0, (1, 0): 0.0, (2, 0): 1.0, (0, 1): 1.0, (1, 1): 0.0}
    adv = turn_advantages(groups, tr)
    assert set(adv) == set(tr)
    assert adv[(0, 1)] == 1.0 and adv[(1, 1)] == -1.0 and adv[(2, 0)] == adv[(0, 0)] > 0


def test_pad_batch_mask_covers_completion_only():
    samples = [{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5]}, {"prompt_ids": [1], "completion_ids": [9]}]
    ids, attn, comp = pad_batch(samples, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [1, 9, 0, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert comp.tolist() == [[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]


def test_loss_sign_clipping_kl_and_token_normalisation():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True))
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    adv = torch.tensor([2.0])
    loss, st = grpo_loss(logp, logp.detach(), None, adv, mask, n_tokens=4)
    assert float(loss) == pytest.approx(-2.0 * 2 / 4)  # ratio 1: -A per token, summed / tokens in the batch
    assert st["kl_sum"] == 0 and st["clipped_sum"] == 0
    old = logp.detach() - 1.0  # ratio e > 1 + eps: clipped for a positive advantage
    loss, st = grpo_loss(logp, old, None, adv, mask, n_tokens=2, clip_eps=0.2)
    assert float(loss) == pytest.approx(-2.0 * 1.2) and st["clipped_sum"] == 2
    _, st = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, 2, beta=0.1)  # reference == policy
    assert st["kl_sum"] == pytest.approx(0.0, abs=1e-7)
    _, st = grpo_loss(logp, logp.detach(), logp.detach() - 0.5, adv, mask, 2, beta=0.1)
    assert st["kl_sum"] > 0


def test_loss_gradient_pushes_logprob_with_advantage():
    x = torch.zeros(1, 2, requires_grad=True)
    mask = torch.tensor([[0.0, 1.0]])
    for a, sign in ((1.0, 1), (-1.0, -1), (0.0, 0)):
        x.grad = None
        loss, _ = grpo_loss(x, x.detach(), None, torch.tensor([a]), mask, 1)
        loss.backward()
        assert torch.sign(-x.grad[0, 1]).item() == sign  # gradient descent raises logp iff A > 0


def _tiny_lm(arch: str, tied: bool):
    """A random 2-layer Qwen2 / Llama built from its config (no weights to download)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(arch, vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                               tie_word_embeddings=tied)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


_SAMPLES = [{"prompt_ids": [5, 6, 7, 8, 9, 10], "completion_ids": [11, 12, 13], "advantage": 1.0},
            {"prompt_ids": [5, 20], "completion_ids": [21, 22, 23, 24, 25], "advantage": -0.5},
            {"prompt_ids": [30, 31, 32, 33], "completion_ids": [34], "advantage": 2.0}]


@pytest.mark.parametrize("arch,tied", [("qwen2", False), ("qwen2", True), ("llama", False), ("llama", True)])
def test_completion_logps_equal_full_logits_loss_and_gradients(arch, tied):
    """Logits only at completion positions: same per-token log-probs, loss and gradients as the full-logits
    computation (before issue 11), and a right-padded batch scores each sequence as it scores alone."""
    from parl_mt_lib.bench import full_logits_token_logps

    model = _tiny_lm(arch, tied)
    ids, attn, comp = pad_batch(_SAMPLES, pad_id=0)
    adv = torch.tensor([s["advantage"] for s in _SAMPLES])
    n = int(comp.sum())
    results = []
    for fn in (full_logits_token_logps, completion_logps):
        model.zero_grad()
        lp = fn(model, ids, attn, comp, 0.7)
        loss, _ = grpo_loss(lp, lp.detach() - 0.1, None, adv, comp, n)  # ratio != 1: clipping is exercised
        loss.backward()
        results.append((lp.detach() * comp, float(loss), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (lp_full, loss_full, g_full), (lp_new, loss_new, g_new) = results
    assert torch.allclose(lp_new, lp_full, atol=1e-6)
    assert (lp_new[comp == 0] == 0).all() and (lp_new[comp == 1] < 0).all()
    assert loss_new == pytest.approx(loss_full, abs=1e-6)
    assert all(torch.allclose(g_new[k], g_full[k], atol=1e-6, rtol=1e-5) for k in g_full)
    with torch.no_grad():
        for i, s in enumerate(_SAMPLES):  # each sequence alone, no padding
            one = pad_batch([s], pad_id=0)
            alone = completion_logps(model, *one, 0.7)[0][one[2][0].bool()]
            assert torch.allclose(lp_new[i][comp[i].bool()], alone, atol=1e-5)

