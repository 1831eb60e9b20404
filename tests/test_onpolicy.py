"""On-policy sampling: the HF sampler draws from the distribution the RL trainer scores, even when the checkpoint's
``generation_config`` carries sampling defaults (issue 11: Qwen2.5-Instruct ships repetition_penalty 1.05, top_k 20,
top_p 0.8, temperature 0.7, which transformers applies to every knob a call leaves unset)."""
import pytest
import torch

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.context import FullHistoryContext
from parl_mt_lib.policies import HFPolicy
from parl_mt_lib.rollout import Episode, StepRequest

QWEN25_DEFAULTS = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05}


def _trainer_logps(model, prompt_ids, completion_ids, temperature):
    """Plain softmax of logits / temperature at every completion position (what the RL loss scores)."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt_ids):, None]).squeeze(1)


@pytest.mark.model
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_trainer_despite_checkpoint_defaults(toy_path, temperature):
    from parl_mt_lib.models import load_model

    model, tok = load_model(str(toy_path))  # a fresh copy: its generation_config is changed below
    for k, v in QWEN25_DEFAULTS.items():
        setattr(model.generation_config, k, v)
    ctx = FullHistoryContext(tool_docs="minimal")
    reqs = [StepRequest(ctx.messages(ep), None, ep)
            for ep in (Episode(entry_by_id(f"multi_turn_base_{i}")) for i in range(3))]
    pol = HFPolicy(model, tok, max_new_tokens=24, temperature=temperature, keep_tokens=True, seed=0)
    gaps = []
    for gen in pol.generate(reqs):
        want = _trainer_logps(model, gen.prompt_ids, gen.completion_ids, temperature)
        gaps.append((torch.tensor(gen.logprobs) - want).abs())
    gap = torch.cat(gaps)
    assert gap.numel() > 20
    assert gap.mean() < 1e-4 and gap.max() < 1e-3, (float(gap.mean()), float(gap.max()))
    assert model.generation_config.top_k == 20  # the checkpoint's config is left as it was
