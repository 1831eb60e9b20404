"""Held-out metrics that compare the SFT views are leak-free (issue 11): no prompt behind them holds gold-derived
text (the teacher's summary/plan) that the policy did not write itself."""
import pytest

from parl_mt_lib.pag_build import load_pag


@pytest.mark.model
def test_comparison_step_metrics_never_feed_the_gold_plan(toy, pag_dir):
    from parl_mt_lib import sft_eval

    model, tok = toy
    splits, tasks = load_pag(pag_dir)
    val = splits["validation"] + splits["train"][:20]
    plans = {e["plan"] for e in val if e["plan"]}
    assert plans
    seen = []
    orig = tok.apply_chat_template

    def recording(messages, *a, **kw):
        seen.append(" ".join(m["content"] for m in messages))
        return orig(messages, *a, **kw)

    tok.apply_chat_template = recording
    try:
        m = sft_eval.step_metrics(model, tok, val, tasks, "progress", "minimal", max_new_tokens=8, limit=4)
    finally:
        del tok.apply_chat_template
    assert seen, "the metric never prompted the model"
    leaked = [p for p in plans if any(p in s for s in seen)]
    assert not leaked, f"gold plans fed to the model: {leaked[:2]}"
    assert {"format_validity"} <= set(m)


def _episode(outputs, task):
    from parl_mt_lib.policies import ScriptedPolicy
    from parl_mt_lib.rollout import run_episodes

    it = iter(outputs)
    (ep,) = run_episodes(ScriptedPolicy(lambda r: next(it, "")), [task], progress=False)
    return ep


def test_step_verdicts_follow_the_policys_own_trajectory():
    from parl_mt_lib.bfcl import entry_by_id
    from parl_mt_lib.sft_eval import step_verdicts, trajectory_metrics

    e = entry_by_id("multi_turn_base_0")  # turn 0 gold: cd(folder='document'), mkdir(dir_name='temp'), mv(...)
    g = [c.render() for c in e.gold_calls[0]]
    assert len(g) == 3
    # right, wrong (skips mkdir), right on its own trajectory (mkdir still remains), stops: wrong (mv remains)
    ep = _episode([f"[{g[0]}]", f"[{g[2]}]", f"[{g[1]}]", ""], e)
    assert step_verdicts(ep)[:4] == [True, False, True, False]
    # stopping once everything is made is right
    assert step_verdicts(_episode([f"[{g[0]}]", f"[{g[1]}]", f"[{g[2]}]", ""], e))[:4] == [True] * 4
    # keyword order and int/float forms do not matter
    mv = e.gold_calls[0][2]
    swapped = "mv(" + ", ".join(f"{k}={v!r}" for k, v in reversed(list(mv.kwargs.items()))) + ")"
    ep2 = _episode([f"[{g[0]}]", f"[{g[1]}]", f"[{swapped}]"], e)
    assert step_verdicts(ep2)[:3] == [True, True, True]
    m = trajectory_metrics([ep], "plain")
    assert m["task_success"] == 0.0 and 0 < m["step_accuracy"] < 1 and m["format_validity"] == 1.0


@pytest.mark.parametrize("outputs, cause, step", [
    (["[cd(folder='document')]", "[ls()]"], "wrong_function", 1),          # mkdir was next
    (["[cd(folder='elsewhere')]"], "arguments", 0),                        # the right function, another value
    (["[cd(folder='document')]", ""], "stopped_early", 1),                 # mkdir and mv remain
    (["[cd(folder=document)]", "[ls()]"], "parse_error", 0),               # a name, not a literal
    (["[cd(folder='document'), mkdir(dir_name='temp'), mv(source='final_report.pdf', destination='temp')]",
      "[ls()]"], "extra_call", 1),                                         # nothing remained
    (["[cd(folder='document'), mkdir(dir_name='temp'), mv(source='final_report.pdf', destination='temp'), ls()]"],
     "extra_call", 0),                                                     # the remaining calls, then one more
    (["[cd(folder='document'), ls(), pwd(), mkdir(dir_name='temp')]"], "wrong_function", 0),  # mv missed
    (["[mkdir(dir_name='temp'), cd(folder='document')]"], "wrong_order", 0),  # the next two, swapped
    (None, "none", None),                                                  # the gold turn, then a stop: no error
])
def test_first_error_names_why_the_first_wrong_step_was_wrong(outputs, cause, step):
    """The diagnosis in 02's cells (``first_error_causes``): table-driven over every cause."""
    from parl_mt_lib.bfcl import entry_by_id
    from parl_mt_lib.sft_eval import error_causes, first_error

    e = entry_by_id("multi_turn_base_0")  # turn 0 gold: cd(folder='document'), mkdir(dir_name='temp'), mv(...)
    if outputs is None:  # every turn's gold calls in one step, then a stop
        outputs = [x for turn in e.gold_calls for x in ("[" + ", ".join(c.render() for c in turn) + "]", "")]
    ep = _episode(outputs, e)
    err = first_error(ep)
    assert (err or {"cause": "none"})["cause"] == cause
    assert err is None or err["step"] == step
    counts = error_causes([ep])
    assert counts[cause] == 1 and sum(counts.values()) == 1


def test_step_verdicts_name_positional_arguments_from_the_task_docs():
    from parl_mt_lib.bfcl import entry_by_id
    from parl_mt_lib.sft_eval import step_verdicts

    e = entry_by_id("multi_turn_base_0")
    assert step_verdicts(_episode(["[cd('document')]"], e))[0] is True


@pytest.mark.model
def test_play_batches_steps_with_the_same_greedy_episodes(toy_path, pag_dir):
    """``play`` sends several episodes' steps per ``generate`` call (it sent one prompt per call) and plays the same
    greedy episodes as one prompt per call -- with a tokenizer that pads on the right, as ``AutoTokenizer`` loads
    the toy's (``evaluate_sft_model`` does): batched generation needs left padding, taken on a copy."""
    from transformers import AutoTokenizer

    from parl_mt_lib import sft_eval
    from parl_mt_lib.context import make_context
    from parl_mt_lib.models import load_model
    from parl_mt_lib.policies import HFPolicy
    from parl_mt_lib.rollout import run_episodes

    model, left_tok = load_model(str(toy_path))  # a fresh copy: generate is wrapped below
    tok = AutoTokenizer.from_pretrained(toy_path)
    assert tok.padding_side == "right"
    splits, tasks = load_pag(pag_dir)
    val = [tasks[i] for i in sorted({e["task_id"] for e in splits["validation"]})][:6]
    rows = []
    orig = model.generate
    model.generate = lambda *a, **kw: (rows.append(kw["input_ids"].shape[0]), orig(*a, **kw))[1]
    eps = sft_eval.play(model, tok, val, "progress", "minimal", max_new_tokens=8)
    n_steps = sum(len(e.steps) for e in eps)
    assert len(rows) < n_steps and max(rows) > 1, (rows, n_steps)
    assert tok.padding_side == "right"  # the caller's tokenizer is left as it was
    del model.generate
    one = run_episodes(HFPolicy(model, left_tok, max_new_tokens=8, micro_batch_size=1), val,
                       make_context("progress", tool_docs="minimal"), progress=False)
    assert [[s.output for s in e.steps] for e in eps] == [[s.output for s in e.steps] for e in one]


def test_sft_evaluation_runs_on_the_training_device(monkeypatch, toy_path, pag_dir):
    """``evaluate_sft_model`` puts the model where training ran (:func:`parl_mt_lib.sft.training_device`; it
    loaded it on the CPU whatever the device). ``meta`` stands in for a GPU here; the metrics are stubbed."""
    from parl_mt_lib import sft, sft_eval

    seen = {}
    monkeypatch.setattr(sft, "training_device", lambda: "meta")
    monkeypatch.setattr(sft_eval, "play", lambda model, *a, **k: seen.setdefault("play", model.device.type) and [])
    monkeypatch.setattr(sft_eval, "trajectory_metrics", lambda eps, view: dict.fromkeys(
        ("task_success", "format_validity", "step_accuracy", "call_accuracy", "n_steps", "n_call_steps", "n_tasks",
         "first_error_causes", "samples"), 0))
    monkeypatch.setattr(sft_eval, "teacher_forced_metrics",
                        lambda model, *a, **k: seen.setdefault("tf", model.device.type) and {})
    recipe = sft.load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "model": str(toy_path)})
    sft.evaluate_sft_model(str(toy_path), "progress", recipe)
    assert seen == {"play": "meta", "tf": "meta"}
