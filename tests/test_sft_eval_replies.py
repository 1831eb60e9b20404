"""Teacher-forced metrics on τ-bench reply steps: an empty output is not a reply (it used to match "no calls"),
a message to the user is (it used to fail the call-format check)."""
import pytest

import parl_mt_lib.sft_eval as se

pytest.importorskip("tau2")


@pytest.fixture(scope="module")
def examples():
    from parl_mt_lib.envs.tau2 import load_tasks
    from parl_mt_lib.envs.tau2_pag import step_examples

    (task,) = load_tasks("retail", "train", limit=1)
    exs = step_examples(task)
    return exs, {task.id: task}


@pytest.mark.parametrize("reply_text, expected", [("", 0.0), ("   ", 0.0), ("Could you confirm the order id?", 1.0),
                                                  ("[cancel_pending_order(order_id='#W1')]", 0.0)])
def test_reply_steps(monkeypatch, examples, reply_text, expected):
    exs, tasks = examples
    replies = [e for e in exs if e["kind"] == "reply"]
    assert replies
    monkeypatch.setattr(se, "greedy", lambda model, tok, prompts, n: [reply_text] * len(prompts))
    monkeypatch.setattr(se, "render_prompt", lambda tok, msgs, *a, **k: "prompt")
    m = se.teacher_forced_metrics(None, None, replies, tasks, "plain", tool_docs="names")
    assert m["tf_step_exact_match"] == expected and m["tf_format_validity"] == expected
