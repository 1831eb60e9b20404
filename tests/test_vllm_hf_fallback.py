"""The HF fallback (when vLLM is absent) is memory-safe: sampled tokens' log-probs are recorded step by step
(no full-vocabulary ``output_scores`` kept) and equal the old ``output_scores`` computation token for token; one
``generate`` call holds at most ``max_batch_tokens`` padded prompt tokens."""
import pytest
import torch

from parl_mt_lib.bfcl import load_entries
from parl_mt_lib.context import make_context, render_prompt
from parl_mt_lib.policies import HFPolicy
from parl_mt_lib.rollout import Episode, StepRequest

pytestmark = pytest.mark.model


def _requests(n=4):
    ctx = make_context("progress", tool_docs="minimal")
    eps = [Episode(e) for e in load_entries(["base", "long_context"], limit=n // 2)]
    return [StepRequest(ctx.messages(ep), ctx.tools(ep), ep) for ep in eps]


def _old_scores_logps(model, tok, ids, temperature, top_p, max_new_tokens):
    """The computation before this change: ``output_scores`` kept for every step, log-softmax afterwards."""
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")
    sample = temperature > 0
    with torch.no_grad():  # the toy's generation config has no sampling defaults to switch off
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=temperature if sample else 1.0, top_p=top_p if sample else 1.0, top_k=0,
                             repetition_penalty=1.0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             output_scores=True, return_dict_in_generate=True)
    new = gen.sequences[:, batch["input_ids"].shape[1]:]
    lp = torch.stack([torch.log_softmax(s.float(), -1).gather(1, new[:, t:t + 1]).squeeze(1)
                      for t, s in enumerate(gen.scores)], 1)
    return new, lp


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (0.7, 1.0), (1.0, 0.9)])
def test_recorded_logprobs_equal_the_output_scores_ones(toy, temperature, top_p, monkeypatch):
    model, tok = toy
    reqs = _requests()
    pol = HFPolicy(model, tok, max_new_tokens=12, temperature=temperature, top_p=top_p, micro_batch_size=4,
                   keep_tokens=True)
    kwargs = []
    real = model.generate

    def spy(*a, **kw):
        kwargs.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(model, "generate", spy)
    torch.manual_seed(3)
    gens = pol.generate(reqs)
    monkeypatch.undo()
    assert kwargs and not any(kw.get("output_scores") or kw.get("output_logits") for kw in kwargs), \
        "generate was asked to keep every step's full-vocabulary scores"
    order = sorted(range(len(reqs)), key=lambda i: len(gens[i].prompt_ids))  # the policy batches by length
    torch.manual_seed(3)
    new, lp = _old_scores_logps(model, tok, [gens[i].prompt_ids for i in order], temperature, top_p, 12)
    for row, i in enumerate(order):
        n = len(gens[i].completion_ids)
        assert new[row, :n].tolist() == gens[i].completion_ids
        assert gens[i].logprobs == pytest.approx(lp[row, :n].tolist(), abs=1e-6)


def test_prompt_tokens_per_generate_call_are_capped(toy, monkeypatch):
    model, tok = toy
    reqs = _requests(6)
    lens = sorted(len(tok(render_prompt(tok, r.messages, r.tools), add_special_tokens=False).input_ids)
                  for r in reqs)
    cap = lens[-1] * 2  # room for two of the longest prompts, padding included
    pol = HFPolicy(model, tok, max_new_tokens=2, micro_batch_size=64, max_batch_tokens=cap)
    calls = []
    inner = pol._generate
    monkeypatch.setattr(pol, "_generate", lambda ids, fits, out: (calls.append([len(ids[i]) for i in fits]),
                                                                   inner(ids, fits, out)))
    out = pol.generate(reqs)
    assert sum(len(c) for c in calls) == len(reqs) and all(g.error is None for g in out)
    assert all(len(c) * max(c) <= cap or len(c) == 1 for c in calls)
    assert len(calls) > 1  # the cap split the batch that micro_batch_size alone would have sent at once
