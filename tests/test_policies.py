"""Policies: the HTTP policy against a stub OpenAI server on loopback; the HF policy on the toy."""
import contextlib
import json
import threading

import pytest
from helpers import chat_server

from parl_mt_lib.bfcl import entry_by_id, load_entries
from parl_mt_lib.context import FullHistoryContext
from parl_mt_lib.evaluate import score_trajectory
from parl_mt_lib.policies import HFPolicy, OpenAIPolicy, PolicyError, _http_messages
from parl_mt_lib.rollout import Episode, StepRequest, run_episodes


class Stub:
    """Answers with the gold calls of the entry/turn named in the conversation; fails the first N requests."""

    def __init__(self, fail_first=0, tool_calls=False):
        self.fail_first, self.tool_calls, self.requests, self.lock = fail_first, tool_calls, [], threading.Lock()

    def answer(self, payload):
        msgs = payload["messages"]
        entry = entry_by_id(payload["model"])
        turn = sum(m["role"] == "user" and not m["content"].startswith("[{'role': 'tool'") for m in msgs) - 1
        done = sum(m["role"] == "assistant" for m in msgs[[i for i, m in enumerate(msgs) if m["role"] == "user"
                                                            and not m["content"].startswith("[{'role'")][-1]:])
        gold = entry.gold_calls[turn] if turn < len(entry.gold_calls) else []
        if done >= len(gold):
            return {"role": "assistant", "content": ""}
        call = gold[done]
        if self.tool_calls:
            return {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": call.name, "arguments": json.dumps(call.kwargs)}}]}
        return {"role": "assistant", "content": f"[{call.render()}]"}


@pytest.fixture
def server():
    with contextlib.ExitStack() as stack:
        def start(stub):
            def respond(payload):
                with stub.lock:
                    stub.requests.append(payload)
                    fail = len(stub.requests) <= stub.fail_first
                if fail:
                    return 503, None
                return 200, {"choices": [{"message": stub.answer(payload)}],
                             "usage": {"prompt_tokens": 7, "completion_tokens": 3}}

            return stack.enter_context(chat_server(respond))

        yield start


@pytest.mark.parametrize("tool_calls", [False, True])
def test_openai_policy_plays_entry_with_retries(server, tool_calls):
    stub = Stub(fail_first=2, tool_calls=tool_calls)
    url = server(stub)
    e = entry_by_id("multi_turn_base_0")
    pol = OpenAIPolicy(e.id, url, max_concurrency=2, retries=3, backoff=0.01, timeout=5)
    (ep,) = run_episodes(pol, [e], progress=False)
    assert score_trajectory(e.id, ep.calls_per_turn()).valid
    assert ep.steps[0].prompt_tokens == 7 and len(stub.requests) == len(ep.steps) + 2
    roles = {m["role"] for r in stub.requests for m in r["messages"]}
    assert roles == {"system", "user", "assistant"} or roles == {"system", "user"}


def test_openai_policy_concurrency(server):
    stub = Stub()
    url = server(stub)
    entries = load_entries(["base"], limit=4)
    eps = run_episodes(OpenAIPolicy("multi_turn_base_0", url, max_concurrency=4, timeout=5), entries[:1] * 4,
                       batch_size=4, progress=False)
    assert all(score_trajectory(ep.entry.id, ep.calls_per_turn()).valid for ep in eps)


def test_openai_policy_down_fails_clearly():
    pol = OpenAIPolicy("m", "http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=2)
    ep = Episode(entry_by_id("multi_turn_base_0"))
    with pytest.raises(PolicyError, match="failed after 2 attempts.*server is up"):
        pol.generate([StepRequest(FullHistoryContext().messages(ep), None, ep)])


def test_http_messages_fold_tool_results():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "[ls()]"}, {"role": "tool", "name": "ls()", "content": "r"}]
    out = _http_messages(msgs)
    assert out[-1] == {"role": "user", "content": repr([{"role": "tool", "name": "ls()", "content": "r"}])}


@pytest.mark.model
def test_hf_policy_toy_end_to_end(toy):
    model, tok = toy
    pol = HFPolicy(model, tok, max_new_tokens=8)
    entries = load_entries(["base", "long_context"], limit=1)
    eps = run_episodes(pol, entries, batch_size=2, progress=False)
    for ep in eps:
        assert ep.done and all(s.completion_tokens <= 8 for s in ep.steps)
        assert all(s.prompt_tokens > 1000 for s in ep.steps)
        assert not score_trajectory(ep.entry.id, ep.calls_per_turn()).valid


@pytest.mark.model
def test_hf_policy_context_overflow_is_a_failed_step(toy):
    model, tok = toy
    pol = HFPolicy(model, tok, max_new_tokens=8, max_prompt_tokens=500)
    (ep,) = run_episodes(pol, load_entries(["base"], limit=1), progress=False)
    assert ep.turn_end == ["policy_error"] and "context_overflow" in ep.steps[0].error
