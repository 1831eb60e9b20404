"""SFT with TRL: loss masks through TRL's own preprocessing, resume after a kill, checkpoints in 05, bad recipes."""
import json

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.pag import sft_rows, step_examples
from parl_mt_lib.pag_build import load_pag
from parl_mt_lib.runtime import ConfigError
from parl_mt_lib.sft import load_recipe, train_sft

pytestmark = pytest.mark.model
RECIPE = "recipes/toy/sft.yaml"


def _recipe(pag_dir, **kw):
    return load_recipe(RECIPE, {"data": str(pag_dir), "max_steps": 6, "save_steps": 3, "logging_steps": 1,
                                "per_device_train_batch_size": 2, **kw})


def _spans(ids, labels):
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


def _multi_turn_example(view):
    e = entry_by_id("multi_turn_base_0")
    ex = [x for x in step_examples(e) if x["turn"] >= 2 and x["kind"] == "call"][-1]  # a call, not an empty stop
    (row,) = sft_rows([ex], {e.id: e}, view, tool_docs="minimal")
    assert sum(m["role"] == "user" for m in row["prompt"]) >= (3 if view == "plain" else 1)
    return row


@pytest.fixture(params=["toy", "qwen2.5", "smollm2"])
def chat(request, toy):
    """``(model, tokenizer)`` whose chat template a test checks: the toy's; the plain Qwen2.5 template string
    patched by TRL to its training variant (on the toy); SmolLM2-135M-Instruct's own ChatML template (model spec
    ``smollm2``: every role, ``tool`` included, as ``<|im_start|>ROLE\n...<|im_end|>``, no generation markers)."""
    from pathlib import Path

    import trl
    from trl.chat_template_utils import get_training_chat_template

    if request.param == "smollm2":
        yield request.getfixturevalue("smollm2")
        return
    tok = toy[1]
    saved = tok.chat_template
    if request.param == "qwen2.5":
        tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
        tok.chat_template = get_training_chat_template(tok)
    yield toy
    tok.chat_template = saved


def _prepared(chat, tmp_path, rows, **args):
    """The first row as TRL's SFTTrainer tokenises and labels it (its own preprocessing, nothing re-implemented)."""
    from trl import SFTConfig, SFTTrainer

    model, tok = chat
    cfg = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=4096, max_steps=1, **args)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok)
    return trainer.train_dataset[0], tok


@pytest.mark.parametrize("view", ["plain", "progress"])
def test_loss_only_on_completion(chat, tmp_path, view):
    """Prompt/completion rows (what we train on): token for token, the prompt -- the template's rendering of every
    system, user, assistant and tool message plus the generation prompt -- carries no loss, and exactly the final
    assistant message and its end-of-turn tokens do."""
    row = _multi_turn_example(view)
    assert view == "progress" or any(m["role"] == "tool" for m in row["prompt"])
    ex, tok = _prepared(chat, tmp_path, [row])
    prompt_ids = tok(tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False).input_ids
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids and ex["labels"][:n] == [-100] * n
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert tok.decode(ex["input_ids"][n:]) == row["completion"][0]["content"] + "<|im_end|>\n"
    unlabelled = tok.decode(ex["input_ids"][:n])
    assert all(m["content"] in unlabelled for m in row["prompt"])


def test_loss_on_every_assistant_span_of_a_conversation(chat, tmp_path):
    """Whole-conversation rows with assistant_only_loss: loss lands exactly on every assistant span (>= 3 turns)."""
    if "{% generation %}" not in (chat[1].chat_template or ""):
        pytest.skip("template without {% generation %} markers (SmolLM2's; TRL has no training variant of it): "
                    "whole-conversation rows with assistant_only_loss are unsupported, prompt/completion rows are "
                    "what SFT trains on")
    row = _multi_turn_example("plain")
    messages = row["prompt"] + row["completion"]
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(assistants) >= 3
    ex, tok = _prepared(chat, tmp_path, [{"messages": messages}], assistant_only_loss=True)
    spans = _spans(ex["input_ids"], ex["labels"])
    assert [tok.decode(s) for s in spans] == ["\n" + a + "<|im_end|>\n" for a in assistants]


class Kill(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_kill_matches_uninterrupted(pag_dir, tmp_path):
    recipe = _recipe(pag_dir)
    ref = train_sft(recipe, tmp_path / "ref")
    # a finished run called again is returned as it is: transformers resumed at max_steps trained a 7th step, and a
    # grid re-keyed by a new recipe key reported that step's 0.0 min as the cell's training time
    twice = train_sft(recipe, tmp_path / "ref")
    assert twice["global_step"] == 6 and twice["train_runtime_s"] == round(ref["train_runtime_s"], 2) > 0
    assert twice["log_history"] == json.loads(json.dumps(ref["log_history"]))
    # so is an epoch-based one (the GPU recipes: max_steps -1)
    epochs = _recipe(pag_dir, max_steps=-1, num_train_epochs=0.1, save_steps=1000)
    first = train_sft(epochs, tmp_path / "epochs")
    again = train_sft(epochs, tmp_path / "epochs")
    assert again["train_runtime_s"] == round(first["train_runtime_s"], 2) > 0
    assert again["global_step"] == first["global_step"] > 0
    with pytest.raises(KeyboardInterrupt):
        train_sft(recipe, tmp_path / "run", callbacks=[Kill(4)])
    assert (tmp_path / "run" / "checkpoint-3").exists() and not (tmp_path / "run" / "final").exists()
    again = train_sft(recipe, tmp_path / "run")
    assert again["global_step"] == ref["global_step"] == 6
    last = lambda r: [h["loss"] for h in r["log_history"] if "loss" in h][-1]  # noqa: E731
    assert last(again) == pytest.approx(last(ref), rel=1e-4)
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(ref["final_dir"]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again["final_dir"]).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    # the checkpoint loads as a policy in 05's evaluate, on held-out synthetic tasks
    from parl_mt_lib.evaluate import evaluate

    splits, tasks = load_pag(pag_dir)
    held = [tasks[i] for i in sorted({e["task_id"] for e in splits["validation"]})][:2]
    m = evaluate(again["final_dir"], entries=held, context="progress", tool_docs="minimal", max_new_tokens=16,
                 results_dir=tmp_path / "eval", progress=False)
    assert m["categories"]["synthetic"]["total"] == len(held)


def test_lora_variant_saves_loadable_adapter(pag_dir, tmp_path):
    from parl_mt_lib.models import load_model

    run = train_sft(_recipe(pag_dir, full_finetune=False, lora=True, max_steps=2), tmp_path / "lora")
    model, tok = load_model(run["final_dir"])
    assert (tmp_path / "lora" / "final" / "adapter_config.json").exists() and tok.eos_token == "<|im_end|>"


def test_bad_recipe_stops_before_training(pag_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe key"):
        load_recipe(RECIPE, {"learning_rat": 1e-3})
    with pytest.raises(ConfigError, match="not found"):
        load_recipe("recipes/none/sft.yaml")
    with pytest.raises(ConfigError, match="dataset .* not found"):
        train_sft(_recipe(tmp_path / "no_pag"), tmp_path / "a")
    with pytest.raises(ConfigError, match="does not exist"):
        train_sft(_recipe(pag_dir, model="./no/such/model"), tmp_path / "b")
    with pytest.raises(ConfigError, match="view must be"):
        _recipe(pag_dir, view="sideways")
    with pytest.raises(ConfigError, match="train_sampling_strategy must be one of"):
        _recipe(pag_dir, train_sampling_strategy="by_length")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cpu_compact_fused_head_same_loss_and_grads(toy_path, monkeypatch):
    """Scoring only labelled positions on the CPU (our patch of TRL's fused head) changes speed, not the loss."""
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM
    from trl.kernels.chunked_logprob import _use_triton as triton_check

    from parl_mt_lib.sft import score_labelled_positions_only_on_cpu

    torch.manual_seed(0)
    ids = torch.randint(5, 400, (3, 24))
    labels = ids.clone()
    labels[:, :15] = -100   # a prompt
    labels[1, 20:] = -100   # padding
    runs = []
    for compact in (False, True):
        monkeypatch.setattr(trl_utils, "_use_triton", triton_check)
        if compact:
            assert score_labelled_positions_only_on_cpu() and score_labelled_positions_only_on_cpu()
        assert trl_utils._use_triton(torch.device("cpu")) is compact
        model = AutoModelForCausalLM.from_pretrained(str(toy_path))
        trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = runs
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert torch.allclose(a.log_probs, b.log_probs, atol=1e-5) and torch.equal(a.is_top1, b.is_top1)
    assert torch.allclose(a.entropy, b.entropy, atol=1e-4)
    assert ga.keys() == gb.keys() and all(torch.allclose(ga[k], gb[k], atol=1e-6) for k in ga)


def test_grid_cells_side_by_side_match_one_process(pag_dir, tmp_path):
    """Two spawned single-thread workers give the same cells as one single-thread process; a rerun reuses them."""
    from parl_mt_lib.runtime import set_threads
    from parl_mt_lib.sft import run_sft_grid

    set_threads(1)
    kw = dict(variants=("progress",), seeds=(0, 1), eval_limit=4, task_limit=1, progress=False,
              overrides={"data": str(pag_dir), "max_steps": 3, "save_steps": 3, "logging_steps": 1,
                         "per_device_train_batch_size": 2})
    one = run_sft_grid(RECIPE, out_dir=tmp_path / "one", workers=1, **kw)
    two = run_sft_grid(RECIPE, out_dir=tmp_path / "two", workers=2, threads=2, **kw)
    assert two["provenance"]["workers"] == 2 and one["provenance"]["workers"] == 1
    drop = ("train_runtime_s", "final_dir")
    strip = lambda m: {k: {f: v for f, v in c.items() if f not in drop} for k, c in m["cells"].items()}  # noqa: E731
    assert set(one["cells"]) == {"base-progress", "sft-progress-seed0", "sft-progress-seed1"}
    assert strip(one) == strip(two)
    weights = tmp_path / "two" / "progress" / "seed0" / "final" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_sft_grid(RECIPE, out_dir=tmp_path / "two", workers=2, threads=2, **kw)
    assert weights.stat().st_mtime_ns == stamp
    assert again["cells"] == json.loads(json.dumps(two["cells"]))  # reused from cells.json, not retrained


def test_no_resume_of_an_old_checkpoint_under_another_recipe(pag_dir, tmp_path):
    """Defect (issue 11): train_sft overwrote recipe.resolved.json and resumed the old run's checkpoint."""
    out = tmp_path / "run"
    first = train_sft(_recipe(pag_dir, max_steps=2, save_steps=2), out)
    saved = (out / "recipe.resolved.json").read_text()
    weights = (out / "final" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError) as err:
        train_sft(_recipe(pag_dir, max_steps=2, save_steps=2, learning_rate=0.5), out)
    assert "\n" not in str(err.value) and "learning_rate" in str(err.value)
    assert (out / "recipe.resolved.json").read_text() == saved  # nothing overwritten
    assert (out / "final" / "model.safetensors").read_bytes() == weights and (out / "checkpoint-2").exists()
    # the checkpoint carries its run's fingerprint + its weights' content hash (what later artifacts key on);
    # a grid re-running its own cell may replace the directory
    from parl_mt_lib.runtime import content_fingerprint, input_fingerprint, read_fingerprint

    assert read_fingerprint(first["final_dir"])["fingerprint"] == first["fingerprint"]
    assert input_fingerprint(first["final_dir"]) == content_fingerprint(first["final_dir"])
    again = train_sft(_recipe(pag_dir, max_steps=2, save_steps=2, learning_rate=0.5), out, replace=True)
    assert again["fingerprint"] != first["fingerprint"] and again["global_step"] == 2
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] is None


def test_sft_grid_cell_reruns_when_recipe_changes(pag_dir, tmp_path, monkeypatch):
    """Defect (issue 11): cells were reused by key whatever the recipe. Unchanged: reused, no training call."""
    from parl_mt_lib import sft

    calls = []
    real = sft.train_sft
    monkeypatch.setattr(sft, "train_sft", lambda r, *a, **k: calls.append(r.max_steps) or real(r, *a, **k))
    ov = {"data": str(pag_dir), "max_steps": 2, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2}
    kw = dict(variants=("progress",), seeds=(0,), out_dir=tmp_path / "grid", eval_limit=2, task_limit=1,
              progress=False)
    first = sft.run_sft_grid(RECIPE, overrides=ov, **kw)
    assert first["cells"]["sft-progress-seed0"]["global_step"] == 2 and calls == [2]
    again = sft.run_sft_grid(RECIPE, overrides=ov, **kw)
    assert calls == [2] and again["cells"] == json.loads(json.dumps(first["cells"]))  # same fingerprint: reused
    changed = sft.run_sft_grid(RECIPE, overrides={**ov, "max_steps": 3}, **kw)
    assert changed["cells"]["sft-progress-seed0"]["global_step"] == 3  # retrained, not the stale cell
    assert "base-progress" in changed["reused_cells"]  # the base cell did not change: not re-evaluated


def test_sft_is_deterministic(pag_dir, tmp_path):
    """Determinism guard: the same tiny SFT twice gives exactly the same loss history and weights."""
    from transformers import AutoModelForCausalLM

    recipe = _recipe(pag_dir, max_steps=3, save_steps=100)
    a, b = train_sft(recipe, tmp_path / "a"), train_sft(recipe, tmp_path / "b")
    hist = lambda r: [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}  # noqa: E731
                      for h in r["log_history"]]
    assert hist(a) == hist(b) and len([h for h in hist(a) if "loss" in h]) == 3
    sa = AutoModelForCausalLM.from_pretrained(a["final_dir"]).state_dict()
    sb = AutoModelForCausalLM.from_pretrained(b["final_dir"]).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("strategy, sampler", [("random", "RandomSampler"),
                                               ("group_by_length", "SeededLengthGroupedSampler")])
def test_recipe_sampling_strategy_reaches_the_trainer(pag_dir, tmp_path, strategy, sampler):
    """``train_sampling_strategy: group_by_length`` batches rows of similar length (less padding); it is part of the
    run's card, so a run trained one way is never resumed or reused as the other."""
    from parl_mt_lib.sft import make_trainer, sft_fingerprint

    recipe = _recipe(pag_dir, train_sampling_strategy=strategy)
    trainer = make_trainer(recipe, tmp_path / "run")
    assert type(trainer._get_train_sampler()).__name__ == sampler
    other = _recipe(pag_dir, train_sampling_strategy="random" if strategy != "random" else "group_by_length")
    assert sft_fingerprint(recipe)["fingerprint"] != sft_fingerprint(other)["fingerprint"]


def test_grid_cell_keys_made_before_the_sampling_key_stand(pag_dir):
    """02's cell key of a recipe at the default sampler is the key it had before ``train_sampling_strategy`` existed
    (every cached cell was recomputed, and reported a resumed run's 0 min as its training time, when it was not)."""
    from dataclasses import asdict

    from parl_mt_lib.runtime import artifact_card
    from parl_mt_lib.sft import sft_cells, sft_fingerprint

    over = {"data": str(pag_dir), "max_steps": 6}
    cell = sft_cells(RECIPE, ["progress"], [0], "unused", over, eval_limit=8, task_limit=2)[-1]
    recipe = load_recipe(RECIPE, {**over, "view": "progress", "seed": 0})
    old = {k: v for k, v in asdict(recipe).items() if k != "train_sampling_strategy"}
    assert cell.fingerprint == artifact_card({"kind": "sft", "recipe": old, "eval_limit": 8, "task_limit": 2},
                                             sft_fingerprint(recipe)["inputs"])["fingerprint"]


def test_grid_cell_of_a_bf16_recipe_is_keyed_by_precision(pag_dir, monkeypatch):
    """bf16 means bf16 weights on a GPU and fp32 weights under autocast on the CPU: different models. 02's cell key
    of a bf16 recipe names the precision (as the run's fingerprint does), so a results directory carried between a
    GPU and a CPU machine retrains the cell instead of reusing the other machine's metrics; fp32 cells keep their key."""
    from parl_mt_lib.sft import sft_cells

    def key(bf16: bool, cuda: bool) -> str:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        over = {"data": str(pag_dir), "max_steps": 6, "bf16": bf16}
        return sft_cells(RECIPE, ["progress"], [0], "unused", over, eval_limit=8, task_limit=2)[-1].fingerprint

    assert key(True, cuda=False) != key(True, cuda=True)
    assert key(False, cuda=False) == key(False, cuda=True)


def test_length_grouped_run_resumed_in_a_later_epoch_matches_uninterrupted(pag_dir, tmp_path):
    """``group_by_length`` draws its order from ``data_seed + epoch`` (``sft.seeded_length_sampler``): a run killed
    and resumed after its first epoch sees the rows the uninterrupted run saw (transformers' own sampler shuffles
    from the global RNG, whose state at a later epoch differs between the two runs)."""
    from parl_mt_lib.sft import sft_dataset

    recipe = _recipe(pag_dir, train_sampling_strategy="group_by_length", per_device_train_batch_size=32,
                     max_steps=9, save_steps=6)
    per_epoch = -(-len(sft_dataset(recipe)) // 32)
    # the checkpoint (step 6) lies inside a later epoch, not at its start (at an epoch boundary the trainer's restored
    # RNG state would make transformers' unseeded sampler pass too)
    assert per_epoch < 6 and 6 % per_epoch, per_epoch
    ref = train_sft(recipe, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        train_sft(recipe, tmp_path / "run", callbacks=[Kill(7)])
    again = train_sft(recipe, tmp_path / "run")
    losses = lambda r: [h["loss"] for h in r["log_history"] if "loss" in h]  # noqa: E731
    assert losses(again)[-2:] == pytest.approx(losses(ref)[-2:], rel=1e-4)
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(ref["final_dir"]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again["final_dir"]).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


class Seen(TrainerCallback):
    def __init__(self):
        self.checkpointing = []

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.checkpointing.append(model.is_activation_checkpointing)


def test_recipe_gradient_checkpointing_reaches_the_trainer(pag_dir, tmp_path):
    """The recipe's ``gradient_checkpointing`` is what the trainer does: TRL's ``SFTConfig`` defaults it to True, so
    a recipe saying false (every CPU recipe) trained with activation recomputation (~15-20% of a toy step) until the
    key was passed either way. Checkpointing changes the cost, not the result: the weights agree either way, which
    is why runs made before the fix keep their cards."""
    from transformers import AutoModelForCausalLM

    runs = {}
    for on in (False, True):
        seen = Seen()
        runs[on] = train_sft(_recipe(pag_dir, gradient_checkpointing=on, max_steps=3, save_steps=10),
                             tmp_path / str(on), callbacks=[seen])
        assert seen.checkpointing == [on] * 3
    a, b = (AutoModelForCausalLM.from_pretrained(runs[on]["final_dir"]).state_dict() for on in (False, True))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
