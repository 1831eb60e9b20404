"""Model tier: tokenizer + chat template round-trips and assistant-span masks across turns."""
import pytest

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.context import FullHistoryContext, encode_with_assistant_mask, render_prompt
from parl_mt_lib.policies import OraclePolicy
from parl_mt_lib.rollout import Episode, StepRequest

pytestmark = pytest.mark.model

def _conversation(n_steps=7):
    """An oracle conversation over >= 3 user turns: system, user, assistant, tool messages."""
    ep = Episode(entry_by_id("multi_turn_base_0"))
    ctx, pol = FullHistoryContext(), OraclePolicy()
    for _ in range(n_steps):
        ep.record(pol.generate([StepRequest(ctx.messages(ep), None, ep)])[0])
    msgs = ctx.messages(ep)
    assert sum(m["role"] == "user" for m in msgs) >= 3
    return msgs


def _check_masks(tok, msgs):
    ids, mask = encode_with_assistant_mask(tok, msgs)
    assert len(ids) == len(mask)
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    assistants = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert len(spans) == len(assistants)
    for span, content in zip(spans, assistants):
        assert tok.decode(span) == "\n" + content + "<|im_end|>\n"  # token for token, nothing else
    # every system / user / tool token is outside the mask
    text_unmasked = tok.decode([i for i, m in zip(ids, mask) if not m])
    for m in msgs:
        if m["role"] != "assistant":
            assert m["content"] in text_unmasked


def test_toy_tokenizer_roundtrip(toy):
    _, tok = toy
    msgs = _conversation()
    prompt = render_prompt(tok, msgs)
    assert tok.decode(tok(prompt, add_special_tokens=False).input_ids) == prompt
    for m in msgs:
        assert tok.decode(tok(m["content"], add_special_tokens=False).input_ids) == m["content"]


def test_assistant_masks_toy_template(toy):
    _check_masks(toy[1], _conversation())


def test_assistant_masks_qwen25_template_string(toy):
    """Start from the plain Qwen2.5 template string (no generation markers, as Qwen2.5's own tokenizer
    carries); TRL patches it to its training variant; the masks are then exact as well."""
    from pathlib import Path

    import trl
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tok = toy[1]
    saved = tok.chat_template
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    try:
        assert not has_generation_markers(tok.chat_template)
        tok.chat_template = get_training_chat_template(tok)
        assert has_generation_markers(tok.chat_template)
        _check_masks(tok, _conversation(9))
    finally:
        tok.chat_template = saved


def test_prompt_tokens_are_prefix_across_steps(toy):
    """Full-history prompt tokens at step k are a prefix of step k+1's (no re-tokenisation drift)."""
    _, tok = toy
    ep = Episode(entry_by_id("multi_turn_base_0"))
    ctx, pol = FullHistoryContext(), OraclePolicy()
    prev = None
    for _ in range(6):
        msgs = ctx.messages(ep)
        ids = tok(render_prompt(tok, msgs), add_special_tokens=False).input_ids
        if prev is not None:
            assert ids[:len(prev)] == prev
        gen = pol.generate([StepRequest(msgs, None, ep)])[0]
        ep.record(gen)
        # the prompt + generated text (+ eos) re-tokenises to the same ids as the next prompt's prefix
        prev = ids + tok(gen.text, add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_trl_recognises_toy_template(toy):
    from trl.chat_template_utils import (get_training_chat_template, has_generation_markers,
                                         is_chat_template_prefix_preserving, supports_tool_calling)

    tok = toy[1]
    assert has_generation_markers(tok.chat_template) and supports_tool_calling(tok)
    assert is_chat_template_prefix_preserving(tok)
    assert get_training_chat_template(tok) is None  # already training-compatible
